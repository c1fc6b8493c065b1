import { ByteReader, ByteWriter, releaseBuffer, toHex } from "../bytes.ts";
import type { RepoKeys } from "../crypto/keys.ts";
import type { Primitives } from "../crypto/primitives.ts";
import { AAD, open, SEAL_OVERHEAD, seal } from "../crypto/seal.ts";
import { IntegrityError, UnsupportedVersionError } from "../errors.ts";
import { type BlobType, ID_BYTES, isBlobType, MAX_BLOB_BYTES } from "./blob.ts";
import { decodePayload } from "./payload.ts";

/**
 * Packs (SPEC.md "Packs"): `segment* || sealed header || header length (u32 LE)`. A segment is a
 * sealed payload holding one or more blobs back to back; the header lists every blob with its
 * segment and offsets, so a pack alone is enough to rebuild the index.
 */

export const PACK_HEADER_VERSION = 1;
/** Bytes of one header entry: type, id, segment offset, segment length, offset, length. */
export const PACK_ENTRY_BYTES = 1 + ID_BYTES + 4 * 4;
/** Largest segment we accept on read (sealed bytes), and the largest raw segment payload. */
export const MAX_SEGMENT_BYTES = 16 * 1024 * 1024;
/** Largest pack header we accept (about 340 k blobs). */
export const MAX_PACK_HEADER_BYTES = 16 * 1024 * 1024;

/** Where one blob lives inside a pack. */
export interface PackEntry {
  readonly type: BlobType;
  readonly id: Uint8Array;
  /** Offset of the blob's sealed segment in the pack. */
  readonly segmentOffset: number;
  /** Length of the sealed segment. */
  readonly segmentLength: number;
  /** Offset of the blob in the segment's decoded payload. */
  readonly offset: number;
  /** Length of the blob's plaintext. */
  readonly length: number;
}

/** Encodes header entries (the part that index files repeat per pack). */
export function writeEntries(w: ByteWriter, entries: readonly PackEntry[]): void {
  for (const e of entries) {
    w.u8(e.type);
    w.bytes(e.id);
    w.u32(e.segmentOffset);
    w.u32(e.segmentLength);
    w.u32(e.offset);
    w.u32(e.length);
  }
}

/**
 * Reads `count` entries, checking each against the pack size when it is known.
 * @throws {RangeError} on truncation or an entry that points outside the pack or a segment.
 */
export function readEntries(r: ByteReader, count: number, packDataBytes?: number): PackEntry[] {
  if (count * PACK_ENTRY_BYTES > r.remaining) throw new RangeError("entry count exceeds data");
  // Parsed from one copy of the entries' bytes, the IDs being views into it: a buffer of its own
  // per ID cost more than the rest of loading an index.
  const own = new ByteReader(r.bytes(count * PACK_ENTRY_BYTES).slice());
  const out: PackEntry[] = [];
  for (let i = 0; i < count; i++) {
    const type = own.u8();
    if (!isBlobType(type)) throw new RangeError(`unknown blob type ${type}`);
    const id = own.bytes(ID_BYTES);
    const e = {
      type,
      id,
      segmentOffset: own.u32(),
      segmentLength: own.u32(),
      offset: own.u32(),
      length: own.u32(),
    };
    checkEntry(e.segmentOffset, e.segmentLength, e.offset, e.length, packDataBytes);
    out.push(e);
  }
  return out;
}

/** The checks `readEntries` makes of each entry. @throws {RangeError} when one fails. */
function checkEntry(
  segmentOffset: number,
  segmentLength: number,
  offset: number,
  length: number,
  packDataBytes?: number,
): void {
  if (segmentLength < SEAL_OVERHEAD || segmentLength > MAX_SEGMENT_BYTES) {
    throw new RangeError(`segment length ${segmentLength} out of range`);
  }
  if (packDataBytes !== undefined && segmentOffset + segmentLength > packDataBytes) {
    throw new RangeError("segment reaches past the pack's data");
  }
  if (length > MAX_BLOB_BYTES || offset + length > MAX_SEGMENT_BYTES) {
    throw new RangeError(`blob length ${length} out of range`);
  }
}

/**
 * `count` entries as their encoding (PACK_ENTRY_BYTES each, a copy), checked as `readEntries`
 * checks them but without an object per entry: what loading a large index needs.
 * @throws {RangeError} as readEntries.
 */
export function readEncodedEntries(r: ByteReader, count: number): Uint8Array {
  if (count * PACK_ENTRY_BYTES > r.remaining) throw new RangeError("entry count exceeds data");
  const own = r.bytes(count * PACK_ENTRY_BYTES).slice();
  const v = new DataView(own.buffer, own.byteOffset, own.byteLength);
  for (let at = 0; at < own.length; at += PACK_ENTRY_BYTES) {
    if (!isBlobType(own[at])) throw new RangeError(`unknown blob type ${own[at]}`);
    const fields = at + 1 + ID_BYTES;
    checkEntry(
      v.getUint32(fields, true),
      v.getUint32(fields + 4, true),
      v.getUint32(fields + 8, true),
      v.getUint32(fields + 12, true),
    );
  }
  return own;
}

/** Seals a pack header for `entries`; returns the bytes to append after the segments. */
export async function sealPackTrailer(
  p: Primitives,
  keys: RepoKeys,
  entries: readonly PackEntry[],
): Promise<Uint8Array> {
  const w = new ByteWriter(5 + entries.length * PACK_ENTRY_BYTES);
  w.u8(PACK_HEADER_VERSION);
  w.u32(entries.length);
  writeEntries(w, entries);
  const sealed = await seal(p, keys.meta, w.finish(), AAD.packHeader);
  const out = new ByteWriter(sealed.length + 4);
  out.bytes(sealed);
  out.u32(sealed.length);
  return out.finish();
}

/**
 * Reads a pack's header given the pack's last bytes (`tail`, which must hold the whole sealed
 * header plus its length) and the pack's total size.
 * @throws {IntegrityError} naming `objectName` when the header is truncated, forged or hostile.
 */
export async function openPackHeader(
  keys: RepoKeys,
  tail: Uint8Array,
  packSize: number,
  objectName: string,
): Promise<PackEntry[]> {
  const headerLength = readTrailerLength(tail, packSize, objectName);
  if (headerLength + 4 > tail.length) throw new RangeError("tail does not hold the whole header");
  const sealed = tail.subarray(tail.length - 4 - headerLength, tail.length - 4);
  const plain = await open(keys.meta, sealed, AAD.packHeader);
  if (!plain)
    throw new IntegrityError("pack header fails authentication (corrupt or forged)", objectName);
  try {
    const r = new ByteReader(plain);
    const version = r.u8();
    if (version !== PACK_HEADER_VERSION) {
      throw new UnsupportedVersionError(
        `${objectName}: pack header version ${version} is not supported`,
      );
    }
    const dataBytes = packSize - 4 - headerLength;
    const entries = readEntries(r, r.u32(), dataBytes);
    if (r.remaining !== 0) throw new RangeError("trailing bytes after entries");
    checkSegmentsEndToEnd(entries, dataBytes);
    return entries;
  } catch (err) {
    if (err instanceof RangeError)
      throw new IntegrityError(`malformed pack header: ${err.message}`, objectName);
    throw err;
  }
}

/**
 * The segments of a pack must lie end to end from offset 0 to the header (SPEC.md "Packs"), so
 * the header, which the name covers, accounts for every byte: no bytes slipped in between.
 * @throws {RangeError} when they do not.
 */
function checkSegmentsEndToEnd(entries: readonly PackEntry[], dataBytes: number): void {
  let end = 0;
  let last: PackEntry | undefined;
  for (const e of entries) {
    if (last && e.segmentOffset === last.segmentOffset) {
      if (e.segmentLength !== last.segmentLength)
        throw new RangeError(`segment at ${e.segmentOffset} listed with two lengths`);
      continue;
    }
    if (e.segmentOffset !== end)
      throw new RangeError(`segment at ${e.segmentOffset} where one was expected at ${end}`);
    end = e.segmentOffset + e.segmentLength;
    last = e;
  }
  if (end !== dataBytes)
    throw new RangeError(`segments end at ${end}, the header starts at ${dataBytes}`);
}

/**
 * A pack's name (SPEC.md "Packs"): the SHA-256 of its trailer (sealed header and length), as hex.
 * The header lists every blob's ID and place, and is sealed with a random nonce, so the name is
 * unique and commits to what the pack claims to hold; the segments' bytes are checked where they
 * are read (AES-GCM, then every blob against its keyed ID). Hashing the trailer instead of the
 * whole pack took ~1.1 s of CPU off a 1.9 GB first backup's main thread.
 */
export function packName(p: Primitives, trailer: Uint8Array): string {
  return toHex(p.sha256(trailer));
}

/**
 * Whether a pack's trailer hashes to its name, given the pack's last bytes (`tail`, which must
 * hold the whole trailer) and the pack's size.
 * @throws {IntegrityError} naming `objectName` when the pack is truncated.
 */
export function packNameMatches(
  p: Primitives,
  tail: Uint8Array,
  packSize: number,
  name: Uint8Array,
  objectName: string,
): boolean {
  const headerLength = readTrailerLength(tail, packSize, objectName);
  if (headerLength + 4 > tail.length) throw new RangeError("tail does not hold the whole header");
  return p.timingSafeEqual(p.sha256(tail.subarray(tail.length - 4 - headerLength)), name);
}

/** The error of a pack whose name its bytes do not match: swapped, replaced or damaged. */
export function packNameMismatch(objectName: string): IntegrityError {
  return new IntegrityError(
    "pack header does not match the pack's name (corrupt, truncated or swapped)",
    objectName,
  );
}

/**
 * Checks a pack's name against its trailer (packNameMatches).
 * @throws {IntegrityError} naming `objectName` when the pack is truncated or the trailer does not
 *   hash to `name` (a pack swapped or replaced, or its header damaged).
 */
export function checkPackName(
  p: Primitives,
  tail: Uint8Array,
  packSize: number,
  name: Uint8Array,
  objectName: string,
): void {
  if (!packNameMatches(p, tail, packSize, name, objectName)) throw packNameMismatch(objectName);
}

/**
 * Checks a whole pack's bytes against its name (checkPackName). A pack written before packs were
 * named by their trailer (2026-12-07) is named by the SHA-256 of all its bytes: accepted too
 * (SPEC.md "Packs"), by the readers that hold the whole pack.
 * @throws {IntegrityError} when neither matches.
 */
export function checkWholePackName(
  p: Primitives,
  bytes: Uint8Array,
  name: Uint8Array,
  objectName: string,
): void {
  try {
    checkPackName(p, bytes, bytes.length, name, objectName);
  } catch (err) {
    if (err instanceof IntegrityError && p.timingSafeEqual(p.sha256(bytes), name)) return;
    throw err;
  }
}

/**
 * The sealed header's length from a pack's last 4 bytes, validated against the pack size.
 * @throws {IntegrityError} when the pack is too short or the length is hostile.
 */
export function readTrailerLength(tail: Uint8Array, packSize: number, objectName: string): number {
  if (tail.length < 4 || packSize < 4 + SEAL_OVERHEAD)
    throw new IntegrityError("pack is truncated", objectName);
  const v = new DataView(tail.buffer, tail.byteOffset + tail.length - 4, 4).getUint32(0, true);
  if (v < SEAL_OVERHEAD || v > MAX_PACK_HEADER_BYTES || v + 4 > packSize) {
    throw new IntegrityError(
      `pack header length ${v} is impossible for a ${packSize}-byte pack (truncated?)`,
      objectName,
    );
  }
  return v;
}

/**
 * Opens one segment and returns its decoded payload.
 * @throws {IntegrityError} naming `objectName` when it fails authentication or decoding.
 */
export async function openSegment(
  p: Primitives,
  keys: RepoKeys,
  sealed: Uint8Array,
  objectName: string,
): Promise<Uint8Array> {
  const payload = await open(keys.data, sealed, AAD.segment);
  if (!payload)
    throw new IntegrityError(
      "data segment fails authentication (corrupt, truncated or swapped)",
      objectName,
    );
  try {
    const decoded = decodePayload(p, payload, MAX_SEGMENT_BYTES);
    // A compressed payload decodes into a buffer of its own; the decrypted one is done with.
    if (decoded.buffer !== payload.buffer) releaseBuffer(payload);
    return decoded;
  } catch (err) {
    throw new IntegrityError(
      `data segment does not decode: ${(err as Error).message}`,
      objectName,
      { cause: err },
    );
  }
}

/** Storage path of a pack for messages, e.g. `data/3f2a…`. */
export function packObjectName(id: Uint8Array | string): string {
  return `data/${typeof id === "string" ? id : toHex(id)}`;
}
