/**
 * Generates Locket's test vectors (SPEC.md §18) into `data/`: one file per case, metadata lines
 * `key: value`, a blank line, then the body as hex. The format is described in README.md.
 *
 * Run with `npm run vectors`. Output is deterministic: keys are fixed, every "random" byte (nonces,
 * the repository ID) comes from a SHA-256 counter stream seeded by the case's name, and big inputs
 * are described by a rule instead of being stored. Files that no case produces any more are
 * removed.
 *
 * The generator produces vectors with the code in src/, and checks them against small,
 * independent implementations written from SPEC.md (HKDF labels, CRC-16, FastCDC, the list
 * split, the recovery-key parser, payload and entry encodings): it refuses to write a vector on
 * which code and SPEC disagree.
 */

import assert from "node:assert/strict";
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { nodePrimitives } from "../../../node/src/primitives.ts";
import { ByteWriter, concat, equalBytes, fromHex, toHex, utf8 } from "../../src/bytes.ts";
import { type ChunkingMode, chunkStream } from "../../src/chunker/chunk-stream.ts";
import { cdcCut } from "../../src/chunker/fastcdc.ts";
import { SQLITE_HEADER_BYTES, sqlitePageSize } from "../../src/chunker/sqlite.ts";
import { deriveKeys, LABELS, type RepoKeys } from "../../src/crypto/keys.ts";
import type { AeadKey, Primitives } from "../../src/crypto/primitives.ts";
import { crc16xmodem, formatRecoveryKey, parseRecoveryKey } from "../../src/crypto/recovery-key.ts";
import { AAD, open, seal } from "../../src/crypto/seal.ts";
import { Packer } from "../../src/engine/packer.ts";
import { decodeDeltaMemo, sealDeltaMemo } from "../../src/engine/page-deltas.ts";
import { LocketError } from "../../src/errors.ts";
import {
  BLOB_DATA,
  BLOB_DELTA,
  BLOB_LIST,
  BLOB_LIST_PATCH,
  BLOB_TREE,
  type BlobType,
  blobId,
} from "../../src/format/blob.ts";
import {
  type CondemnedPack,
  type ForgottenSnapshot,
  type IndexedPack,
  type IndexFile,
  openIndex,
  sealIndex,
} from "../../src/format/index-file.ts";
import { applyListPatch, makeListPatch } from "../../src/format/list-patch.ts";
import {
  type PackEntry,
  packName,
  readTrailerLength,
  writeEntries,
} from "../../src/format/pack.ts";
import { decodePayload, encodePayload } from "../../src/format/payload.ts";
import { openSnapshot, type Snapshot, sealSnapshot } from "../../src/format/snapshot.ts";
import {
  type DirNode,
  decodeTree,
  encodeTree,
  type FileNode,
  splitIdLists,
  splitTreeNodes,
  type TreeNode,
} from "../../src/format/tree.ts";
import { Repository } from "../../src/repository.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";

const DATA_DIR = join(import.meta.dirname, "data");
const p = nodePrimitives;

// ---------------------------------------------------------------------------------------------
// Fixed inputs

/** Root key A: bytes 0x00, 0x01, …, 0x1f. */
const ROOT_A = Uint8Array.from({ length: 32 }, (_, i) => i);
/** Root key B: bytes 0xff, 0xfe, …, 0xe0. */
const ROOT_B = Uint8Array.from({ length: 32 }, (_, i) => 0xff - i);
/** The all-zero root key. */
const ROOT_ZERO = new Uint8Array(32);

const MiB = 1024 * 1024;

// Labels and constants copied from SPEC.md, not from the code, so that a drift is caught here.
const SPEC_LABELS = {
  data: "locket/v1/data-key",
  meta: "locket/v1/meta-key",
  id: "locket/v1/id-key",
  keyCheck: "locket/v1/key-check",
  gear: "locket/v1/chunker-gear",
};
const SPEC_AAD = {
  segment: "locket/v1/segment",
  packHeader: "locket/v1/pack-header",
  index: "locket/v1/index",
  snapshot: "locket/v1/snapshot",
};
const SPEC_LIMITS = { segment: 16 * MiB, index: 256 * MiB, snapshot: 16 * MiB };

// ---------------------------------------------------------------------------------------------
// Deterministic bytes

/** `SHA256(seed || u32le(0)) || SHA256(seed || u32le(1)) || …`, truncated to `length`. */
function ctrStream(seed: Uint8Array, length: number): Uint8Array {
  const out = new Uint8Array(length);
  const block = new Uint8Array(seed.length + 4);
  block.set(seed);
  const view = new DataView(block.buffer);
  for (let i = 0, o = 0; o < length; i++, o += 32) {
    view.setUint32(seed.length, i, true);
    out.set(p.sha256(block).subarray(0, Math.min(32, length - o)), o);
  }
  return out;
}

/** Deterministic bytes for content, named so that cases do not share them by accident. */
function bytesFor(label: string, length: number): Uint8Array {
  return ctrStream(utf8(`locket-vectors/content/${label}`), length);
}

interface Deterministic {
  readonly p: Primitives;
  /** Every `randomBytes` result, in order. */
  readonly drawn: Uint8Array[];
}

/**
 * nodePrimitives whose `randomBytes` reads the counter stream seeded with
 * `locket-vectors/<name>`, and (with `zstd: false`) without a compressor, as in a browser.
 */
function deterministic(name: string, zstd = true): Deterministic {
  const seed = utf8(`locket-vectors/${name}`);
  let pool: Uint8Array = new Uint8Array(0);
  let counter = 0;
  const drawn: Uint8Array[] = [];
  const block = new Uint8Array(seed.length + 4);
  block.set(seed);
  const view = new DataView(block.buffer);
  return {
    drawn,
    p: {
      ...nodePrimitives,
      randomBytes(n) {
        while (pool.length < n) {
          view.setUint32(seed.length, counter++, true);
          pool = concat(pool, p.sha256(block));
        }
        const out = pool.slice(0, n);
        pool = pool.slice(n);
        drawn.push(out);
        return out;
      },
      zstdCompress: zstd ? nodePrimitives.zstdCompress : () => null,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Vector files

type Kind =
  | "keys"
  | "recovery-key"
  | "blob-id"
  | "seal"
  | "payload"
  | "chunk"
  | "pack"
  | "index"
  | "snapshot"
  | "tree"
  | "tree-split"
  | "tree-join"
  | "id-lists"
  | "memo"
  | "list-patch";
type Expect = "ok" | "error" | "null" | "wrong_key";
type Value = string | number | Uint8Array | readonly number[];
type Meta = readonly (readonly [string, Value])[];

interface Vector {
  readonly name: string;
  readonly kind: Kind;
  readonly expect: Expect;
  readonly comment: string;
  readonly meta: Meta;
  readonly body: Uint8Array;
}

const vectors: Vector[] = [];

function add(v: Vector): void {
  assert.match(v.name, /^[a-z0-9]+(-[a-z0-9]+)*$/, `bad vector name ${v.name}`);
  assert.ok(!vectors.some((x) => x.name === v.name), `duplicate vector ${v.name}`);
  vectors.push(v);
}

function formatValue(v: Value): string {
  if (typeof v === "string") return v;
  if (typeof v === "number") return String(v);
  if (v instanceof Uint8Array) return toHex(v);
  return v.join(", ");
}

function render(v: Vector): string {
  const lines = [`kind: ${v.kind}`, `expect: ${v.expect}`, `comment: ${v.comment}`];
  for (const [k, value] of v.meta) {
    assert.match(k, /^[a-z0-9_]+$/, `bad key ${k}`);
    const s = formatValue(value);
    assert.ok(!/[\r\n]/.test(s), `${v.name}: value of ${k} has a line break`);
    lines.push(s === "" ? `${k}:` : `${k}: ${s}`);
  }
  const hex = toHex(v.body);
  const body: string[] = [];
  for (let i = 0; i < hex.length; i += 64) body.push(hex.slice(i, i + 64));
  return `${lines.join("\n")}\n\n${body.map((l) => `${l}\n`).join("")}`;
}

// ---------------------------------------------------------------------------------------------
// Helpers

function u32le(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, true);
  return b;
}

/** A payload written byte by byte from SPEC.md §4 (not with encodePayload). */
function payloadBytes(encoding: number, rawLength: number, body: Uint8Array): Uint8Array {
  return concat(Uint8Array.of(encoding), u32le(rawLength), body);
}

interface RawEntry {
  readonly type: number;
  readonly id: Uint8Array;
  readonly segmentOffset: number;
  readonly segmentLength: number;
  readonly offset: number;
  readonly length: number;
}

/** A header entry written byte by byte from SPEC.md §7 (49 bytes). */
function entryBytes(e: RawEntry): Uint8Array {
  return concat(
    Uint8Array.of(e.type),
    e.id,
    u32le(e.segmentOffset),
    u32le(e.segmentLength),
    u32le(e.offset),
    u32le(e.length),
  );
}

function entryLine(e: PackEntry): string {
  return [e.type, toHex(e.id), e.segmentOffset, e.segmentLength, e.offset, e.length].join(" ");
}

async function aeadKey(raw: Uint8Array): Promise<AeadKey> {
  return p.aesGcmKey(raw);
}

async function rawKeys(root: Uint8Array) {
  const derive = (label: string, n = 32) => p.hkdfSha256(root, new Uint8Array(0), utf8(label), n);
  return {
    data: await derive(SPEC_LABELS.data),
    meta: await derive(SPEC_LABELS.meta),
    id: await derive(SPEC_LABELS.id),
    keyCheck: await derive(SPEC_LABELS.keyCheck),
    gear: await derive(SPEC_LABELS.gear, 1024),
  };
}

function gearOf(bytes: Uint8Array): Uint32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Uint32Array.from({ length: 256 }, (_, i) => view.getUint32(4 * i, true));
}

async function expectThrows(code: string, f: () => Promise<unknown>, what: string): Promise<void> {
  try {
    await f();
  } catch (err) {
    assert.ok(err instanceof LocketError, `${what}: expected a LocketError, got ${String(err)}`);
    assert.equal(err.code, code, `${what}: ${err.message}`);
    return;
  }
  assert.fail(`${what}: expected ${code}, got success`);
}

// ---------------------------------------------------------------------------------------------
// §1 Keys

const keyCache = new Map<string, RepoKeys>();
async function keysOf(root: Uint8Array): Promise<RepoKeys> {
  const k = toHex(root);
  let keys = keyCache.get(k);
  if (!keys) {
    keys = await deriveKeys(p, root);
    keyCache.set(k, keys);
  }
  return keys;
}

async function genKeys(): Promise<void> {
  assert.deepEqual(
    [LABELS.dataKey, LABELS.metaKey, LABELS.idKey, LABELS.keyCheck, LABELS.chunkerGear],
    Object.values(SPEC_LABELS),
  );
  const cases: [string, Uint8Array, string][] = [
    ["keys-counting", ROOT_A, "root key 00 01 … 1f"],
    ["keys-descending", ROOT_B, "root key ff fe … e0"],
    ["keys-zero", ROOT_ZERO, "the all-zero root key"],
  ];
  for (const [name, root, what] of cases) {
    const raw = await rawKeys(root);
    const keys = await keysOf(root);
    assert.ok(equalBytes(keys.id, raw.id));
    assert.ok(equalBytes(keys.keyCheck, raw.keyCheck));
    assert.deepEqual([...keys.gear], [...gearOf(raw.gear)]);
    // The AeadKey objects hide their bytes: check them by sealing the same message.
    const nonce = bytesFor(`${name}/nonce`, 12);
    const msg = utf8("key check");
    assert.ok(
      equalBytes(
        await keys.data.seal(nonce, msg, AAD.segment),
        await (await aeadKey(raw.data)).seal(nonce, msg, AAD.segment),
      ),
    );
    assert.ok(
      equalBytes(
        await keys.meta.seal(nonce, msg, AAD.index),
        await (await aeadKey(raw.meta)).seal(nonce, msg, AAD.index),
      ),
    );
    const gear = gearOf(raw.gear);
    add({
      name,
      kind: "keys",
      expect: "ok",
      comment: `${what}: every derived key (SPEC §1); the body is the 1024-byte gear table`,
      meta: [
        ["root_key", root],
        ["data_key", raw.data],
        ["meta_key", raw.meta],
        ["id_key", raw.id],
        ["key_check", raw.keyCheck],
        ["gear_first8", [...gear.subarray(0, 8)]],
        ["gear_last", gear[255]],
      ],
      body: raw.gear,
    });
  }
}

// ---------------------------------------------------------------------------------------------
// §2 Recovery key

function specCrc16(data: Uint8Array): number {
  // CRC-16/XMODEM over the bits, most significant first, written from the definition.
  let reg = 0;
  for (const byte of data) {
    for (let bit = 7; bit >= 0; bit--) {
      const top = (reg >> 15) & 1;
      reg = ((reg << 1) & 0xffff) | 0;
      if (top ^ ((byte >> bit) & 1)) reg ^= 0x1021;
    }
  }
  return reg;
}

/** SPEC §2's parser: the root key, or null for wrong_key. */
function specParse(text: string): Uint8Array | null {
  const digits = text.replace(/[ \t\r\n-]/g, "");
  if (!/^[0-9a-fA-F]{68}$/.test(digits)) return null;
  const key = Uint8Array.from({ length: 32 }, (_, i) =>
    Number.parseInt(digits.slice(2 * i, 2 * i + 2), 16),
  );
  return specCrc16(key) === Number.parseInt(digits.slice(64), 16) ? key : null;
}

function genRecoveryKeys(): void {
  assert.equal(specCrc16(utf8("123456789")), 0x31c3);
  assert.equal(crc16xmodem(utf8("123456789")), 0x31c3);

  const ok = (name: string, root: Uint8Array, text: string, comment: string) => {
    const formatted = formatRecoveryKey(root);
    const spec = specParse(text);
    assert.ok(spec && equalBytes(spec, root), `${name}: SPEC parser`);
    assert.ok(equalBytes(parseRecoveryKey(text), root), `${name}: code parser`);
    assert.equal(
      formatted.replaceAll(" ", "").slice(64),
      specCrc16(root).toString(16).padStart(4, "0"),
    );
    add({
      name,
      kind: "recovery-key",
      expect: "ok",
      comment: `${comment}; the body is the text to parse (UTF-8)`,
      meta: [
        ["root_key", root],
        ["recovery_key", formatted],
      ],
      body: utf8(text),
    });
  };
  const bad = (name: string, text: string, comment: string) => {
    assert.equal(specParse(text), null, `${name}: SPEC parser accepts it`);
    assert.throws(
      () => parseRecoveryKey(text),
      (e: unknown) => (e as LocketError).code === "wrong_key",
    );
    add({
      name,
      kind: "recovery-key",
      expect: "wrong_key",
      comment: `${comment}; the body is the text to parse (UTF-8)`,
      meta: [],
      body: utf8(text),
    });
  };

  const a = formatRecoveryKey(ROOT_A);
  ok("recovery-key-counting", ROOT_A, a, "root key 00 01 … 1f, formatted");
  ok(
    "recovery-key-descending",
    ROOT_B,
    formatRecoveryKey(ROOT_B),
    "root key ff fe … e0, formatted",
  );
  ok("recovery-key-zero", ROOT_ZERO, formatRecoveryKey(ROOT_ZERO), "the all-zero key: check 0000");
  const example =
    "47c0 2c2a 8a35 e9ee c05c ed11 41af b67f 30fe 1e63 746c 3d98 ebb8 a034 fb55 48af 69e3";
  const exampleKey = specParse(example);
  assert.ok(exampleKey, "the example of SPEC §2 must be valid");
  ok("recovery-key-spec-example", exampleKey, example, "the example of SPEC §2");
  const groups = a.split(" ");
  ok(
    "recovery-key-parse-uppercase-hyphens",
    ROOT_A,
    groups.join("-").toUpperCase(),
    "upper case, groups joined by hyphens",
  );
  ok(
    "recovery-key-parse-whitespace",
    ROOT_A,
    ` ${groups.slice(0, 6).join("\t")}\n${groups.slice(6, 12).join("  ")}\r\n${groups.slice(12).join(" - ")}\n`,
    "tabs, spaces, LF and CRLF line breaks, hyphens, leading and trailing whitespace",
  );
  ok("recovery-key-parse-no-separators", ROOT_A, groups.join(""), "68 digits, no separators");
  ok(
    "recovery-key-parse-mixed-case-split",
    ROOT_B,
    formatRecoveryKey(ROOT_B)
      .replaceAll(" ", "")
      .replace(/(.{3})/g, "$1 ")
      .replace(/[a-f]/g, (c, i: number) => (i % 2 ? c.toUpperCase() : c)),
    "mixed case, spaces every 3 digits",
  );

  const digits = a.replaceAll(" ", "");
  const regroup = (d: string) => d.match(/.{1,4}/g)!.join(" ");
  const replaceAt = (d: string, i: number, c: string) => d.slice(0, i) + c + d.slice(i + 1);
  const typo = (d: string, i: number) => replaceAt(d, i, d[i] === "7" ? "8" : "7");
  const swap = (d: string, i: number) => {
    assert.notEqual(d[i], d[i + 1]);
    return d.slice(0, i) + d[i + 1] + d[i] + d.slice(i + 2);
  };
  bad("recovery-key-invalid-typo", regroup(typo(digits, 21)), "one key digit mistyped");
  bad("recovery-key-invalid-typo-check", regroup(typo(digits, 66)), "one check digit mistyped");
  bad("recovery-key-invalid-swap", regroup(swap(digits, 9)), "two neighbouring digits swapped");
  bad(
    "recovery-key-invalid-swap-across-groups",
    regroup(swap(digits, 63)),
    "the last key digit swapped with the first check digit",
  );
  bad("recovery-key-invalid-short", regroup(digits.slice(0, 67)), "67 digits (one missing)");
  bad("recovery-key-invalid-long", regroup(`${digits}0`), "69 digits (one extra)");
  bad("recovery-key-invalid-key-only", regroup(digits.slice(0, 64)), "64 digits: no check digits");
  bad("recovery-key-invalid-char-o", regroup(replaceAt(digits, 0, "o")), "letter o for digit 0");
  bad("recovery-key-invalid-char-g", regroup(replaceAt(digits, 30, "g")), "a non-hex letter g");
  bad("recovery-key-invalid-underscore", groups.join("_"), "underscores are not separators");
  bad("recovery-key-invalid-vertical-tab", groups.join("\v"), "a vertical tab is not a separator");
  bad("recovery-key-invalid-nbsp", groups.join("\u00a0"), "a no-break space is not a separator");
  bad("recovery-key-invalid-empty", "", "empty text");
}

// ---------------------------------------------------------------------------------------------
// §5 Blob IDs

async function genBlobIds(): Promise<void> {
  const list = concat(bytesFor("blob-id-list/0", 32), bytesFor("blob-id-list/1", 32));
  const cases: [string, Uint8Array, BlobType, Uint8Array, string][] = [
    ["blob-id-data-empty", ROOT_A, BLOB_DATA, new Uint8Array(0), "data blob, empty plaintext"],
    ["blob-id-data", ROOT_A, BLOB_DATA, utf8("hello, locket\n"), "data blob"],
    [
      "blob-id-tree-same-bytes",
      ROOT_A,
      BLOB_TREE,
      utf8("hello, locket\n"),
      "same bytes as blob-id-data as a tree: another ID",
    ],
    [
      "blob-id-data-other-key",
      ROOT_B,
      BLOB_DATA,
      utf8("hello, locket\n"),
      "same blob as blob-id-data under root key B",
    ],
    [
      "blob-id-data-page",
      ROOT_A,
      BLOB_DATA,
      bytesFor("blob-id-data-page", 4096),
      "a 4 KiB data blob",
    ],
    ["blob-id-tree-empty", ROOT_A, BLOB_TREE, encodeTree([]), "the empty tree"],
    ["blob-id-list", ROOT_A, BLOB_LIST, list, "a list blob of two IDs"],
    [
      "blob-id-delta",
      ROOT_A,
      BLOB_DELTA,
      deltaBody(),
      "a page delta: 4096 bytes, zero but for 40 bytes at 1000",
    ],
  ];
  for (const [name, root, type, plain, comment] of cases) {
    const raw = await rawKeys(root);
    const id = blobId(p, (await keysOf(root)).id, type, plain);
    assert.ok(equalBytes(id, p.hmacSha256(raw.id, concat(Uint8Array.of(type), plain))));
    add({
      name,
      kind: "blob-id",
      expect: "ok",
      comment: `${comment}; the body is the plaintext`,
      meta: [
        ["root_key", root],
        ["id_key", raw.id],
        ["type", type],
        ["id", id],
      ],
      body: plain,
    });
  }
}

// ---------------------------------------------------------------------------------------------
// §3 Sealed messages

async function genSeal(): Promise<void> {
  const raw = await rawKeys(ROOT_A);
  const keys = await keysOf(ROOT_A);
  const cases: [string, "data" | "meta", keyof typeof SPEC_AAD, Uint8Array, string][] = [
    ["seal-segment-empty", "data", "segment", new Uint8Array(0), "empty plaintext"],
    [
      "seal-segment",
      "data",
      "segment",
      payloadBytes(0, 40, bytesFor("seal-segment", 40)),
      "a stored payload",
    ],
    ["seal-pack-header", "meta", "packHeader", bytesFor("seal-pack-header", 54), "pack header AAD"],
    ["seal-index", "meta", "index", bytesFor("seal-index", 100), "index AAD"],
    ["seal-snapshot", "meta", "snapshot", utf8('{"version":1}'), "snapshot AAD"],
  ];
  const sealed = new Map<string, Uint8Array>();
  for (const [name, keyName, aadName, plain, comment] of cases) {
    const d = deterministic(name);
    const key = keyName === "data" ? keys.data : keys.meta;
    const aad = utf8(SPEC_AAD[aadName]);
    assert.ok(equalBytes(aad, AAD[aadName]));
    const out = await seal(d.p, key, plain, aad);
    const nonce = d.drawn[0];
    assert.equal(d.drawn.length, 1);
    assert.ok(equalBytes(out.subarray(0, 12), nonce));
    assert.ok(equalBytes((await open(key, out, aad))!, plain));
    sealed.set(name, out);
    add({
      name,
      kind: "seal",
      expect: "ok",
      comment: `${comment}; the body is the sealed message nonce || ciphertext || tag`,
      meta: [
        ["root_key", ROOT_A],
        ["key_name", keyName],
        ["key", raw[keyName]],
        ["nonce", nonce],
        ["aad", SPEC_AAD[aadName]],
        ["plaintext", plain],
      ],
      body: out,
    });
  }
  const base = sealed.get("seal-segment")!;
  const flip = (b: Uint8Array, i: number, mask = 1) => {
    const c = b.slice();
    c[i < 0 ? c.length + i : i] ^= mask;
    return c;
  };
  const invalid: [string, "data" | "meta", string, Uint8Array, string][] = [
    ["open-invalid-flipped-tag", "data", SPEC_AAD.segment, flip(base, -1), "last tag bit flipped"],
    [
      "open-invalid-flipped-ciphertext",
      "data",
      SPEC_AAD.segment,
      flip(base, 20, 0x80),
      "a ciphertext bit flipped",
    ],
    ["open-invalid-flipped-nonce", "data", SPEC_AAD.segment, flip(base, 0), "a nonce bit flipped"],
    [
      "open-invalid-truncated-tag",
      "data",
      SPEC_AAD.segment,
      base.slice(0, -1),
      "last byte removed",
    ],
    [
      "open-invalid-extended",
      "data",
      SPEC_AAD.segment,
      concat(base, new Uint8Array(1)),
      "one byte appended",
    ],
    [
      "open-invalid-too-short",
      "data",
      SPEC_AAD.segment,
      base.slice(0, 27),
      "27 bytes: shorter than nonce and tag",
    ],
    ["open-invalid-empty", "data", SPEC_AAD.segment, new Uint8Array(0), "no bytes"],
    [
      "open-invalid-empty-plaintext-truncated",
      "data",
      SPEC_AAD.segment,
      sealed.get("seal-segment-empty")!.slice(0, 27),
      "a sealed empty plaintext (28 bytes) cut to 27",
    ],
    ["open-invalid-wrong-aad", "data", SPEC_AAD.index, base, "a segment opened with the index AAD"],
    [
      "open-invalid-wrong-key",
      "meta",
      SPEC_AAD.segment,
      base,
      "a segment opened with the meta key",
    ],
    [
      "open-invalid-snapshot-as-index",
      "meta",
      SPEC_AAD.index,
      sealed.get("seal-snapshot")!,
      "a snapshot opened as an index file",
    ],
  ];
  for (const [name, keyName, aad, body, comment] of invalid) {
    const key = keyName === "data" ? keys.data : keys.meta;
    assert.equal(await open(key, body, utf8(aad)), null, name);
    add({
      name,
      kind: "seal",
      expect: "null",
      comment: `${comment}; the body must not open`,
      meta: [
        ["root_key", ROOT_A],
        ["key_name", keyName],
        ["key", raw[keyName]],
        ["aad", aad],
      ],
      body,
    });
  }
}

// ---------------------------------------------------------------------------------------------
// §4 Payloads

function genPayloads(): void {
  const text = utf8(
    Array.from(
      { length: 64 },
      (_, i) => `line ${i}: the quick brown fox jumps over the lazy dog\n`,
    ).join(""),
  );
  const z = p.zstdCompress(text)!;
  assert.ok(z.length < text.length - (text.length >> 5));
  const zEmpty = p.zstdCompress(new Uint8Array(0))!;
  const random = bytesFor("payload-stored", 40);
  const incompressible = bytesFor("payload-stored-incompressible", 256);

  const ok = (
    name: string,
    direction: "encode-decode" | "decode",
    compress: boolean,
    raw: Uint8Array,
    payload: Uint8Array,
    comment: string,
  ) => {
    assert.ok(equalBytes(decodePayload(p, payload, SPEC_LIMITS.segment), raw), name);
    if (direction === "encode-decode") {
      assert.ok(equalBytes(encodePayload(p, raw, compress), payload), name);
    }
    add({
      name,
      kind: "payload",
      expect: "ok",
      comment: `${comment}; the body is the payload`,
      meta: [
        ["direction", direction],
        ["compress", compress ? "true" : "false"],
        ["limit", SPEC_LIMITS.segment],
        ["raw", raw],
      ],
      body: payload,
    });
  };
  ok(
    "payload-stored-empty",
    "encode-decode",
    false,
    new Uint8Array(0),
    payloadBytes(0, 0, new Uint8Array(0)),
    "stored, empty",
  );
  ok(
    "payload-stored",
    "encode-decode",
    false,
    random,
    payloadBytes(0, random.length, random),
    "stored",
  );
  ok(
    "payload-stored-incompressible",
    "encode-decode",
    true,
    incompressible,
    payloadBytes(0, incompressible.length, incompressible),
    "compression tried, saves nothing: stored",
  );
  ok(
    "payload-zstd",
    "decode",
    true,
    text,
    payloadBytes(1, text.length, z),
    "zstd (decode only: encoders may differ)",
  );
  ok(
    "payload-zstd-empty",
    "decode",
    true,
    new Uint8Array(0),
    payloadBytes(1, 0, zEmpty),
    "zstd frame of nothing",
  );

  const bad = (name: string, limit: number, payload: Uint8Array, comment: string) => {
    assert.throws(() => decodePayload(p, payload, limit), name);
    add({
      name,
      kind: "payload",
      expect: "error",
      comment: `${comment}; decoding the body must fail (integrity)`,
      meta: [
        ["error", "integrity"],
        ["limit", limit],
      ],
      body: payload,
    });
  };
  const seg = SPEC_LIMITS.segment;
  bad("payload-invalid-encoding-2", seg, payloadBytes(2, 3, utf8("abc")), "unknown encoding 2");
  bad(
    "payload-invalid-encoding-255",
    seg,
    payloadBytes(255, 0, new Uint8Array(0)),
    "unknown encoding 255",
  );
  bad(
    "payload-invalid-stored-short",
    seg,
    payloadBytes(0, 10, new Uint8Array(9)),
    "stored: 9 body bytes, raw length 10",
  );
  bad(
    "payload-invalid-stored-long",
    seg,
    payloadBytes(0, 10, new Uint8Array(11)),
    "stored: 11 body bytes, raw length 10",
  );
  bad(
    "payload-invalid-over-limit-segment",
    seg,
    payloadBytes(0, seg + 1, new Uint8Array(0)),
    "raw length 16 MiB + 1 above the segment limit",
  );
  bad(
    "payload-invalid-over-limit-index",
    SPEC_LIMITS.index,
    payloadBytes(0, SPEC_LIMITS.index + 1, new Uint8Array(0)),
    "raw length 256 MiB + 1 above the index limit",
  );
  bad(
    "payload-invalid-zstd-over-limit",
    seg,
    payloadBytes(1, seg + 1, zEmpty),
    "zstd, raw length above the limit",
  );
  bad(
    "payload-invalid-zstd-short",
    seg,
    payloadBytes(1, text.length - 1, z),
    "zstd frame decompresses to one byte more than the raw length",
  );
  bad(
    "payload-invalid-zstd-long",
    seg,
    payloadBytes(1, text.length + 1, z),
    "zstd frame decompresses to one byte less than the raw length",
  );
  bad(
    "payload-invalid-zstd-garbage",
    seg,
    payloadBytes(1, 64, bytesFor("payload-invalid-zstd-garbage", 64)),
    "zstd body that is not a frame",
  );
  bad(
    "payload-invalid-zstd-empty-body",
    seg,
    payloadBytes(1, 0, new Uint8Array(0)),
    "zstd with an empty body",
  );
  bad(
    "payload-invalid-truncated-header",
    seg,
    Uint8Array.of(0, 0, 0, 0),
    "4 bytes: shorter than the 5-byte header",
  );
  bad("payload-invalid-empty", seg, new Uint8Array(0), "no bytes");
}

// ---------------------------------------------------------------------------------------------
// §6 Chunking

const CDC = { min: 256 * 1024, avg: MiB, max: 4 * MiB };

/** SPEC §6, written from its pseudo-code. */
function specChunk(gear: Uint32Array, data: Uint8Array): { mode: string; lengths: number[] } {
  const lengths: number[] = [];
  let page = 0;
  if (data.length >= 100 && equalBytes(data.subarray(0, 16), utf8("SQLite format 3\0"))) {
    const raw = data[16] * 256 + data[17];
    const size = raw === 1 ? 65536 : raw;
    for (let s = 512; s <= 65536; s *= 2) if (s === size) page = size;
  }
  for (let s = 0; s < data.length; ) {
    const n = data.length - s;
    let cut = page ? Math.min(page, n) : 0;
    if (!page) {
      if (n <= CDC.min) cut = n;
      else {
        let fp = 0;
        for (let i = CDC.min; i < Math.min(n, CDC.avg) && !cut; i++) {
          fp = (fp * 2 + gear[data[s + i]]) % 2 ** 32;
          if (fp < 2 ** 10) cut = i + 1; // fp & 0xfffffc00 == 0
        }
        for (let i = CDC.avg; i < Math.min(n, CDC.max) && !cut; i++) {
          fp = (fp * 2 + gear[data[s + i]]) % 2 ** 32;
          if (fp < 2 ** 14) cut = i + 1; // fp & 0xffffc000 == 0
        }
        if (!cut) cut = Math.min(n, CDC.max);
      }
    }
    lengths.push(cut);
    s += cut;
  }
  return { mode: page ? `pages ${page}` : "cdc", lengths };
}

function codeChunkOneShot(
  gear: Uint32Array,
  data: Uint8Array,
): { mode: string; lengths: number[] } {
  const page = sqlitePageSize(data.subarray(0, SQLITE_HEADER_BYTES));
  const lengths: number[] = [];
  for (let s = 0; s < data.length; ) {
    const n = page ? Math.min(page, data.length - s) : cdcCut(gear, data, s, data.length, true);
    lengths.push(n);
    s += n;
  }
  return { mode: page ? `pages ${page}` : "cdc", lengths };
}

async function codeChunkStream(gear: Uint32Array, data: Uint8Array, block: number) {
  async function* source() {
    for (let o = 0; o < data.length; o += block) yield data.subarray(o, o + block);
  }
  let mode: ChunkingMode | undefined;
  const lengths: number[] = [];
  for await (const c of chunkStream(source(), gear, (m) => {
    mode = m;
  }))
    lengths.push(c.length);
  assert.ok(mode);
  return { mode: mode.kind === "pages" ? `pages ${mode.pageSize}` : "cdc", lengths };
}

function sqliteHeader(pageSizeField: number, magic = "SQLite format 3\0"): Uint8Array {
  const h = new Uint8Array(100);
  h.set(utf8(magic));
  h[16] = pageSizeField >> 8;
  h[17] = pageSizeField & 0xff;
  h.set([1, 1, 0, 64, 32, 32], 18); // write/read versions, reserved space, payload fractions
  h[47] = 4; // schema format number: anything, the chunker does not read it
  return h;
}

type Tail = "none" | "zeros" | "sha256-ctr";

async function genChunks(): Promise<void> {
  const chunk = async (
    name: string,
    root: Uint8Array,
    prefix: Uint8Array,
    tail: Tail,
    length: number,
    comment: string,
  ) => {
    const seed = utf8(name);
    const rest = length - prefix.length;
    assert.ok(rest >= 0 && (tail !== "none" || rest === 0));
    const data = concat(
      prefix,
      tail === "sha256-ctr" ? ctrStream(seed, rest) : new Uint8Array(rest),
    );
    const gear = (await keysOf(root)).gear;
    const spec = specChunk(gearOf((await rawKeys(root)).gear), data);
    assert.deepEqual(codeChunkOneShot(gear, data), spec, `${name}: one-shot`);
    assert.deepEqual(
      await codeChunkStream(gear, data, Math.max(1, data.length)),
      spec,
      `${name}: stream`,
    );
    assert.deepEqual(await codeChunkStream(gear, data, 65521), spec, `${name}: stream 65521`);
    const [mode, pageSize] = spec.mode.split(" ");
    add({
      name,
      kind: "chunk",
      expect: "ok",
      comment: `${comment}; the input is the body followed by input_tail, input_length bytes in all`,
      meta: [
        ["root_key", root],
        ["input_length", length],
        ["input_tail", tail === "sha256-ctr" ? `sha256-ctr ${toHex(seed)}` : tail],
        ["input_sha256", p.sha256(data)],
        ["mode", mode],
        ...(pageSize ? [["page_size", Number(pageSize)] as const] : []),
        ["chunks", spec.lengths.length],
        ["lengths", spec.lengths],
      ],
      body: prefix,
    });
    return spec.lengths;
  };
  const none = new Uint8Array(0);
  const three = await chunk(
    "chunk-cdc-3mib",
    ROOT_A,
    none,
    "sha256-ctr",
    3 * MiB + 12345,
    "FastCDC, about 3 MiB",
  );
  const nine = await chunk(
    "chunk-cdc-9mib",
    ROOT_A,
    none,
    "sha256-ctr",
    9 * MiB + 777,
    "FastCDC, about 9 MiB",
  );
  assert.ok(three.length >= 2 && nine.length >= 5);
  // Same input as chunk-cdc-3mib under another key: the boundaries are keyed.
  const seed3 = ctrStream(utf8("chunk-cdc-3mib"), 3 * MiB + 12345);
  const otherGear = (await keysOf(ROOT_B)).gear;
  const other = specChunk(otherGear, seed3).lengths;
  assert.notDeepEqual(other, three);
  {
    const name = "chunk-cdc-3mib-other-key";
    assert.deepEqual(codeChunkOneShot(otherGear, seed3).lengths, other);
    add({
      name,
      kind: "chunk",
      expect: "ok",
      comment:
        "the input of chunk-cdc-3mib under root key B: other boundaries; the input is the body followed by input_tail, input_length bytes in all",
      meta: [
        ["root_key", ROOT_B],
        ["input_length", seed3.length],
        ["input_tail", `sha256-ctr ${toHex(utf8("chunk-cdc-3mib"))}`],
        ["input_sha256", p.sha256(seed3)],
        ["mode", "cdc"],
        ["chunks", other.length],
        ["lengths", other],
      ],
      body: none,
    });
  }
  const zeros = await chunk(
    "chunk-cdc-zeros-9mib",
    ROOT_A,
    none,
    "zeros",
    9 * MiB,
    "9 MiB of zero bytes: cuts at MAX",
  );
  assert.equal(zeros[0], CDC.max, "the zero input must exercise the MAX cut");
  await chunk("chunk-cdc-small", ROOT_A, none, "sha256-ctr", 1000, "1000 bytes: one chunk");
  await chunk("chunk-cdc-min", ROOT_A, none, "sha256-ctr", CDC.min, "exactly MIN bytes: one chunk");
  await chunk("chunk-cdc-min-plus-one", ROOT_A, none, "sha256-ctr", CDC.min + 1, "MIN + 1 bytes");
  await chunk("chunk-cdc-empty", ROOT_A, none, "none", 0, "an empty file: no chunks");
  const s4096 = await chunk(
    "chunk-sqlite-4096",
    ROOT_A,
    sqliteHeader(4096),
    "sha256-ctr",
    12 * 4096 + 1000,
    "SQLite header, page size 4096, 12 pages and a partial page",
  );
  assert.equal(s4096.length, 13);
  await chunk(
    "chunk-sqlite-65536",
    ROOT_A,
    sqliteHeader(1),
    "sha256-ctr",
    5 * 65536 + 17,
    "SQLite header, page size 65536 (encoded as 1), 5 pages and 17 bytes",
  );
  await chunk(
    "chunk-sqlite-512",
    ROOT_A,
    sqliteHeader(512),
    "sha256-ctr",
    9 * 512,
    "SQLite header, page size 512, 9 whole pages",
  );
  await chunk(
    "chunk-sqlite-header-only",
    ROOT_A,
    sqliteHeader(4096),
    "none",
    100,
    "only the 100-byte SQLite header: one short page",
  );
  await chunk(
    "chunk-sqlite-99-bytes",
    ROOT_A,
    sqliteHeader(4096).subarray(0, 99),
    "none",
    99,
    "99 bytes starting with the SQLite magic: not a header, so FastCDC",
  );
  await chunk(
    "chunk-sqlite-page-size-1000",
    ROOT_A,
    sqliteHeader(1000),
    "sha256-ctr",
    300 * 1024,
    "SQLite magic with page size 1000 (not a power of two): FastCDC",
  );
  await chunk(
    "chunk-sqlite-page-size-256",
    ROOT_A,
    sqliteHeader(256),
    "sha256-ctr",
    5000,
    "SQLite magic with page size 256 (below 512): FastCDC",
  );
  await chunk(
    "chunk-sqlite-page-size-0",
    ROOT_A,
    sqliteHeader(0),
    "sha256-ctr",
    5000,
    "SQLite magic with page size 0: FastCDC",
  );
  await chunk(
    "chunk-sqlite-bad-magic",
    ROOT_A,
    sqliteHeader(4096, "SQLite format 3 "),
    "sha256-ctr",
    20000,
    "magic with a space instead of the NUL: FastCDC",
  );
}

// ---------------------------------------------------------------------------------------------
// §7 Packs

interface PackCase {
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly entries: readonly PackEntry[];
}

async function readPack(root: Uint8Array, bytes: Uint8Array, name: string) {
  const d = deterministic("reader");
  const repo = await Repository.init(new MemoryStorage(), d.p, root);
  await repo.storage.save("data", name, bytes);
  const entries = await repo.readPackHeader(name); // checks the name against the trailer
  repo.addPack(name, entries);
  const blobs: Uint8Array[] = [];
  for (const e of entries) blobs.push(await repo.loadBlob(toHex(e.id), e.type));
  return { entries, blobs };
}

/**
 * A pack's name (SPEC §7): the SHA-256 of its trailer, the sealed header and its length. For a
 * pack whose trailer length is unreadable (some invalid cases) the SHA-256 of all its bytes: any
 * name will do there, since reading it fails before the name is looked at.
 */
function nameOfPack(bytes: Uint8Array): string {
  let headerLength: number;
  try {
    headerLength = readTrailerLength(bytes, bytes.length, "pack");
  } catch {
    return toHex(p.sha256(bytes));
  }
  return packName(p, bytes.subarray(bytes.length - 4 - headerLength));
}

async function genPacks(): Promise<PackCase[]> {
  const out: PackCase[] = [];
  const keys = await keysOf(ROOT_A);
  const pack = async (
    name: string,
    blobs: { type: BlobType; data: Uint8Array; compress: boolean }[],
    comment: string,
  ) => {
    const d = deterministic(name);
    const repo = await Repository.init(new MemoryStorage(), d.p, ROOT_A);
    const first = d.drawn.length;
    const packer = new Packer(repo);
    for (const b of blobs)
      await packer.add(b.type, blobId(p, keys.id, b.type, b.data), b.data, b.compress);
    await packer.flush();
    assert.equal(packer.stored.length, 1);
    const stored = toHex(packer.stored[0].packId);
    const bytes = await repo.storage.load("data", stored);
    const entries = packer.stored[0].entries;
    const nonces = d.drawn.slice(first);
    assert.ok(nonces.every((n) => n.length === 12));
    assert.equal(stored, nameOfPack(bytes));
    // Every segment is stored (encoding 0), so the vector does not depend on a zstd version.
    const segments = [...new Set(entries.map((e) => e.segmentOffset))];
    assert.equal(nonces.length, segments.length + 1);
    for (const off of segments) {
      const e = entries.find((x) => x.segmentOffset === off)!;
      const payload = await open(
        keys.data,
        bytes.subarray(off, off + e.segmentLength),
        AAD.segment,
      );
      assert.equal(payload![0], 0, `${name}: segment not stored`);
    }
    // The header written by the SPEC's layout.
    const w = new ByteWriter();
    writeEntries(w, entries);
    assert.ok(equalBytes(w.finish(), concat(...entries.map(entryBytes))));
    const read = await readPack(ROOT_A, bytes, stored);
    assert.deepEqual(read.entries, entries);
    read.blobs.forEach((b, i) => {
      assert.ok(equalBytes(b, blobs[i].data));
    });
    add({
      name,
      kind: "pack",
      expect: "ok",
      comment: `${comment}; blob: type plaintext; entry: type id segment_offset segment_length offset length; nonce: in the order drawn (segments, then the header); the body is the pack`,
      meta: [
        ["root_key", ROOT_A],
        ["name", stored],
        ...blobs.map((b) => ["blob", `${b.type} ${toHex(b.data)}`] as const),
        ...entries.map((e) => ["entry", entryLine(e)] as const),
        ...nonces.map((n) => ["nonce", n] as const),
      ],
      body: bytes,
    });
    out.push({ name, bytes, entries });
  };
  await pack(
    "pack-one-blob",
    [{ type: BLOB_DATA, data: bytesFor("pack-one-blob", 300), compress: false }],
    "one data blob",
  );
  const dataBlob = bytesFor("pack-three-types/data", 200);
  const dataId = blobId(p, keys.id, BLOB_DATA, dataBlob);
  const list = concat(dataId, bytesFor("pack-three-types/id", 32));
  const tree = encodeTree([
    {
      type: "file",
      name: "chat.db",
      mode: 0o644,
      mtimeMs: 1712345678901.5,
      size: 200,
      content: [toHex(dataId)],
    },
  ]);
  await pack(
    "pack-three-types",
    [
      { type: BLOB_DATA, data: dataBlob, compress: false },
      { type: BLOB_TREE, data: tree, compress: false },
      { type: BLOB_LIST, data: list, compress: false },
    ],
    "a data, a tree and a list blob in one segment",
  );
  await pack(
    "pack-two-segments",
    [
      { type: BLOB_DATA, data: bytesFor("pack-two-segments/0", 150), compress: false },
      { type: BLOB_DATA, data: bytesFor("pack-two-segments/1", 250), compress: true },
      { type: BLOB_DATA, data: bytesFor("pack-two-segments/2", 100), compress: true },
    ],
    "three incompressible data blobs in two segments (1, then 2)",
  );
  return out;
}

async function genInvalidPacks(): Promise<void> {
  const keys = await keysOf(ROOT_A);
  const blob = bytesFor("pack-invalid", 100);
  const id = blobId(p, keys.id, BLOB_DATA, blob);

  interface Forge {
    segmentAad?: Uint8Array;
    segmentKey?: AeadKey;
    segmentPayload?: Uint8Array;
    headerAad?: Uint8Array;
    version?: number;
    count?: number;
    extra?: Uint8Array;
    entry?: (e: RawEntry) => RawEntry;
    damage?: (pack: Uint8Array) => Uint8Array;
  }
  const forge = async (name: string, error: string, f: Forge, comment: string) => {
    const d = deterministic(name);
    const segment = await seal(
      d.p,
      f.segmentKey ?? keys.data,
      f.segmentPayload ?? payloadBytes(0, blob.length, blob),
      f.segmentAad ?? AAD.segment,
    );
    const good: RawEntry = {
      type: BLOB_DATA,
      id,
      segmentOffset: 0,
      segmentLength: segment.length,
      offset: 0,
      length: blob.length,
    };
    const entry = (f.entry ?? ((e) => e))(good);
    const plain = concat(
      Uint8Array.of(f.version ?? 1),
      u32le(f.count ?? 1),
      entryBytes(entry),
      f.extra ?? new Uint8Array(0),
    );
    const header = await seal(d.p, keys.meta, plain, f.headerAad ?? AAD.packHeader);
    const bytes = (f.damage ?? ((b) => b))(concat(segment, header, u32le(header.length)));
    const forged = nameOfPack(bytes);
    await expectThrows(error, () => readPack(ROOT_A, bytes, forged), name);
    add({
      name,
      kind: "pack",
      expect: "error",
      comment: `${comment}; reading the header and every blob of the body must fail`,
      meta: [
        ["error", error],
        ["root_key", ROOT_A],
        ["name", forged],
      ],
      body: bytes,
    });
  };
  const setTrailer = (v: (b: Uint8Array) => number) => (b: Uint8Array) => {
    const c = b.slice();
    new DataView(c.buffer).setUint32(c.length - 4, v(c), true);
    return c;
  };
  const flipAt = (i: (b: Uint8Array) => number) => (b: Uint8Array) => {
    const c = b.slice();
    c[i(c)] ^= 1;
    return c;
  };
  // A pack as `forge` makes it, undamaged, with nonces drawn for `label`.
  const wellFormed = async (label: string) => {
    const d = deterministic(label);
    const segment = await seal(d.p, keys.data, payloadBytes(0, blob.length, blob), AAD.segment);
    const header = await seal(
      d.p,
      keys.meta,
      concat(
        Uint8Array.of(1),
        u32le(1),
        entryBytes({
          type: 0,
          id,
          segmentOffset: 0,
          segmentLength: segment.length,
          offset: 0,
          length: blob.length,
        }),
      ),
      AAD.packHeader,
    );
    return concat(segment, header, u32le(header.length));
  };
  {
    // Control: the undamaged forged pack reads back, so each case below fails for its own reason.
    const bytes = await wellFormed("pack-invalid-control");
    const read = await readPack(ROOT_A, bytes, nameOfPack(bytes));
    assert.ok(equalBytes(read.blobs[0], blob));
  }
  {
    // A well-formed pack stored under another pack's name (storage swapped two objects).
    const bytes = await wellFormed("pack-invalid-swapped/stored");
    const other = nameOfPack(await wellFormed("pack-invalid-swapped/named"));
    await expectThrows("integrity", () => readPack(ROOT_A, bytes, other), "pack-invalid-swapped");
    add({
      name: "pack-invalid-swapped",
      kind: "pack",
      expect: "error",
      comment:
        "a well-formed pack under another pack's name (the SHA-256 of another trailer); reading the header and every blob of the body must fail",
      meta: [
        ["error", "integrity"],
        ["root_key", ROOT_A],
        ["name", other],
      ],
      body: bytes,
    });
  }
  await forge(
    "pack-invalid-truncated",
    "integrity",
    { damage: (b) => b.slice(0, -1) },
    "last byte removed",
  );
  await forge(
    "pack-invalid-too-short",
    "integrity",
    { damage: (b) => b.slice(b.length - 31) },
    "31 bytes: shorter than a header and its length",
  );
  await forge(
    "pack-invalid-header-length-27",
    "integrity",
    { damage: setTrailer(() => 27) },
    "header length 27, below 28",
  );
  await forge(
    "pack-invalid-header-length-past-start",
    "integrity",
    { damage: setTrailer((b) => b.length - 3) },
    "header length above pack size minus 4",
  );
  await forge(
    "pack-invalid-header-length-over-limit",
    "integrity",
    { damage: setTrailer(() => 16 * MiB + 1) },
    "header length 16 MiB + 1",
  );
  await forge(
    "pack-invalid-gap-before-header",
    "integrity",
    {
      damage: (b) => {
        const at =
          b.length - 4 - new DataView(b.buffer, b.byteOffset).getUint32(b.length - 4, true);
        return concat(b.subarray(0, at), new Uint8Array(7), b.subarray(at));
      },
    },
    "7 zero bytes between the segment and the header: the name and the header check out, but the segments do not reach the header",
  );
  await forge(
    "pack-invalid-flipped-header",
    "integrity",
    { damage: flipAt((b) => b.length - 10) },
    "a bit of the header's tag flipped",
  );
  await forge(
    "pack-invalid-flipped-segment",
    "integrity",
    { damage: flipAt(() => 20) },
    "a bit of the segment flipped: the header reads, the blob does not",
  );
  await forge(
    "pack-invalid-header-aad",
    "integrity",
    { headerAad: AAD.index },
    "header sealed with the index AAD",
  );
  await forge(
    "pack-invalid-segment-aad",
    "integrity",
    { segmentAad: AAD.packHeader },
    "segment sealed with the pack-header AAD",
  );
  await forge(
    "pack-invalid-segment-key",
    "integrity",
    { segmentKey: keys.meta },
    "segment sealed with the meta key",
  );
  await forge(
    "pack-invalid-segment-encoding",
    "integrity",
    { segmentPayload: payloadBytes(2, blob.length, blob) },
    "segment payload with unknown encoding 2",
  );
  await forge(
    "pack-invalid-segment-zstd-garbage",
    "integrity",
    {
      segmentPayload: payloadBytes(
        1,
        blob.length,
        bytesFor("pack-invalid-segment-zstd-garbage", 64),
      ),
    },
    "segment payload of zstd encoding whose body is not a zstd frame",
  );
  await forge("pack-invalid-version", "unsupported_version", { version: 2 }, "header version 2");
  await forge(
    "pack-invalid-unknown-type",
    "integrity",
    { entry: (e) => ({ ...e, type: 5 }) },
    "entry of blob type 5",
  );
  await forge("pack-invalid-count", "integrity", { count: 2 }, "header count 2 with one entry");
  await forge(
    "pack-invalid-trailing-bytes",
    "integrity",
    { extra: Uint8Array.of(0) },
    "one byte after the header's entries",
  );
  await forge(
    "pack-invalid-segment-past-header",
    "integrity",
    { entry: (e) => ({ ...e, segmentLength: e.segmentLength + 1 }) },
    "segment reaches one byte into the header",
  );
  await forge(
    "pack-invalid-segment-length-27",
    "integrity",
    { entry: (e) => ({ ...e, segmentLength: 27 }) },
    "segment length 27",
  );
  await forge(
    "pack-invalid-segment-length-over-limit",
    "integrity",
    { entry: (e) => ({ ...e, segmentLength: 16 * MiB + 1 }) },
    "segment length 16 MiB + 1",
  );
  await forge(
    "pack-invalid-blob-over-limit",
    "integrity",
    { entry: (e) => ({ ...e, length: 8 * MiB + 1 }) },
    "blob length 8 MiB + 1",
  );
  await forge(
    "pack-invalid-blob-outside-segment",
    "integrity",
    { entry: (e) => ({ ...e, length: e.length + 1 }) },
    "blob reaches one byte past its segment's payload",
  );
  await forge(
    "pack-invalid-wrong-id",
    "integrity",
    { entry: (e) => ({ ...e, id: blobId(p, keys.id, 0, utf8("other")) }) },
    "entry ID of other content",
  );
  await forge(
    "pack-invalid-wrong-type",
    "integrity",
    { entry: (e) => ({ ...e, type: BLOB_TREE }) },
    "data blob listed as a tree: the ID does not match",
  );
}

// ---------------------------------------------------------------------------------------------
// §9 Index files

/** u64le for a value up to 2^64 - 1 (a bigint, so values above 2^53 - 1 can be written). */
function u64le(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
}

/** `pack name || entry count (u32) || entry × count`, as SPEC §9 lays out a pack. */
function indexedPackBytes(x: IndexedPack): Uint8Array {
  return concat(x.packId, u32le(x.entries.length), ...x.entries.map(entryBytes));
}

/** `pack name || condemned at (u64) || entry count (u32) || entry × count` (SPEC §9, v2). */
function condemnedBytes(c: CondemnedPack): Uint8Array {
  return concat(
    c.packId,
    u64le(BigInt(c.condemnedAt)),
    u32le(c.entries.length),
    ...c.entries.map(entryBytes),
  );
}

/** `snapshot ID || seq (u32)` (SPEC §9, v2). */
function forgottenBytes(f: ForgottenSnapshot): Uint8Array {
  return concat(f.snapshotId, u32le(f.seq));
}

/**
 * An index file's raw payload bytes written from SPEC §9: version 1 when both maintenance
 * sections are empty, version 2 otherwise.
 */
function specIndexRaw(file: IndexFile): Uint8Array {
  const v1 = [Uint8Array.of(1), u32le(file.packs.length), ...file.packs.map(indexedPackBytes)];
  if (file.condemned.length === 0 && file.forgotten.length === 0) return concat(...v1);
  return concat(
    Uint8Array.of(2),
    ...v1.slice(1),
    u32le(file.condemned.length),
    ...file.condemned.map(condemnedBytes),
    u32le(file.forgotten.length),
    ...file.forgotten.map(forgottenBytes),
  );
}

async function genIndex(packs: PackCase[]): Promise<void> {
  const keys = await keysOf(ROOT_A);
  const indexed: IndexedPack[] = packs
    .filter((x) => x.name !== "pack-two-segments")
    .map((x) => ({ packId: fromHex(nameOfPack(x.bytes)), entries: x.entries }));
  const ok = async (
    name: string,
    content: IndexedPack[] | IndexFile,
    zstd: boolean,
    comment: string,
  ) => {
    const file: IndexFile = Array.isArray(content)
      ? { packs: content, condemned: [], forgotten: [] }
      : (content as IndexFile);
    const v2 = file.condemned.length > 0 || file.forgotten.length > 0;
    const d = deterministic(name, zstd);
    const sealed = await sealIndex(d.p, keys, file.packs, {
      condemned: file.condemned,
      forgotten: file.forgotten,
    });
    const payload = (await open(keys.meta, sealed, AAD.index))!;
    assert.equal(payload[0], zstd ? 1 : 0, `${name}: encoding`);
    // The raw bytes as SPEC §9 lays them out.
    const raw = specIndexRaw(file);
    assert.equal(raw[0], v2 ? 2 : 1, `${name}: version`);
    assert.ok(equalBytes(decodePayload(p, payload, SPEC_LIMITS.index), raw), `${name}: raw`);
    const objName = toHex(p.sha256(sealed));
    assert.deepEqual(await openIndex(p, keys, sealed, `index/${objName}`), file);
    const layout = v2
      ? "pack: name entry_count, followed by its entries; condemned: name condemned_at entry_count, followed by its entries; forgotten: snapshot_id seq"
      : "pack: name entry_count, followed by its entries";
    add({
      name,
      kind: "index",
      expect: "ok",
      comment: `${comment}; ${layout}; entry as in pack vectors; the body is the index file`,
      meta: [
        ["root_key", ROOT_A],
        ["name", objName],
        ["encoding", zstd ? "zstd" : "stored"],
        ["nonce", d.drawn[0]],
        ...file.packs.flatMap((x) => [
          ["pack", `${toHex(x.packId)} ${x.entries.length}`] as const,
          ...x.entries.map((e) => ["entry", entryLine(e)] as const),
        ]),
        ...file.condemned.flatMap((x) => [
          ["condemned", `${toHex(x.packId)} ${x.condemnedAt} ${x.entries.length}`] as const,
          ...x.entries.map((e) => ["entry", entryLine(e)] as const),
        ]),
        ...file.forgotten.map((x) => ["forgotten", `${toHex(x.snapshotId)} ${x.seq}`] as const),
      ],
      body: sealed,
    });
  };
  await ok(
    "index-two-packs-stored",
    indexed,
    false,
    "two packs, stored payload (as written without zstd)",
  );
  // 64 pages of one segment: compressible entries, so the zstd writer really compresses.
  const pages: PackEntry[] = Array.from({ length: 64 }, (_, i) => ({
    type: BLOB_DATA,
    id: bytesFor(`index-zstd/page-${i}`, 32),
    segmentOffset: 0,
    segmentLength: 64 * 4096 + 33,
    offset: 4096 * i,
    length: 4096,
  }));
  await ok(
    "index-three-packs-zstd",
    [...indexed, { packId: bytesFor("index-zstd/pack", 32), entries: pages }],
    true,
    "the same packs and one of 64 pages, zstd payload (open direction only)",
  );
  await ok("index-empty-stored", [], false, "no packs");

  // Version 2: what `forget` and `prune` write.
  const forgotten = (label: string, seq: number): ForgottenSnapshot => ({
    snapshotId: bytesFor(`index-v2/snapshot-${label}`, 32),
    seq,
  });
  await ok(
    "index-v2-condemned-forgotten-stored",
    {
      packs: [indexed[0]],
      condemned: [{ ...indexed[1], condemnedAt: 1795000000000 }],
      forgotten: [forgotten("a", 3), forgotten("b", 7)],
    },
    false,
    "version 2: one live pack, one condemned pack, two forgotten snapshots, stored payload",
  );
  await ok(
    "index-v2-forgotten-only-stored",
    { packs: [], condemned: [], forgotten: [forgotten("c", 1)] },
    false,
    "version 2: no packs and no condemned pack, one forgotten snapshot (as forget writes)",
  );
  await ok(
    "index-v2-condemned-pages-zstd",
    {
      packs: [indexed[0]],
      condemned: [
        { packId: bytesFor("index-zstd/pack", 32), condemnedAt: 1795000123456, entries: pages },
      ],
      forgotten: [forgotten("d", 4294967295)],
    },
    true,
    "version 2: one live pack, a condemned pack of 64 pages, one forgotten snapshot of seq 2^32 - 1, zstd payload (open direction only)",
  );

  const entries = indexed[0].entries;
  const rawIndex = (
    version: number,
    count: number,
    extra = new Uint8Array(0),
    entry = entryBytes(entries[0]),
  ) => concat(Uint8Array.of(version), u32le(1), indexed[0].packId, u32le(count), entry, extra);
  const bad = async (
    name: string,
    error: string,
    payload: Uint8Array,
    aad: Uint8Array,
    comment: string,
  ) => {
    const d = deterministic(name);
    const sealed = await seal(d.p, keys.meta, payload, aad);
    const objName = toHex(p.sha256(sealed));
    await expectThrows(error, () => openIndex(p, keys, sealed, `index/${objName}`), name);
    add({
      name,
      kind: "index",
      expect: "error",
      comment: `${comment}; opening the body must fail`,
      meta: [
        ["error", error],
        ["root_key", ROOT_A],
        ["name", objName],
      ],
      body: sealed,
    });
  };
  const stored = (raw: Uint8Array) => payloadBytes(0, raw.length, raw);
  await bad(
    "index-invalid-wrong-aad",
    "integrity",
    stored(rawIndex(1, 1)),
    AAD.packHeader,
    "sealed with the pack-header AAD",
  );
  await bad(
    "index-invalid-version",
    "unsupported_version",
    stored(rawIndex(3, 1)),
    AAD.index,
    "index version 3 (versions 1 and 2 are defined)",
  );
  await bad(
    "index-invalid-trailing-bytes",
    "integrity",
    stored(rawIndex(1, 1, Uint8Array.of(0))),
    AAD.index,
    "one byte after the last pack",
  );
  await bad(
    "index-invalid-entry-count",
    "integrity",
    stored(rawIndex(1, 2)),
    AAD.index,
    "entry count 2 with one entry",
  );
  await bad(
    "index-invalid-unknown-type",
    "integrity",
    stored(rawIndex(1, 1, undefined, entryBytes({ ...entries[0], type: 5 }))),
    AAD.index,
    "entry of blob type 5",
  );
  await bad(
    "index-invalid-segment-length-27",
    "integrity",
    stored(rawIndex(1, 1, undefined, entryBytes({ ...entries[0], segmentLength: 27 }))),
    AAD.index,
    "entry with segment length 27",
  );
  await bad(
    "index-invalid-over-limit",
    "integrity",
    payloadBytes(0, SPEC_LIMITS.index + 1, rawIndex(1, 1)),
    AAD.index,
    "payload declares 256 MiB + 1 raw bytes",
  );
  await bad(
    "index-invalid-payload-encoding",
    "integrity",
    payloadBytes(2, 5, rawIndex(1, 0).subarray(0, 5)),
    AAD.index,
    "payload encoding 2",
  );
  await bad(
    "index-invalid-zstd-garbage",
    "integrity",
    payloadBytes(1, 64, bytesFor("index-invalid-zstd-garbage", 64)),
    AAD.index,
    "zstd payload whose body is not a zstd frame",
  );

  // Version 2, written byte by byte from SPEC §9: one live pack, one condemned pack, one forgotten
  // snapshot; each case below changes one thing.
  interface V2Forge {
    condemnedAt?: Uint8Array;
    condemnedCount?: number;
    seq?: number;
    noForgottenCount?: boolean;
    extra?: Uint8Array;
  }
  const condemnedPack = indexed[1];
  const snapshotId = bytesFor("index-v2/snapshot-bad", 32);
  const rawV2 = (f: V2Forge = {}) =>
    concat(
      Uint8Array.of(2),
      u32le(1),
      indexed[0].packId,
      u32le(indexed[0].entries.length),
      ...indexed[0].entries.map(entryBytes),
      u32le(1),
      condemnedPack.packId,
      f.condemnedAt ?? u64le(1795000000000n),
      u32le(f.condemnedCount ?? condemnedPack.entries.length),
      ...condemnedPack.entries.map(entryBytes),
      ...(f.noForgottenCount ? [] : [u32le(1), snapshotId, u32le(f.seq ?? 5)]),
      f.extra ?? new Uint8Array(0),
    );
  {
    // Control: the undamaged forged version 2 file opens, so each case fails for its own reason.
    const d = deterministic("index-v2-invalid-control");
    const sealed = await seal(d.p, keys.meta, stored(rawV2()), AAD.index);
    assert.deepEqual(await openIndex(p, keys, sealed, "index/control"), {
      packs: [indexed[0]],
      condemned: [{ ...condemnedPack, condemnedAt: 1795000000000 }],
      forgotten: [{ snapshotId, seq: 5 }],
    });
    const max = await seal(
      d.p,
      keys.meta,
      stored(rawV2({ condemnedAt: u64le(2n ** 53n - 1n) })),
      AAD.index,
    );
    const opened = await openIndex(p, keys, max, "index/control-max");
    assert.equal(opened.condemned[0].condemnedAt, Number.MAX_SAFE_INTEGER);
  }
  await bad(
    "index-v2-invalid-trailing-bytes",
    "integrity",
    stored(rawV2({ extra: Uint8Array.of(0) })),
    AAD.index,
    "version 2 with one byte after the forgotten section",
  );
  await bad(
    "index-v2-invalid-seq-zero",
    "integrity",
    stored(rawV2({ seq: 0 })),
    AAD.index,
    "version 2 with a forgotten snapshot of seq 0",
  );
  await bad(
    "index-v2-invalid-condemned-entry-count",
    "integrity",
    stored(rawV2({ condemnedCount: condemnedPack.entries.length + 1 })),
    AAD.index,
    `version 2 whose condemned pack declares ${condemnedPack.entries.length + 1} entries and has ${condemnedPack.entries.length}`,
  );
  await bad(
    "index-v2-invalid-no-forgotten-count",
    "integrity",
    stored(rawV2({ noForgottenCount: true })),
    AAD.index,
    "version 2 that ends after the condemned section, without the forgotten count",
  );
  await bad(
    "index-v2-invalid-condemned-at-2-53",
    "integrity",
    stored(rawV2({ condemnedAt: u64le(2n ** 53n) })),
    AAD.index,
    "version 2 with condemned at 2^53, above 2^53 - 1",
  );
}

// ---------------------------------------------------------------------------------------------
// §10 Snapshots

async function genSnapshots(treeId: string): Promise<void> {
  const keys = await keysOf(ROOT_A);
  const first: Snapshot = {
    version: 1,
    seq: 1,
    parent: null,
    time: "2026-11-23T14:45:31.450Z",
    host: "phone",
    paths: ["/data/chat.db", "/data/Media"],
    tags: [],
    tree: treeId,
    summary: {
      files: 6,
      dirs: 4,
      bytes: 6193152,
      addedBytes: 5741329,
      newBlobs: 246,
      durationMs: 279,
    },
  };
  const ok = async (name: string, s: object, zstd: boolean, comment: string) => {
    const d = deterministic(name, zstd);
    const json = JSON.stringify(s);
    const sealed = await sealSnapshot(d.p, keys, s as Snapshot);
    const payload = (await open(keys.meta, sealed, AAD.snapshot))!;
    assert.equal(payload[0], zstd ? 1 : 0, `${name}: encoding`);
    assert.ok(equalBytes(decodePayload(p, payload, SPEC_LIMITS.snapshot), utf8(json)));
    const id = toHex(p.sha256(sealed));
    assert.deepEqual(await openSnapshot(p, keys, sealed, `snapshots/${id}`), JSON.parse(json));
    add({
      name,
      kind: "snapshot",
      expect: "ok",
      comment: `${comment}; json: the decoded payload; the body is the sealed snapshot`,
      meta: [
        ["root_key", ROOT_A],
        ["id", id],
        ["encoding", zstd ? "zstd" : "stored"],
        ["nonce", d.drawn[0]],
        ["json", json],
      ],
      body: sealed,
    });
    return id;
  };
  const firstId = await ok(
    "snapshot-first-stored",
    first,
    false,
    "the first snapshot, stored payload",
  );
  await ok(
    "snapshot-second-zstd",
    { ...first, seq: 2, parent: firstId, time: "2026-11-24T14:45:31.450Z", tags: ["daily"] },
    true,
    "the next snapshot, zstd payload (open direction only)",
  );
  await ok(
    "snapshot-extra-fields-stored",
    { ...first, vault: { hint: "later" } },
    false,
    "an unknown extra field is ignored",
  );

  const bad = async (
    name: string,
    error: string,
    payload: Uint8Array,
    aad: Uint8Array,
    comment: string,
  ) => {
    const d = deterministic(name);
    const sealed = await seal(d.p, keys.meta, payload, aad);
    const id = toHex(p.sha256(sealed));
    await expectThrows(error, () => openSnapshot(p, keys, sealed, `snapshots/${id}`), name);
    add({
      name,
      kind: "snapshot",
      expect: "error",
      comment: `${comment}; opening the body must fail`,
      meta: [
        ["error", error],
        ["root_key", ROOT_A],
        ["id", id],
      ],
      body: sealed,
    });
  };
  const stored = (o: unknown) => {
    const raw = utf8(JSON.stringify(o));
    return payloadBytes(0, raw.length, raw);
  };
  await bad(
    "snapshot-invalid-version",
    "unsupported_version",
    stored({ ...first, version: 2 }),
    AAD.snapshot,
    "snapshot version 2",
  );
  await bad(
    "snapshot-invalid-seq-0",
    "integrity",
    stored({ ...first, seq: 0 }),
    AAD.snapshot,
    "seq 0",
  );
  await bad(
    "snapshot-invalid-parent",
    "integrity",
    stored({ ...first, parent: "abc" }),
    AAD.snapshot,
    "parent is not a 64-digit ID",
  );
  await bad(
    "snapshot-invalid-tree",
    "integrity",
    stored({ ...first, tree: treeId.toUpperCase() }),
    AAD.snapshot,
    "tree ID in upper case",
  );
  await bad(
    "snapshot-invalid-wrong-aad",
    "integrity",
    stored(first),
    AAD.index,
    "sealed with the index AAD",
  );
  const notJson = utf8("{not json");
  await bad(
    "snapshot-invalid-not-json",
    "integrity",
    payloadBytes(0, notJson.length, notJson),
    AAD.snapshot,
    "payload is not JSON",
  );
  await bad(
    "snapshot-invalid-utf8",
    "integrity",
    payloadBytes(0, 3, Uint8Array.of(0x22, 0xff, 0x22)),
    AAD.snapshot,
    "payload is not UTF-8",
  );
  await bad(
    "snapshot-invalid-over-limit",
    "integrity",
    payloadBytes(0, SPEC_LIMITS.snapshot + 1, utf8("{}")),
    AAD.snapshot,
    "payload declares 16 MiB + 1 raw bytes",
  );
  await bad(
    "snapshot-invalid-zstd-garbage",
    "integrity",
    payloadBytes(1, 64, bytesFor("snapshot-invalid-zstd-garbage", 64)),
    AAD.snapshot,
    "zstd payload whose body is not a zstd frame",
  );
}

// ---------------------------------------------------------------------------------------------
// §8 Trees and lists

async function genTrees(): Promise<string> {
  const keys = await keysOf(ROOT_A);
  const id = (label: string) => toHex(bytesFor(`tree/${label}`, 32));
  const file = { type: "file" as const, mode: 0o644, mtimeMs: 1712345678901.5 };
  const ok = (name: string, nodes: TreeNode[], comment: string) => {
    const bytes = encodeTree(nodes);
    const decoded = decodeTree(bytes);
    assert.ok(equalBytes(encodeTree(decoded.nodes), bytes));
    const names = decoded.nodes.map((n) => n.name);
    assert.deepEqual(names, [...names].sort(), `${name}: sorted`);
    const treeId = blobId(p, keys.id, BLOB_TREE, bytes);
    add({
      name,
      kind: "tree",
      expect: "ok",
      comment: `${comment}; the body is the tree blob's JSON`,
      meta: [
        ["root_key", ROOT_A],
        ["id", treeId],
        ["nodes", decoded.nodes.length],
        ["names", JSON.stringify(names)],
      ],
      body: bytes,
    });
    return toHex(treeId);
  };
  ok("tree-empty", [], "an empty directory");
  const root = ok(
    "tree-files-and-dir",
    [
      { type: "dir", name: "Media", mode: 0o755, mtimeMs: 1712345678901.5, subtree: id("media") },
      { ...file, name: "chat.db", size: 950272, content: [id("c0"), id("c1")] },
      { ...file, name: "big.db", size: 446000000, lists: [id("l0"), id("l1"), id("l2")] },
      { ...file, name: "empty.txt", size: 0, content: [] },
    ],
    "a directory, a file with content, a file with lists, an empty file",
  );
  ok(
    "tree-utf16-order",
    [
      { ...file, name: "\u{1F600}.jpg", size: 1, content: [id("e")] },
      { ...file, name: "\uFF5E", size: 1, content: [id("f")] },
      { ...file, name: "a", size: 1, content: [id("a")] },
      { ...file, name: "B", size: 1, content: [id("b")] },
      { ...file, name: "\u00e9", size: 1, content: [id("é")] },
    ],
    "names sorted by UTF-16 code units: U+1F600 (D83D DE00) before U+FF5E, unlike code point order",
  );
  ok(
    "tree-folder-subtrees",
    [
      {
        type: "dir",
        name: "Photos",
        mode: 0o755,
        mtimeMs: 1712345678901.5,
        subtrees: [id("p0"), id("p1")],
      },
      { type: "dir", name: "Voice", mode: 0o700, mtimeMs: 1712345678901.5, subtree: id("v") },
    ],
    "a split folder (subtrees) and a whole one (subtree)",
  );
  ok(
    "tree-long-name",
    [{ ...file, name: "n".repeat(4096), size: 0, content: [] }],
    "a name of 4096 characters, the longest allowed",
  );

  const bad = (name: string, json: string | Uint8Array, comment: string) => {
    const bytes = typeof json === "string" ? utf8(json) : json;
    assert.throws(() => decodeTree(bytes), name);
    add({
      name,
      kind: "tree",
      expect: "error",
      comment: `${comment}; decoding the body must fail (integrity)`,
      meta: [["error", "integrity"]],
      body: bytes,
    });
  };
  const node = (o: Record<string, unknown>) =>
    JSON.stringify({
      nodes: [{ type: "file", name: "x", mode: 420, mtimeMs: 1, size: 0, content: [], ...o }],
    });
  bad("tree-invalid-dotdot", node({ name: ".." }), 'name ".."');
  bad("tree-invalid-dot", node({ name: "." }), 'name "."');
  bad("tree-invalid-parent-path", node({ name: "../x" }), 'name "../x"');
  bad("tree-invalid-slash", node({ name: "a/b" }), 'name "a/b"');
  bad("tree-invalid-absolute", node({ name: "/etc" }), 'name "/etc"');
  bad("tree-invalid-backslash", node({ name: "a\\b" }), "name with a backslash");
  bad("tree-invalid-nul", node({ name: "a\u0000b" }), "name with NUL");
  bad("tree-invalid-empty-name", node({ name: "" }), "empty name");
  bad("tree-invalid-long-name", node({ name: "n".repeat(4097) }), "name of 4097 characters");
  bad("tree-invalid-name-number", node({ name: 7 }), "name is a number");
  bad(
    "tree-invalid-duplicate",
    JSON.stringify({
      nodes: [
        { type: "dir", name: "a", mode: 493, mtimeMs: 1, subtree: id("d") },
        { type: "file", name: "a", mode: 420, mtimeMs: 1, size: 0, content: [] },
      ],
    }),
    'two nodes named "a"',
  );
  bad(
    "tree-invalid-missing-content",
    node({ content: undefined }),
    "file with neither content nor lists",
  );
  bad("tree-invalid-content-and-lists", node({ lists: [] }), "file with both content and lists");
  bad(
    "tree-invalid-content-id",
    node({ size: 1, content: [id("x").toUpperCase()] }),
    "content ID in upper case",
  );
  bad(
    "tree-invalid-subtree",
    JSON.stringify({
      nodes: [{ type: "dir", name: "d", mode: 493, mtimeMs: 1, subtree: id("d").slice(1) }],
    }),
    "subtree ID of 63 digits",
  );
  const dir = (o: Record<string, unknown>) =>
    JSON.stringify({ nodes: [{ type: "dir", name: "d", mode: 493, mtimeMs: 1, ...o }] });
  bad(
    "tree-invalid-folder-both",
    dir({ subtree: id("a"), subtrees: [id("b")] }),
    "folder with subtree and subtrees",
  );
  bad("tree-invalid-folder-neither", dir({}), "folder with neither subtree nor subtrees");
  bad("tree-invalid-subtrees-empty", dir({ subtrees: [] }), "folder with an empty subtrees list");
  bad(
    "tree-invalid-subtrees-id",
    dir({ subtrees: [id("a"), "00"] }),
    "subtrees with a malformed ID",
  );
  bad(
    "tree-invalid-subtrees-string",
    dir({ subtrees: id("a") }),
    "subtrees is a string, not a list",
  );
  bad("tree-invalid-type", node({ type: "symlink" }), "unknown node type");
  bad("tree-invalid-size", node({ size: -1 }), "negative size");
  bad("tree-invalid-mode", node({ mode: 420.5 }), "mode is not an integer");
  bad("tree-invalid-mtime", node({ mtimeMs: "yesterday" }), "mtimeMs is not a number");
  bad("tree-invalid-mode-file-type-bits", node({ mode: 0o100644 }), "mode above 0o7777");
  bad("tree-invalid-mode-negative", node({ mode: -1 }), "negative mode");
  bad(
    "tree-invalid-inline-65",
    node({ content: Array.from({ length: 65 }, (_, i) => id(`inline${i}`)) }),
    "65 inline content IDs (at most 64)",
  );
  bad("tree-invalid-lists-empty", node({ content: undefined, lists: [] }), "an empty lists array");
  bad(
    "tree-invalid-long-name-utf8",
    node({ name: "\u00e9".repeat(2049) }),
    "name of 4098 UTF-8 bytes",
  );
  bad(
    "tree-invalid-unsorted",
    JSON.stringify({
      nodes: [
        { type: "file", name: "b", mode: 420, mtimeMs: 1, size: 0, content: [] },
        { type: "file", name: "a", mode: 420, mtimeMs: 1, size: 0, content: [] },
      ],
    }),
    "nodes not in ascending name order",
  );
  bad("tree-invalid-no-nodes", "{}", "no node list");
  bad("tree-invalid-node-null", '{"nodes":[null]}', "a node is null");
  bad("tree-invalid-not-json", '{"nodes": [', "not JSON");
  bad("tree-invalid-utf8", Uint8Array.of(0x7b, 0xff, 0x7d), "not UTF-8");
  return root;
}

/** The rule of README.md: ID i is SHA256(seed || u32le(i)), first byte forced by `zeroAt`. */
function idsByRule(seed: Uint8Array, count: number, zeroAt: readonly number[]): Uint8Array[] {
  const all = ctrStream(seed, 32 * count);
  const zero = new Set(zeroAt);
  return Array.from({ length: count }, (_, i) => {
    const id = all.slice(32 * i, 32 * i + 32);
    if (zero.has(i)) id[0] = 0;
    else if (id[0] === 0) id[0] = 1;
    return id;
  });
}

/** SPEC §8's split, as sizes. */
function specSplit(ids: readonly Uint8Array[], deltaAt: ReadonlySet<number> = new Set()): number[] {
  const sizes: number[] = [];
  let run = 0;
  for (let i = 0; i < ids.length; i++) {
    // An entry is one ID, or a delta's ID and its base's: never split, and cut on its first ID.
    const width = deltaAt.has(i) ? 2 : 1;
    if (run + width > 1024) {
      sizes.push(run);
      run = 0;
    }
    run += width;
    if (ids[i][0] === 0 || run === 1024 || i + width >= ids.length) {
      sizes.push(run);
      run = 0;
    }
    i += width - 1;
  }
  return sizes;
}

/** The body of blob-id-delta: a page's XOR with its base, zero but for 40 bytes. */
function deltaBody(): Uint8Array {
  const body = new Uint8Array(4096);
  body.set(bytesFor("blob-id-delta", 40), 1000);
  return body;
}

/** The name rule of README.md: prefix, `i` in decimal with `digits` digits, suffix. */
function splitName(prefix: string, digits: number, suffix: string, i: number): string {
  return `${prefix}${String(i).padStart(digits, "0")}${suffix}`;
}

/** SPEC §8's folder split, by hash only (the ~4 MiB cap is not reached here): run sizes. */
function specTreeSplit(idKey: Uint8Array, names: readonly string[]): number[] {
  const sorted = [...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const runs: number[] = [];
  let run = 0;
  sorted.forEach((name, i) => {
    run++;
    const h = p.hmacSha256(idKey, utf8(name));
    if ((h[0] === 0 && h[1] < 64) || i === sorted.length - 1) {
      runs.push(run);
      run = 0;
    }
  });
  return runs;
}

async function genTreeSplits(): Promise<void> {
  const prefix = "IMG_";
  const digits = 5;
  const suffix = ".jpg";
  const split = async (name: string, root: Uint8Array, count: number, comment: string) => {
    const idKey = (await rawKeys(root)).id;
    const names = Array.from({ length: count }, (_, i) => splitName(prefix, digits, suffix, i));
    const nodes: FileNode[] = names.map((n) => ({
      type: "file",
      name: n,
      mode: 0o644,
      mtimeMs: 1712345678901.5,
      size: 0,
      content: [],
    }));
    const keys = await keysOf(root);
    const parts = splitTreeNodes([...nodes].reverse(), (n) => p.hmacSha256(keys.id, utf8(n)));
    const runs = parts.map((x) => x.length);
    assert.deepEqual(runs, specTreeSplit(idKey, names), name);
    assert.deepEqual(
      parts.flat().map((n) => n.name),
      names,
    );
    add({
      name,
      kind: "tree-split",
      expect: "ok",
      comment: `${comment}; count entries named by the rule of README.md, split into runs by HMAC(id_key, name); the body is empty`,
      meta: [
        ["root_key", root],
        ["id_key", idKey],
        ["name_prefix", prefix],
        ["name_digits", digits],
        ["name_suffix", suffix],
        ["count", count],
        ["runs", runs],
        ["run_last", parts.map((x) => x[x.length - 1].name).join(", ")],
      ],
      body: new Uint8Array(0),
    });
    return runs;
  };
  const big = await split("tree-split-5000", ROOT_A, 5000, "5000 photos");
  assert.ok(big.length >= 3, "expected several cuts");
  const other = await split(
    "tree-split-5000-other-key",
    ROOT_B,
    5000,
    "the same names under root key B",
  );
  assert.notDeepEqual(other, big);
  await split(
    "tree-split-cut-at-last",
    ROOT_A,
    big[0],
    "the last entry is a cut point: one run, no empty run after it",
  );
  await split("tree-split-one", ROOT_A, 1, "a single entry");
}

/** Stores `runs` as tree blobs and joins them as the parts of one folder, as a reader does. */
async function joinRuns(p0: Primitives, root: Uint8Array, runs: readonly Uint8Array[]) {
  const repo = await Repository.init(new MemoryStorage(), p0, root);
  const packer = new Packer(repo);
  const ids: string[] = [];
  for (const run of runs) {
    const id = blobId(p0, repo.keys.id, BLOB_TREE, run);
    if (!packer.hasId(id)) await packer.add(BLOB_TREE, id, run, false);
    ids.push(toHex(id));
  }
  await packer.flush();
  const folder: DirNode = { type: "dir", name: "d", mode: 0o755, mtimeMs: 0, subtrees: ids };
  return (await repo.dirNodes(folder)).map((n) => n.name);
}

async function genTreeJoins(): Promise<void> {
  const run = (...names: string[]) =>
    encodeTree(
      names.map((name) => ({ type: "file", name, mode: 0o644, mtimeMs: 1, size: 0, content: [] })),
    );
  const join = async (
    name: string,
    runs: Uint8Array[],
    expected: string[] | null,
    comment: string,
  ) => {
    if (expected) {
      assert.deepEqual(await joinRuns(p, ROOT_A, runs), expected, name);
    } else {
      await expectThrows("integrity", () => joinRuns(p, ROOT_A, runs), name);
    }
    add({
      name,
      kind: "tree-join",
      expect: expected ? "ok" : "error",
      comment: `${comment}; run: the tree blobs of one split folder, in subtrees order; the body is empty`,
      meta: [
        ...(expected ? [] : [["error", "integrity"] as const]),
        ["root_key", ROOT_A],
        ...runs.map((r) => ["run", new TextDecoder().decode(r)] as const),
        ...(expected ? [["names", JSON.stringify(expected)] as const] : []),
      ],
      body: new Uint8Array(0),
    });
  };
  await join(
    "tree-join-two-runs",
    [run("a", "b"), run("c", "d")],
    ["a", "b", "c", "d"],
    "two runs in order",
  );
  await join(
    "tree-join-three-runs",
    [run("a"), run("b"), run("c")],
    ["a", "b", "c"],
    "three runs of one entry",
  );
  await join(
    "tree-join-utf16-order",
    [run("a", "\u{1F600}"), run("\uFF5E")],
    ["a", "\u{1F600}", "\uFF5E"],
    "U+1F600 (D83D DE00) sorts before U+FF5E in UTF-16 code units",
  );
  await join(
    "tree-join-invalid-utf16-order",
    [run("\uFF5E"), run("\u{1F600}")],
    null,
    "U+FF5E then U+1F600: in code point order, but not in UTF-16 order",
  );
  await join("tree-join-invalid-overlap", [run("a", "c"), run("b", "d")], null, "runs overlap");
  await join(
    "tree-join-invalid-equal",
    [run("a", "b"), run("b", "c")],
    null,
    "a run starts with the previous run's last name",
  );
  await join(
    "tree-join-invalid-reversed",
    [run("c", "d"), run("a", "b")],
    null,
    "runs in the wrong order",
  );
  await join("tree-join-invalid-empty-run", [run("a"), run(), run("b")], null, "an empty run");
}

// ---------------------------------------------------------------------------------------------
// §15 The delta memo (a device's cache file)

/** The memo as SPEC §15 spells it, written here without the code's ByteWriter. */
function specMemo(
  idKey: Uint8Array,
  pageSize: number,
  image: Uint8Array,
  records: readonly (readonly [number, Uint8Array, Uint8Array, Uint8Array])[],
): Uint8Array {
  const head = concat(
    utf8("LKTMEMO2"),
    u32le(pageSize),
    image,
    ...records.flatMap(([page, id, delta, base]) => [u32le(page), id, delta, base]),
  );
  return concat(head, p.hmacSha256(idKey, utf8("locket delta memo 2"), head));
}

async function genMemos(): Promise<void> {
  const raw = await rawKeys(ROOT_A);
  const keys = await keysOf(ROOT_A);
  const id = (label: string) => bytesFor(`memo/${label}`, 32);
  const records = [
    [12, id("page-12"), id("delta-12"), id("base-12")],
    [200, id("page-200"), id("delta-200"), id("base-200")],
  ] as const;
  const image = p.sha256(bytesFor("memo/content-ids", 32 * 7));
  const ok: [string, string, number, Uint8Array, typeof records | readonly []][] = [
    [
      "memo-certified",
      "an image certified for a version whose content IDs hash to `image`, two page records",
      4096,
      image,
      records,
    ],
    [
      "memo-not-certified",
      "no certificate (a zero digest) and no records: a first backup whose pages were not all whole",
      1024,
      new Uint8Array(32),
      [],
    ],
  ];
  for (const [name, comment, pageSize, digest, recs] of ok) {
    const body = specMemo(raw.id, pageSize, digest, recs);
    assert.ok(
      equalBytes(
        sealDeltaMemo(
          { p, keys },
          pageSize,
          digest,
          concat(...recs.flatMap(([pg, a, b, c]) => [u32le(pg), a, b, c])),
        ),
        body,
      ),
      `${name}: the code and SPEC.md disagree`,
    );
    add({
      name,
      kind: "memo",
      expect: "ok",
      comment: `${comment}; the body is the memo file`,
      meta: [
        ["root_key", ROOT_A],
        ["id_key", raw.id],
        ["page_size", pageSize],
        ["image", digest],
        ...recs.map(
          ([pg, a, b, c]) => ["record", `${pg} ${toHex(a)} ${toHex(b)} ${toHex(c)}`] as const,
        ),
      ],
      body,
    });
  }
  const good = specMemo(raw.id, 4096, image, records);
  const flipped = Uint8Array.from(good);
  flipped[12] ^= 1;
  const v1 = concat(utf8("LKTMEMO1"), good.subarray(8, good.length - 32));
  const oldMagic = concat(v1, p.hmacSha256(raw.id, utf8("locket delta memo 2"), v1));
  const torn = concat(
    good.subarray(0, good.length - 32 - 1),
    p.hmacSha256(raw.id, utf8("locket delta memo 2"), good.subarray(0, good.length - 32 - 1)),
  );
  const otherKey = specMemo((await rawKeys(ROOT_B)).id, 4096, image, records);
  const bad: [string, string, Uint8Array][] = [
    ["memo-invalid-flipped-digest", "a byte of the image digest flipped: the MAC fails", flipped],
    [
      "memo-invalid-old-magic",
      "an earlier version's magic, LKTMEMO1, before a memo with a good MAC",
      oldMagic,
    ],
    ["memo-invalid-torn-record", "a record one byte short, with a good MAC", torn],
    ["memo-invalid-other-key", "sealed with root key B's ID key", otherKey],
  ];
  for (const [name, comment, body] of bad) {
    assert.equal(decodeDeltaMemo({ p, keys }, body), undefined, name);
    add({
      name,
      kind: "memo",
      expect: "null",
      comment: `${comment}: a reader ignores the memo`,
      meta: [
        ["root_key", ROOT_A],
        ["id_key", raw.id],
      ],
      body,
    });
  }
}

async function genIdLists(): Promise<void> {
  const keys = await keysOf(ROOT_A);
  const cases: [string, number, number[], string, number[]?][] = [
    ["id-lists-empty", 0, [], "no IDs: no lists"],
    ["id-lists-one", 1, [], "one ID"],
    ["id-lists-zero-first", 5, [0], "a list ends after an ID whose first byte is 0"],
    ["id-lists-zero-last", 5, [4], "the last ID starts with 0: no empty list after it"],
    ["id-lists-zeros-adjacent", 6, [1, 2], "two IDs in a row start with 0"],
    ["id-lists-max", 1024, [], "1024 IDs: one full list"],
    ["id-lists-max-plus-one", 1025, [], "1025 IDs: a full list and one more"],
    [
      "id-lists-max-and-zero",
      2048,
      [1023],
      "a zero first byte on the 1024th ID: one boundary, not two",
    ],
    ["id-lists-mixed", 3000, [10, 1500], "3000 IDs with two zero first bytes"],
    [
      "id-lists-delta-zero-base",
      6,
      [2],
      "IDs 1 and 3 are deltas (bases 2 and 4): base 2 starts with 0 but only a delta's ID cuts",
      [1, 3],
    ],
    ["id-lists-delta-zero", 6, [1], "delta 1 starts with 0: the list ends after its base, 2", [1]],
    [
      "id-lists-delta-at-max",
      1030,
      [],
      "delta 1023 and its base would straddle the 1024 cap: the first list ends before them",
      [1023],
    ],
    ["id-lists-delta-last", 5, [], "the last entry is a delta and its base", [3]],
  ];
  for (const [name, count, zeroAt, comment, deltaAt = []] of cases) {
    const seed = utf8(name);
    const ids = idsByRule(seed, count, zeroAt);
    const deltas = new Set(deltaAt);
    const lists = splitIdLists(concat(...ids), (i) => deltas.has(i));
    const sizes = lists.map((l) => l.length / 32);
    assert.deepEqual(sizes, specSplit(ids, deltas), name);
    assert.ok(equalBytes(concat(...lists), concat(...ids)));
    add({
      name,
      kind: "id-lists",
      expect: "ok",
      comment: `${comment}; ids: id_count IDs by the rule of README.md; lists: IDs per list blob; the body is empty`,
      meta: [
        ["root_key", ROOT_A],
        ["id_seed", seed],
        ["id_count", count],
        ["zero_at", zeroAt],
        ...(deltaAt.length ? [["delta_at", deltaAt] as const] : []),
        ["lists", sizes],
        ...lists.map((l) => ["list_id", blobId(p, keys.id, BLOB_LIST, l)] as const),
      ],
      body: new Uint8Array(0),
    });
  }
}

async function genListPatches(): Promise<void> {
  const keys = await keysOf(ROOT_A);
  const seed = utf8("list-patch");
  const ids = idsByRule(seed, 8, []);
  const base = concat(...ids.slice(0, 6));
  const baseId = blobId(p, keys.id, BLOB_LIST, base);
  const u16 = (n: number) => Uint8Array.of(n & 255, n >> 8);
  const copy = (from: number, count: number) => concat(Uint8Array.of(0), u16(from), u16(count));
  const fresh = (...body: Uint8Array[]) => concat(Uint8Array.of(1), u16(body.length), ...body);
  // The list [0, 1, 6, 3, 4, 5, 7]: ID 2 changed to 6, ID 7 added at the end.
  const list = concat(ids[0], ids[1], ids[6], ids[3], ids[4], ids[5], ids[7]);
  const made = makeListPatch(list, baseId, base, (l, at) =>
    ids.findIndex((id) => equalBytes(id, l.subarray(at, at + 32))),
  );
  const handmade = concat(baseId, copy(0, 2), fresh(ids[6]), copy(3, 3), fresh(ids[7]));
  assert.ok(equalBytes(made, handmade), "makeListPatch gives the hand-made patch");
  const ok: [string, Uint8Array, string][] = [
    ["list-patch-copy-and-new", handmade, "copy 2, one new ID, copy 3, one new ID"],
    ["list-patch-new-only", concat(baseId, fresh(ids[7], ids[6])), "new IDs only"],
    ["list-patch-copy-whole", concat(baseId, copy(0, 6)), "the whole base"],
    [
      "list-patch-reorder",
      concat(baseId, copy(4, 2), copy(0, 1), copy(0, 1)),
      "copies in any order, twice",
    ],
  ];
  const meta = (body: Uint8Array) =>
    [
      ["root_key", ROOT_A],
      ["id_seed", seed],
      ["base", base],
      ["base_id", baseId],
      ["patch_id", blobId(p, keys.id, BLOB_LIST_PATCH, body)],
    ] as const;
  for (const [name, body, comment] of ok) {
    add({
      name,
      kind: "list-patch",
      expect: "ok",
      comment: `${comment}; ids: the list the patch makes`,
      meta: [...meta(body), ["ids", applyListPatch(body, base)]],
      body,
    });
  }
  const bad: [string, Uint8Array, string][] = [
    ["list-patch-invalid-no-op", baseId, "a base ID and no op"],
    ["list-patch-invalid-short", concat(baseId, copy(0, 1)).subarray(0, 36), "36 bytes: under 37"],
    [
      "list-patch-invalid-copy-cut",
      concat(baseId, copy(0, 1), copy(1, 1).subarray(0, 4)),
      "a second copy cut short",
    ],
    [
      "list-patch-invalid-new-header-cut",
      concat(baseId, copy(0, 1), Uint8Array.of(1, 1)),
      "new IDs whose count is cut short",
    ],
    [
      "list-patch-invalid-too-long",
      concat(baseId, ...Array.from({ length: 1025 }, () => fresh(ids[7]))),
      "35 907 bytes: over the 35 872 of the largest patch",
    ],
    ["list-patch-invalid-op", concat(baseId, Uint8Array.of(2), u16(0), u16(1)), "op 2"],
    ["list-patch-invalid-copy-zero", concat(baseId, copy(0, 0)), "a copy of 0 IDs"],
    ["list-patch-invalid-copy-past", concat(baseId, copy(5, 2)), "a copy past the base's 6 IDs"],
    ["list-patch-invalid-new-zero", concat(baseId, fresh(), copy(0, 1)), "0 new IDs"],
    [
      "list-patch-invalid-new-short",
      concat(baseId, Uint8Array.of(1), u16(2), ids[7]),
      "2 new IDs announced, 1 given",
    ],
    [
      "list-patch-invalid-too-many",
      concat(baseId, ...Array.from({ length: 171 }, () => copy(0, 6))),
      "1026 IDs, over the 1024 of a list",
    ],
  ];
  for (const [name, body, comment] of bad) {
    assert.throws(() => applyListPatch(body, base), RangeError, name);
    add({
      name,
      kind: "list-patch",
      expect: "error",
      comment: `${comment}: a reader rejects it`,
      meta: [...meta(body)],
      body,
    });
  }
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  await genKeys();
  genRecoveryKeys();
  await genBlobIds();
  await genSeal();
  genPayloads();
  await genChunks();
  const packs = await genPacks();
  await genInvalidPacks();
  await genIndex(packs);
  const treeId = await genTrees();
  await genSnapshots(treeId);
  await genTreeSplits();
  await genTreeJoins();
  await genIdLists();
  await genListPatches();
  await genMemos();

  mkdirSync(DATA_DIR, { recursive: true });
  const written = new Set<string>();
  for (const v of vectors) {
    const file = `${v.name}.txt`;
    writeFileSync(join(DATA_DIR, file), render(v));
    written.add(file);
  }
  let removed = 0;
  for (const file of readdirSync(DATA_DIR)) {
    if (!written.has(file)) {
      rmSync(join(DATA_DIR, file));
      removed++;
    }
  }
  const counts = new Map<string, number>();
  for (const v of vectors)
    counts.set(`${v.kind}/${v.expect}`, (counts.get(`${v.kind}/${v.expect}`) ?? 0) + 1);
  console.log(
    `wrote ${vectors.length} vectors to ${DATA_DIR}${removed ? `, removed ${removed} stale` : ""}`,
  );
  for (const [k, n] of [...counts].sort()) console.log(`  ${k}: ${n}`);
}

await main();
