import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ByteWriter, concat, fromHex as fromHexId, fromUtf8, toHex, utf8 } from "../src/bytes.ts";
import { AAD, seal } from "../src/crypto/seal.ts";
import { backup } from "../src/engine/backup.ts";
import { check } from "../src/engine/check.ts";
import { forget } from "../src/engine/forget.ts";
import { checkFreshness } from "../src/engine/freshness.ts";
import { PACK_TARGET_BYTES, Packer } from "../src/engine/packer.ts";
import { prune } from "../src/engine/prune.ts";
import { readFile, walk } from "../src/engine/restore.ts";
import {
  IntegrityError,
  LocketError,
  RollbackError,
  StorageError,
  UnsupportedVersionError,
  WrongKeyError,
} from "../src/errors.ts";
import {
  BLOB_DATA,
  BLOB_DELTA,
  BLOB_LIST,
  BLOB_LIST_PATCH,
  BLOB_TREE,
  type BlobType,
  blobId,
  MAX_BLOB_BYTES,
} from "../src/format/blob.ts";
import { MAX_INDEX_BYTES, sealIndex } from "../src/format/index-file.ts";
import {
  MAX_SEGMENT_BYTES,
  type PackEntry,
  packName,
  sealPackTrailer,
} from "../src/format/pack.ts";
import { PAYLOAD_STORED, PAYLOAD_ZSTD } from "../src/format/payload.ts";
import { openSnapshot, type Snapshot } from "../src/format/snapshot.ts";
import type { FileNode } from "../src/format/tree.ts";
import { Repository, type SnapshotRef } from "../src/repository.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import {
  fakeSqlite,
  isLocketError,
  names,
  p,
  randomBytes,
  restoreChecked,
  restoreToMemory,
  type Spec,
  sourceTree,
  storedBytes,
  textBytes,
} from "./helpers.ts";

const KEY = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);
const OTHER_KEY = Uint8Array.from({ length: 32 }, (_, i) => i);

function run(repo: Repository, spec: Spec, opts: { minSeq?: number } = {}) {
  return backup(repo, sourceTree(spec), {
    host: "test-host",
    paths: Object.keys(spec),
    minSeq: opts.minSeq,
  });
}

function baseSpec(seed = 1): Spec {
  return {
    "chat.db": fakeSqlite(200, seed),
    "notes.txt": textBytes(300_000, seed + 1),
    Media: { "a.jpg": randomBytes(1_500_000, seed + 2) },
  };
}

/** A repository holding one snapshot of `baseSpec()`, in one pack and one index file. */
async function setup() {
  const storage = new MemoryStorage();
  const repo = await Repository.init(storage, p, KEY);
  const spec = baseSpec();
  const result = await run(repo, spec);
  const [pack, ...morePacks] = await names(storage, "data");
  const [index, ...moreIndexes] = await names(storage, "index");
  assert.equal(morePacks.length, 0, "the base repository has one pack");
  assert.equal(moreIndexes.length, 0, "the base repository has one index file");
  return { storage, repo, spec, result, pack, index };
}

/** A second device: a newly opened repository with its index loaded. */
async function reader(storage: MemoryStorage, key = KEY): Promise<Repository> {
  const repo = await Repository.open(storage, p, key);
  await repo.loadIndex();
  return repo;
}

/** The snapshot `id` as a reader sees it, without listing (so damaged snapshots do not matter). */
async function refOf(repo: Repository, id: string): Promise<SnapshotRef> {
  const bytes = await repo.loadVerified("snapshots", id);
  return { id, snapshot: await openSnapshot(p, repo.keys, bytes, `snapshots/${id}`) };
}

/** The pack's segments, with the blob types each holds. */
async function segmentsOf(storage: MemoryStorage, pack: string) {
  const repo = await Repository.open(storage, p, KEY);
  const entries = (await repo.livePacks())
    .filter((ip) => toHex(ip.packId) === pack)
    .flatMap((ip) => ip.entries);
  const byOffset = new Map<number, { offset: number; length: number; types: Set<BlobType> }>();
  for (const e of entries) {
    const seg = byOffset.get(e.segmentOffset) ?? {
      offset: e.segmentOffset,
      length: e.segmentLength,
      types: new Set<BlobType>(),
    };
    seg.types.add(e.type);
    byOffset.set(e.segmentOffset, seg);
  }
  return [...byOffset.values()].sort((a, b) => a.offset - b.offset);
}

function expectIntegrity(err: unknown, object?: string): void {
  assert.ok(err instanceof IntegrityError, `expected IntegrityError, got ${String(err)}`);
  isLocketError(err, "integrity", object);
  if (object !== undefined) assert.equal(err.object, object);
}

/** Asserts that `promise` rejects with an IntegrityError (naming `object`, when given). */
async function rejectsIntegrity(promise: Promise<unknown>, object?: string): Promise<void> {
  await assert.rejects(promise, (err) => {
    expectIntegrity(err, object);
    return true;
  });
}

/**
 * `check --read-data` of a repository holding pack `name`, which no index names and whose header
 * does not read: a warning that it is damaged (no backup adopts it, nothing refers to it), no
 * error, and no damaged leftover read whole.
 */
async function damagedLeftoverWarned(storage: MemoryStorage, name: string): Promise<void> {
  const full = await check(await Repository.open(storage, p, KEY), { readData: true });
  assert.deepEqual(full.errors, []);
  const note = full.warnings.find((w) => w.object === `data/${name}`);
  assert.match(note?.message ?? "", /and damaged \(.+\): no backup will adopt it/);
  const damaged = full.warnings.filter((w) => /and damaged/.test(w.message));
  assert.equal(full.packsRead, full.packs - damaged.length, "damaged leftovers are not read");
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** Replaces `kind/name`'s bytes; returns a function that puts the original back. */
function damage(
  storage: MemoryStorage,
  kind: "data" | "index" | "snapshots" | "config",
  name: string,
  mutate: (b: Uint8Array) => Uint8Array,
): () => void {
  let original = new Uint8Array(0);
  storage.corrupt(kind, name, (b) => {
    original = b.slice();
    return mutate(b);
  });
  return () => storage.corrupt(kind, name, () => original);
}

const flip = (at: (b: Uint8Array) => number) => (b: Uint8Array) => {
  b[at(b)] ^= 0x40;
  return b;
};

/** Seals a hand-made payload: encoding byte, declared raw length, body. */
function payload(encoding: number, rawLength: number, body: Uint8Array): Uint8Array {
  const w = new ByteWriter(5 + body.length);
  w.u8(encoding);
  w.u32(rawLength);
  w.bytes(body);
  return w.finish().slice();
}

/** Stores a pack made of `segments` and a header listing `entries`; indexes it when asked. */
async function storePack(
  repo: Repository,
  segments: Uint8Array[],
  entries: PackEntry[],
  index: boolean,
): Promise<{ name: string; index?: string }> {
  const trailer = await sealPackTrailer(p, repo.keys, entries);
  const name = packName(p, trailer);
  await repo.storage.save("data", name, concat(...segments, trailer));
  if (!index) return { name };
  return { name, index: (await repo.saveIndex([{ packId: fromHexId(name), entries }])).name };
}

/** Stores blobs with the repository's real keys through the Packer, and indexes them. */
async function storeBlobs(
  repo: Repository,
  blobs: { type: BlobType; bytes: Uint8Array }[],
): Promise<string[]> {
  const packer = new Packer(repo);
  const ids: string[] = [];
  for (const b of blobs) {
    const id = blobId(p, repo.keys.id, b.type, b.bytes);
    ids.push(toHex(id));
    if (!packer.hasId(id)) await packer.add(b.type, id, b.bytes, true);
  }
  await packer.flush();
  if (packer.stored.length) await repo.saveIndex(packer.stored);
  return ids;
}

const treeBytes = (nodes: unknown) => utf8(JSON.stringify({ nodes }));
const fileNode = (over: Record<string, unknown> = {}) => ({
  type: "file",
  name: "ok.txt",
  mode: 0o644,
  mtimeMs: 0,
  size: 0,
  content: [],
  ...over,
});

describe("opening a repository", () => {
  it("a wrong root key fails with WrongKeyError", async () => {
    const { storage } = await setup();
    await assert.rejects(Repository.open(storage, p, OTHER_KEY), (err) => {
      assert.ok(err instanceof WrongKeyError);
      return isLocketError(err, "wrong_key");
    });
  });

  it("a config with version 2 fails with UnsupportedVersionError", async () => {
    const { storage } = await setup();
    damage(storage, "config", "config", (b) =>
      utf8(JSON.stringify({ ...JSON.parse(fromUtf8(b)), version: 2 })),
    );
    await assert.rejects(Repository.open(storage, p, KEY), (err) => {
      assert.ok(err instanceof UnsupportedVersionError);
      return isLocketError(err, "unsupported_version");
    });
  });

  it("a config that is not a Locket JSON config fails with IntegrityError", async () => {
    const { storage } = await setup();
    const good = fromUtf8(await storage.load("config", "config"));
    const bad = [
      utf8("{not json"),
      Uint8Array.of(0xff, 0xfe, 0x7b, 0x7d),
      utf8("null"),
      utf8("42"),
      utf8("[]"),
      new Uint8Array(0),
      utf8(JSON.stringify({ ...JSON.parse(good), locket: "other" })),
      utf8(JSON.stringify({ ...JSON.parse(good), id: "../../etc" })),
      utf8(JSON.stringify({ ...JSON.parse(good), keyCheck: 7 })),
      utf8(good.slice(0, good.length / 2)),
    ];
    for (const b of bad) {
      damage(storage, "config", "config", () => b);
      await rejectsIntegrity(Repository.open(storage, p, KEY), "config");
    }
  });
});

describe("damaged data packs", () => {
  it("a flipped byte in a data segment: restore fails naming the pack, check --read-data finds it", async () => {
    const { storage, spec, result, pack } = await setup();
    const segs = await segmentsOf(storage, pack);
    const dataOnly = segs.find((s) => s.types.size === 1 && s.types.has(BLOB_DATA));
    assert.ok(dataOnly, "a segment holding only data blobs");
    const object = `data/${pack}`;
    for (const at of [0, 12, Math.floor(dataOnly.length / 2), dataOnly.length - 1]) {
      const restore = damage(
        storage,
        "data",
        pack,
        flip(() => dataOnly.offset + at),
      );
      const repo = await reader(storage);
      expectIntegrity(await restoreChecked(repo, await refOf(repo, result.id), spec), object);

      const quick = await check(await Repository.open(storage, p, KEY));
      assert.deepEqual(quick.errors, [], "structure is intact");
      const full = await check(await Repository.open(storage, p, KEY), { readData: true });
      assert.ok(
        full.errors.some((e) => e.object === object),
        `check --read-data names ${object}: ${JSON.stringify(full.errors)}`,
      );
      restore();
    }
    const repo = await reader(storage);
    assert.equal(await restoreChecked(repo, await refOf(repo, result.id), spec), undefined);
  });

  it("a flipped byte in the pack header: data still verifies, check and header reads name the pack", async () => {
    // Restore reads blobs through the index, never the pack header, and verifies every blob
    // against its keyed ID; so header damage cannot let a wrong byte through. It must be reported
    // by check --read-data and by anything that reads the header.
    const { storage, spec, result, pack } = await setup();
    const size = (await storage.stat("data", pack)).size;
    const object = `data/${pack}`;
    for (const at of [size - 100, size - 30, size - 5, size - 1]) {
      const restore = damage(
        storage,
        "data",
        pack,
        flip(() => at),
      );
      const repo = await reader(storage);
      assert.equal(await restoreChecked(repo, await refOf(repo, result.id), spec), undefined);
      await rejectsIntegrity(repo.readPackHeader(pack), object);
      const full = await check(await Repository.open(storage, p, KEY), { readData: true });
      assert.ok(full.errors.some((e) => e.object === object));
      restore();
    }
  });

  for (const [label, cut] of [
    ["the last 10 bytes cut", (b: Uint8Array) => b.subarray(0, b.length - 10)],
    ["cut to half", (b: Uint8Array) => b.subarray(0, b.length >> 1)],
    ["cut to 3 bytes", (b: Uint8Array) => b.subarray(0, 3)],
  ] as const) {
    it(`a truncated pack (${label}) never restores wrong bytes and fails check --read-data`, async () => {
      const { storage, spec, result, pack } = await setup();
      damage(storage, "data", pack, cut);
      const object = `data/${pack}`;
      const repo = await reader(storage);
      const err = await restoreChecked(repo, await refOf(repo, result.id), spec);
      // Cutting the header's tail leaves every segment intact (and restore verifies every blob),
      // so restore succeeds; cutting into segments must fail naming the pack.
      if (label === "the last 10 bytes cut") assert.equal(err, undefined);
      else expectIntegrity(err, object);
      await rejectsIntegrity(repo.readPackHeader(pack), object);
      const full = await check(await Repository.open(storage, p, KEY), { readData: true });
      assert.ok(
        full.errors.some((e) => e.object === object),
        JSON.stringify(full.errors),
      );
    });
  }

  it("a pack that storage fails to serve is a storage error, not damage", async () => {
    // A dropped connection, a denied read or a CORS refusal says nothing about the bytes.
    const { storage, spec, result } = await setup();
    const repo = await reader(storage);
    const load = storage.load.bind(storage);
    storage.load = async (kind, name, offset, length) => {
      if (kind === "data") throw new StorageError("connection reset by peer");
      return load(kind, name, offset, length);
    };
    const err = await restoreChecked(repo, await refOf(repo, result.id), spec);
    assert.ok(err instanceof StorageError && !(err instanceof IntegrityError), String(err));
    assert.match(err.message, /connection reset/);
    // check --read-data reports such packs, and the snapshot whose tree is in one, as
    // unreadable (state unknown), not as damage.
    const report = await check(await Repository.open(storage, p, KEY), { readData: true });
    assert.deepEqual(report.errors, []);
    const expected = [`snapshots/${result.id}`];
    for await (const { name } of storage.list("data")) expected.push(`data/${name}`);
    assert.deepEqual(report.unreadable.map((u) => u.object).sort(), expected.sort());
    assert.ok(report.unreadable.every((u) => u.message.includes("connection reset")));
  });

  it("check: an index file that storage fails to serve stops the check with the storage error", async () => {
    // Without that index file every blob it lists would look missing: damage that is not there.
    const { storage } = await setup();
    const repo = await Repository.open(storage, p, KEY);
    const load = storage.load.bind(storage);
    storage.load = async (kind, name, offset, length) => {
      if (kind === "index") throw new StorageError("connection reset by peer");
      return load(kind, name, offset, length);
    };
    await assert.rejects(
      check(repo),
      (err) => err instanceof StorageError && !(err instanceof IntegrityError),
    );
  });

  it("a deleted pack: check reports it missing, restore fails naming it", async () => {
    const { storage, spec, result, pack } = await setup();
    await storage.remove("data", pack);
    const object = `data/${pack}`;
    const report = await check(await Repository.open(storage, p, KEY));
    assert.ok(
      report.errors.some((e) => e.object === object && e.message.includes("missing")),
      JSON.stringify(report.errors),
    );
    const repo = await reader(storage);
    const err = await restoreChecked(repo, await refOf(repo, result.id), spec);
    expectIntegrity(err, object);
    assert.match((err as Error).message, /missing/);
  });

  it("two packs swapped under each other's names fail restore and check", async () => {
    const { storage, repo, spec, result: first } = await setup();
    const spec2 = baseSpec(50);
    const second = await run(repo, spec2);
    const [a, b] = await names(storage, "data");
    assert.ok(a && b);
    const bytesA = await storage.load("data", a);
    const bytesB = await storage.load("data", b);
    storage.corrupt("data", a, () => bytesB);
    storage.corrupt("data", b, () => bytesA);
    const r = await reader(storage);
    for (const [ref, s] of [
      [first.id, spec],
      [second.id, spec2],
    ] as const) {
      const err = await restoreChecked(r, await refOf(r, ref), s);
      expectIntegrity(err);
      assert.match((err as IntegrityError).object ?? "", /^data\/[0-9a-f]{64}$/);
    }
    const full = await check(await Repository.open(storage, p, KEY), { readData: true });
    const objects = new Set(full.errors.map((e) => e.object));
    assert.ok(objects.has(`data/${a}`) && objects.has(`data/${b}`));
  });

  it("an index entry forged to point at another blob's bytes fails as swapped data", async () => {
    const { storage, repo, spec, result, index, pack } = await setup();
    const packs = await (await Repository.open(storage, p, KEY)).livePacks();
    const entries = packs[0].entries.map((e) => ({ ...e }));
    const data = entries.filter((e) => e.type === BLOB_DATA);
    const [x, y] = [data[0], data[1]];
    [x.id, y.id] = [y.id, x.id];
    await storage.remove("index", index);
    await repo.saveAddressed("index", await sealIndex(p, repo.keys, [{ ...packs[0], entries }]));
    const r = await reader(storage);
    expectIntegrity(await restoreChecked(r, await refOf(r, result.id), spec), `data/${pack}`);
    // Without reading the data, check finds the index and the pack's header disagreeing.
    for (const readData of [false, true]) {
      const report = await check(await Repository.open(storage, p, KEY), { readData });
      assert.ok(
        report.errors.some(
          (e) =>
            e.object === `data/${pack}` && /entries are not what the index gives/.test(e.message),
        ),
        `readData ${readData}: ${JSON.stringify(report.errors)}`,
      );
    }
  });
});

describe("pack names (SPEC §7: the SHA-256 of the trailer)", () => {
  it("check without --read-data reads every pack's header: a healthy repository passes", async () => {
    const { storage } = await setup();
    await run(await Repository.open(storage, p, KEY), { "more.bin": randomBytes(200_000, 78) });
    const report = await check(await Repository.open(storage, p, KEY));
    assert.deepEqual(report.errors, []);
    assert.equal(report.headersRead, 2);
    assert.equal(report.packsRead, 0);
  });

  it("check --read-data counts every byte it read, its packs read at once", async () => {
    const { storage } = await setup();
    await run(await Repository.open(storage, p, KEY), { "more.bin": randomBytes(200_000, 79) });
    await run(await Repository.open(storage, p, KEY), { "third.bin": randomBytes(300_000, 80) });
    let stored = 0;
    for await (const { size } of storage.list("data")) stored += size;
    const report = await check(await Repository.open(storage, p, KEY), { readData: true });
    assert.deepEqual(report.errors, []);
    assert.equal(report.packsRead, 3);
    assert.equal(report.bytesRead, stored);
  });

  it("a segment replaced by another that authenticates: the name still matches, the blobs' IDs do not", async () => {
    // The name covers the header, not the segments: a sealed segment copied in from elsewhere
    // (here one sealed afresh with the data key, the same length) opens, and is caught by the
    // blobs' keyed IDs, by restore and check --read-data alike.
    const { storage, spec, result, pack } = await setup();
    const repo = await reader(storage);
    const stored = (await repo.livePacks())[0].entries.find(
      (e) => e.type === BLOB_DATA && e.segmentLength > 1000,
    );
    assert.ok(stored);
    const bytes = await storage.load("data", pack);
    const sealed = bytes.subarray(
      stored.segmentOffset,
      stored.segmentOffset + stored.segmentLength,
    );
    const plain = (await repo.keys.data.open(
      sealed.subarray(0, 12),
      sealed.subarray(12),
      AAD.segment,
    ))!;
    plain[plain.length - 1] ^= 1; // the last byte of the payload's last blob
    const other = await seal(p, repo.keys.data, plain, AAD.segment);
    assert.equal(other.length, sealed.length);
    damage(storage, "data", pack, (b) => {
      b.set(other, stored.segmentOffset);
      return b;
    });
    const object = `data/${pack}`;
    const r = await reader(storage);
    assert.equal((await r.readPackHeader(pack)).length > 0, true, "the header matches the name");
    expectIntegrity(await restoreChecked(r, await refOf(r, result.id), spec), object);
    const full = await check(await Repository.open(storage, p, KEY), { readData: true });
    assert.ok(
      full.errors.some((e) => e.object === object && /does not match its ID/.test(e.message)),
      JSON.stringify(full.errors),
    );
  });

  it("two packs swapped: header reads and check --read-data say the name does not match", async () => {
    const { storage, repo, spec, result, pack } = await setup();
    await run(repo, { ...spec, "more.bin": randomBytes(200_000, 77) });
    const second = (await names(storage, "data")).find((n) => n !== pack)!;
    const [a, b] = [await storage.load("data", pack), await storage.load("data", second)];
    damage(storage, "data", pack, () => b);
    damage(storage, "data", second, () => a);
    const r = await reader(storage);
    for (const name of [pack, second]) {
      await assert.rejects(r.readPackHeader(name), (err) => {
        expectIntegrity(err, `data/${name}`);
        assert.match((err as Error).message, /does not match the pack's name/);
        return true;
      });
    }
    expectIntegrity(await restoreChecked(r, await refOf(r, result.id), spec));
    for (const readData of [false, true]) {
      const report = await check(await Repository.open(storage, p, KEY), { readData });
      for (const name of [pack, second]) {
        assert.ok(
          report.errors.some(
            (e) => e.object === `data/${name}` && /does not match the pack's name/.test(e.message),
          ),
          `readData ${readData}: ${JSON.stringify(report.errors)}`,
        );
      }
    }
  });

  it("a pack left unindexed under a name not its own is not adopted by the next backup", async () => {
    const { storage, pack, index } = await setup();
    const bytes = await storage.load("data", pack);
    await storage.save("data", "ab".repeat(32), bytes);
    const next = await run(await Repository.open(storage, p, KEY), { "x.txt": utf8("x") });
    assert.equal(next.adoptedPacks, 0);
    // check says so, as a warning: nothing refers to the leftover.
    const report = await check(await Repository.open(storage, p, KEY));
    assert.deepEqual(report.errors, []);
    const note = report.warnings.find((w) => w.object === `data/${"ab".repeat(32)}`);
    assert.match(note?.message ?? "", /no backup will adopt it and nothing refers to it/);
    // The same bytes under their own name, unindexed, are adopted (the control).
    await storage.remove("index", index);
    const again = await run(await Repository.open(storage, p, KEY), { "y.txt": utf8("y") });
    assert.equal(again.adoptedPacks >= 1, true, `adopted ${again.adoptedPacks}`);
  });

  it("bytes slipped in before the header: the name still matches, the header's layout does not", async () => {
    const { storage, pack } = await setup();
    const bytes = await storage.load("data", pack);
    const headerLength = new DataView(bytes.buffer).getUint32(bytes.length - 4, true);
    const at = bytes.length - 4 - headerLength;
    damage(storage, "data", pack, (b) =>
      concat(b.subarray(0, at), new Uint8Array(100), b.subarray(at)),
    );
    const r = await reader(storage);
    await assert.rejects(r.readPackHeader(pack), (err) => {
      expectIntegrity(err, `data/${pack}`);
      assert.match((err as Error).message, /segments end at \d+, the header starts at \d+/);
      return true;
    });
    const full = await check(await Repository.open(storage, p, KEY), { readData: true });
    assert.ok(
      full.errors.some((e) => e.object === `data/${pack}` && /segments end at/.test(e.message)),
      JSON.stringify(full.errors),
    );
  });

  it("an interrupted backup's leftover named by the SHA-256 of all its bytes (before 2026-12-07) is adopted", async () => {
    const { storage, pack, index } = await setup();
    const bytes = await storage.load("data", pack);
    const legacy = toHex(p.sha256(bytes));
    await storage.save("data", legacy, bytes);
    await storage.remove("data", pack);
    await storage.remove("index", index);
    const next = await run(await Repository.open(storage, p, KEY), baseSpec());
    assert.equal(next.adoptedPacks, 1);
    assert.equal(
      next.snapshot.summary.addedBytes < 100_000,
      true,
      "its blobs were not stored again",
    );
  });

  it("check --read-data accepts a pack named by the SHA-256 of all its bytes (written before 2026-12-07)", async () => {
    const { storage, repo, spec, result, pack, index } = await setup();
    const bytes = await storage.load("data", pack);
    const legacy = toHex(p.sha256(bytes));
    const entries = (await (await Repository.open(storage, p, KEY)).livePacks())[0].entries;
    await storage.save("data", legacy, bytes);
    await storage.remove("data", pack);
    await storage.remove("index", index);
    await repo.saveIndex([{ packId: fromHexId(legacy), entries }]);
    const full = await check(await Repository.open(storage, p, KEY), { readData: true });
    assert.deepEqual(full.errors, []);
    assert.equal(full.packsRead, 1);
    const quick = await check(await Repository.open(storage, p, KEY));
    assert.deepEqual(quick.errors, []);
    assert.equal(quick.headersRead, 1);
    const r = await reader(storage);
    assert.equal(await restoreChecked(r, await refOf(r, result.id), spec), undefined);
    // Damaged, the pack matches neither name.
    damage(storage, "data", legacy, (b) => {
      b[20] ^= 1;
      return b;
    });
    const damaged = await check(await Repository.open(storage, p, KEY), { readData: true });
    assert.ok(damaged.errors.some((e) => e.object === `data/${legacy}`));
  });
});

describe("an index that lost a data blob", () => {
  it("check names every file of every snapshot that needs it, listed inline or in a list blob", async () => {
    const { storage, repo, spec, index } = await setup();
    await run(repo, { ...spec, "copy.db": spec["chat.db"] }); // a second snapshot, same pages
    const packs = await (await Repository.open(storage, p, KEY)).livePacks();
    // The database's first page: every snapshot's chat.db and the second one's copy.db need it.
    const r = await reader(storage);
    const snap = await r.findSnapshot("latest");
    let page = "";
    for await (const { path, node } of walk(r, snap.snapshot.tree)) {
      if (path.join("/") === "chat.db" && node.type === "file")
        page = (await r.contentIds(node))[0];
    }
    const [, second] = await names(storage, "index");
    for (const name of [index, second]) await storage.remove("index", name);
    const pruned = packs.map((pk) => ({
      ...pk,
      entries: pk.entries.filter((e) => toHex(e.id) !== page),
    }));
    await repo.saveAddressed("index", await sealIndex(p, repo.keys, pruned));
    const report = await check(await Repository.open(storage, p, KEY));
    const missing = report.errors.filter((e) => e.message === `data blob ${page} is not indexed`);
    assert.deepEqual(missing.map((e) => e.object.replace(/^snapshots\/[0-9a-f]+:/, "")).sort(), [
      "chat.db",
      "chat.db",
      "copy.db",
    ]);
  });
});

describe("damaged metadata", () => {
  it("two snapshots swapped fail naming snapshots/…", async () => {
    const { storage, repo } = await setup();
    await run(repo, baseSpec(9));
    const [s1, s2] = await names(storage, "snapshots");
    const b1 = await storage.load("snapshots", s1);
    const b2 = await storage.load("snapshots", s2);
    storage.corrupt("snapshots", s1, () => b2);
    storage.corrupt("snapshots", s2, () => b1);
    const r = await reader(storage);
    await assert.rejects(r.snapshots(), (err) => {
      expectIntegrity(err);
      assert.match((err as IntegrityError).object ?? "", /^snapshots\/[0-9a-f]{64}$/);
      return true;
    });
    await rejectsIntegrity(r.findSnapshot("latest"));
    const report = await check(await Repository.open(storage, p, KEY));
    const objects = new Set(report.errors.map((e) => e.object));
    assert.ok(objects.has(`snapshots/${s1}`) && objects.has(`snapshots/${s2}`));
  });

  it("a flipped or truncated index file fails naming index/…", async () => {
    const { storage, index } = await setup();
    const object = `index/${index}`;
    for (const mutate of [
      flip((b) => b.length >> 1),
      flip(() => 0),
      flip((b) => b.length - 1),
      (b: Uint8Array) => b.subarray(0, b.length - 1),
      (b: Uint8Array) => b.subarray(0, 20),
      () => new Uint8Array(0),
    ]) {
      const restore = damage(storage, "index", index, mutate);
      await rejectsIntegrity((await Repository.open(storage, p, KEY)).loadIndex(), object);
      const report = await check(await Repository.open(storage, p, KEY));
      assert.ok(report.errors.some((e) => e.object === object));
      restore();
    }
    // The same damage stored under a matching name fails authentication instead.
    const flipped = flip((b) => b.length >> 1)(await storage.load("index", index));
    await storage.remove("index", index);
    const name = toHex(p.sha256(flipped));
    await storage.save("index", name, flipped);
    await rejectsIntegrity((await Repository.open(storage, p, KEY)).loadIndex(), `index/${name}`);
  });

  it("a snapshot sealed under another repository's key fails with IntegrityError", async () => {
    const { storage, result } = await setup();
    const otherStorage = new MemoryStorage();
    const other = await Repository.init(otherStorage, p, OTHER_KEY);
    const foreign = await run(other, baseSpec());
    const foreignBytes = await otherStorage.load("snapshots", foreign.id);

    // Under its own (matching) name: authentication fails.
    await storage.save("snapshots", foreign.id, foreignBytes);
    let r = await reader(storage);
    await rejectsIntegrity(r.snapshots(), `snapshots/${foreign.id}`);
    const report = await check(await Repository.open(storage, p, KEY));
    assert.ok(report.errors.some((e) => e.object === `snapshots/${foreign.id}`));
    await storage.remove("snapshots", foreign.id);

    // In place of ours: the name no longer matches.
    storage.corrupt("snapshots", result.id, () => foreignBytes);
    r = await reader(storage);
    await rejectsIntegrity(r.snapshots(), `snapshots/${result.id}`);
  });

  it("an index file from another repository fails with IntegrityError", async () => {
    const { storage } = await setup();
    const otherStorage = new MemoryStorage();
    await run(await Repository.init(otherStorage, p, OTHER_KEY), baseSpec());
    const [foreign] = await names(otherStorage, "index");
    await storage.save("index", foreign, await otherStorage.load("index", foreign));
    await rejectsIntegrity(
      (await Repository.open(storage, p, KEY)).loadIndex(),
      `index/${foreign}`,
    );
  });
});

describe("hostile trees and lists (crafted with the repository's real keys)", () => {
  const hostile: [string, Uint8Array][] = [
    ["name ../evil", treeBytes([fileNode({ name: "../evil" })])],
    ["name ..", treeBytes([fileNode({ name: ".." })])],
    ["name .", treeBytes([fileNode({ name: "." })])],
    ["empty name", treeBytes([fileNode({ name: "" })])],
    ["name a/b", treeBytes([fileNode({ name: "a/b" })])],
    ["name a\\b", treeBytes([fileNode({ name: "a\\b" })])],
    ["name with NUL", treeBytes([fileNode({ name: "a\0b" })])],
    ["name too long", treeBytes([fileNode({ name: "x".repeat(5000) })])],
    ["name not a string", treeBytes([fileNode({ name: 42 })])],
    ["file size -1", treeBytes([fileNode({ size: -1 })])],
    ["file size 1.5", treeBytes([fileNode({ size: 1.5 })])],
    ["file size string", treeBytes([fileNode({ size: "1" })])],
    ["file size 2^53", treeBytes([fileNode({ size: 2 ** 53 })])],
    ["duplicate name", treeBytes([fileNode({ name: "x" }), fileNode({ name: "x" })])],
    ["dir and file share a name", treeBytes([fileNode({ name: "x" }), { ...dirNode("x") }])],
    ["not JSON", utf8("{nodes: [")],
    ["not UTF-8", Uint8Array.of(0x7b, 0xff, 0x7d)],
    ["JSON null", utf8("null")],
    ["nodes not a list", utf8('{"nodes":{}}')],
    ["null node", treeBytes([null])],
    ["unknown node type", treeBytes([fileNode({ type: "symlink" })])],
    ["subtree not an ID", treeBytes([dirNode("d", "../../etc")])],
    ["content and lists", treeBytes([fileNode({ lists: [] })])],
    ["neither content nor lists", treeBytes([fileNode({ content: undefined })])],
    ["content ID not hex", treeBytes([fileNode({ content: ["zz".repeat(32)] })])],
    ["mode missing", treeBytes([fileNode({ mode: undefined })])],
  ];

  function dirNode(name: string, subtree = "0".repeat(64)) {
    return { type: "dir", name, mode: 0o755, mtimeMs: 0, subtree };
  }

  it("walk rejects every hostile tree with IntegrityError", async () => {
    const { repo } = await setup();
    const ids = await storeBlobs(
      repo,
      hostile.map(([, bytes]) => ({ type: BLOB_TREE, bytes })),
    );
    for (const [i, [label]] of hostile.entries()) {
      await assert.rejects(
        collect(walk(repo, ids[i])),
        (err) => {
          expectIntegrity(err);
          return true;
        },
        label,
      );
    }
  });

  it("a hostile subtree fails the walk before any of its entries is yielded", async () => {
    const { repo } = await setup();
    const [evil] = await storeBlobs(repo, [
      { type: BLOB_TREE, bytes: treeBytes([fileNode({ name: "../../evil" })]) },
    ]);
    const [root] = await storeBlobs(repo, [
      { type: BLOB_TREE, bytes: treeBytes([dirNode("Chats", evil)]) },
    ]);
    const seen: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const e of walk(repo, root)) seen.push(e.path.join("/"));
      })(),
      (err) => {
        expectIntegrity(err);
        return true;
      },
    );
    assert.deepEqual(seen, ["Chats"]);
  });

  it("check reports a snapshot with a hostile tree instead of crashing", async () => {
    const { storage, repo, result } = await setup();
    const [evil] = await storeBlobs(repo, [
      { type: BLOB_TREE, bytes: treeBytes([fileNode({ name: "../evil" })]) },
    ]);
    const snapshot: Snapshot = { ...result.snapshot, seq: 2, parent: result.id, tree: evil };
    const { name } = await repo.saveSnapshot(snapshot);
    const report = await check(await Repository.open(storage, p, KEY));
    assert.ok(report.errors.some((e) => e.object === `snapshots/${name}`));
    const r = await reader(storage);
    await rejectsIntegrity(collect(walk(r, (await r.findSnapshot(name)).snapshot.tree)));
  });

  it("a list blob of the wrong length, or naming the wrong blob type, fails readFile", async () => {
    const { repo } = await setup();
    const data = randomBytes(5000, 3);
    const [dataId, badList, treeId] = await storeBlobs(repo, [
      { type: BLOB_DATA, bytes: data },
      { type: BLOB_LIST, bytes: new Uint8Array(33) },
      { type: BLOB_TREE, bytes: treeBytes([]) },
    ]);
    const node = (over: Partial<FileNode>): FileNode => ({
      type: "file",
      name: "f",
      mode: 0o644,
      mtimeMs: 0,
      size: data.length,
      ...over,
    });
    await rejectsIntegrity(collect(readFile(repo, node({ lists: [badList] }))));
    await rejectsIntegrity(collect(readFile(repo, node({ lists: [dataId] }))));
    await rejectsIntegrity(collect(readFile(repo, node({ lists: [treeId] }))));
    await rejectsIntegrity(collect(readFile(repo, node({ content: ["ab".repeat(32)] }))));
    // Recorded size differs from the content: fails, and never yields more than the size.
    await rejectsIntegrity(collect(readFile(repo, node({ content: [dataId], size: 5001 }))));
    const yielded: Uint8Array[] = [];
    await rejectsIntegrity(
      (async () => {
        for await (const c of readFile(repo, node({ content: [dataId], size: 4999 })))
          yielded.push(c);
      })(),
    );
    assert.ok(yielded.reduce((n, c) => n + c.length, 0) <= 4999);
    assert.deepEqual(concat(...(await collect(readFile(repo, node({ content: [dataId] }))))), data);
  });

  it("a page delta without its base, with a base of another length, or with a delta as base fails readFile and check", async () => {
    const { storage, repo, result } = await setup();
    const base = randomBytes(4096, 5);
    const delta = new Uint8Array(4096);
    delta[7] = 1;
    const [baseId, deltaId, shortId, otherDelta] = await storeBlobs(repo, [
      { type: BLOB_DATA, bytes: base },
      { type: BLOB_DELTA, bytes: delta },
      { type: BLOB_DATA, bytes: base.subarray(0, 4095) },
      { type: BLOB_DELTA, bytes: delta.map((b) => b ^ 2) },
    ]);
    const node = (content: string[], size = 4096): FileNode => ({
      type: "file",
      name: "chat.db",
      mode: 0o644,
      mtimeMs: 0,
      size,
      content,
    });
    // The well-formed pair rebuilds the page: base XOR delta.
    const page = concat(...(await collect(readFile(repo, node([deltaId, baseId])))));
    assert.deepEqual(
      page,
      base.map((b, i) => b ^ delta[i]),
    );
    await rejectsIntegrity(collect(readFile(repo, node([deltaId]))));
    await rejectsIntegrity(collect(readFile(repo, node([deltaId, shortId]))));
    await rejectsIntegrity(collect(readFile(repo, node([deltaId, otherDelta]))));
    await rejectsIntegrity(collect(readFile(repo, node([baseId, deltaId], 8192))));
    // check names the file of a snapshot that lists a delta without its base.
    const [tree] = await storeBlobs(repo, [
      { type: BLOB_TREE, bytes: treeBytes([fileNode({ name: "chat.db", content: [deltaId] })]) },
    ]);
    const { name } = await repo.saveSnapshot({
      ...result.snapshot,
      seq: 2,
      parent: result.id,
      tree,
    });
    const report = await check(await Repository.open(storage, p, KEY));
    assert.ok(
      report.errors.some(
        (e) =>
          e.object === `snapshots/${name}:chat.db` && /not followed by a data blob/.test(e.message),
      ),
      JSON.stringify(report.errors),
    );
  });

  it("a list patch reads through its base; one whose base is a patch, a data blob or missing, or that copies past its base, fails readFile and check", async () => {
    const { storage, repo, result } = await setup();
    const pages = [randomBytes(4096, 11), randomBytes(4096, 12), randomBytes(4096, 13)];
    const [a, b, c] = await storeBlobs(
      repo,
      pages.map((bytes) => ({ type: BLOB_DATA, bytes })),
    );
    const idBytes = (...hex: string[]) => concat(...hex.map(fromHexId));
    const [baseList] = await storeBlobs(repo, [{ type: BLOB_LIST, bytes: idBytes(a, b) }]);
    // Copy ID 0 of the base, then one new ID: [a, c].
    const ops = (base: string, from = 0) =>
      concat(
        fromHexId(base),
        Uint8Array.of(0, from, 0, 1, 0),
        Uint8Array.of(1, 1, 0),
        fromHexId(c),
      );
    const [good, onData, past, onMissing] = await storeBlobs(repo, [
      { type: BLOB_LIST_PATCH, bytes: ops(baseList) },
      { type: BLOB_LIST_PATCH, bytes: ops(a) },
      { type: BLOB_LIST_PATCH, bytes: ops(baseList, 2) },
      { type: BLOB_LIST_PATCH, bytes: ops("cd".repeat(32)) },
    ]);
    const [patchOfPatch] = await storeBlobs(repo, [{ type: BLOB_LIST_PATCH, bytes: ops(good) }]);
    const node = (lists: string[]): FileNode => ({
      type: "file",
      name: "chat.db",
      mode: 0o644,
      mtimeMs: 0,
      size: 8192,
      lists,
    });
    assert.deepEqual(
      concat(...(await collect(readFile(repo, node([good]))))),
      concat(pages[0], pages[2]),
    );
    for (const bad of [patchOfPatch, onData, past, onMissing]) {
      await rejectsIntegrity(collect(readFile(repo, node([bad]))));
    }
    // check names the file of each snapshot whose list patch does not read.
    const saved: string[] = [];
    for (const [k, bad] of [patchOfPatch, onData, past, onMissing].entries()) {
      const [tree] = await storeBlobs(repo, [
        {
          type: BLOB_TREE,
          bytes: treeBytes([
            fileNode({ name: "chat.db", size: 8192, content: undefined, lists: [bad] }),
          ]),
        },
      ]);
      const { name } = await repo.saveSnapshot({
        ...result.snapshot,
        seq: 2 + k,
        parent: k === 0 ? result.id : saved[k - 1],
        tree,
      });
      saved.push(name);
    }
    const report = await check(await Repository.open(storage, p, KEY));
    for (const name of saved) {
      assert.ok(
        report.errors.some(
          (e) => e.object.startsWith(`snapshots/${name}`) || e.message.includes(name),
        ),
        `${name}: ${JSON.stringify(report.errors)}`,
      );
    }
  });

  it("check reports a blob a snapshot needs whose only copy was in a pack a prune deleted", async () => {
    const { storage, repo, result } = await setup();
    const root = await repo.loadTree(result.snapshot.tree);
    const notes = root.nodes.find((n) => n.name === "notes.txt");
    assert.ok(notes?.type === "file" && notes.content);
    const second = await run(await reader(storage), baseSpec(5));
    await forget(await reader(storage), { ids: [result.id] });
    await prune(await reader(storage), { keepDeleteMs: 0 });
    const after = await reader(storage);
    const lost = notes.content[0];
    assert.ok(after.readable(lost), "the index still names the condemned pack");
    assert.equal((await names(storage, "data")).includes(after.lookup(lost)!.pack), false);
    // A snapshot that needs the lost blob (as a backup that deduplicated against it would).
    const [tree] = await storeBlobs(after, [
      {
        type: BLOB_TREE,
        bytes: treeBytes([
          fileNode({ name: "notes.txt", size: notes.size, content: notes.content }),
        ]),
      },
    ]);
    const { name } = await after.saveSnapshot({
      ...second.snapshot,
      seq: second.snapshot.seq + 1,
      parent: second.id,
      tree,
    });
    const report = await check(await reader(storage));
    assert.ok(
      report.errors.some(
        (e) =>
          e.object === `snapshots/${name}:notes.txt` && /condemned and deleted/.test(e.message),
      ),
      JSON.stringify(report.errors),
    );
    // A backup of the same file stores the blob again in a live pack: nothing is lost now, though
    // the index still names the deleted condemned pack too.
    await run(await reader(storage), baseSpec(), { minSeq: second.snapshot.seq + 1 });
    const again = await reader(storage);
    assert.notEqual(again.lookup(lost)!.pack, after.lookup(lost)!.pack, "a live copy");
    assert.ok(again.condemned.has(after.lookup(lost)!.pack));
    assert.deepEqual((await check(again)).errors, []);
  });

  it("a file whose content names a tree blob fails readFile (blob types are not interchangeable)", async () => {
    const { repo } = await setup();
    const tree = treeBytes([]);
    const [treeId] = await storeBlobs(repo, [{ type: BLOB_TREE, bytes: tree }]);
    const node: FileNode = {
      type: "file",
      name: "f",
      mode: 0o644,
      mtimeMs: 0,
      size: tree.length,
      content: [treeId],
    };
    await rejectsIntegrity(collect(readFile(repo, node)));
  });
});

describe("hostile sizes (no giant allocation)", () => {
  const before = () => process.memoryUsage().arrayBuffers;
  const noGiantAllocation = (start: number) =>
    assert.ok(process.memoryUsage().arrayBuffers - start < 512 << 20, "no giant allocation");

  it("a pack trailer claiming a 4 GiB header fails with IntegrityError", async () => {
    const { storage, repo, pack } = await setup();
    const start = before();
    const bytes = await storage.load("data", pack);
    new DataView(bytes.buffer).setUint32(bytes.length - 4, 0xffffffff, true);
    const name = toHex(p.sha256(bytes)); // any name: the trailer is read before the name is checked
    await storage.save("data", name, bytes);
    await rejectsIntegrity(repo.readPackHeader(name), `data/${name}`);
    await damagedLeftoverWarned(storage, name);
    // A new backup is not disturbed by the hostile leftover: it is not adopted.
    const next = await run(await Repository.open(storage, p, KEY), { "x.txt": utf8("x") });
    assert.equal(next.adoptedPacks, 0);
    noGiantAllocation(start);
  });

  it("pack headers with hostile entries fail with IntegrityError", async () => {
    const { storage, repo } = await setup();
    const start = before();
    const segment = await seal(
      p,
      repo.keys.data,
      payload(PAYLOAD_STORED, 3, utf8("abc")),
      AAD.segment,
    );
    const id = blobId(p, repo.keys.id, BLOB_DATA, utf8("abc"));
    const good: PackEntry = {
      type: BLOB_DATA,
      id,
      segmentOffset: 0,
      segmentLength: segment.length,
      offset: 0,
      length: 3,
    };
    const cases: [string, PackEntry][] = [
      ["segmentLength 2^31", { ...good, segmentLength: 2 ** 31 }],
      ["segmentLength 2^32-1", { ...good, segmentLength: 2 ** 32 - 1 }],
      ["segmentOffset 2^32-1", { ...good, segmentOffset: 2 ** 32 - 1 }],
      ["length 2^32-1", { ...good, length: 2 ** 32 - 1 }],
      ["offset 2^32-1", { ...good, offset: 2 ** 32 - 1 }],
      ["type 9", { ...good, type: 9 as BlobType }],
    ];
    for (const [label, entry] of cases) {
      const { name } = await storePack(repo, [segment], [entry], false);
      await assert.rejects(
        repo.readPackHeader(name),
        (err) => {
          expectIntegrity(err, `data/${name}`);
          assert.match((err as Error).message, /malformed pack header/, label);
          return true;
        },
        label,
      );
    }
    // A header claiming 2^32-1 entries.
    const w = new ByteWriter(5);
    w.u8(1);
    w.u32(0xffffffff);
    const sealed = await seal(p, repo.keys.meta, w.finish(), AAD.packHeader);
    const lenLE = new Uint8Array(4);
    new DataView(lenLE.buffer).setUint32(0, sealed.length, true);
    const name = packName(p, concat(sealed, lenLE));
    await storage.save("data", name, concat(segment, sealed, lenLE));
    await assert.rejects(repo.readPackHeader(name), (err) => {
      expectIntegrity(err, `data/${name}`);
      assert.match((err as Error).message, /malformed pack header/);
      return true;
    });
    await damagedLeftoverWarned(storage, name);
    noGiantAllocation(start);
  });

  it("index files with hostile entries or counts fail with IntegrityError", async () => {
    const { storage, repo } = await setup();
    const start = before();
    const id = blobId(p, repo.keys.id, BLOB_DATA, utf8("abc"));
    const entry: PackEntry = {
      type: BLOB_DATA,
      id,
      segmentOffset: 0,
      segmentLength: 2 ** 31,
      offset: 0,
      length: 3,
    };
    const packId = new Uint8Array(32).fill(1);
    const bad: Uint8Array[] = [
      await sealIndex(p, repo.keys, [{ packId, entries: [entry] }]),
      await sealIndex(p, repo.keys, [
        { packId, entries: [{ ...entry, segmentLength: 100, length: 2 ** 32 - 1 }] },
      ]),
      // loadIndex keeps entries encoded (openIndexEncoded): it must check the type byte too.
      await sealIndex(p, repo.keys, [
        { packId, entries: [{ ...entry, segmentLength: 100, type: 9 as BlobType }] },
      ]),
    ];
    for (const count of [0xffffffff, 0x10000000]) {
      const w = new ByteWriter(64);
      w.u8(1);
      w.u32(count);
      w.bytes(packId);
      w.u32(count);
      bad.push(
        await seal(p, repo.keys.meta, payload(PAYLOAD_STORED, w.length, w.finish()), AAD.index),
      );
    }
    for (const sealed of bad) {
      const { name } = await repo.saveAddressed("index", sealed);
      await rejectsIntegrity((await Repository.open(storage, p, KEY)).loadIndex(), `index/${name}`);
      await storage.remove("index", name);
    }
    noGiantAllocation(start);
  });

  it("a data segment declaring a raw length above the limit fails with IntegrityError", async () => {
    const { storage, repo } = await setup();
    const start = before();
    const body = utf8("abc");
    const id = blobId(p, repo.keys.id, BLOB_DATA, body);
    for (const pl of [
      payload(PAYLOAD_STORED, MAX_SEGMENT_BYTES + 1, body),
      payload(PAYLOAD_ZSTD, 0xffffffff, body),
      payload(PAYLOAD_ZSTD, 3, p.zstdCompress(new Uint8Array(100_000))!), // lies: decodes larger
      payload(PAYLOAD_ZSTD, 3, utf8("definitely not zstd")),
      payload(7, 3, body),
    ]) {
      const segment = await seal(p, repo.keys.data, pl, AAD.segment);
      const entry: PackEntry = {
        type: BLOB_DATA,
        id,
        segmentOffset: 0,
        segmentLength: segment.length,
        offset: 0,
        length: 3,
      };
      const { name, index } = await storePack(repo, [segment], [entry], true);
      const r = await reader(storage);
      await rejectsIntegrity(r.loadBlob(toHex(id)), `data/${name}`);
      const full = await check(await Repository.open(storage, p, KEY), { readData: true });
      assert.ok(full.errors.some((e) => e.object === `data/${name}`));
      await storage.remove("data", name);
      await storage.remove("index", index!);
    }
    noGiantAllocation(start);
  });

  it("a snapshot declaring a raw length above the limit, or a lying zstd length, fails with IntegrityError", async () => {
    const { storage, repo } = await setup();
    for (const pl of [
      payload(PAYLOAD_STORED, 16 * 1024 * 1024 + 1, utf8("{}")),
      payload(PAYLOAD_ZSTD, 0xffffffff, utf8("{}")),
      payload(PAYLOAD_ZSTD, 2, p.zstdCompress(utf8(JSON.stringify({ pad: "x".repeat(9000) })))!),
      payload(PAYLOAD_ZSTD, 2, utf8("not zstd at all")),
    ]) {
      const sealed = await seal(p, repo.keys.meta, pl, AAD.snapshot);
      const { name } = await repo.saveAddressed("snapshots", sealed);
      await rejectsIntegrity((await reader(storage)).snapshots(), `snapshots/${name}`);
      await storage.remove("snapshots", name);
    }
  });

  it("an index declaring a raw length above the limit, or a lying zstd length, fails with IntegrityError", async () => {
    const { storage, repo } = await setup();
    for (const pl of [
      payload(PAYLOAD_STORED, MAX_INDEX_BYTES + 1, Uint8Array.of(1, 0, 0, 0, 0)),
      payload(PAYLOAD_ZSTD, 0xffffffff, Uint8Array.of(1)),
      payload(PAYLOAD_ZSTD, 5, p.zstdCompress(new Uint8Array(50_000))!),
    ]) {
      const sealed = await seal(p, repo.keys.meta, pl, AAD.index);
      const { name } = await repo.saveAddressed("index", sealed);
      await rejectsIntegrity((await Repository.open(storage, p, KEY)).loadIndex(), `index/${name}`);
      await storage.remove("index", name);
    }
  });

  it("an index whose authenticated payload is not valid zstd fails with IntegrityError", async () => {
    const { storage, repo } = await setup();
    const sealed = await seal(
      p,
      repo.keys.meta,
      payload(PAYLOAD_ZSTD, 5, utf8("definitely not a zstd frame")),
      AAD.index,
    );
    const { name } = await repo.saveAddressed("index", sealed);
    await rejectsIntegrity((await Repository.open(storage, p, KEY)).loadIndex(), `index/${name}`);
  });

  it("check reports, and does not crash on, an index whose payload is not valid zstd", async () => {
    const { storage, repo } = await setup();
    const sealed = await seal(
      p,
      repo.keys.meta,
      payload(PAYLOAD_ZSTD, 5, utf8("definitely not a zstd frame")),
      AAD.index,
    );
    const { name } = await repo.saveAddressed("index", sealed);
    const report = await check(await Repository.open(storage, p, KEY));
    assert.ok(report.errors.some((e) => e.object === `index/${name}`));
  });
});

describe("interrupted backup", () => {
  it("leaves no snapshot; the next run adopts the stored packs and uploads less", async () => {
    const storage = new MemoryStorage();
    await Repository.init(storage, p, KEY);
    const video = randomBytes(50 << 20, 77);
    const spec: Spec = { "chat.db": fakeSqlite(100, 78), Media: { "video.mp4": video } };
    const total = video.length + 100 * 4096;

    storage.failAfter = storage.saveCount + 2; // two packs, then the third save fails
    await assert.rejects(run(await Repository.open(storage, p, KEY), spec), (err) =>
      isLocketError(err, "storage"),
    );
    assert.deepEqual(await names(storage, "snapshots"), []);
    assert.deepEqual(await names(storage, "index"), []);
    const leftovers = await names(storage, "data");
    assert.equal(leftovers.length, 2);
    const leftoverBytes = await storedBytes(storage, "data");
    assert.ok(leftoverBytes >= 2 * PACK_TARGET_BYTES);

    const report = await check(await Repository.open(storage, p, KEY), { readData: true });
    assert.deepEqual(report.errors, []);
    assert.equal(report.warnings.length, 2);
    for (const w of report.warnings)
      assert.match(w.message, /not indexed .* the next backup adopts it/);

    storage.failAfter = undefined;
    const second = await run(await Repository.open(storage, p, KEY), spec);
    assert.equal(second.adoptedPacks, 2);
    assert.ok(second.snapshot.summary.addedBytes < total, "less than a full upload");
    assert.ok(
      second.snapshot.summary.addedBytes < total - leftoverBytes + (1 << 20),
      `uploaded ${second.snapshot.summary.addedBytes} with ${leftoverBytes} adopted`,
    );
    assert.equal(second.snapshot.seq, 1);

    const after = await check(await Repository.open(storage, p, KEY));
    assert.deepEqual(after.errors, []);
    assert.deepEqual(after.warnings, []);
    const r = await reader(storage);
    assert.deepEqual(await restoreToMemory(r, await r.findSnapshot("latest")), spec);
  });

  it("a retry with the same Repository object leaves a snapshot every device can restore", async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, p, KEY);
    const spec: Spec = { "video.mp4": randomBytes(20 << 20, 79) };
    storage.failAfter = storage.saveCount + 1; // the first pack is stored, the last one fails
    await assert.rejects(run(repo, spec), (err) => isLocketError(err, "storage"));
    assert.equal((await names(storage, "data")).length, 1);
    storage.failAfter = undefined;
    await run(repo, spec);

    const report = await check(await Repository.open(storage, p, KEY));
    assert.deepEqual(report.errors, []);
    const r = await reader(storage);
    assert.deepEqual(await restoreToMemory(r, await r.findSnapshot("latest")), spec);
  });
});

describe("rollback", () => {
  it("a hidden newest snapshot is detected with RollbackError", async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, p, KEY);
    await run(repo, { "a.txt": utf8("1") });
    await run(repo, { "a.txt": utf8("2") });
    const third = await run(repo, { "a.txt": utf8("3") });
    assert.equal(third.snapshot.seq, 3);
    await storage.remove("snapshots", third.id);

    const r = await reader(storage);
    const history = await r.snapshots();
    assert.throws(
      () => checkFreshness(history, 3),
      (err) => {
        assert.ok(err instanceof RollbackError);
        return isLocketError(err, "rollback");
      },
    );
    checkFreshness(history, 2);
    await assert.rejects(run(r, { "a.txt": utf8("4") }, { minSeq: 3 }), (err) => {
      assert.ok(err instanceof RollbackError);
      return isLocketError(err, "rollback");
    });
    assert.equal((await names(storage, "snapshots")).length, 2, "nothing was written");
  });
});

describe("limits", () => {
  it("a folder whose tree exceeds MAX_BLOB_BYTES never leaves an unreadable repository", async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, p, KEY);
    const small: Spec = { "a.txt": utf8("before") };
    await run(repo, small);

    // About 2100 entries of ~4 KiB each: a ~8.6 MB tree, above MAX_BLOB_BYTES (8 MiB). A real
    // trigger is ~60 000 media files in one folder (~150 bytes per node).
    const big: Spec = {};
    const entries = Math.ceil(MAX_BLOB_BYTES / 4000) + 10;
    for (let i = 0; i < entries; i++) big[`${String(i).padStart(5, "0")}${"n".repeat(3990)}`] = {};
    let outcome: unknown;
    try {
      outcome = await run(await Repository.open(storage, p, KEY), { Media: big });
    } catch (err) {
      assert.ok(err instanceof LocketError, `a refusal must be typed: ${String(err)}`);
      outcome = err;
    }
    // Whatever happened, every device can still read the repository and the earlier snapshot.
    const r = await reader(storage);
    const all = await r.snapshots();
    assert.deepEqual(await restoreToMemory(r, all[0]), small);
    if (!(outcome instanceof LocketError)) {
      assert.deepEqual(await restoreToMemory(r, all[all.length - 1]), { Media: big });
    }
    const report = await check(await Repository.open(storage, p, KEY));
    assert.deepEqual(report.errors, []);
  });
});
