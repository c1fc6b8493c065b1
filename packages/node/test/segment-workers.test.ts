/**
 * WorkerSegmentOpener against the in-thread opener it stands in for: the same payloads and the
 * same blob checks, typed errors that name the pack, the caller's buffers left alone, and a
 * process that ends without closing the pool.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { test } from "node:test";
import { promisify } from "node:util";
import {
  backup,
  IntegrityError,
  localSegmentOpener,
  MemoryStorage,
  type OpenedSegment,
  openPackHeader,
  type PackEntry,
  Repository,
  type SegmentToOpen,
} from "@locket/core";
import { fakeSqlite, randomBytes, sourceTree, textBytes } from "../../core/test/helpers.ts";
import { nodePrimitives } from "../src/primitives.ts";
import { WorkerSegmentOpener } from "../src/segment-workers.ts";

const KEY = new Uint8Array(32).fill(9);

/** A repository holding compressible and incompressible data, and its packs' bytes and entries. */
async function fixture() {
  const storage = new MemoryStorage();
  const repo = await Repository.init(storage, nodePrimitives, KEY);
  await backup(
    repo,
    sourceTree({
      "chat.db": fakeSqlite(600, 1),
      "notes.txt": textBytes(900_000, 2),
      "photo.jpg": randomBytes(3_000_000, 3),
    }),
    { host: "h", paths: ["x"] },
  );
  const packs: { name: string; bytes: Uint8Array; segments: SegmentToOpen[] }[] = [];
  for await (const { name, size } of storage.list("data")) {
    const bytes = await storage.load("data", name);
    const entries = await openPackHeader(repo.keys, bytes, size, `data/${name}`);
    packs.push({ name, bytes, segments: segmentsOf(entries) });
  }
  return { repo, packs };
}

function segmentsOf(entries: readonly PackEntry[]): SegmentToOpen[] {
  const out: { start: number; length: number; blobs: PackEntry[] }[] = [];
  for (const e of entries) {
    const last = out[out.length - 1];
    if (last?.start === e.segmentOffset) last.blobs.push(e);
    else out.push({ start: e.segmentOffset, length: e.segmentLength, blobs: [e] });
  }
  return out;
}

async function settleAll(ps: Promise<OpenedSegment>[]) {
  return Promise.allSettled(ps);
}

test("workers open segments and check blobs exactly as the in-thread opener does", async () => {
  const { repo, packs } = await fixture();
  const local = localSegmentOpener(repo.p, repo.keys);
  const workers = new WorkerSegmentOpener(KEY, { threads: 2 });
  try {
    let segments = 0;
    for (const pack of packs) {
      const object = `data/${pack.name}`;
      const want = await Promise.all(
        local.open(pack.bytes.slice(), pack.segments, object, { payloads: true }),
      );
      const got = await Promise.all(
        workers.open(pack.bytes.slice(), pack.segments, object, { payloads: true }),
      );
      assert.equal(got.length, want.length);
      for (let i = 0; i < got.length; i++) {
        assert.deepEqual(Buffer.from(got[i].payload), Buffer.from(want[i].payload));
        assert.deepEqual(got[i].matches, want[i].matches);
        assert.ok(got[i].matches.length > 0 && got[i].matches.every(Boolean));
      }
      const checksOnly = await Promise.all(
        workers.open(pack.bytes.slice(), pack.segments, object, { payloads: false }),
      );
      for (const o of checksOnly) {
        assert.equal(o.payload.length, 0);
        assert.ok(o.matches.every(Boolean));
      }
      segments += got.length;
    }
    assert.ok(segments >= 4, `the fixture should span several segments, got ${segments}`);
  } finally {
    await workers.close();
  }
});

test("a blob whose ID does not match, or that lies outside the payload, is reported, not trusted", async () => {
  const { packs } = await fixture();
  const workers = new WorkerSegmentOpener(KEY, { threads: 1 });
  try {
    const pack = packs[0];
    const seg = pack.segments[0];
    const good = seg.blobs[0];
    const forged = { ...good, id: new Uint8Array(good.id).fill(0xab) };
    const outside = { ...good, offset: 1 << 30 };
    const [o] = workers.open(
      pack.bytes.slice(),
      [{ ...seg, blobs: [good, forged, outside] }],
      `data/${pack.name}`,
      { payloads: true },
    );
    assert.deepEqual((await o).matches, [true, false, false]);
  } finally {
    await workers.close();
  }
});

test("a damaged segment fails alone, as an IntegrityError naming the pack", async () => {
  const { packs } = await fixture();
  const pack = packs.find((p) => p.segments.length >= 3)!;
  assert.ok(pack, "a pack with three segments");
  const workers = new WorkerSegmentOpener(KEY, { threads: 2 });
  try {
    const bytes = pack.bytes.slice();
    bytes[pack.segments[1].start + 20] ^= 1;
    const object = `data/${pack.name}`;
    const results = await settleAll(workers.open(bytes, pack.segments, object, { payloads: true }));
    assert.equal(results[0].status, "fulfilled");
    assert.equal(results[2].status, "fulfilled");
    assert.equal(results[1].status, "rejected");
    const err = (results[1] as PromiseRejectedResult).reason;
    assert.ok(err instanceof IntegrityError, `got ${err}`);
    assert.equal(err.code, "integrity");
    assert.equal(err.object, object);
    assert.match(err.message, new RegExp(`^${object}: data segment fails authentication`));
  } finally {
    await workers.close();
  }
});

test("bytes that do not own their buffer are copied, and the caller's buffer stays usable", async () => {
  const { packs } = await fixture();
  const pack = packs[0];
  const padded = new Uint8Array(pack.bytes.length + 10);
  padded.set(pack.bytes, 10);
  const view = padded.subarray(10);
  const workers = new WorkerSegmentOpener(KEY, { threads: 1 });
  try {
    const opened = await Promise.all(
      workers.open(view, pack.segments, `data/${pack.name}`, { payloads: true }),
    );
    assert.ok(opened.every((o) => o.matches.every(Boolean)));
    assert.equal(padded.byteLength, pack.bytes.length + 10, "not detached");
    assert.deepEqual(Buffer.from(view), Buffer.from(pack.bytes));
  } finally {
    await workers.close();
  }
});

test("close() fails what is pending; a wrong key opens nothing", async () => {
  const { packs } = await fixture();
  const pack = packs[0];
  const wrong = new WorkerSegmentOpener(new Uint8Array(32).fill(1), { threads: 1 });
  try {
    const results = await settleAll(
      wrong.open(pack.bytes.slice(), pack.segments, `data/${pack.name}`, { payloads: true }),
    );
    assert.ok(results.every((r) => r.status === "rejected" && r.reason instanceof IntegrityError));
  } finally {
    await wrong.close();
  }
  const workers = new WorkerSegmentOpener(KEY, { threads: 1 });
  const pending = workers.open(pack.bytes.slice(), pack.segments, `data/${pack.name}`, {
    payloads: true,
  });
  const settled = settleAll(pending);
  await workers.close();
  const results = await settled;
  // Segments answered before the close stay answered; none is left hanging.
  assert.equal(results.length, pack.segments.length);
});

test("a process that used the workers ends without closing them", async () => {
  const script = `
    import { MemoryStorage, Repository, backup } from "@locket/core";
    import { nodePrimitives } from ${JSON.stringify(new URL("../src/primitives.ts", import.meta.url).href)};
    import { WorkerSegmentOpener } from ${JSON.stringify(new URL("../src/segment-workers.ts", import.meta.url).href)};
    const key = new Uint8Array(32).fill(5);
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, nodePrimitives, key);
    const data = new TextEncoder().encode("hello ".repeat(50000));
    const file = { type: "file", name: "a.txt", mode: 0o644, mtimeMs: 0, size: data.length,
      async *open() { yield data; } };
    await backup(repo, [file], { host: "h", paths: ["a"] });
    const reopened = await Repository.open(storage, nodePrimitives, key);
    reopened.useSegmentOpener(new WorkerSegmentOpener(key));
    await reopened.loadIndex();
    const { readFile, walk } = await import("@locket/core");
    const snap = (await reopened.snapshots())[0];
    let n = 0;
    for await (const { node } of walk(reopened, snap.snapshot.tree)) {
      if (node.type === "file") for await (const c of readFile(reopened, node)) n += c.length;
    }
    console.log(n);
  `;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ["--input-type=module", "-e", script],
    { timeout: 30_000, cwd: new URL(".", import.meta.url).pathname },
  );
  assert.equal(stdout.trim(), String(6 * 50000));
});

test("the package entry point exports the Node building blocks", async () => {
  const mod = await import("@locket/node");
  for (const name of [
    "FsStorage",
    "S3Storage",
    "fsSource",
    "restoreToDir",
    "WorkerSegmentOpener",
  ]) {
    assert.equal(typeof (mod as Record<string, unknown>)[name], "function", name);
  }
  assert.equal(typeof mod.nodePrimitives.hmacSha256, "function");
});
