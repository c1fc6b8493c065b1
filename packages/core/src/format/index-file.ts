import { ByteReader, ByteWriter } from "../bytes.ts";
import type { RepoKeys } from "../crypto/keys.ts";
import type { Primitives } from "../crypto/primitives.ts";
import { AAD, open, seal } from "../crypto/seal.ts";
import { IntegrityError, UnsupportedVersionError } from "../errors.ts";
import { ID_BYTES } from "./blob.ts";
import { type PackEntry, readEntries, writeEntries } from "./pack.ts";
import { decodePayload, encodePayload } from "./payload.ts";

/**
 * Index files (SPEC.md "Index files"): for a set of packs, the same entries their headers hold,
 * so opening a repository reads a few index files instead of every pack.
 */

export const INDEX_VERSION = 1;
/** Largest decoded index file accepted. */
export const MAX_INDEX_BYTES = 256 * 1024 * 1024;

/** One pack's entries, as an index file lists them. */
export interface IndexedPack {
  readonly packId: Uint8Array;
  readonly entries: readonly PackEntry[];
}

/** Encodes and seals an index file. Its storage name is the hex SHA-256 of the result. */
export async function sealIndex(
  p: Primitives,
  keys: RepoKeys,
  packs: readonly IndexedPack[],
): Promise<Uint8Array> {
  const w = new ByteWriter(1024);
  w.u8(INDEX_VERSION);
  w.u32(packs.length);
  for (const pack of packs) {
    w.bytes(pack.packId);
    w.u32(pack.entries.length);
    writeEntries(w, pack.entries);
  }
  return seal(p, keys.meta, encodePayload(p, w.finish(), true), AAD.index);
}

/**
 * Opens an index file.
 * @throws {IntegrityError} naming `objectName` when forged, corrupt, truncated or hostile.
 * @throws {UnsupportedVersionError} for an index version this build does not know.
 */
export async function openIndex(
  p: Primitives,
  keys: RepoKeys,
  sealed: Uint8Array,
  objectName: string,
): Promise<IndexedPack[]> {
  const payload = await open(keys.meta, sealed, AAD.index);
  if (!payload)
    throw new IntegrityError("index fails authentication (corrupt or forged)", objectName);
  try {
    const r = new ByteReader(decodePayload(p, payload, MAX_INDEX_BYTES));
    const version = r.u8();
    if (version !== INDEX_VERSION) {
      throw new UnsupportedVersionError(`${objectName}: index version ${version} is not supported`);
    }
    const count = r.u32();
    const packs: IndexedPack[] = [];
    for (let i = 0; i < count; i++) {
      const packId = r.bytes(ID_BYTES).slice();
      packs.push({ packId, entries: readEntries(r, r.u32()) });
    }
    if (r.remaining !== 0) throw new RangeError("trailing bytes");
    return packs;
  } catch (err) {
    if (err instanceof UnsupportedVersionError) throw err;
    // Anything else (truncation, a hostile length, a zstd frame that does not decode) is damage.
    throw new IntegrityError(`malformed index: ${(err as Error).message}`, objectName, {
      cause: err,
    });
  }
}
