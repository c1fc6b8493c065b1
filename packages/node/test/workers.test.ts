/**
 * WorkerSegmentOpener against the in-thread opener it stands in for: the same payloads and the
 * same blob checks, typed errors that name the pack, the caller's buffers left alone, and a
 * process that ends without closing the pool.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import {
  BLOB_DATA,
  BLOB_DELTA,
  backup,
  blobId,
  concat,
  type FileChunker,
  IntegrityError,
  localChunker,
  localSegmentOpener,
  MemoryStorage,
  type OpenedSegment,
  openPackHeader,
  packSegments,
  Repository,
  type SegmentToOpen,
  type SourceFile,
  toHex,
  VanishedError,
} from "@locket/core";
import { fakeSqlite, randomBytes, sourceTree, textBytes } from "../../core/test/helpers.ts";
import { nodePrimitives } from "../src/primitives.ts";
import { type ChunkMessage, partsOf, WorkerChunker } from "../src/workers/chunker.ts";
import { WorkerPool } from "../src/workers/pool.ts";
import { WorkerSegmentOpener } from "../src/workers/segment-opener.ts";
import { scratch } from "./harness.ts";

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
    packs.push({ name, bytes, segments: packSegments(entries) });
  }
  return { repo, packs };
}

/** A segment opener on a pool of its own; `pool.close()` ends it. */
function openerOn(key: Uint8Array, threads: number) {
  const pool = new WorkerPool(key, { threads });
  return { pool, opener: new WorkerSegmentOpener(pool) };
}

async function settleAll(ps: Promise<OpenedSegment>[]) {
  return Promise.allSettled(ps);
}

test("workers open segments and check blobs exactly as the in-thread opener does", async () => {
  const { repo, packs } = await fixture();
  const local = localSegmentOpener(repo.p, repo.keys);
  const { pool: workersPool, opener: workers } = openerOn(KEY, 2);
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
    await workersPool.close();
  }
});

test("a blob whose ID does not match, or that lies outside the payload, is reported, not trusted", async () => {
  const { packs } = await fixture();
  const { pool: workersPool, opener: workers } = openerOn(KEY, 1);
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
    await workersPool.close();
  }
});

test("a damaged segment fails alone, as an IntegrityError naming the pack", async () => {
  const { packs } = await fixture();
  const pack = packs.find((p) => p.segments.length >= 3)!;
  assert.ok(pack, "a pack with three segments");
  const { pool: workersPool, opener: workers } = openerOn(KEY, 2);
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
    await workersPool.close();
  }
});

test("bytes that do not own their buffer are copied, and the caller's buffer stays usable", async () => {
  const { packs } = await fixture();
  const pack = packs[0];
  const padded = new Uint8Array(pack.bytes.length + 10);
  padded.set(pack.bytes, 10);
  const view = padded.subarray(10);
  const { pool: workersPool, opener: workers } = openerOn(KEY, 1);
  try {
    const opened = await Promise.all(
      workers.open(view, pack.segments, `data/${pack.name}`, { payloads: true }),
    );
    assert.ok(opened.every((o) => o.matches.every(Boolean)));
    assert.equal(padded.byteLength, pack.bytes.length + 10, "not detached");
    assert.deepEqual(Buffer.from(view), Buffer.from(pack.bytes));
  } finally {
    await workersPool.close();
  }
});

test("close() fails what is pending; a wrong key opens nothing", async () => {
  const { packs } = await fixture();
  const pack = packs[0];
  const { pool: wrongPool, opener: wrong } = openerOn(new Uint8Array(32).fill(1), 1);
  try {
    const results = await settleAll(
      wrong.open(pack.bytes.slice(), pack.segments, `data/${pack.name}`, { payloads: true }),
    );
    assert.ok(results.every((r) => r.status === "rejected" && r.reason instanceof IntegrityError));
  } finally {
    await wrongPool.close();
  }
  const { pool: workersPool, opener: workers } = openerOn(KEY, 1);
  const pending = workers.open(pack.bytes.slice(), pack.segments, `data/${pack.name}`, {
    payloads: true,
  });
  const settled = settleAll(pending);
  await workersPool.close();
  const results = await settled;
  // Segments answered before the close stay answered; none is left hanging.
  assert.equal(results.length, pack.segments.length);
});

test("a process that used the workers ends without closing them", async () => {
  const script = `
    import { MemoryStorage, Repository, backup } from "@locket/core";
    import { nodePrimitives } from ${JSON.stringify(new URL("../src/primitives.ts", import.meta.url).href)};
    import { WorkerPool } from ${JSON.stringify(new URL("../src/workers/pool.ts", import.meta.url).href)};
    import { WorkerSegmentOpener } from ${JSON.stringify(new URL("../src/workers/segment-opener.ts", import.meta.url).href)};
    const key = new Uint8Array(32).fill(5);
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, nodePrimitives, key);
    const data = new TextEncoder().encode("hello ".repeat(50000));
    const file = { type: "file", name: "a.txt", mode: 0o644, mtimeMs: 0, size: data.length,
      async *open() { yield data; } };
    await backup(repo, [file], { host: "h", paths: ["a"] });
    const reopened = await Repository.open(storage, nodePrimitives, key);
    reopened.useSegmentOpener(new WorkerSegmentOpener(new WorkerPool(key)));
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

describe("WorkerChunker", () => {
  /** A file with a local path is read by its worker: the main thread must not open it. */
  const notOpened = (): AsyncIterable<Uint8Array> => {
    throw new Error("open() called for a file a worker reads");
  };
  /** Closes of the local files handed out by `at`, per path. */
  const closes = new Map<string, number>();
  /** A source file a worker reads at `path`; counts its closes. */
  const at = (path: string): Pick<SourceFile, "open" | "localFile"> => ({
    open: notOpened,
    localFile: async () => ({
      path,
      close: async () => {
        closes.set(path, (closes.get(path) ?? 0) + 1);
      },
    }),
  });

  /** Every chunk and ID a chunker gives for `file`, flattened. */
  async function chunksOf(
    chunker: FileChunker,
    file: Pick<SourceFile, "open" | "localFile"> & { readonly size?: number },
  ) {
    const out: { bytes: Buffer; id: string }[] = [];
    for await (const b of chunker.start(file)) {
      let off = 0;
      for (let k = 0; k < b.lengths.length; k++) {
        const n = b.lengths[k];
        out.push({
          bytes: Buffer.from(b.bytes.subarray(off, off + n)),
          id: toHex(b.ids.subarray(32 * k, 32 * k + 32)),
        });
        off += n;
      }
    }
    return out;
  }

  test("workers cut the same chunks with the same IDs as the main thread, for every kind of file", async (t) => {
    const dir = await scratch(t, "chunker");
    const repo = await Repository.init(new MemoryStorage(), nodePrimitives, KEY);
    const pool = new WorkerPool(KEY, { threads: 2 });
    const workers = new WorkerChunker(pool, nodePrimitives, repo.keys);
    const local = localChunker(nodePrimitives, repo.keys);
    try {
      const files = {
        "empty.bin": new Uint8Array(0),
        "small.txt": textBytes(1000, 4),
        "photo.jpg": randomBytes(9_000_000, 5), // several CDC chunks, batches and read blocks
        "pages.db": fakeSqlite(300, 6), // one chunk per page
        // Large enough to be read in stripes by both workers: the same pages, in order.
        "stripes.db": fakeSqlite(2600, 8),
        "stripes-1k.db": fakeSqlite(9000, 9, 1024),
        "odd-end.db": concat(fakeSqlite(2600, 10), Uint8Array.of(1, 2, 3)), // a partial last page
      };
      for (const [name, data] of Object.entries(files)) {
        const path = join(dir, name);
        await writeFile(path, data);
        const open = async function* () {
          yield data;
        };
        const want = await chunksOf(local, { open });
        const got = await chunksOf(workers, at(path));
        assert.equal(got.length, want.length, name);
        assert.deepEqual(got, want, name);
        assert.equal(Buffer.concat(got.map((c) => c.bytes)).length, data.length, name);
        assert.equal(closes.get(path), 1, `${name}: its local file is closed once, when done`);
        // Listed with its size, as a walk lists it: a small file is read with blocking calls.
        const sized = await chunksOf(workers, { ...at(path), size: data.length });
        assert.deepEqual(sized, want, `${name}, listed with its size`);
        const parts = await partsOf(path, 2);
        const striped = name.startsWith("stripes") || name === "odd-end.db";
        assert.equal(parts.length > 1, striped, `${name}: read in ${parts.length} stripes`);
        if (striped) {
          assert.equal(parts.at(-1)!.end, data.length);
          assert.ok(parts.every((x) => x.start! % x.pageSize! === 0));
        }
      }
      // Several files at once, as the engine's look-ahead starts them.
      const names = Object.keys(files);
      const all = await Promise.all(names.map((n) => chunksOf(workers, at(join(dir, n)))));
      all.forEach((chunks, i) => {
        assert.equal(
          Buffer.concat(chunks.map((c) => c.bytes)).length,
          Object.values(files)[i].length,
        );
      });
    } finally {
      await pool.close();
    }
  });

  test("page deltas against a base image: none for the pages whose ID knownPages gives", async (t) => {
    const dir = await scratch(t, "chunker-known");
    const repo = await Repository.init(new MemoryStorage(), nodePrimitives, KEY);
    const pool = new WorkerPool(KEY, { threads: 2 });
    const workers = new WorkerChunker(pool, nodePrimitives, repo.keys);
    try {
      // Three stripes' worth of pages; every 100th page differs from the image by a row.
      const pages = 2600;
      const image = fakeSqlite(pages, 11);
      const db = Uint8Array.from(image);
      const changed: number[] = [];
      for (let page = 50; page < pages; page += 100) {
        db.set(randomBytes(40, page), page * 4096 + 200);
        changed.push(page);
      }
      await writeFile(join(dir, "image.pages"), image);
      await writeFile(join(dir, "chat.db"), db);
      // The parent knew every other changed page as it is now, and nothing else.
      const known = new Uint8Array(32 * pages);
      const skipped = changed.filter((_, i) => i % 2 === 0);
      for (const page of skipped) {
        known.set(
          blobId(
            nodePrimitives,
            repo.keys.id,
            BLOB_DATA,
            db.subarray(page * 4096, (page + 1) * 4096),
          ),
          32 * page,
        );
      }
      const hinted: number[] = [];
      let page = 0;
      let asked = 0;
      const knownPages = async () => {
        asked++;
        return known;
      };
      const job = workers.start(at(join(dir, "chat.db")), {
        baseImage: join(dir, "image.pages"),
        knownPages,
      });
      for await (const b of job) {
        assert.ok(b.deltas, "a batch of a database with an image carries hints");
        for (let k = 0; k < b.lengths.length; k++, page++) {
          const i: number = b.deltas.at[k];
          if (i < 0) continue;
          hinted.push(page);
          // The delta itself, in buffers the workers reuse from batch to batch and stripe to
          // stripe: the page XOR the image's page, named by its keyed ID.
          const xor: Uint8Array = b.deltas.xors.subarray(4096 * i, 4096 * (i + 1));
          const want = db.slice(page * 4096, (page + 1) * 4096);
          for (let j = 0; j < 4096; j++) want[j] ^= image[page * 4096 + j];
          assert.deepEqual(xor, want, `page ${page}'s XOR`);
          assert.deepEqual(
            b.deltas.deltaIds.subarray(32 * i, 32 * i + 32),
            blobId(nodePrimitives, repo.keys.id, BLOB_DELTA, want),
          );
        }
      }
      assert.equal(page, pages);
      assert.deepEqual(
        hinted,
        changed.filter((p) => !skipped.includes(p)),
      );
      assert.ok(asked > 0, "asked for the known pages");
    } finally {
      await pool.close();
    }
  });

  test("a certified image: a page equal to it takes the ID imagePages gives, unhashed; others are hashed", async (t) => {
    const dir = await scratch(t, "chunker-image");
    const repo = await Repository.init(new MemoryStorage(), nodePrimitives, KEY);
    const pool = new WorkerPool(KEY, { threads: 2 });
    const workers = new WorkerChunker(pool, nodePrimitives, repo.keys);
    try {
      const pages = 2600; // three stripes
      const image = fakeSqlite(pages, 21);
      const db = Uint8Array.from(image);
      for (let page = 7; page < pages; page += 50) db.set(randomBytes(40, page), page * 4096 + 300);
      await writeFile(join(dir, "image.pages"), image);
      await writeFile(join(dir, "chat.db"), db);
      const idOf = (page: number) =>
        blobId(
          nodePrimitives,
          repo.keys.id,
          BLOB_DATA,
          db.subarray(page * 4096, (page + 1) * 4096),
        );
      // The IDs given for the image's pages: made up, so a page that took one was not hashed.
      // Page 3's is zeros: unknown, so that page is hashed although it equals the image.
      const given = new Uint8Array(32 * pages);
      for (let page = 0; page < pages; page++) given.set(randomBytes(32, 9000 + page), 32 * page);
      given.fill(0, 32 * 3, 32 * 4);
      const run = async (imagePages?: (pageSize: number) => Promise<Uint8Array | undefined>) => {
        const got: { id: string; same: number }[] = [];
        const job = workers.start(at(join(dir, "chat.db")), {
          baseImage: join(dir, "image.pages"),
          knownPages: async () => new Uint8Array(0),
          ...(imagePages ? { imagePages } : {}),
        });
        for await (const b of job) {
          for (let k = 0; k < b.lengths.length; k++) {
            got.push({ id: toHex(b.ids.subarray(32 * k, 32 * k + 32)), same: b.deltas!.same![k] });
          }
        }
        assert.equal(got.length, pages);
        return got;
      };
      const certified = await run(async (pageSize) => (pageSize === 4096 ? given : undefined));
      const plain = await run();
      const wrongSize = await run(async (pageSize) => (pageSize === 1024 ? given : undefined));
      for (let page = 0; page < pages; page++) {
        const changed = page % 50 === 7;
        const trusted = !changed && page !== 3;
        assert.deepEqual(
          certified[page],
          trusted
            ? { id: toHex(given.subarray(32 * page, 32 * page + 32)), same: 2 }
            : { id: toHex(idOf(page)), same: changed ? 0 : 1 },
          `page ${page}`,
        );
        assert.deepEqual(plain[page], { id: toHex(idOf(page)), same: changed ? 0 : 1 });
        assert.deepEqual(wrongSize[page], plain[page]);
      }
    } finally {
      await pool.close();
    }
  });

  test("a striped database: a cancel stops every stripe and closes the file once; a vanished one is a VanishedError", async (t) => {
    const dir = await scratch(t, "chunker-stripes");
    const repo = await Repository.init(new MemoryStorage(), nodePrimitives, KEY);
    const pool = new WorkerPool(KEY, { threads: 2 });
    const workers = new WorkerChunker(pool, nodePrimitives, repo.keys);
    try {
      const path = join(dir, "chat.db");
      await writeFile(path, fakeSqlite(10_000, 11)); // 41 MB: ten stripes
      const job = workers.start(at(path));
      let batches = 0;
      for await (const _ of job) {
        if (++batches === 3) job.cancel();
      }
      assert.equal(batches, 3, "no batch after cancel");
      // The stripes' sessions end as their workers stop; then the file is closed, once.
      for (let i = 0; i < 100 && !closes.get(path); i++)
        await new Promise((r) => setTimeout(r, 10));
      assert.equal(closes.get(path), 1);
      await assert.rejects(
        chunksOf(workers, at(join(dir, "gone.db"))),
        (err: unknown) => err instanceof VanishedError && /gone\.db/.test((err as Error).message),
      );
      assert.equal(closes.get(join(dir, "gone.db")), 1, "a failed job closes its local file");
    } finally {
      await pool.close();
    }
  });

  test("a file listed small that grew since is read whole; one listed small and gone is a VanishedError", async (t) => {
    const dir = await scratch(t, "chunker-small");
    const repo = await Repository.init(new MemoryStorage(), nodePrimitives, KEY);
    const pool = new WorkerPool(KEY, { threads: 1 });
    const workers = new WorkerChunker(pool, nodePrimitives, repo.keys);
    const local = localChunker(nodePrimitives, repo.keys);
    try {
      const path = join(dir, "grown.jpg");
      const data = randomBytes(3_500_000, 11); // past the one block a small file is read in
      await writeFile(path, data);
      const want = await chunksOf(local, {
        async *open() {
          yield data;
        },
      });
      assert.deepEqual(await chunksOf(workers, { ...at(path), size: 1000 }), want);
      await assert.rejects(
        chunksOf(workers, { ...at(join(dir, "gone.jpg")), size: 1000 }),
        (err: unknown) => err instanceof VanishedError && /gone\.jpg/.test((err as Error).message),
      );
    } finally {
      await pool.close();
    }
  });

  test("the size listed reaches the worker for a whole file, never for a database's stripes", async (t) => {
    const dir = await scratch(t, "chunker-sizes");
    const repo = await Repository.init(new MemoryStorage(), nodePrimitives, KEY);
    // A pool whose workers only record what they are sent: which reader a worker picks is its
    // own affair (readSmallFile for a small whole file); what it is told is checked here.
    const posted: ChunkMessage[] = [];
    const pool = {
      threads: 2,
      register() {},
      release() {},
      acquire: () => ({ load: 0, worker: { postMessage: (m: ChunkMessage) => posted.push(m) } }),
    } as unknown as WorkerPool;
    const workers = new WorkerChunker(pool, nodePrimitives, repo.keys);
    const photo = join(dir, "photo.jpg");
    const db = join(dir, "chat.db");
    const dbBytes = fakeSqlite(2600, 8); // 10.6 MB: three stripes
    await writeFile(photo, randomBytes(1000, 1));
    await writeFile(db, dbBytes);
    const jobs = [
      workers.start({ ...at(photo), size: 1000 }),
      workers.start({ ...at(db), size: dbBytes.length }),
    ];
    const files = () => posted.filter((m) => m.kind === "file");
    for (let i = 0; i < 200 && files().length < 4; i++) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    for (const job of jobs) job.cancel();
    const [whole, ...stripes] = files();
    assert.equal(whole.path, photo);
    assert.equal(whole.size, 1000);
    assert.equal(stripes.length, 3);
    for (const m of stripes) {
      assert.equal(m.path, db);
      assert.notEqual(m.start, undefined);
      assert.equal(m.size, undefined, "a stripe is never read as a small file");
    }
  });

  test("a file deleted before its worker reads it is a VanishedError; a cancelled job ends", async (t) => {
    const dir = await scratch(t, "chunker-gone");
    const repo = await Repository.init(new MemoryStorage(), nodePrimitives, KEY);
    const pool = new WorkerPool(KEY, { threads: 1 });
    const workers = new WorkerChunker(pool, nodePrimitives, repo.keys);
    try {
      await assert.rejects(
        chunksOf(workers, at(join(dir, "gone.jpg"))),
        (err: unknown) => err instanceof VanishedError && /gone\.jpg/.test((err as Error).message),
      );
      const path = join(dir, "big.bin");
      await writeFile(path, randomBytes(40_000_000, 7));
      const job = workers.start(at(path));
      let batches = 0;
      for await (const _ of job) {
        if (++batches === 1) job.cancel();
      }
      assert.equal(batches, 1, "no batch after cancel");
      assert.equal(closes.get(path), 1, "a cancelled job closes its local file");
      assert.equal(closes.get(join(dir, "gone.jpg")), 1, "so does a failed one");
    } finally {
      await pool.close();
    }
  });
});
