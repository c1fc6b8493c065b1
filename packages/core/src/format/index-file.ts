import { ByteReader, ByteWriter } from "../bytes.ts";
import type { RepoKeys } from "../crypto/keys.ts";
import type { Primitives } from "../crypto/primitives.ts";
import { AAD, open, seal } from "../crypto/seal.ts";
import { IntegrityError, UnsupportedVersionError } from "../errors.ts";
import { ID_BYTES } from "./blob.ts";
import {
  PACK_ENTRY_BYTES,
  type PackEntry,
  readEncodedEntries,
  readEntries,
  writeEntries,
} from "./pack.ts";
import { decodePayload, encodePayload } from "./payload.ts";

/**
 * Index files (SPEC.md "Index files"): for a set of packs, the same entries their headers hold,
 * so opening a repository reads a few index files instead of every pack. Version 2 adds what
 * `forget` and `prune` record: packs condemned for deletion, and snapshots forgotten.
 */

/** Version of an index file with packs only; what a backup writes. */
export const INDEX_VERSION = 1;
/** Version of an index file that also condemns packs or forgets snapshots. */
export const INDEX_VERSION_MAINTENANCE = 2;
/** Largest decoded index file accepted. */
export const MAX_INDEX_BYTES = 256 * 1024 * 1024;

/** One pack's entries, as an index file lists them. */
export interface IndexedPack {
  readonly packId: Uint8Array;
  readonly entries: readonly PackEntry[];
}

/**
 * One pack's entries already encoded as an index file lists them (PACK_ENTRY_BYTES each): what
 * a backup's packer keeps, so that writing its index file decodes and re-encodes nothing (for a
 * first backup of 100 000 pages that took a third of a second and 80 MB of heap).
 */
export interface EncodedPack {
  readonly packId: Uint8Array;
  readonly encodedEntries: Uint8Array;
}

/** A pack as an index file is written from: its entries, or their encoding. */
export type PackListing = IndexedPack | EncodedPack;

/** A pack that `prune` decided nothing needs, and when; a later prune deletes it. */
export interface CondemnedPack extends IndexedPack {
  /** Milliseconds since the Unix epoch. */
  readonly condemnedAt: number;
}

/** A snapshot that `forget` removed, so that its children's parent link still checks out. */
export interface ForgottenSnapshot {
  readonly snapshotId: Uint8Array;
  readonly seq: number;
}

/** What one index file holds; `P` is how its live packs' entries come (objects or encoded). */
export interface IndexFile<P extends PackListing = IndexedPack> {
  readonly packs: readonly P[];
  readonly condemned: readonly CondemnedPack[];
  readonly forgotten: readonly ForgottenSnapshot[];
}

function writePacks(w: ByteWriter, packs: readonly PackListing[]): void {
  w.u32(packs.length);
  for (const pack of packs) {
    w.bytes(pack.packId);
    w.u32(entryCount(pack));
    if ("encodedEntries" in pack) w.bytes(pack.encodedEntries);
    else writeEntries(w, pack.entries);
  }
}

/** Entries of a pack as an index file lists it. */
export function entryCount(pack: PackListing): number {
  return "encodedEntries" in pack
    ? pack.encodedEntries.length / PACK_ENTRY_BYTES
    : pack.entries.length;
}

/** The entries of `pack` as objects (decoded when they are encoded). */
export function entriesOf(pack: PackListing): readonly PackEntry[] {
  return "encodedEntries" in pack
    ? readEntries(new ByteReader(pack.encodedEntries), entryCount(pack))
    : pack.entries;
}

/** Bytes `writePacks` writes for `packs`. */
function packsBytes(packs: readonly PackListing[]): number {
  let n = 4;
  for (const pack of packs) n += ID_BYTES + 4 + entryCount(pack) * PACK_ENTRY_BYTES;
  return n;
}

/**
 * Encodes and seals an index file: version 1 when it only lists packs, version 2 when it also
 * condemns packs or forgets snapshots. Its storage name is the hex SHA-256 of the result.
 */
export async function sealIndex(
  p: Primitives,
  keys: RepoKeys,
  packs: readonly PackListing[],
  maintenance: Omit<IndexFile, "packs"> = { condemned: [], forgotten: [] },
): Promise<Uint8Array> {
  const w = new ByteWriter(1 + packsBytes(packs) + 1024);
  const { condemned, forgotten } = maintenance;
  const v2 = condemned.length > 0 || forgotten.length > 0;
  w.u8(v2 ? INDEX_VERSION_MAINTENANCE : INDEX_VERSION);
  writePacks(w, packs);
  if (v2) {
    w.u32(condemned.length);
    for (const c of condemned) {
      w.bytes(c.packId);
      w.u64(c.condemnedAt);
      w.u32(c.entries.length);
      writeEntries(w, c.entries);
    }
    w.u32(forgotten.length);
    for (const f of forgotten) {
      w.bytes(f.snapshotId);
      w.u32(f.seq);
    }
  }
  return seal(p, keys.meta, encodePayload(p, w.finish(), true), AAD.index);
}

/**
 * Opens an index file.
 * @throws {IntegrityError} naming `objectName` when forged, corrupt, truncated or hostile.
 * @throws {UnsupportedVersionError} for an index version this build does not know.
 */
export function openIndex(
  p: Primitives,
  keys: RepoKeys,
  sealed: Uint8Array,
  objectName: string,
): Promise<IndexFile> {
  return openIndexAs(p, keys, sealed, objectName, (r, count) => ({
    entries: readEntries(r, count),
  }));
}

/**
 * `openIndex` with the live packs' entries left encoded (EncodedPack), checked the same way: no
 * object per blob, for loading the in-memory index (an object and an ID view per blob cost
 * ~180 bytes of heap each while a repository's index files were loaded: 230 MB for 1.25 M
 * blobs). Condemned packs come with their entries as objects.
 */
export function openIndexEncoded(
  p: Primitives,
  keys: RepoKeys,
  sealed: Uint8Array,
  objectName: string,
): Promise<IndexFile<EncodedPack>> {
  return openIndexAs(p, keys, sealed, objectName, (r, count) => ({
    encodedEntries: readEncodedEntries(r, count),
  }));
}

async function openIndexAs<P extends PackListing>(
  p: Primitives,
  keys: RepoKeys,
  sealed: Uint8Array,
  objectName: string,
  readPack: (r: ByteReader, count: number) => Omit<P, "packId">,
): Promise<IndexFile<P>> {
  const payload = await open(keys.meta, sealed, AAD.index);
  if (!payload)
    throw new IntegrityError("index fails authentication (corrupt or forged)", objectName);
  try {
    const r = new ByteReader(decodePayload(p, payload, MAX_INDEX_BYTES));
    const version = r.u8();
    if (version !== INDEX_VERSION && version !== INDEX_VERSION_MAINTENANCE) {
      throw new UnsupportedVersionError(`${objectName}: index version ${version} is not supported`);
    }
    const packs: P[] = [];
    for (let i = 0, count = r.u32(); i < count; i++) {
      const packId = r.bytes(ID_BYTES).slice();
      packs.push({ packId, ...readPack(r, r.u32()) } as P);
    }
    const condemned: CondemnedPack[] = [];
    const forgotten: ForgottenSnapshot[] = [];
    if (version === INDEX_VERSION_MAINTENANCE) {
      for (let i = 0, count = r.u32(); i < count; i++) {
        const packId = r.bytes(ID_BYTES).slice();
        const condemnedAt = r.u64();
        condemned.push({ packId, condemnedAt, entries: readEntries(r, r.u32()) });
      }
      for (let i = 0, count = r.u32(); i < count; i++) {
        const snapshotId = r.bytes(ID_BYTES).slice();
        const seq = r.u32();
        if (seq < 1) throw new RangeError("a forgotten snapshot with seq 0");
        forgotten.push({ snapshotId, seq });
      }
    }
    if (r.remaining !== 0) throw new RangeError("trailing bytes");
    return { packs, condemned, forgotten };
  } catch (err) {
    if (err instanceof UnsupportedVersionError) throw err;
    // Anything else (truncation, a hostile length, a zstd frame that does not decode) is damage.
    throw new IntegrityError(`malformed index: ${(err as Error).message}`, objectName, {
      cause: err,
    });
  }
}
