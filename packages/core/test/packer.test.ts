/**
 * The packer writing packs in parts (`Storage.createWriter`), against an in-memory backend that
 * offers it; MemoryStorage itself does not, so every other engine test covers the buffered path.
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { concat, toHex } from "../src/bytes.ts";
import { backup } from "../src/engine/backup.ts";
import { Packer } from "../src/engine/packer.ts";
import type { SourceEntry } from "../src/engine/source.ts";
import { StorageError } from "../src/errors.ts";
import { BLOB_DATA, blobId } from "../src/format/blob.ts";
import { openIndex, sealIndex } from "../src/format/index-file.ts";
import { readTrailerLength } from "../src/format/pack.ts";
import { Repository } from "../src/repository.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { BufferedObjectWriter, SpareBuffers } from "../src/storage/object-writer.ts";
import type { ObjectKind, ObjectWriter } from "../src/storage/storage.ts";
import { FILE_MODE, MTIME, names, p, randomBytes, restoreToMemory, sourceTree } from "./helpers.ts";
import { storageConformance } from "./storage-conformance.ts";

/**
 * MemoryStorage with `createWriter`: parts are kept apart until `commit` saves them whole (so
 * `failAfter` applies to commits too). Writes settle on a later turn of the event loop, as a
 * disk's do; `failWriteAt` makes the write with that number (from 0) fail.
 */
class PartsStorage extends MemoryStorage {
  writes = 0;
  aborted = 0;
  failWriteAt: number | undefined;

  async createWriter(kind: ObjectKind): Promise<ObjectWriter> {
    if (kind === "config") throw new StorageError("config has a fixed name");
    const parts: Uint8Array[] = [];
    let failure: StorageError | undefined;
    let done = false;
    const inflight: Promise<void>[] = [];
    return {
      write: (...data) => {
        if (done) return Promise.reject(new StorageError("write after commit or abort"));
        const n = this.writes++;
        const at = parts.length;
        parts.push(new Uint8Array(0)); // the slot keeps the call order
        const write = new Promise<void>((resolve, reject) =>
          setImmediate(() => {
            if (n === this.failWriteAt) {
              failure ??= new StorageError(`injected write fault (write ${n})`);
              reject(failure);
              return;
            }
            parts[at] = concat(...data);
            resolve();
          }),
        );
        inflight.push(write.catch(() => {}));
        return write;
      },
      commit: async (name) => {
        if (done) throw new StorageError("commit after commit or abort");
        done = true;
        await Promise.all(inflight);
        if (failure) throw failure;
        await this.save(kind, name, concat(...parts));
      },
      abort: async () => {
        if (done) return;
        done = true;
        this.aborted++;
        await Promise.all(inflight);
      },
    };
  }
}

storageConformance(
  "MemoryStorage with createWriter (this file's test backend)",
  async () => ({ storage: new PartsStorage(), cleanup: async () => {} }),
  { writesInParts: true },
);

const KEY = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);
const OPTS = { host: "test-host", paths: ["media"] };

/** 20 MiB of incompressible media: two packs of about 16 MiB. */
const media = {
  media: {
    "a.mp4": randomBytes(12 * 1024 * 1024, 1),
    "b.jpg": randomBytes(8 * 1024 * 1024, 2),
  },
};

describe("Packer", () => {
  it("lists its packs for an index file the same, decoded or as encoded entries", async () => {
    const repo = await Repository.init(new MemoryStorage(), p, KEY);
    const packer = new Packer(repo);
    for (let i = 0; i < 300; i++) {
      const data = randomBytes(4096 + i, i);
      await packer.add(BLOB_DATA, blobId(p, repo.keys.id, BLOB_DATA, data), data, true);
    }
    await packer.flush();
    const [decoded, encoded] = await Promise.all(
      [packer.stored, packer.storedEncoded].map(async (packs) =>
        openIndex(p, repo.keys, await sealIndex(p, repo.keys, packs), "test"),
      ),
    );
    assert.equal(decoded.packs[0].entries.length, 300);
    assert.deepEqual(encoded, decoded);
  });
});

describe("Packer writing packs in parts", () => {
  it("stores the same blobs as the buffered path, each pack named by the SHA-256 of its trailer", async () => {
    const parts = new PartsStorage();
    const repo = await Repository.init(parts, p, KEY);
    const result = await backup(repo, sourceTree(media, { compressible: false }), OPTS);
    const packs = await names(parts, "data");
    assert.equal(packs.length, 2);
    assert.ok(parts.writes > 4 * packs.length, `segments written one by one (${parts.writes})`);
    for (const name of packs) {
      // The trailer: the sealed header and its length, the pack's last bytes (SPEC §7).
      const bytes = await parts.load("data", name);
      const headerLength = readTrailerLength(bytes, bytes.length, name);
      assert.equal(toHex(p.sha256(bytes.subarray(bytes.length - 4 - headerLength))), name);
      assert.notEqual(toHex(p.sha256(bytes)), name);
    }
    const reader = await Repository.open(parts, p, KEY);
    await reader.loadIndex();
    assert.deepEqual(await restoreToMemory(reader, result.snapshot.tree), media);

    // The buffered path (MemoryStorage has no createWriter) lays out the same blobs.
    const buffered = new MemoryStorage();
    const other = await Repository.init(buffered, p, KEY);
    await backup(other, sourceTree(media, { compressible: false }), OPTS);
    const blobs = async (storage: MemoryStorage) => {
      const r = await Repository.open(storage, p, KEY);
      return (await r.livePacks()).flatMap((pk) => pk.entries.map((e) => toHex(e.id))).sort();
    };
    assert.deepEqual(await blobs(parts), await blobs(buffered));
  });

  it("fails the backup on a write error, removes the pack being written, and the next run completes", async () => {
    const parts = new PartsStorage();
    const repo = await Repository.init(parts, p, KEY);
    parts.failWriteAt = 5;
    await assert.rejects(
      backup(repo, sourceTree(media, { compressible: false }), OPTS),
      (err: unknown) => err instanceof StorageError && /injected write fault/.test(err.message),
    );
    assert.equal(parts.aborted, 1, "the pack being written was aborted");
    assert.deepEqual(await names(parts, "data"), []);
    assert.deepEqual(await names(parts, "snapshots"), []);

    parts.failWriteAt = undefined;
    const again = await Repository.open(parts, p, KEY);
    const result = await backup(again, sourceTree(media, { compressible: false }), OPTS);
    const reader = await Repository.open(parts, p, KEY);
    await reader.loadIndex();
    assert.deepEqual(await restoreToMemory(reader, result.snapshot.tree), media);
  });

  it("removes the pack being written when the source fails mid-file", async () => {
    const parts = new PartsStorage();
    const repo = await Repository.init(parts, p, KEY);
    // Enough that segments reach storage before the failure (chunks wait for 4 MiB of lookahead).
    const data = randomBytes(12 * 1024 * 1024, 3);
    const failing: SourceEntry = {
      type: "file",
      name: "broken.mp4",
      mode: FILE_MODE,
      mtimeMs: MTIME,
      size: 2 * data.length,
      compressible: false,
      async *open() {
        yield data;
        throw new StorageError("the source disk went away");
      },
    };
    await assert.rejects(
      backup(repo, [failing], { host: "test-host", paths: ["broken.mp4"] }),
      /the source disk went away/,
    );
    assert.equal(parts.aborted, 1);
    assert.deepEqual(await names(parts, "data"), []);
  });
});

describe("BufferedObjectWriter with spare buffers", () => {
  it("reuses a saved object's buffer for the next object, and every object keeps its bytes", async () => {
    const storage = new MemoryStorage();
    const spare = new SpareBuffers(1);
    const objects = [randomBytes(300_000, 1), randomBytes(200_000, 2), randomBytes(250_000, 3)];
    for (const [k, bytes] of objects.entries()) {
      const writer = new BufferedObjectWriter(storage, "data", 300_000, spare);
      if (k > 0) assert.equal(spare.take(1), undefined, "the spare buffer went to this writer");
      await writer.write(bytes.subarray(0, 1000), bytes.subarray(1000));
      await writer.commit(toHex(randomBytes(32, 10 + k)));
    }
    for (const [k, bytes] of objects.entries()) {
      assert.deepEqual(await storage.load("data", toHex(randomBytes(32, 10 + k))), bytes);
    }
    const kept = spare.take(300_000);
    assert.ok(kept && kept.byteLength >= 300_000, "the last buffer was kept");
    assert.equal(spare.take(1), undefined, "at most one kept");
  });

  it("gives a buffer back only once its save is done: a writer started meanwhile gets another", async () => {
    // A storage that takes its copy of `data` a while after the call.
    const storage = new (class extends MemoryStorage {
      override async save(kind: ObjectKind, name: string, data: Uint8Array) {
        await new Promise((r) => setTimeout(r, 5));
        return super.save(kind, name, data);
      }
    })();
    const spare = new SpareBuffers(2);
    const warm = new BufferedObjectWriter(storage, "data", 100_000, spare);
    await warm.write(randomBytes(100_000, 20));
    await warm.commit(toHex(randomBytes(32, 21)));
    const [a, b] = [randomBytes(100_000, 22), randomBytes(100_000, 23)];
    const first = new BufferedObjectWriter(storage, "data", 100_000, spare);
    await first.write(a);
    const saving = first.commit(toHex(randomBytes(32, 24)));
    const second = new BufferedObjectWriter(storage, "data", 100_000, spare);
    await second.write(b);
    await Promise.all([saving, second.commit(toHex(randomBytes(32, 25)))]);
    assert.deepEqual(await storage.load("data", toHex(randomBytes(32, 24))), a);
    assert.deepEqual(await storage.load("data", toHex(randomBytes(32, 25))), b);
  });

  it("keeps no buffer whose save failed", async () => {
    const storage = new MemoryStorage();
    storage.failAfter = 0;
    const spare = new SpareBuffers();
    const writer = new BufferedObjectWriter(storage, "data", 100_000, spare);
    await writer.write(randomBytes(100_000, 4));
    await assert.rejects(writer.commit(toHex(randomBytes(32, 5))), StorageError);
    assert.equal(spare.take(1), undefined);
  });
});
