import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { concat, toHex, utf8 } from "../src/bytes.ts";
import { chunkStream } from "../src/chunker/chunk-stream.ts";
import { CDC_MAX, CDC_MIN } from "../src/chunker/fastcdc.ts";
import { deriveKeys } from "../src/crypto/keys.ts";
import type { Primitives } from "../src/crypto/primitives.ts";
import { crc16xmodem, formatRecoveryKey, parseRecoveryKey } from "../src/crypto/recovery-key.ts";
import { webPrimitives } from "../src/crypto/web.ts";
import { backup } from "../src/engine/backup.ts";
import { type FileChunker, localChunker } from "../src/engine/chunker.ts";
import { NotFoundError, UsageError, WrongKeyError } from "../src/errors.ts";
import {
  BLOB_DATA,
  BLOB_LIST,
  BLOB_LIST_PATCH,
  BLOB_TREE,
  type BlobType,
} from "../src/format/blob.ts";
import { sealSnapshot } from "../src/format/snapshot.ts";
import type { FileNode } from "../src/format/tree.ts";
import { Repository } from "../src/repository.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import {
  fakeSqlite,
  isLocketError,
  names,
  p,
  randomBytes,
  restoreToMemory,
  rewritePage,
  type Spec,
  SQLITE_PAGE,
  sourceTree,
  storedBytes,
  textBytes,
} from "./helpers.ts";

const KEY = Uint8Array.from({ length: 32 }, (_, i) => i * 7 + 1);

async function newRepo(prims: Primitives = p) {
  const storage = new MemoryStorage();
  const repo = await Repository.init(storage, prims, KEY);
  return { storage, repo };
}

/** A newly opened repository with its index loaded, as a second device would see it. */
async function reopen(storage: MemoryStorage, prims: Primitives = p): Promise<Repository> {
  const repo = await Repository.open(storage, prims, KEY);
  await repo.loadIndex();
  return repo;
}

function run(repo: Repository, spec: Spec, blockSize?: number) {
  return backup(repo, sourceTree(spec, { blockSize }), {
    host: "test-host",
    paths: Object.keys(spec),
  });
}

/** Backs `spec` up into a new repository and checks a second device restores it exactly. */
async function roundTrip(spec: Spec, blockSize?: number) {
  const { storage, repo } = await newRepo();
  const result = await run(repo, spec, blockSize);
  const reader = await reopen(storage);
  const ref = await reader.findSnapshot("latest");
  assert.equal(ref.id, result.id);
  assert.deepEqual(await restoreToMemory(reader, ref), spec);
  return { storage, repo, result, reader, ref };
}

/** Every indexed blob ID with its type, read from storage by a fresh repository. */
async function blobTypes(storage: MemoryStorage): Promise<Map<string, BlobType>> {
  const repo = await Repository.open(storage, p, KEY);
  const out = new Map<string, BlobType>();
  for (const pack of await repo.livePacks()) {
    for (const e of pack.entries) out.set(toHex(e.id), e.type);
  }
  return out;
}

function newBlobsByType(before: Map<string, BlobType>, after: Map<string, BlobType>) {
  const counts = { data: 0, tree: 0, list: 0, listPatch: 0 };
  for (const [id, type] of after) {
    if (before.has(id)) continue;
    if (type === BLOB_DATA) counts.data++;
    else if (type === BLOB_TREE) counts.tree++;
    else if (type === BLOB_LIST) counts.list++;
    else if (type === BLOB_LIST_PATCH) counts.listPatch++;
  }
  return counts;
}

async function* blocks(data: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let o = 0; o < data.length; o += size) yield data.subarray(o, o + size);
}

async function chunkLengths(data: Uint8Array, blockSize: number, gear: Uint32Array) {
  const lengths: number[] = [];
  let offset = 0;
  for await (const c of chunkStream(blocks(data, blockSize), gear)) {
    assert.deepEqual(c, data.subarray(offset, offset + c.length), "chunks reassemble the input");
    offset += c.length;
    lengths.push(c.length);
  }
  assert.equal(offset, data.length);
  return lengths;
}

describe("backup → restore round trip", () => {
  it("empty file", async () => {
    const { result } = await roundTrip({ "empty.txt": new Uint8Array(0) });
    assert.equal(result.snapshot.summary.files, 1);
    assert.equal(result.snapshot.summary.bytes, 0);
  });

  it("1-byte file", async () => {
    await roundTrip({ "one.txt": Uint8Array.of(0x2a) });
  });

  for (const [label, size] of [
    ["CDC_MIN", CDC_MIN],
    ["CDC_MAX", CDC_MAX],
    ["CDC_MAX+1", CDC_MAX + 1],
  ] as const) {
    it(`file of exactly ${label} (${size}) bytes`, async () => {
      const data = randomBytes(size, size);
      const { storage } = await roundTrip({ "edge.bin": data });
      const types = await blobTypes(storage);
      const dataBlobs = [...types.values()].filter((t) => t === BLOB_DATA).length;
      if (size === CDC_MAX + 1) assert.ok(dataBlobs >= 2, "past CDC_MAX the file must be cut");
      if (size === CDC_MIN) assert.equal(dataBlobs, 1, "a CDC_MIN file is one chunk");
    });
  }

  it("10 MiB incompressible file", async () => {
    const data = randomBytes(10 << 20, 10);
    const { storage } = await roundTrip({ "video.mp4": data });
    const packBytes = await storedBytes(storage, "data");
    assert.ok(packBytes >= data.length, "random data does not shrink");
    assert.ok(packBytes < data.length * 1.01, `pack overhead too large: ${packBytes}`);
  });

  it("2 MiB compressible text file (compressed in storage)", async () => {
    const data = textBytes(2 << 20, 2);
    const { storage } = await roundTrip({ "chat.txt": data });
    const packBytes = await storedBytes(storage, "data");
    assert.ok(packBytes < data.length / 2, `text should compress: ${packBytes} bytes stored`);
  });

  it("nested folders, including an empty one", async () => {
    await roundTrip(
      {
        Chats: {
          "2024": { January: { "log.txt": textBytes(10_000, 3), "img.jpg": randomBytes(5000, 4) } },
          "2025": { "log.txt": textBytes(7000, 5) },
          Empty: {},
        },
        "top.txt": utf8("hello"),
      },
      1000,
    );
  });

  it("200 small files", async () => {
    const files: Spec = {};
    for (let i = 0; i < 200; i++) {
      files[`msg-${String(i).padStart(3, "0")}.json`] =
        i % 2 ? textBytes(i * 37, i) : randomBytes(i * 23, i);
    }
    const { result } = await roundTrip({ Messages: files });
    assert.equal(result.snapshot.summary.files, 200);
    assert.equal(result.snapshot.summary.dirs, 1);
  });

  it("fake SQLite database of 3000 pages is chunked one blob per page", async () => {
    const pages = 3000;
    const db = fakeSqlite(pages, 42);
    const { storage, result, reader, ref } = await roundTrip({ "chat.db": db }, 7777);
    const root = await reader.loadTree(ref.snapshot.tree);
    const node = root.nodes[0] as FileNode;
    assert.equal(node.size, db.length);
    assert.ok(node.lists && node.lists.length >= 1, "3000 page IDs go to list blobs");
    const lists = node.lists.length;
    assert.ok(lists <= Math.ceil(pages / 100), `${lists} list blobs for ${pages} pages`);

    // pages + lists + one root tree, and every data blob is one page.
    assert.equal(result.snapshot.summary.newBlobs, pages + lists + 1);
    const packs = await reader.livePacks();
    const dataEntries = packs.flatMap((pk) => pk.entries).filter((e) => e.type === BLOB_DATA);
    assert.equal(dataEntries.length, pages);
    for (const e of dataEntries) assert.equal(e.length, SQLITE_PAGE);
    assert.equal((await names(storage, "index")).length, 1);
  });
});

describe("deduplication", () => {
  it("a second identical backup adds no blob, pack or index, only a snapshot", async () => {
    const spec: Spec = {
      "chat.db": fakeSqlite(300, 1),
      Media: { "a.jpg": randomBytes(1_500_000, 2), "b.txt": textBytes(300_000, 3) },
    };
    const { storage, repo } = await newRepo();
    await run(repo, spec);
    const before = {
      data: await names(storage, "data"),
      index: await names(storage, "index"),
      snapshots: await names(storage, "snapshots"),
      blobs: await blobTypes(storage),
    };
    const second = await run(await Repository.open(storage, p, KEY), spec);
    assert.equal(second.snapshot.summary.newBlobs, 0);
    assert.equal(second.snapshot.summary.addedBytes, 0);
    assert.deepEqual(await names(storage, "data"), before.data);
    assert.deepEqual(await names(storage, "index"), before.index);
    const snaps = await names(storage, "snapshots");
    assert.equal(snaps.length, before.snapshots.length + 1);
    assert.deepEqual(await blobTypes(storage), before.blobs);
    const reader = await reopen(storage);
    assert.deepEqual(await restoreToMemory(reader, await reader.findSnapshot("latest")), spec);
  });

  it("changing 10 pages of a 3000-page database stores about 10 new data blobs", async () => {
    const db = fakeSqlite(3000, 7);
    const { storage, repo } = await newRepo();
    const first = await run(repo, { "chat.db": db });
    const before = await blobTypes(storage);

    const changed = db.slice();
    const touched = [0, 1, 17, 500, 501, 1024, 1999, 2500, 2998, 2999];
    for (const [i, page] of touched.entries()) rewritePage(changed, page, 1000 + i);
    const second = await run(await Repository.open(storage, p, KEY), { "chat.db": changed });
    const added = newBlobsByType(before, await blobTypes(storage));

    assert.equal(added.data, touched.length, "exactly the rewritten pages are new");
    assert.equal(added.tree, 1, "only the root tree changes");
    // Each list that holds a changed page is stored as a patch of the parent's (SPEC §8).
    assert.equal(added.list, 0, "no list is stored whole");
    assert.ok(
      added.listPatch >= 1 && added.listPatch <= touched.length,
      `${added.listPatch} list patches`,
    );
    assert.equal(second.snapshot.summary.newBlobs, added.data + added.tree + added.listPatch);
    // About 10 pages plus lists, not the 12 MiB database.
    assert.ok(
      second.snapshot.summary.addedBytes < 400_000,
      `${second.snapshot.summary.addedBytes}`,
    );

    const reader = await reopen(storage);
    assert.deepEqual(await restoreToMemory(reader, await reader.findSnapshot(second.id)), {
      "chat.db": changed,
    });
    assert.deepEqual(await restoreToMemory(reader, await reader.findSnapshot(first.id)), {
      "chat.db": db,
    });
  });

  it("a file renamed and moved to another folder adds no data blob", async () => {
    const photo = randomBytes(3_000_000, 11);
    const db = fakeSqlite(200, 12);
    const { storage, repo } = await newRepo();
    await run(repo, { A: { "photo.jpg": photo, "chat.db": db }, B: {} });
    const before = await blobTypes(storage);
    const moved: Spec = { A: {}, B: { "renamed.jpg": photo, Deeper: { "moved.db": db } } };
    await run(await Repository.open(storage, p, KEY), moved);
    const added = newBlobsByType(before, await blobTypes(storage));
    assert.equal(added.data, 0);
    assert.equal(added.list, 0);
    assert.ok(added.tree >= 1);
    const reader = await reopen(storage);
    assert.deepEqual(await restoreToMemory(reader, await reader.findSnapshot("latest")), moved);
  });

  it("the same content under two names is stored once", async () => {
    const data = randomBytes(3_000_000, 21);
    const { storage, repo } = await roundTrip({ "one.bin": data, Dir: { "two.bin": data } });
    const chunks = await chunkLengths(data, 1 << 20, repo.keys.gear);
    const types = [...(await blobTypes(storage)).values()];
    assert.equal(types.filter((t) => t === BLOB_DATA).length, chunks.length);
    assert.ok((await storedBytes(storage, "data")) < data.length * 1.05, "stored once");
  });
});

describe("snapshots", () => {
  it("form a chain: seq 1, 2, 3 with parent links", async () => {
    const { storage, repo } = await newRepo();
    const r1 = await run(repo, { "a.txt": utf8("one") });
    const r2 = await run(repo, { "a.txt": utf8("two") });
    const r3 = await run(await Repository.open(storage, p, KEY), { "a.txt": utf8("three") });
    const all = await (await reopen(storage)).snapshots();
    assert.deepEqual(
      all.map((s) => s.id),
      [r1.id, r2.id, r3.id],
    );
    assert.deepEqual(
      all.map((s) => s.snapshot.seq),
      [1, 2, 3],
    );
    assert.deepEqual(
      all.map((s) => s.snapshot.parent),
      [null, r1.id, r2.id],
    );
    for (const s of all) assert.equal(toHex(p.sha256(await storage.load("snapshots", s.id))), s.id);
  });

  it("are read several at a time, while the index loads, and listed in order", async () => {
    const { storage, repo } = await newRepo();
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push((await run(repo, { "a.txt": utf8(`v${i}`) })).id);
    // Each load of an index file or snapshot takes a few timer turns: count how many of each
    // kind overlap, and whether a snapshot was read while index files were.
    const inFlight = { index: 0, snapshots: 0 };
    const peak = { index: 0, snapshots: 0 };
    let overlapped = false;
    const load = storage.load.bind(storage);
    storage.load = async (kind, name, offset, length) => {
      if (kind !== "index" && kind !== "snapshots") return load(kind, name, offset, length);
      inFlight[kind]++;
      peak[kind] = Math.max(peak[kind], inFlight[kind]);
      if (inFlight.index > 0 && inFlight.snapshots > 0) overlapped = true;
      try {
        for (let t = 0; t < 3; t++) await new Promise((r) => setTimeout(r, 1));
        return await load(kind, name, offset, length);
      } finally {
        inFlight[kind]--;
      }
    };
    // Not `reopen`: the index is not loaded yet, so snapshots() loads it.
    const all = await (await Repository.open(storage, p, KEY)).snapshots();
    assert.deepEqual(
      all.map((s) => s.id),
      ids,
    );
    assert.ok(peak.snapshots >= 8, `snapshots read at once: ${peak.snapshots}`);
    assert.ok(peak.index >= 2, `index files read at once: ${peak.index}`);
    assert.ok(overlapped, "snapshots are read while the index loads");
  });

  it("findSnapshot resolves latest, full IDs and unique prefixes", async () => {
    const { storage, repo } = await newRepo();
    await assert.rejects(repo.findSnapshot("latest"), NotFoundError);
    const r1 = await run(repo, { "a.txt": utf8("one") });
    const r2 = await run(repo, { "a.txt": utf8("two") });
    const reader = await reopen(storage);
    assert.equal((await reader.findSnapshot("latest")).id, r2.id);
    assert.equal((await reader.findSnapshot(r1.id)).id, r1.id);
    assert.equal((await reader.findSnapshot(r1.id.slice(0, 12))).id, r1.id);
    assert.equal((await reader.findSnapshot(r2.id.slice(0, 12))).snapshot.seq, 2);

    let unknown = "0".repeat(64);
    while (unknown === r1.id || unknown === r2.id) unknown = `1${unknown.slice(1)}`;
    await assert.rejects(reader.findSnapshot(unknown), (e) => isLocketError(e, "not_found"));
    await assert.rejects(reader.findSnapshot("LATEST"), (e) => isLocketError(e, "usage"));
    await assert.rejects(reader.findSnapshot("abc"), (e) => isLocketError(e, "usage"));
    await assert.rejects(reader.findSnapshot("not-hex!"), (e) => isLocketError(e, "usage"));
  });

  it("findSnapshot rejects an ambiguous prefix with UsageError", async () => {
    const { storage, repo } = await newRepo();
    const r = await run(repo, { "a.txt": utf8("one") });
    // Seal the same snapshot until two IDs share a 4-digit prefix (birthday bound: ~2^8 tries).
    const byPrefix = new Map<string, { name: string; sealed: Uint8Array }>();
    let shared = "";
    for (let i = 0; i < 20_000 && !shared; i++) {
      const sealed = await sealSnapshot(p, repo.keys, r.snapshot);
      const name = toHex(p.sha256(sealed));
      const other = byPrefix.get(name.slice(0, 4));
      if (other && other.name !== name) {
        shared = name.slice(0, 4);
        await storage.save("snapshots", name, sealed);
        await storage.save("snapshots", other.name, other.sealed);
      }
      byPrefix.set(name.slice(0, 4), { name, sealed });
    }
    assert.ok(shared, "found two IDs with a common prefix");
    const reader = await reopen(storage);
    await assert.rejects(reader.findSnapshot(shared), (e) => {
      assert.ok(e instanceof UsageError);
      return isLocketError(e, "usage", "ambiguous");
    });
  });
});

describe("chunker", () => {
  it("gives identical boundaries for any input block size (CDC)", async () => {
    const { gear } = await deriveKeys(p, KEY);
    const data = randomBytes(12 << 20, 99);
    const reference = await chunkLengths(data, data.length, gear);
    assert.ok(reference.length >= 4, `${reference.length} chunks`);
    for (const [i, len] of reference.entries()) {
      assert.ok(len <= CDC_MAX);
      if (i < reference.length - 1) assert.ok(len > CDC_MIN, `chunk ${i} is ${len} bytes`);
    }
    for (const size of [4096, 65536, 1_000_003]) {
      assert.deepEqual(await chunkLengths(data, size, gear), reference, `block size ${size}`);
    }
  });

  it("gives identical boundaries with 1-byte blocks (small data)", async () => {
    const { gear } = await deriveKeys(p, KEY);
    const data = randomBytes(CDC_MIN + 20_000, 5);
    const reference = await chunkLengths(data, data.length, gear);
    assert.deepEqual(await chunkLengths(data, 1, gear), reference);
    assert.deepEqual(await chunkLengths(data, 4096, gear), reference);
    assert.deepEqual(await chunkLengths(data, 65536, gear), reference);
  });

  it("cuts a SQLite database per page for any block size, 1 byte included", async () => {
    const { gear } = await deriveKeys(p, KEY);
    const db = fakeSqlite(20, 6);
    const expected = new Array(20).fill(SQLITE_PAGE);
    for (const size of [1, 99, 100, 101, 4096, 65536, db.length]) {
      assert.deepEqual(await chunkLengths(db, size, gear), expected, `block size ${size}`);
    }
    const big = fakeSqlite(5, 7, 65536);
    big[16] = 0;
    big[17] = 1; // page size 1 means 65536
    assert.deepEqual(await chunkLengths(big, 4096, gear), new Array(5).fill(65536));
  });

  it("falls back to CDC for a SQLite magic with an invalid page size, and for tiny files", async () => {
    const { gear } = await deriveKeys(p, KEY);
    const db = fakeSqlite(100, 8);
    db[16] = 0x03;
    db[17] = 0xe8; // 1000: not a power of two
    assert.deepEqual(await chunkLengths(db, 4096, gear), [db.length]);
    const tiny = fakeSqlite(1, 9).subarray(0, 99);
    assert.deepEqual(await chunkLengths(tiny, 1, gear), [99]);
    assert.deepEqual(await chunkLengths(new Uint8Array(0), 1, gear), []);
  });
});

describe("recovery key", () => {
  const keys = [KEY, new Uint8Array(32), new Uint8Array(32).fill(0xff), randomBytes(32, 77)];

  it("formats as 17 groups of 4 and parses back", () => {
    for (const k of keys) {
      const text = formatRecoveryKey(k);
      assert.match(text, /^[0-9a-f]{4}( [0-9a-f]{4}){16}$/);
      assert.deepEqual(parseRecoveryKey(text), k);
    }
  });

  it("rejects every single-digit substitution at every position", () => {
    for (const k of keys) {
      const digits = formatRecoveryKey(k).replaceAll(" ", "");
      let tried = 0;
      for (let i = 0; i < digits.length; i++) {
        for (const d of "0123456789abcdef") {
          if (d === digits[i]) continue;
          const typo = digits.slice(0, i) + d + digits.slice(i + 1);
          assert.throws(() => parseRecoveryKey(typo), WrongKeyError, `digit ${i} → ${d}`);
          tried++;
        }
      }
      assert.equal(tried, 68 * 15);
    }
  });

  it("rejects every adjacent swap of differing digits", () => {
    for (const k of keys) {
      const digits = formatRecoveryKey(k).replaceAll(" ", "");
      for (let i = 0; i + 1 < digits.length; i++) {
        if (digits[i] === digits[i + 1]) continue;
        const swapped = digits.slice(0, i) + digits[i + 1] + digits[i] + digits.slice(i + 2);
        assert.throws(() => parseRecoveryKey(swapped), WrongKeyError, `swap at ${i}`);
      }
    }
  });

  it("accepts spaces, hyphens, line breaks and uppercase", () => {
    const text = formatRecoveryKey(KEY);
    const digits = text.replaceAll(" ", "");
    assert.deepEqual(parseRecoveryKey(digits), KEY);
    assert.deepEqual(parseRecoveryKey(text.toUpperCase()), KEY);
    assert.deepEqual(parseRecoveryKey(text.replaceAll(" ", "-")), KEY);
    assert.deepEqual(parseRecoveryKey(`  ${text.replaceAll(" ", "\n")}\n`), KEY);
    assert.deepEqual(parseRecoveryKey(digits.match(/.{2}/g)!.join(" - ")), KEY);
  });

  it("rejects wrong lengths and non-hex characters with WrongKeyError", () => {
    const digits = formatRecoveryKey(KEY).replaceAll(" ", "");
    for (const bad of ["", digits.slice(1), `${digits}0`, `${digits.slice(1)}g`, "z".repeat(68)]) {
      assert.throws(
        () => parseRecoveryKey(bad),
        (e) => isLocketError(e, "wrong_key"),
      );
    }
  });

  it("uses CRC-16/XMODEM (check value 0x31c3)", () => {
    assert.equal(crc16xmodem(utf8("123456789")), 0x31c3);
    assert.equal(crc16xmodem(new Uint8Array(0)), 0);
  });
});

describe("webPrimitives and nodePrimitives agree", () => {
  const web = webPrimitives();
  // Around 64 KiB, where node's AES-GCM switches between node:crypto and WebCrypto.
  const inputs = [
    new Uint8Array(0),
    utf8("abc"),
    randomBytes(1000, 1),
    randomBytes(65536 - 17, 3),
    randomBytes(65536 - 16, 4),
    randomBytes(65535, 6),
    randomBytes(65536, 7),
    randomBytes(1 << 20, 2),
  ];

  it("sha256", () => {
    assert.equal(
      toHex(web.sha256(utf8("abc"))),
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    );
    for (const d of inputs) assert.deepEqual(web.sha256(d), p.sha256(d));
  });

  it("hmac-sha256", () => {
    assert.equal(
      toHex(web.hmacSha256(utf8("Jefe"), utf8("what do ya want for nothing?"))),
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    );
    for (const key of [new Uint8Array(0), randomBytes(32, 3), randomBytes(100, 4)]) {
      for (const d of inputs) assert.deepEqual(web.hmacSha256(key, d), p.hmacSha256(key, d));
    }
  });

  it("hkdf-sha256", async () => {
    const ikm = new Uint8Array(22).fill(0x0b);
    const salt = Uint8Array.from({ length: 13 }, (_, i) => i);
    const info = Uint8Array.from({ length: 10 }, (_, i) => 0xf0 + i);
    const rfc5869 =
      "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865";
    assert.equal(toHex(await web.hkdfSha256(ikm, salt, info, 42)), rfc5869);
    assert.equal(toHex(await p.hkdfSha256(ikm, salt, info, 42)), rfc5869);
    for (const n of [32, 1024]) {
      assert.deepEqual(
        await web.hkdfSha256(KEY, new Uint8Array(0), utf8("locket/v1/x"), n),
        await p.hkdfSha256(KEY, new Uint8Array(0), utf8("locket/v1/x"), n),
      );
    }
    const a = await deriveKeys(web, KEY);
    const b = await deriveKeys(p, KEY);
    assert.deepEqual(a.keyCheck, b.keyCheck);
    assert.deepEqual(a.id, b.id);
    assert.deepEqual(a.gear, b.gear);
  });

  it("aes-256-gcm: seal with one, open with the other (fixed nonce)", async () => {
    const raw = randomBytes(32, 5);
    const nonce = Uint8Array.from({ length: 12 }, (_, i) => i);
    const aad = utf8("locket/v1/segment");
    const wk = await web.aesGcmKey(raw);
    const nk = await p.aesGcmKey(raw);
    for (const plain of inputs) {
      const fromWeb = await wk.seal(nonce, plain, aad);
      const fromNode = await nk.seal(nonce, plain, aad);
      assert.deepEqual(fromWeb, fromNode);
      assert.equal(fromWeb.length, plain.length + 16);
      assert.deepEqual(await nk.open(nonce, fromWeb, aad), plain);
      assert.deepEqual(await wk.open(nonce, fromNode, aad), plain);
      const bad = fromWeb.slice();
      bad[bad.length - 1] ^= 1;
      assert.equal(await nk.open(nonce, bad, aad), null);
      assert.equal(await wk.open(nonce, bad, aad), null);
      assert.equal(await nk.open(nonce, fromWeb, utf8("other")), null);
      assert.equal(await wk.open(nonce, fromNode, utf8("other")), null);
    }
    assert.equal(await nk.open(nonce, new Uint8Array(5), aad), null);
    assert.equal(await wk.open(nonce, new Uint8Array(5), aad), null);
  });

  it("aes-256-gcm: sealParts joined are seal's bytes", async () => {
    const nk = await p.aesGcmKey(randomBytes(32, 6));
    assert.ok(nk.sealParts, "node's key offers sealParts");
    const nonce = Uint8Array.from({ length: 12 }, (_, i) => 3 * i);
    for (const plain of inputs) {
      const parts = await nk.sealParts(nonce, plain, utf8("aad"));
      assert.equal(parts.at(-1)?.length, 16, "the tag comes last");
      assert.deepEqual(concat(...parts), await nk.seal(nonce, plain, utf8("aad")));
    }
  });

  it("a repository written with one restores with the other", async () => {
    const spec: Spec = { "chat.db": fakeSqlite(50, 3), "t.txt": textBytes(400_000, 4) };
    const a = await newRepo(web);
    await run(a.repo, spec);
    const r1 = await reopen(a.storage, p);
    assert.deepEqual(await restoreToMemory(r1, await r1.findSnapshot("latest")), spec);

    const b = await newRepo(p);
    await run(b.repo, spec);
    // Node compressed the text with zstd; the browser's primitives decode it in JavaScript.
    const r2 = await reopen(b.storage, web);
    assert.deepEqual(await restoreToMemory(r2, await r2.findSnapshot("latest")), spec);
  });
});

describe("large folders", () => {
  it("split over several tree blobs, and one new photo re-stores one part, not the listing", async () => {
    // 7 000 entries with 200-character names: a ~1.8 MB listing, above TREE_SPLIT_BYTES.
    const media: Spec = {};
    for (let i = 0; i < 7_000; i++)
      media[`IMG-${String(i).padStart(6, "0")}-${"x".repeat(189)}.jpg`] = utf8(`p${i}`);
    const { storage, repo, reader, ref } = await roundTrip({ Media: media });
    const root = await reader.loadTree(ref.snapshot.tree);
    const dir = root.nodes[0];
    assert.equal(dir.type, "dir");
    assert.ok(
      dir.type === "dir" && dir.subtrees && dir.subtrees.length >= 2,
      "the folder is split",
    );

    const before = await blobTypes(storage);
    media[`IMG-003000a-${"y".repeat(188)}.jpg`] = utf8("new photo");
    await run(repo, { Media: media });
    const added = newBlobsByType(before, await blobTypes(storage));
    assert.equal(added.data, 1);
    // The part holding the new name, the split folder's parent (the root): nothing else.
    assert.equal(added.tree, 2, `new tree blobs: ${added.tree}`);
    const second = await reopen(storage);
    assert.deepEqual(await restoreToMemory(second, await second.findSnapshot("latest")), {
      Media: media,
    });
  });
});

describe("look-ahead", () => {
  it("starts the files after a folder only once the folder is backed up", async () => {
    // Starting a file may begin a database's read transaction (SourceFile.localFile): one that
    // follows a folder must not be held while the whole folder is backed up.
    const { repo } = await newRepo();
    const started: string[] = [];
    const inner = localChunker(p, repo.keys);
    const chunker: FileChunker = {
      start(file, opts) {
        started.push((file as unknown as { name: string }).name);
        return inner.start(file, opts);
      },
    };
    const spec: Spec = {
      "a.txt": utf8("a"),
      Media: { "1.jpg": utf8("1"), "2.jpg": utf8("2"), "3.jpg": utf8("3") },
      "chat.db": utf8("db"),
      "z.txt": utf8("z"),
    };
    await backup(repo, sourceTree(spec), { host: "h", paths: Object.keys(spec), chunker });
    assert.deepEqual(started, ["a.txt", "1.jpg", "2.jpg", "3.jpg", "chat.db", "z.txt"]);
  });
});
