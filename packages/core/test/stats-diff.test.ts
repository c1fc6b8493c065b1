import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { utf8 } from "../src/bytes.ts";
import { backup } from "../src/engine/backup.ts";
import { diffSnapshots } from "../src/engine/diff.ts";
import { stats } from "../src/engine/stats.ts";
import { Repository } from "../src/repository.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { p, randomBytes, type Spec, sourceTree } from "./helpers.ts";

const KEY = Uint8Array.from({ length: 32 }, (_, i) => i ^ 0x5a);

async function run(repo: Repository, spec: Spec) {
  return backup(repo, sourceTree(spec), { host: "h", paths: Object.keys(spec), parent: null });
}

describe("stats", () => {
  it("counts logical bytes per snapshot and stores duplicates once", async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, p, KEY);
    const media = randomBytes(2 * 1024 * 1024, 3);
    const spec: Spec = { data: { "a.jpg": media, "copy.jpg": media } };
    await run(repo, spec);
    await run(repo, spec);
    const s = await stats(await Repository.open(storage, p, KEY));
    assert.equal(s.snapshots, 2);
    assert.equal(s.latestBytes, 2 * media.length);
    assert.equal(s.logicalBytes, 4 * media.length);
    assert.ok(
      s.uniqueBytes >= media.length && s.uniqueBytes < media.length + 10_000,
      `unique ${s.uniqueBytes}`,
    );
    assert.ok(s.dedupRatio > 3.5 && s.dedupRatio < 4, `dedup ${s.dedupRatio}`);
    assert.ok(
      s.compressionRatio > 0.9 && s.compressionRatio < 1.1,
      "random media does not compress",
    );
  });
});

describe("diff", () => {
  it("reports added, removed, changed, type-changed and metadata-only paths", async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, p, KEY);
    const a = await run(repo, {
      d: { keep: utf8("same"), change: utf8("old"), gone: utf8("x"), flip: utf8("file") },
    });
    const b = await run(repo, {
      d: { keep: utf8("same"), change: utf8("new!"), added: utf8("y"), flip: { inner: utf8("z") } },
    });
    const entries = await diffSnapshots(repo, a.snapshot.tree, b.snapshot.tree);
    assert.deepEqual(
      entries.map((e) => `${e.change} ${e.path}`),
      ["+ d/added", "M d/change", "T d/flip", "+ d/flip/inner", "- d/gone"],
    );
    assert.deepEqual(await diffSnapshots(repo, a.snapshot.tree, a.snapshot.tree), []);
  });
});
