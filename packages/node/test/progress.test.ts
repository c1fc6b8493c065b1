// The CLI's progress line: what a terminal shows for phases that count bytes and for those that
// count only items (check's pack headers, prune's phases).
import assert from "node:assert/strict";
import { test } from "node:test";
import { Progress } from "../src/cli/progress.ts";

/** A stand-in terminal: what `Progress` writes, as text (the bar is a line redrawn with \r). */
function terminal(): { out: NodeJS.WriteStream; last: () => string } {
  let written = "";
  const out = {
    columns: 200,
    write: (s: string) => {
      written += s;
      return true;
    },
  } as unknown as NodeJS.WriteStream;
  return { out, last: () => written.split("\r\x1b[K").at(-1) ?? "" };
}

test("a phase counting bytes shows bytes, the total and the rate", () => {
  const t = terminal();
  new Progress("bar", t.out).update(
    { phase: "backup", bytes: 50 << 20, totalBytes: 100 << 20, files: 3, totalFiles: 10 },
    true,
  );
  assert.match(
    t.last(),
    /^backup \[=+>\s*\]\s+50% 50\.0 MiB \/ 100\.0 MiB {2}3\/10 files {2}.+\/s {2}ETA /,
  );
});

test("a phase counting only items shows its bar by items, not 0 B", () => {
  const t = terminal();
  new Progress("bar", t.out).update(
    { phase: "headers", bytes: 0, files: 25, totalFiles: 100, unit: "packs" },
    true,
  );
  const line = t.last();
  assert.match(line, /^headers \[={6}>\s{17}\]\s+25% {2}25\/100 packs {2}ETA /);
  assert.doesNotMatch(line, /0 B/);
});

test("a phase counting items and bytes without a total of bytes shows both, the bar by items", () => {
  const t = terminal();
  new Progress("bar", t.out).update(
    { phase: "read-data", bytes: 5 << 20, files: 50, totalFiles: 100, unit: "packs" },
    true,
  );
  assert.match(t.last(), /^read-data \[=+>\s*\]\s+50% 5\.00 MiB {2}50\/100 packs {2}.+\/s {2}ETA /);
});

test("a phase with nothing counted yet and no totals shows no count", () => {
  const t = terminal();
  new Progress("bar", t.out).update({ phase: "repack", bytes: 0, files: 0 }, true);
  assert.equal(t.last(), "repack  0 B  0 B/s  ETA --:--");
});
