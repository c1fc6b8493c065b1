import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { MemoryStorage } from "../../core/src/storage/memory.ts";
import type { ObjectKind } from "../../core/src/storage/storage.ts";
import {
  assertBytes,
  listAll,
  randomData,
  storageConformance,
} from "../../core/test/storage-conformance.ts";
import { CachedStorage } from "../src/storage/cached.ts";
import { FsStorage } from "../src/storage/fs.ts";

storageConformance("CachedStorage over MemoryStorage", async () => {
  const dir = await mkdtemp(join(tmpdir(), "locket-cached-"));
  return {
    storage: new CachedStorage(new MemoryStorage(), dir),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

storageConformance(
  "CachedStorage over FsStorage",
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "locket-cached-"));
    return {
      storage: new CachedStorage(await FsStorage.create(join(dir, "repo")), join(dir, "cache")),
      cleanup: () => rm(dir, { recursive: true, force: true }),
    };
  },
  { writesInParts: true },
);

/** MemoryStorage that counts whole loads per kind. */
class CountingStorage extends MemoryStorage {
  loads: Partial<Record<ObjectKind, number>> = {};
  override async load(kind: ObjectKind, name: string, offset?: number, length?: number) {
    if (offset === undefined && length === undefined) {
      this.loads[kind] = (this.loads[kind] ?? 0) + 1;
    }
    return super.load(kind, name, offset, length);
  }
}

/** Bytes and their name as an index file or snapshot has it: the SHA-256 of the bytes. */
function addressed(n: number): { name: string; bytes: Uint8Array } {
  const bytes = randomData(n);
  return { name: createHash("sha256").update(bytes).digest("hex"), bytes };
}

describe("CachedStorage", () => {
  let base: string;
  let n = 0;
  const fresh = () => {
    const inner = new CountingStorage();
    const dir = join(base, `cache${n++}`);
    return { inner, dir, cached: new CachedStorage(inner, dir) };
  };
  before(async () => {
    base = await mkdtemp(join(tmpdir(), "locket-cached-"));
  });
  after(() => rm(base, { recursive: true, force: true }));

  it("reads an index file or snapshot from the storage once, then from its copy", async () => {
    const { inner, dir, cached } = fresh();
    const snap = addressed(500);
    await inner.save("snapshots", snap.name, snap.bytes);
    assertBytes(await cached.load("snapshots", snap.name), snap.bytes);
    assertBytes(await cached.load("snapshots", snap.name), snap.bytes);
    assert.equal(inner.loads.snapshots, 1);
    // Another process (a new CachedStorage on the same folder) uses the copy too.
    assertBytes(await new CachedStorage(inner, dir).load("snapshots", snap.name), snap.bytes);
    assert.equal(inner.loads.snapshots, 1);
  });

  it("keeps what it saves, and reads packs, the config and ranges from the storage", async () => {
    const { inner, cached } = fresh();
    const index = addressed(300);
    await cached.save("index", index.name, index.bytes);
    assertBytes(await cached.load("index", index.name), index.bytes);
    assert.equal(inner.loads.index ?? 0, 0, "the saved copy served the read");
    const pack = addressed(1000);
    await cached.save("data", pack.name, pack.bytes);
    await cached.load("data", pack.name);
    await cached.load("data", pack.name);
    assert.equal(inner.loads.data, 2, "packs are never kept");
    assertBytes(await cached.load("index", index.name, 10, 20), index.bytes.subarray(10, 30));
  });

  it("reads again a copy whose bytes no longer hash to its name", async () => {
    const { inner, dir, cached } = fresh();
    const snap = addressed(400);
    await inner.save("snapshots", snap.name, snap.bytes);
    await cached.load("snapshots", snap.name);
    const copy = join(dir, "snapshots", snap.name);
    const damaged = await readFile(copy);
    damaged[0] ^= 1;
    await writeFile(copy, damaged);
    assertBytes(await cached.load("snapshots", snap.name), snap.bytes);
    assert.equal(inner.loads.snapshots, 2);
    assertBytes(await readFile(copy), snap.bytes, "the copy is replaced");
  });

  it("drops the copies of objects a whole listing no longer names, and of removed ones", async () => {
    const { inner, dir, cached } = fresh();
    const [a, b, c] = [addressed(100), addressed(200), addressed(300)];
    for (const x of [a, b, c]) await cached.save("index", x.name, x.bytes);
    await cached.remove("index", a.name);
    await inner.remove("index", b.name); // removed by another device
    const stale = join(dir, "index", ".left-by-a-killed-write.tmp");
    const young = join(dir, "index", ".being-written.tmp");
    await writeFile(stale, "x");
    await writeFile(young, "y");
    const old = new Date(Date.now() - 2 * 3_600_000);
    await utimes(stale, old, old);
    // A listing stopped early drops nothing.
    for await (const _ of cached.list("index")) break;
    assert.equal((await readdir(join(dir, "index"))).length, 4);
    assert.deepEqual(
      (await listAll(cached, "index")).map((o) => o.name),
      [c.name],
    );
    assert.deepEqual((await readdir(join(dir, "index"))).sort(), [".being-written.tmp", c.name]);
  });

  it("works without its folder: a cache that cannot be written costs reads, never a failure", async () => {
    const inner = new CountingStorage();
    const blocker = join(base, `file${n++}`);
    await writeFile(blocker, "not a folder");
    const cached = new CachedStorage(inner, join(blocker, "cache"));
    const snap = addressed(100);
    await cached.save("snapshots", snap.name, snap.bytes);
    assertBytes(await cached.load("snapshots", snap.name), snap.bytes);
    assertBytes(await cached.load("snapshots", snap.name), snap.bytes);
    assert.equal(inner.loads.snapshots, 2);
    assert.deepEqual(
      (await listAll(cached, "snapshots")).map((o) => o.name),
      [snap.name],
    );
  });
});
