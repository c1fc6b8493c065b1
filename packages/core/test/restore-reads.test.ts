import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { segmentKey } from "../src/blob-index.ts";
import { concat, fromHex } from "../src/bytes.ts";
import type { Primitives } from "../src/crypto/primitives.ts";
import { backup } from "../src/engine/backup.ts";
import { MemoryPageBaseStore } from "../src/engine/page-deltas.ts";
import { BlobReads, type FileToRead, readFiles, readOrder, walk } from "../src/engine/restore.ts";
import { IntegrityError } from "../src/errors.ts";
import { BLOB_DATA, BLOB_TREE, type BlobType } from "../src/format/blob.ts";
import type { FileNode } from "../src/format/tree.ts";
import { Repository } from "../src/repository.ts";
import { localSegmentOpener } from "../src/segment-opener.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import type { ObjectKind } from "../src/storage/storage.ts";
import { fakeSqlite, p, randomBytes, rewritePage, type Spec, sourceTree } from "./helpers.ts";

const KEY = Uint8Array.from({ length: 32 }, (_, i) => (i * 11) & 255);

/** MemoryStorage that counts the data it serves. */
class CountingStorage extends MemoryStorage {
  dataLoads = 0;
  dataBytes = 0;
  override async load(kind: ObjectKind, name: string, offset?: number, length?: number) {
    const b = await super.load(kind, name, offset, length);
    if (kind === "data") {
      this.dataLoads++;
      this.dataBytes += b.length;
    }
    return b;
  }
}

/**
 * A repository with ~40 MiB in 3 packs (30 media files of 1 MiB and a paged database, or the
 * media alone), opened afresh, and the files of its snapshot to read.
 */
async function mediaAndDatabase(database = true) {
  const storage = new CountingStorage();
  const repo = await Repository.init(storage, p, KEY);
  const media: Spec = {};
  for (let i = 0; i < 30; i++)
    media[`IMG-${String(i).padStart(3, "0")}.jpg`] = randomBytes(1 << 20, i + 1);
  const spec: Spec = database ? { "chat.db": fakeSqlite(2500, 7), Media: media } : { Media: media };
  await backup(repo, sourceTree(spec), { host: "h", paths: Object.keys(spec) });

  let packBytes = 0;
  let packs = 0;
  for await (const { size } of storage.list("data")) {
    packBytes += size;
    packs++;
  }
  const reader = await Repository.open(storage, p, KEY);
  await reader.loadIndex();
  return { storage, reader, files: await latestFiles(reader), packBytes, packs };
}

/**
 * `storage`'s repository opened afresh with a local segment opener, counting the keyed hashes
 * the reader itself computes (the opener's are not counted).
 */
async function countingReader(storage: MemoryStorage) {
  const hashed = { count: 0 };
  const counting: Primitives = {
    ...p,
    hmacSha256: (key, ...data) => {
      hashed.count++;
      return p.hmacSha256(key, ...data);
    },
  };
  const reader = await Repository.open(storage, counting, KEY);
  await reader.loadIndex();
  reader.useSegmentOpener(localSegmentOpener(p, reader.keys));
  return { reader, hashed };
}

/** The files of `repo`'s latest snapshot, in the order a restore reads them. */
async function latestFiles(repo: Repository): Promise<FileToRead[]> {
  const snap = await repo.findSnapshot("latest");
  const files: FileToRead[] = [];
  for await (const { path, node } of walk(repo, snap.snapshot.tree)) {
    if (node.type === "file") files.push({ node, path: path.join("/") });
  }
  return files;
}

describe("restore reads", () => {
  it("read each pack byte once, in few requests, even with a cache far smaller than the data", async () => {
    const { storage, reader, files, packBytes, packs } = await mediaAndDatabase();
    reader.segmentCacheBytes = 16 * 1024 * 1024;
    // Neighbouring segments coalesced (up to a quarter of the cache, 4 MiB, per request): far
    // fewer requests than one per segment, as reads were before.
    const segments = new Set<string>();
    for (const f of files) {
      for (const id of await reader.contentIds(f.node)) {
        const loc = reader.lookup(id)!;
        segments.add(segmentKey(loc));
      }
    }
    storage.dataLoads = 0;
    storage.dataBytes = 0;
    let restored = 0;
    for await (const ev of readFiles(reader, files)) if (!ev.done) restored += ev.chunk.length;

    assert.equal(restored, 30 * (1 << 20) + 2500 * 4096);
    // Every pack byte read at most once (the trees' segments were read by walk, before counting).
    assert.ok(
      storage.dataBytes <= packBytes,
      `read ${storage.dataBytes} bytes of ${packBytes} in packs`,
    );
    assert.ok(
      storage.dataLoads * 3 <= segments.size,
      `${storage.dataLoads} requests for ${segments.size} segments in ${packs} packs`,
    );
  });

  it("read past a small segment the reader does not need, where the repository allows (S3), instead of making two requests", async () => {
    const storage = new CountingStorage();
    const repo = await Repository.init(storage, p, KEY);
    // Three incompressible files, each in a segment of its own (over 512 KiB) in one pack.
    const spec: Spec = {
      "a.jpg": randomBytes(600_000, 1),
      "b.jpg": randomBytes(600_000, 2),
      "c.jpg": randomBytes(600_000, 3),
    };
    await backup(repo, sourceTree(spec), { host: "h", paths: Object.keys(spec) });
    const reader = await Repository.open(storage, p, KEY);
    await reader.loadIndex();
    const files = await latestFiles(reader);
    const [a, b, c] = files.map((f) => reader.lookup(f.node.content![0])!);
    assert.equal(new Set([a.pack, b.pack, c.pack]).size, 1, "one pack");
    assert.ok(a.segmentOffset < b.segmentOffset && b.segmentOffset < c.segmentOffset);
    const readAC = async (gapBytes: number) => {
      const fresh = await Repository.open(storage, p, KEY);
      await fresh.loadIndex();
      fresh.readGapBytes = gapBytes;
      storage.dataLoads = 0;
      storage.dataBytes = 0;
      const read: Uint8Array[] = [];
      for await (const ev of readFiles(fresh, [files[0], files[2]])) {
        if (!ev.done) read.push(ev.chunk);
      }
      assert.deepEqual(
        concat(...read),
        concat(spec["a.jpg"] as Uint8Array, spec["c.jpg"] as Uint8Array),
      );
      return { loads: storage.dataLoads, bytes: storage.dataBytes };
    };
    // Reads that may go on past 1 MiB (as from S3): b's ~600 KB segment is read and dropped.
    assert.deepEqual(await readAC(1 << 20), {
      loads: 1,
      bytes: c.segmentOffset + c.segmentLength - a.segmentOffset,
    });
    // Up to 512 KiB (or none, the default for a local disk): two requests.
    assert.deepEqual(await readAC(512 << 10), {
      loads: 2,
      bytes: a.segmentLength + c.segmentLength,
    });
  });

  it("read a pack of a request's size and one segment more in one request, not two", async () => {
    const { storage, reader, files, packBytes, packs } = await mediaAndDatabase(false);
    // Requests of 16 MiB, as for S3; a full pack is 16 MiB and one more segment, and the
    // files are read in the order they were packed.
    reader.segmentCacheBytes = 64 * 1024 * 1024;
    storage.dataLoads = 0;
    storage.dataBytes = 0;
    for await (const _ of readFiles(reader, files));
    assert.ok(storage.dataBytes <= packBytes, `read ${storage.dataBytes} of ${packBytes} bytes`);
    assert.ok(packs >= 2, `${packs} packs`);
    assert.equal(storage.dataLoads, packs, `${storage.dataLoads} requests for ${packs} packs`);
  });

  it("read a database whose pages alternate between two days' packs in few requests", async () => {
    // Day 2 rewrote every fourth page: the reader alternates between day 1's segments and day
    // 2's. Each day's segments are still neighbours in their pack, and are read together. With
    // more pages than BlobReads plans at a time (8192), the plan is made in pieces.
    const storage = new CountingStorage();
    const repo = await Repository.init(storage, p, KEY);
    const pages = 10_000;
    const db = fakeSqlite(pages, 5);
    await backup(repo, sourceTree({ "chat.db": db }), { host: "h", paths: ["chat.db"] });
    for (let page = 1; page < pages; page += 4) rewritePage(db, page, 5000 + page);
    await backup(repo, sourceTree({ "chat.db": db }), {
      host: "h",
      paths: ["chat.db"],
      parent: null,
    });
    const reader = await Repository.open(storage, p, KEY);
    await reader.loadIndex();
    const files = await latestFiles(reader);
    const segments = new Set<string>();
    for (const id of await reader.contentIds(files[0].node)) {
      segments.add(segmentKey(reader.lookup(id)!));
    }
    storage.dataLoads = 0;
    const restored: Uint8Array[] = [];
    for await (const ev of readFiles(reader, files)) if (!ev.done) restored.push(ev.chunk);
    assert.deepEqual(Buffer.concat(restored), Buffer.from(db));
    assert.ok(segments.size >= 30, `${segments.size} segments`);
    assert.ok(
      storage.dataLoads * 4 <= segments.size,
      `${storage.dataLoads} requests for ${segments.size} segments`,
    );
  });

  it("have the segment opener check every blob, also from a segment met again later", async () => {
    // Day 2's database interleaves pages stored on day 1 with pages stored on day 2, so the
    // reader goes back and forth between old and new segments.
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, p, KEY);
    const db = fakeSqlite(600, 3);
    await backup(repo, sourceTree({ "chat.db": db }), { host: "h", paths: ["chat.db"] });
    for (let page = 1; page < 600; page += 4) rewritePage(db, page, 1000 + page);
    // No file cache: the fake source gives the changed file the same size and time.
    await backup(repo, sourceTree({ "chat.db": db }), {
      host: "h",
      paths: ["chat.db"],
      parent: null,
    });

    const { reader, hashed } = await countingReader(storage);
    const files = await latestFiles(reader);
    hashed.count = 0;
    const restored: Uint8Array[] = [];
    for await (const ev of readFiles(reader, files)) if (!ev.done) restored.push(ev.chunk);
    assert.deepEqual(Buffer.concat(restored), Buffer.from(db));
    assert.equal(hashed.count, 0, "blobs hashed by the reader instead of the segment opener");
  });

  it("trust the opener's check of a blob only for that ID at that place, and plan no more than given", async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, p, KEY);
    await backup(repo, sourceTree({ "chat.db": fakeSqlite(300, 6) }), { host: "h", paths: ["x"] });
    const { reader, hashed } = await countingReader(storage);
    const [file] = await latestFiles(reader);
    const ids = await reader.contentIdBytes(file.node);
    const reads = new BlobReads(reader, ids.subarray(0, 64));
    assert.throws(() => reads.next(1, BLOB_DATA), RangeError, "out of step: the plan is at 0");
    for (let i = 0; i < 2; i++) {
      const next = reads.next(i, BLOB_DATA);
      if (!(next instanceof Uint8Array)) await next;
    }
    assert.throws(() => reads.next(2, BLOB_DATA), RangeError, "past the two planned IDs");
    const first = ids.subarray(0, 32);
    const loc = reader.lookupId(first)!;
    hashed.count = 0;
    assert.ok(reader.readyBlobAt(first, loc, segmentKey(loc), BLOB_DATA));
    assert.equal(hashed.count, 0, "checked by the opener at this place");
    // Another ID said to live at that place (a forged index entry): hashed here, and refused.
    const other = new Uint8Array(first);
    other[31] ^= 1;
    assert.throws(
      () => reader.readyBlobAt(other, loc, segmentKey(loc), BLOB_DATA),
      (err: unknown) => err instanceof IntegrityError && /does not match its ID/.test(err.message),
    );
    assert.equal(hashed.count, 1);
    await assert.rejects(reader.loadBlobAt(first, loc, BLOB_TREE), IntegrityError);
  });

  it("refuse a file whose last ID is a page delta with no base after it, before reading it", async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, p, KEY);
    const pageBases = new MemoryPageBaseStore();
    const db = fakeSqlite(40, 2);
    const run = () =>
      backup(repo, sourceTree({ "chat.db": db }), { host: "h", paths: ["x"], pageBases });
    await run();
    db.fill(7, 5 * 4096 + 300, 5 * 4096 + 340);
    await run();
    const [file] = await latestFiles(repo);
    const entries = await repo.contentEntries(file.node);
    const delta = entries.find((e) => e.base !== undefined);
    assert.ok(delta, "the second backup stored a page delta");
    const broken: FileToRead = {
      path: "broken.db",
      node: {
        ...(file.node as FileNode),
        lists: undefined,
        content: [entries[0].id, delta.id],
        size: 8192,
      },
    };
    const chunks: Uint8Array[] = [];
    await assert.rejects(
      (async () => {
        for await (const ev of readFiles(repo, [broken])) if (!ev.done) chunks.push(ev.chunk);
      })(),
      (err: unknown) =>
        err instanceof IntegrityError &&
        /broken\.db: delta blob [0-9a-f]{64} has no base after it/.test(err.message),
    );
    assert.equal(chunks.length, 0, "nothing of the file was given out");
    await assert.rejects(repo.contentEntries(broken.node), IntegrityError);
  });

  it("give the memory of evicted segments back with `release`, and still restore byte for byte", async () => {
    // Media, and a database whose second day is mostly page deltas: each delta is taken one
    // call before its base, and must still be whole when the base arrives.
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, p, KEY);
    const pageBases = new MemoryPageBaseStore();
    const PAGES = 1500;
    const db = fakeSqlite(PAGES, 9);
    const media: Spec = {};
    for (let i = 0; i < 4; i++) media[`VID-${i}.mp4`] = randomBytes(1 << 20, 50 + i);
    const day = () =>
      backup(repo, sourceTree({ "chat.db": db, Media: media }), {
        host: "h",
        paths: ["chat.db", "Media"],
        pageBases,
      });
    await day();
    for (let page = 1; page < PAGES; page += 3) {
      db.fill(page & 255, page * 4096 + 300, page * 4096 + 340);
    }
    await day();

    const read = async (release: boolean) => {
      const reader = await Repository.open(storage, p, KEY);
      await reader.loadIndex();
      reader.segmentCacheBytes = 1 << 20;
      const files = await latestFiles(reader);
      const entries = await reader.contentEntries(files.find((f) => f.path === "chat.db")!.node);
      const seen = new Set<ArrayBufferLike>();
      const copies: Buffer[][] = files.map(() => []);
      for await (const ev of readFiles(reader, files, { release })) {
        if (ev.done) continue;
        seen.add(ev.chunk.buffer);
        copies[ev.file].push(Buffer.from(ev.chunk)); // used before the generator resumes
      }
      const freed = [...seen].filter((b) => (b as ArrayBuffer).detached).length;
      const content = new Map(files.map((f, i) => [f.path, Buffer.concat(copies[i])]));
      return { content, freed, deltas: entries.filter((e) => e.base !== undefined).length };
    };
    const kept = await read(false);
    const released = await read(true);
    assert.ok(released.deltas > 400, `${released.deltas} page deltas`);
    assert.deepEqual(released.content.get("chat.db"), Buffer.from(db));
    for (const [name, bytes] of Object.entries(media)) {
      assert.deepEqual(released.content.get(`Media/${name}`), Buffer.from(bytes as Uint8Array));
    }
    assert.equal(kept.freed, 0);
    assert.ok(released.freed > 10, `${released.freed} buffers freed`);
  });

  it("read a database alongside the media with `interleave`: every file whole, each in order, each pack byte about once", async () => {
    // A database whose second day is mostly page deltas (each must stay with its base) and media.
    const storage = new CountingStorage();
    const repo = await Repository.init(storage, p, KEY);
    const pageBases = new MemoryPageBaseStore();
    const PAGES = 3000;
    const db = fakeSqlite(PAGES, 11);
    const media: Spec = {};
    for (let i = 0; i < 16; i++) media[`VID-${i}.mp4`] = randomBytes(1 << 20, 70 + i);
    media["empty.txt"] = new Uint8Array(0);
    const day = () =>
      backup(repo, sourceTree({ Media: media, "chat.db": db }), {
        host: "h",
        paths: ["Media", "chat.db"],
        pageBases,
      });
    await day();
    for (let page = 1; page < PAGES; page += 3)
      db.fill(page & 255, page * 4096 + 8, page * 4096 + 40);
    await day();
    let packBytes = 0;
    for await (const { size } of storage.list("data")) packBytes += size;

    const reader = await Repository.open(storage, p, KEY);
    await reader.loadIndex();
    // A cache far smaller than the data, as a restore's is. A database segment is wanted again
    // after each piece of media: it must not leave the cache first in, first out as if read
    // once (42 % more pack bytes were read here that way).
    reader.segmentCacheBytes = 8 << 20;
    const files = await latestFiles(reader);
    const database = files.findIndex((f) => f.path === "chat.db");
    assert.ok(database > 0, "the database comes after the media in the snapshot");
    storage.dataBytes = 0;
    let order: readonly number[] = [];
    const copies: Buffer[][] = files.map(() => []);
    const done: number[] = [];
    const sequence: number[] = [];
    for await (const ev of readFiles(reader, files, {
      release: true,
      interleave: true,
      onOrder: (o) => {
        order = o;
      },
    })) {
      assert.ok(!done.includes(ev.file), `an event of file ${ev.file} after its end`);
      if (ev.done) done.push(ev.file);
      else copies[ev.file].push(Buffer.from(ev.chunk));
      if (sequence[sequence.length - 1] !== ev.file) sequence.push(ev.file);
    }
    assert.deepEqual(Buffer.concat(copies[database]), Buffer.from(db));
    for (const [f, { path }] of files.entries()) {
      if (f === database) continue;
      assert.deepEqual(
        Buffer.concat(copies[f]),
        Buffer.from(media[path.slice("Media/".length)] as Uint8Array),
      );
    }
    assert.deepEqual([...done].sort(), files.map((_, f) => f).sort(), "every file ends once");
    // The database starts first and is read in pieces between the media's.
    assert.equal(order[0], database);
    assert.deepEqual([...order].sort(), files.map((_, f) => f).sort());
    const switches = sequence.filter((f) => f === database).length;
    assert.ok(switches >= 4, `the database read in ${switches} stretches`);
    // About every pack byte once (0.99 here: some of the first day's database is not needed).
    assert.ok(
      storage.dataBytes <= packBytes * 1.05,
      `read ${storage.dataBytes} of ${packBytes} pack bytes`,
    );
  });

  it("order reads in pieces that keep pace by bytes and never part a delta from its base", () => {
    // Files 0 and 2: many small chunks; 1 and 3 large ones; 4 empty.
    const sizes = [4096 * 1000, 8 << 20, 4096 * 600, 4 << 20, 0];
    const counts = [1000, 8, 600, 4, 0];
    const deltas = counts.map((n) => new Uint8Array(n));
    for (let i = 0; i + 1 < 1000; i += 2) deltas[0][i] = 1; // every page a delta and its base
    const pieces = readOrder(sizes, counts, deltas, 256 * 1024);
    // Each file's entries once, in order, with no gap.
    const next = counts.map(() => 0);
    for (const { file, from, to } of pieces) {
      assert.equal(from, next[file], `file ${file} continues where it stopped`);
      assert.ok(to >= from && to <= counts[file]);
      if (from > 0) assert.equal(deltas[file][from - 1], 0, "a piece starts after a delta's base");
      next[file] = to;
    }
    assert.deepEqual(next, counts);
    // Both streams advance together: after each piece, their shares of bytes read differ by
    // little (a piece of the large files is one 1 MiB chunk, an eighth of file 1).
    const small = 4096 * 1600;
    const large = 12 << 20;
    let readSmall = 0;
    let readLarge = 0;
    for (const { file, from, to } of pieces) {
      const bytes = counts[file] ? ((to - from) * sizes[file]) / counts[file] : 0;
      if (file === 0 || file === 2) readSmall += bytes;
      else readLarge += bytes;
      assert.ok(Math.abs(readSmall / small - readLarge / large) < 0.15, "the streams keep pace");
    }
    // Without a piece size, or with one stream empty: each file whole, in order.
    const whole = counts.map((n, file) => ({ file, from: 0, to: n }));
    assert.deepEqual(readOrder(sizes, counts, deltas), whole);
    assert.deepEqual(
      readOrder([8 << 20, 0], [8, 0], [new Uint8Array(8), new Uint8Array(0)], 1 << 18),
      [
        { file: 0, from: 0, to: 8 },
        { file: 1, from: 0, to: 0 },
      ],
    );
  });

  it("keep each blob a releasing BlobReads returns whole until the second call after it", async () => {
    const { reader, files } = await mediaAndDatabase();
    const ids = await Promise.all(files.map((f) => reader.contentIdBytes(f.node)));
    for (const cache of [64 * 1024, 1 << 20, 4 << 20]) {
      reader.segmentCacheBytes = cache;
      const reads = new BlobReads(reader, concat(...ids), { release: true });
      let last: { blob: Uint8Array; copy: Buffer } | undefined;
      let detached = 0;
      for (let i = 0; i < ids.reduce((n, part) => n + part.length / 32, 0); i++) {
        const next = reads.next(i, BLOB_DATA);
        const blob = next instanceof Uint8Array ? next : await next;
        // The blob of the call before this one is still what it was.
        if (last) assert.deepEqual(Buffer.from(last.blob), last.copy, `cache ${cache}`);
        if ((last?.blob.buffer as ArrayBuffer | undefined)?.detached) detached++;
        last = { blob, copy: Buffer.from(blob) };
      }
      reads.close();
      assert.equal(detached, 0);
    }
  });

  it("take a blob without waiting once its segment has arrived, checked as loadBlob checks it", async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, p, KEY);
    await backup(repo, sourceTree({ "chat.db": fakeSqlite(50, 4) }), { host: "h", paths: ["x"] });
    const files = await latestFiles(repo);
    // A second device: nothing in its segment cache.
    const reader = await Repository.open(storage, p, KEY);
    await reader.loadIndex();
    const [first, second] = await reader.contentIds(files[0].node);
    // As a restore asks: the location looked up first, by the ID's bytes.
    const ready = (hex: string, type: BlobType) => {
      const id = fromHex(hex);
      const loc = reader.lookupId(id);
      return loc && reader.readyBlobAt(id, loc, segmentKey(loc), type);
    };
    assert.equal(ready(first, BLOB_DATA), undefined, "its segment is not read yet");
    const loaded = await reader.loadBlob(first, BLOB_DATA);
    assert.deepEqual(ready(first, BLOB_DATA), loaded);
    // Its neighbour shares the segment: ready too, and verified (no opener checked it here).
    assert.deepEqual(ready(second, BLOB_DATA), await reader.loadBlob(second, BLOB_DATA));
    assert.throws(() => ready(first, BLOB_TREE), IntegrityError);
    assert.equal(ready("00".repeat(32), BLOB_DATA), undefined);
  });
});
