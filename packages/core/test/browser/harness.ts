// Helpers for the stories run in headless Chromium (scripts/test-browser.ts and
// packages/node/test/s3/browser.test.ts, through ./chromium.ts): steps whose outcomes go back to
// the runner, deterministic files, and a restore into memory. Pure core code, so the Node side
// of those tests uses the same files and restore.
import {
  isLikelyCompressed,
  type Repository,
  readFiles,
  type SourceEntry,
  walk,
} from "../../src/index.ts";

export interface Step {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
  readonly ms: number;
}

export const steps: Step[] = [];

/** What a story posts to the runner: its steps, and values the runner checks afterwards. */
export interface Report {
  readonly steps: Step[];
  readonly handoff: Record<string, unknown>;
}

/** Values for the runner (a root key, the hashes of files the browser backed up). */
export const handoff: Record<string, unknown> = {};

export async function step(name: string, fn: () => Promise<string>): Promise<void> {
  const start = performance.now();
  let ok = true;
  let detail: string;
  try {
    detail = await fn();
  } catch (err) {
    ok = false;
    detail = (err as Error)?.stack ?? String(err);
  }
  steps.push({ name, ok, detail, ms: Math.round(performance.now() - start) });
}

export function check1(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

/** Deterministic bytes (xorshift32). */
export function noise(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** A file shaped like a SQLite database (its header and 4 KiB pages), so it is cut by pages. */
export function database(pages: number, seed: number): Uint8Array {
  const db = noise(pages * 4096, seed);
  db.set(new TextEncoder().encode("SQLite format 3\0"), 0);
  db[16] = 0x10; // page size 4096, big-endian
  db[17] = 0x00;
  return db;
}

export type Files = Record<string, Uint8Array>;

/**
 * A chat device's files: text that compresses, a database (one page of it text, so a database
 * segment compresses too), and a photo that does not.
 */
export function chatFiles(seed: number): Files {
  const words = ["hello", "see", "you", "at", "eight", "ok", "photo", "lol", "where", "now"];
  const text = new TextEncoder().encode(
    Array.from({ length: 60_000 }, (_, i) => words[(i * 7919 + seed) % 10]).join(" "),
  );
  const db = database(128, seed);
  db.set(text.subarray(0, 4096), 4096);
  return { "chat.txt": text, "msgstore.db": db, "photo.jpg": noise(900_000, seed + 1) };
}

/** `files` as a backup source, media marked as not worth compressing. */
export function source(files: Files): SourceEntry[] {
  return Object.entries(files).map(([name, data]) => ({
    type: "file",
    name,
    mode: 0o644,
    mtimeMs: 1_700_000_000_000,
    size: data.length,
    compressible: !isLikelyCompressed(name),
    async *open() {
      for (let o = 0; o < data.length; o += 65536) yield data.subarray(o, o + 65536);
    },
  }));
}

/** Every file of snapshot `ref` (the latest when omitted), read and verified, by path. */
export async function restore(repo: Repository): Promise<Map<string, Uint8Array>> {
  const ref = await repo.findSnapshot("latest");
  const entries = [];
  for await (const e of walk(repo, ref.snapshot.tree)) {
    if (e.node.type === "file") entries.push({ node: e.node, path: e.path.join("/") });
  }
  const parts = entries.map(() => [] as Uint8Array[]);
  for await (const ev of readFiles(repo, entries))
    if (!ev.done) parts[ev.file].push(ev.chunk.slice());
  const out = new Map<string, Uint8Array>();
  entries.forEach((e, i) => {
    const all = new Uint8Array(parts[i].reduce((n, c) => n + c.length, 0));
    let o = 0;
    for (const c of parts[i]) {
      all.set(c, o);
      o += c.length;
    }
    out.set(e.path, all);
  });
  return out;
}

export function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * Runs `story`, then posts every step's outcome and the handoff to the runner (a throw counts as
 * a failed step).
 */
export async function runAndReport(story: () => Promise<void>): Promise<void> {
  try {
    await story();
  } catch (err) {
    steps.push({
      name: "the story",
      ok: false,
      detail: (err as Error)?.stack ?? String(err),
      ms: 0,
    });
  }
  const report: Report = { steps, handoff };
  await fetch("/result", { method: "POST", body: JSON.stringify(report) });
}
