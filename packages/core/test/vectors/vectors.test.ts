/**
 * Checks every test vector in data/ (SPEC.md §17, format in README.md) against the code, with
 * nodePrimitives and with webPrimitives. The file format is parsed here from scratch, not with the
 * generator's code, as another implementation would parse it.
 */

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { nodePrimitives } from "../../../node/src/primitives.ts";
import { concat, equalBytes, fromHex, fromUtf8, toHex, utf8 } from "../../src/bytes.ts";
import { type ChunkingMode, chunkStream } from "../../src/chunker/chunk-stream.ts";
import { cdcCut, cdcCutJs } from "../../src/chunker/fastcdc.ts";
import { SQLITE_HEADER_BYTES, sqlitePageSize } from "../../src/chunker/sqlite.ts";
import { deriveKeys, LABELS, type RepoKeys } from "../../src/crypto/keys.ts";
import type { AeadKey, Primitives } from "../../src/crypto/primitives.ts";
import { crc16xmodem, formatRecoveryKey, parseRecoveryKey } from "../../src/crypto/recovery-key.ts";
import { AAD, open, seal } from "../../src/crypto/seal.ts";
import { webPrimitives } from "../../src/crypto/web.ts";
import { Packer } from "../../src/engine/packer.ts";
import { decodeDeltaMemo, sealDeltaMemo } from "../../src/engine/page-deltas.ts";
import { LocketError } from "../../src/errors.ts";
import {
  BLOB_LIST,
  BLOB_LIST_PATCH,
  type BlobType,
  blobId,
  isBlobType,
} from "../../src/format/blob.ts";
import {
  type CondemnedPack,
  type ForgottenSnapshot,
  type IndexedPack,
  openIndex,
  sealIndex,
} from "../../src/format/index-file.ts";
import { applyListPatch, listPatchBase } from "../../src/format/list-patch.ts";
import { type PackEntry, sealPackTrailer } from "../../src/format/pack.ts";
import { decodePayload, encodePayload } from "../../src/format/payload.ts";
import { openSnapshot, type Snapshot, sealSnapshot } from "../../src/format/snapshot.ts";
import {
  type DirNode,
  decodeTree,
  encodeTree,
  type FileNode,
  parseIdList,
  splitIdLists,
  splitTreeNodes,
} from "../../src/format/tree.ts";
import { Repository } from "../../src/repository.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";

const DATA_DIR = join(import.meta.dirname, "data");

/** Fewest cases of each kind and expectation; a kind that disappears fails the suite. */
const MIN_CASES: Record<string, number> = {
  "keys/ok": 2,
  "recovery-key/ok": 3,
  "recovery-key/wrong_key": 4,
  "blob-id/ok": 4,
  "seal/ok": 4,
  "seal/null": 3,
  "payload/ok": 3,
  "payload/error": 3,
  "chunk/ok": 8,
  "pack/ok": 2,
  "pack/error": 5,
  "index/ok": 5,
  "index/error": 8,
  "snapshot/ok": 2,
  "snapshot/error": 3,
  "tree/ok": 2,
  "tree/error": 4,
  "tree-split/ok": 2,
  "tree-join/ok": 2,
  "tree-join/error": 3,
  "memo/ok": 2,
  "memo/null": 4,
  "id-lists/ok": 4,
  "list-patch/ok": 3,
  "list-patch/error": 9,
};

// ---------------------------------------------------------------------------------------------
// The file format

interface Vector {
  readonly name: string;
  readonly kind: string;
  readonly expect: string;
  readonly meta: ReadonlyMap<string, readonly string[]>;
  /** Every metadata line as `[key, value]`, in file order. */
  readonly lines: readonly (readonly [string, string])[];
  readonly body: Uint8Array;
}

function parseVector(name: string, text: string): Vector {
  const sep = text.indexOf("\n\n");
  assert.ok(sep > 0, `${name}: no blank line after the metadata`);
  const meta = new Map<string, string[]>();
  const lines: [string, string][] = [];
  for (const line of text.slice(0, sep).split("\n")) {
    const m = /^([a-z0-9_]+):(?: (.*))?$/.exec(line);
    assert.ok(m, `${name}: malformed metadata line ${JSON.stringify(line)}`);
    const values = meta.get(m[1]) ?? [];
    values.push(m[2] ?? "");
    meta.set(m[1], values);
    lines.push([m[1], m[2] ?? ""]);
  }
  const hex = text.slice(sep + 2).replace(/\n/g, "");
  assert.match(hex, /^([0-9a-f]{2})*$/, `${name}: body is not lowercase hex`);
  const one = (k: string) => {
    const v = meta.get(k);
    assert.ok(v && v.length === 1, `${name}: expected one ${k} line`);
    return v[0];
  };
  return { name, kind: one("kind"), expect: one("expect"), meta, lines, body: fromHex(hex) };
}

function loadVectors(): Vector[] {
  let files: string[] = [];
  try {
    files = readdirSync(DATA_DIR)
      .filter((f) => f.endsWith(".txt"))
      .sort();
  } catch {
    // A missing folder is reported by the count test below.
  }
  return files.map((f) => parseVector(f.slice(0, -4), readFileSync(join(DATA_DIR, f), "utf8")));
}

/** Typed access to a vector's metadata. */
class Fields {
  readonly v: Vector;
  constructor(v: Vector) {
    this.v = v;
  }
  all(k: string): readonly string[] {
    return this.v.meta.get(k) ?? [];
  }
  str(k: string): string {
    const v = this.all(k);
    assert.equal(v.length, 1, `${this.v.name}: expected one ${k} line`);
    return v[0];
  }
  has(k: string): boolean {
    return this.v.meta.has(k);
  }
  hex(k: string): Uint8Array {
    return fromHex(this.str(k));
  }
  int(k: string): number {
    return toInt(this.str(k), `${this.v.name}: ${k}`);
  }
  ints(k: string): number[] {
    const s = this.str(k);
    return s === "" ? [] : s.split(", ").map((x) => toInt(x, `${this.v.name}: ${k}`));
  }
}

function toInt(s: string, what: string): number {
  assert.match(s, /^(0|[1-9][0-9]*)$/, `${what}: not a decimal integer: ${s}`);
  const n = Number(s);
  assert.ok(Number.isSafeInteger(n), what);
  return n;
}

/** `entry:` value: type id segment_offset segment_length offset length. */
function parseEntry(s: string): PackEntry {
  const [type, id, ...nums] = s.split(" ");
  const t = toInt(type, "entry type");
  assert.ok(isBlobType(t));
  assert.equal(nums.length, 4);
  const [segmentOffset, segmentLength, offset, length] = nums.map((n) => toInt(n, "entry"));
  return { type: t, id: fromHex(id), segmentOffset, segmentLength, offset, length };
}

/**
 * An `index` case's `pack` (`name entry_count`), `condemned` (`name condemned_at entry_count`)
 * and `forgotten` (`snapshot_id seq`) lines. Each `entry` line belongs to the nearest `pack` or
 * `condemned` line above it, which must declare exactly as many entries as follow it.
 */
function parseIndexLines(v: Vector): {
  packs: IndexedPack[];
  condemned: CondemnedPack[];
  forgotten: ForgottenSnapshot[];
} {
  const packs: IndexedPack[] = [];
  const condemned: CondemnedPack[] = [];
  const forgotten: ForgottenSnapshot[] = [];
  let current: { declared: number; entries: PackEntry[] } | undefined;
  const close = () => {
    if (current) assert.equal(current.entries.length, current.declared, `${v.name}: entry count`);
    current = undefined;
  };
  for (const [k, value] of v.lines) {
    const parts = value.split(" ");
    if (k === "pack") {
      close();
      assert.equal(parts.length, 2, `${v.name}: pack line`);
      const entries: PackEntry[] = [];
      current = { declared: toInt(parts[1], "entry count"), entries };
      packs.push({ packId: fromHex(parts[0]), entries });
    } else if (k === "condemned") {
      close();
      assert.equal(parts.length, 3, `${v.name}: condemned line`);
      const entries: PackEntry[] = [];
      current = { declared: toInt(parts[2], "entry count"), entries };
      const condemnedAt = toInt(parts[1], "condemned at");
      condemned.push({ packId: fromHex(parts[0]), condemnedAt, entries });
    } else if (k === "entry") {
      assert.ok(current, `${v.name}: an entry without a pack or condemned line above it`);
      current.entries.push(parseEntry(value));
    } else {
      close();
      if (k === "forgotten") {
        assert.equal(parts.length, 2, `${v.name}: forgotten line`);
        forgotten.push({ snapshotId: fromHex(parts[0]), seq: toInt(parts[1], "seq") });
      }
    }
  }
  close();
  return { packs, condemned, forgotten };
}

/** `SHA256(seed || u32le(0)) || SHA256(seed || u32le(1)) || …`, truncated to `length`. */
function sha256Ctr(seed: Uint8Array, length: number): Uint8Array {
  const out = new Uint8Array(length);
  const block = new Uint8Array(seed.length + 4);
  block.set(seed);
  const view = new DataView(block.buffer);
  for (let i = 0; 32 * i < length; i++) {
    view.setUint32(seed.length, i, true);
    const h = nodePrimitives.sha256(block);
    out.set(h.subarray(0, Math.min(32, length - 32 * i)), 32 * i);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Primitives

const PRIMITIVES: readonly (readonly [string, Primitives])[] = [
  ["node", nodePrimitives],
  // As in a browser: no compressor, zstd decoded in JavaScript (fzstd).
  ["web", webPrimitives()],
];

/** `base` whose randomBytes returns `nonces` in order (12 bytes each) and without a compressor. */
function withNonces(base: Primitives, nonces: readonly Uint8Array[]): Primitives {
  const queue = [...nonces];
  return {
    ...base,
    randomBytes(n) {
      assert.equal(n, 12, "only nonces are drawn when sealing");
      const next = queue.shift();
      assert.ok(next, "more nonces drawn than the vector lists");
      return next;
    },
    zstdCompress: () => null,
  };
}

const keyCache = new Map<string, Promise<RepoKeys>>();
function keysOf(prim: Primitives, primName: string, root: Uint8Array): Promise<RepoKeys> {
  const k = `${primName}:${toHex(root)}`;
  let keys = keyCache.get(k);
  if (!keys) {
    keys = deriveKeys(prim, root);
    keyCache.set(k, keys);
  }
  return keys;
}

async function assertCode(code: string, f: () => Promise<unknown>): Promise<void> {
  await assert.rejects(f, (err: unknown) => {
    assert.ok(err instanceof LocketError, `expected a LocketError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
}

/** Byte equality; a mismatch is reported as hex (cut short for big inputs). */
function bytesEqual(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (equalBytes(actual, expected)) return;
  const show = (b: Uint8Array) => `${b.length} bytes: ${toHex(b.subarray(0, 256))}`;
  assert.equal(show(actual), show(expected), what);
  assert.fail(`${what}: bytes differ after the first 256`);
}

// ---------------------------------------------------------------------------------------------
// Checks per kind

type Check = (v: Vector, f: Fields) => Promise<void>;

const checks: Record<string, Check> = {
  async keys(v, f) {
    const root = f.hex("root_key");
    const gearBytes = v.body;
    assert.equal(gearBytes.length, 1024);
    const view = new DataView(gearBytes.buffer, gearBytes.byteOffset, 1024);
    const gear = Array.from({ length: 256 }, (_, i) => view.getUint32(4 * i, true));
    assert.deepEqual(gear.slice(0, 8), f.ints("gear_first8"));
    assert.equal(gear[255], f.int("gear_last"));
    for (const [pname, prim] of PRIMITIVES) {
      const hkdf = (label: string, n = 32) =>
        prim.hkdfSha256(root, new Uint8Array(0), utf8(label), n);
      bytesEqual(await hkdf(LABELS.dataKey), f.hex("data_key"), `${pname}: data key`);
      bytesEqual(await hkdf(LABELS.metaKey), f.hex("meta_key"), `${pname}: meta key`);
      bytesEqual(await hkdf(LABELS.idKey), f.hex("id_key"), `${pname}: id key`);
      bytesEqual(await hkdf(LABELS.keyCheck), f.hex("key_check"), `${pname}: key check`);
      bytesEqual(await hkdf(LABELS.chunkerGear, 1024), gearBytes, `${pname}: gear`);
      const keys = await deriveKeys(prim, root);
      bytesEqual(keys.id, f.hex("id_key"), `${pname}: deriveKeys id`);
      bytesEqual(keys.keyCheck, f.hex("key_check"), `${pname}: deriveKeys key check`);
      assert.deepEqual([...keys.gear], gear, `${pname}: deriveKeys gear`);
      const nonce = new Uint8Array(12).fill(7);
      const msg = utf8("which key is this?");
      for (const [name, key, raw] of [
        ["data", keys.data, f.hex("data_key")],
        ["meta", keys.meta, f.hex("meta_key")],
      ] as const) {
        const want = await (await prim.aesGcmKey(raw)).seal(nonce, msg, AAD.segment);
        bytesEqual(await key.seal(nonce, msg, AAD.segment), want, `${pname}: deriveKeys ${name}`);
      }
    }
  },

  async "recovery-key"(v, f) {
    const text = fromUtf8(v.body);
    if (v.expect === "wrong_key") {
      assert.throws(
        () => parseRecoveryKey(text),
        (err: unknown) => err instanceof LocketError && err.code === "wrong_key",
      );
      return;
    }
    assert.equal(v.expect, "ok");
    const root = f.hex("root_key");
    bytesEqual(parseRecoveryKey(text), root, "parse");
    const formatted = f.str("recovery_key");
    assert.equal(formatRecoveryKey(root), formatted);
    assert.match(formatted, /^[0-9a-f]{4}( [0-9a-f]{4}){16}$/);
    assert.equal(formatted.slice(-4), crc16xmodem(root).toString(16).padStart(4, "0"));
    bytesEqual(parseRecoveryKey(formatted), root, "parse the formatted key");
  },

  async "blob-id"(v, f) {
    const type = f.int("type");
    assert.ok(isBlobType(type));
    for (const [pname, prim] of PRIMITIVES) {
      const keys = await keysOf(prim, pname, f.hex("root_key"));
      bytesEqual(keys.id, f.hex("id_key"), `${pname}: id key`);
      bytesEqual(blobId(prim, keys.id, type, v.body), f.hex("id"), `${pname}: blob id`);
    }
  },

  async seal(v, f) {
    const keyName = f.str("key_name");
    assert.ok(keyName === "data" || keyName === "meta");
    const aad = utf8(f.str("aad"));
    assert.ok(
      Object.values(AAD).some((a) => equalBytes(a, aad)),
      "aad is a SPEC label",
    );
    for (const [pname, prim] of PRIMITIVES) {
      const keys = await keysOf(prim, pname, f.hex("root_key"));
      const derived: AeadKey = keyName === "data" ? keys.data : keys.meta;
      const imported: AeadKey = await prim.aesGcmKey(f.hex("key"));
      for (const key of [derived, imported]) {
        if (v.expect === "null") {
          assert.equal(await open(key, v.body, aad), null, `${pname}: opens`);
          continue;
        }
        assert.equal(v.expect, "ok");
        const nonce = f.hex("nonce");
        const plain = f.hex("plaintext");
        bytesEqual(v.body.subarray(0, 12), nonce, "nonce");
        bytesEqual(
          await key.seal(nonce, plain, aad),
          v.body.subarray(12),
          `${pname}: AeadKey.seal`,
        );
        bytesEqual(
          await seal(withNonces(prim, [nonce]), key, plain, aad),
          v.body,
          `${pname}: seal`,
        );
        const opened = await open(key, v.body, aad);
        assert.ok(opened, `${pname}: does not open`);
        bytesEqual(opened, plain, `${pname}: open`);
      }
    }
  },

  async payload(v, f) {
    const limit = f.int("limit");
    for (const [pname, prim] of PRIMITIVES) {
      if (v.expect === "error") {
        assert.throws(() => decodePayload(prim, v.body, limit), `${pname}: decodes`);
        continue;
      }
      assert.equal(v.expect, "ok");
      const raw = f.hex("raw");
      bytesEqual(decodePayload(prim, v.body, limit), raw, `${pname}: decode`);
      const direction = f.str("direction");
      if (direction === "decode") continue;
      assert.equal(direction, "encode-decode");
      const compress = f.str("compress") === "true";
      bytesEqual(encodePayload(prim, raw, compress), v.body, `${pname}: encode`);
    }
  },

  async chunk(v, f) {
    const length = f.int("input_length");
    const tail = f.str("input_tail").split(" ");
    const rest = length - v.body.length;
    assert.ok(rest >= 0);
    let tailBytes: Uint8Array;
    if (tail[0] === "sha256-ctr") tailBytes = sha256Ctr(fromHex(tail[1]), rest);
    else if (tail[0] === "zeros") tailBytes = new Uint8Array(rest);
    else {
      assert.equal(tail[0], "none");
      assert.equal(rest, 0);
      tailBytes = new Uint8Array(0);
    }
    const input = concat(v.body, tailBytes);
    bytesEqual(nodePrimitives.sha256(input), f.hex("input_sha256"), "input rule");

    const root = f.hex("root_key");
    const gear = (await keysOf(nodePrimitives, "node", root)).gear;
    const webGear = (await keysOf(PRIMITIVES[1][1], "web", root)).gear;
    assert.deepEqual([...webGear], [...gear], "web gear table");

    const expected = f.ints("lengths");
    assert.equal(expected.length, f.int("chunks"));
    assert.equal(
      expected.reduce((a, b) => a + b, 0),
      length,
    );
    const mode = f.str("mode");
    const expectedMode: ChunkingMode =
      mode === "pages" ? { kind: "pages", pageSize: f.int("page_size") } : { kind: "cdc" };
    if (mode !== "pages") assert.equal(mode, "cdc");

    const page = sqlitePageSize(input.subarray(0, SQLITE_HEADER_BYTES));
    assert.deepEqual(page ? { kind: "pages", pageSize: page } : { kind: "cdc" }, expectedMode);
    // One shot, over the whole input, with the WebAssembly scanner and the JavaScript reference.
    for (const cut of [cdcCut, cdcCutJs]) {
      const oneShot: number[] = [];
      for (let s = 0; s < input.length; ) {
        const n = page ? Math.min(page, input.length - s) : cut(gear, input, s, input.length, true);
        assert.ok(n > 0);
        oneShot.push(n);
        s += n;
      }
      assert.deepEqual(oneShot, expected, `one-shot (${cut.name})`);
    }

    // Streaming, in blocks of several sizes (1 only for small inputs).
    const blocks = [4096, 65521, Math.max(1, length)];
    if (length <= 64 * 1024) blocks.unshift(1);
    for (const block of blocks) {
      async function* source() {
        if (input.length === 0) yield input;
        for (let o = 0; o < input.length; o += block) yield input.subarray(o, o + block);
      }
      let seenMode: ChunkingMode | undefined;
      const lengths: number[] = [];
      let offset = 0;
      for await (const c of chunkStream(source(), gear, (m) => {
        assert.equal(seenMode, undefined, "mode reported twice");
        seenMode = m;
      })) {
        bytesEqual(c, input.subarray(offset, offset + c.length), `block ${block}: chunk content`);
        offset += c.length;
        lengths.push(c.length);
      }
      assert.deepEqual(lengths, expected, `streaming in blocks of ${block}`);
      assert.deepEqual(seenMode, expectedMode, `streaming in blocks of ${block}: mode`);
    }
  },

  async pack(v, f) {
    const name = f.str("name");
    const root = f.hex("root_key");
    for (const [pname, prim] of PRIMITIVES) {
      const read = async () => {
        const repo = await Repository.init(new MemoryStorage(), prim, root);
        await repo.storage.save("data", name, v.body);
        const entries = await repo.readPackHeader(name); // checks the name against the trailer
        repo.addPack(name, entries);
        const blobs: Uint8Array[] = [];
        for (const e of entries) blobs.push(await repo.loadBlob(toHex(e.id), e.type));
        return { entries, blobs };
      };
      if (v.expect === "error") {
        await assertCode(f.str("error"), read);
        continue;
      }
      assert.equal(v.expect, "ok");
      // The name is the SHA-256 of the trailer: the sealed header and its u32 length (SPEC §7).
      const headerLength = new DataView(v.body.buffer, v.body.byteOffset).getUint32(
        v.body.length - 4,
        true,
      );
      const trailer = v.body.subarray(v.body.length - 4 - headerLength);
      assert.equal(toHex(prim.sha256(trailer)), name, "name");
      const entries = f.all("entry").map(parseEntry);
      const blobs = f.all("blob").map((s) => {
        const [type, hex] = s.split(" ");
        return { type: toInt(type, "blob type") as BlobType, data: fromHex(hex) };
      });
      const got = await read();
      assert.deepEqual(got.entries, entries, `${pname}: header entries`);
      assert.equal(got.blobs.length, blobs.length);
      got.blobs.forEach((b, i) => {
        assert.equal(entries[i].type, blobs[i].type);
        bytesEqual(b, blobs[i].data, `${pname}: blob ${i}`);
      });

      // Encode direction: segments in order, each the stored payload of its blobs, then the header.
      const nonces = f.all("nonce").map(fromHex);
      const wp = withNonces(prim, nonces);
      const keys = await keysOf(prim, pname, root);
      const parts: Uint8Array[] = [];
      for (let i = 0; i < entries.length; ) {
        const seg = entries[i].segmentOffset;
        const raws: Uint8Array[] = [];
        let end = 0;
        for (; i < entries.length && entries[i].segmentOffset === seg; i++) {
          assert.equal(entries[i].offset, end, "blobs lie back to back");
          raws.push(blobs[i].data);
          end += entries[i].length;
        }
        parts.push(
          await seal(wp, keys.data, encodePayload(wp, concat(...raws), false), AAD.segment),
        );
      }
      parts.push(await sealPackTrailer(wp, keys, entries));
      bytesEqual(concat(...parts), v.body, `${pname}: pack bytes`);
    }
  },

  async index(v, f) {
    const name = f.str("name");
    const root = f.hex("root_key");
    for (const [pname, prim] of PRIMITIVES) {
      const keys = await keysOf(prim, pname, root);
      assert.equal(toHex(prim.sha256(v.body)), name, "name");
      if (v.expect === "error") {
        await assertCode(f.str("error"), () => openIndex(prim, keys, v.body, `index/${name}`));
        continue;
      }
      assert.equal(v.expect, "ok");
      const { packs, condemned, forgotten } = parseIndexLines(v);
      assert.deepEqual(
        await openIndex(prim, keys, v.body, `index/${name}`),
        { packs, condemned, forgotten },
        pname,
      );
      const encoding = f.str("encoding");
      if (encoding === "stored") {
        const sealed = await sealIndex(withNonces(prim, [f.hex("nonce")]), keys, packs, {
          condemned,
          forgotten,
        });
        bytesEqual(sealed, v.body, `${pname}: sealIndex`);
      } else assert.equal(encoding, "zstd");
    }
  },

  async snapshot(v, f) {
    const id = f.str("id");
    const root = f.hex("root_key");
    for (const [pname, prim] of PRIMITIVES) {
      const keys = await keysOf(prim, pname, root);
      assert.equal(toHex(prim.sha256(v.body)), id, "id");
      const object = `snapshots/${id}`;
      if (v.expect === "error") {
        await assertCode(f.str("error"), () => openSnapshot(prim, keys, v.body, object));
        continue;
      }
      assert.equal(v.expect, "ok");
      const json = f.str("json");
      const payload = await open(keys.meta, v.body, AAD.snapshot);
      assert.ok(payload);
      assert.equal(payload[0], f.str("encoding") === "zstd" ? 1 : 0, "payload encoding");
      bytesEqual(decodePayload(prim, payload, 16 * 1024 * 1024), utf8(json), `${pname}: payload`);
      const s = await openSnapshot(prim, keys, v.body, object);
      assert.deepEqual(s, JSON.parse(json), pname);
      if (f.str("encoding") === "stored") {
        const sealed = await sealSnapshot(withNonces(prim, [f.hex("nonce")]), keys, s as Snapshot);
        bytesEqual(sealed, v.body, `${pname}: sealSnapshot`);
      }
    }
  },

  async tree(v, f) {
    if (v.expect === "error") {
      assert.throws(() => decodeTree(v.body));
      return;
    }
    assert.equal(v.expect, "ok");
    const tree = decodeTree(v.body);
    assert.equal(tree.nodes.length, f.int("nodes"));
    assert.deepEqual(
      tree.nodes.map((n) => n.name),
      JSON.parse(f.str("names")),
    );
    bytesEqual(encodeTree(tree.nodes), v.body, "encodeTree");
    for (const [pname, prim] of PRIMITIVES) {
      const keys = await keysOf(prim, pname, f.hex("root_key"));
      bytesEqual(blobId(prim, keys.id, 1, v.body), f.hex("id"), `${pname}: tree id`);
    }
  },

  async "tree-split"(v, f) {
    assert.equal(v.body.length, 0);
    const digits = f.int("name_digits");
    const names = Array.from(
      { length: f.int("count") },
      (_, i) => `${f.str("name_prefix")}${String(i).padStart(digits, "0")}${f.str("name_suffix")}`,
    );
    // Entries in reverse order: the split sorts them first.
    const nodes: FileNode[] = names
      .map((name) => ({ type: "file" as const, name, mode: 420, mtimeMs: 0, size: 0, content: [] }))
      .reverse();
    for (const [pname, prim] of PRIMITIVES) {
      const keys = await keysOf(prim, pname, f.hex("root_key"));
      bytesEqual(keys.id, f.hex("id_key"), `${pname}: id key`);
      const parts = splitTreeNodes(nodes, (name) => prim.hmacSha256(keys.id, utf8(name)));
      assert.deepEqual(
        parts.map((x) => x.length),
        f.ints("runs"),
        pname,
      );
      assert.deepEqual(
        parts.map((x) => x[x.length - 1].name),
        f.str("run_last").split(", "),
      );
      assert.deepEqual(
        parts.flat().map((n) => n.name),
        names,
      );
    }
  },

  async "tree-join"(v, f) {
    assert.equal(v.body.length, 0);
    const runs = f.all("run").map(utf8);
    for (const [, prim] of PRIMITIVES) {
      const join = async () => {
        const repo = await Repository.init(new MemoryStorage(), prim, f.hex("root_key"));
        const packer = new Packer(repo);
        const ids: string[] = [];
        for (const run of runs) {
          decodeTree(run);
          const id = blobId(prim, repo.keys.id, 1, run);
          if (!packer.hasId(id)) await packer.add(1, id, run, false);
          ids.push(toHex(id));
        }
        await packer.flush();
        const folder: DirNode = { type: "dir", name: "d", mode: 493, mtimeMs: 0, subtrees: ids };
        return (await repo.dirNodes(folder)).map((n) => n.name);
      };
      if (v.expect === "error") {
        await assertCode(f.str("error"), join);
        continue;
      }
      assert.equal(v.expect, "ok");
      assert.deepEqual(await join(), JSON.parse(f.str("names")));
    }
  },

  async memo(v, f) {
    for (const [pname, prim] of PRIMITIVES) {
      const keys = await keysOf(prim, pname, f.hex("root_key"));
      bytesEqual(keys.id, f.hex("id_key"), `${pname}: id key`);
      const memo = decodeDeltaMemo({ p: prim, keys }, v.body);
      if (v.expect === "null") {
        assert.equal(memo, undefined, `${pname}: a reader ignores it`);
        continue;
      }
      assert.ok(memo, `${pname}: it checks out`);
      assert.equal(memo.pageSize, f.int("page_size"));
      bytesEqual(memo.image, f.hex("image"), `${pname}: image digest`);
      const records = f.all("record").map((line) => {
        const [page, id, delta, base] = line.split(" ");
        const number = new Uint8Array(4);
        new DataView(number.buffer).setUint32(0, Number(page), true);
        return concat(number, fromHex(id), fromHex(delta), fromHex(base));
      });
      bytesEqual(memo.records, concat(...records), `${pname}: records`);
      const sealed = sealDeltaMemo({ p: prim, keys }, memo.pageSize, memo.image, memo.records);
      bytesEqual(sealed, v.body, `${pname}: sealing gives the body`);
    }
  },

  async "id-lists"(v, f) {
    assert.equal(v.body.length, 0);
    const count = f.int("id_count");
    const zeroAt = new Set(f.ints("zero_at"));
    const all = sha256Ctr(f.hex("id_seed"), 32 * count);
    const ids = Array.from({ length: count }, (_, i) => {
      const id = all.slice(32 * i, 32 * i + 32);
      if (zeroAt.has(i)) id[0] = 0;
      else if (id[0] === 0) id[0] = 1;
      return id;
    });
    const deltaAt = new Set(v.meta.has("delta_at") ? f.ints("delta_at") : []);
    const lists = splitIdLists(concat(...ids), (i) => deltaAt.has(i));
    assert.deepEqual(
      lists.map((l) => l.length / 32),
      f.ints("lists"),
    );
    const listIds = f.all("list_id");
    assert.equal(listIds.length, lists.length);
    let next = 0;
    for (const [pname, prim] of PRIMITIVES) {
      const keys = await keysOf(prim, pname, f.hex("root_key"));
      lists.forEach((l, i) => {
        bytesEqual(blobId(prim, keys.id, 2, l), fromHex(listIds[i]), `${pname}: list ${i}`);
      });
    }
    for (const l of lists) {
      for (const id of parseIdList(l)) bytesEqual(id, ids[next++], "parseIdList");
    }
    assert.equal(next, count);
  },

  async "list-patch"(v, f) {
    const base = f.hex("base");
    for (const [pname, prim] of PRIMITIVES) {
      const keys = await keysOf(prim, pname, f.hex("root_key"));
      bytesEqual(blobId(prim, keys.id, BLOB_LIST, base), f.hex("base_id"), `${pname}: base id`);
      bytesEqual(blobId(prim, keys.id, BLOB_LIST_PATCH, v.body), f.hex("patch_id"), `${pname}: id`);
    }
    if (v.expect === "error") {
      assert.throws(() => applyListPatch(v.body, base), RangeError);
      return;
    }
    bytesEqual(listPatchBase(v.body), f.hex("base_id"), "the patch names its base");
    bytesEqual(applyListPatch(v.body, base), f.hex("ids"), "the list");
  },
};

// ---------------------------------------------------------------------------------------------

const vectors = loadVectors();

describe("test vectors", () => {
  it("data/ holds vectors of every kind", () => {
    assert.ok(vectors.length > 0, `no vectors in ${DATA_DIR}: run npm run vectors`);
    const counts = new Map<string, number>();
    for (const v of vectors) {
      const k = `${v.kind}/${v.expect}`;
      assert.ok(k in MIN_CASES, `${v.name}: unknown kind/expect ${k}`);
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    for (const [k, min] of Object.entries(MIN_CASES)) {
      assert.ok((counts.get(k) ?? 0) >= min, `${k}: ${counts.get(k) ?? 0} cases, expected ${min}+`);
    }
  });

  const kinds = [...new Set(vectors.map((v) => v.kind))].sort();
  for (const kind of kinds) {
    describe(kind, () => {
      for (const v of vectors.filter((x) => x.kind === kind)) {
        it(v.name, async () => {
          const check = checks[kind];
          assert.ok(check, `no check for kind ${kind}`);
          await check(v, new Fields(v));
        });
      }
    });
  }
});
