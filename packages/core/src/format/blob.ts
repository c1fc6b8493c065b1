import type { Primitives } from "../crypto/primitives.ts";

/** Blob types (SPEC.md "Blobs"). The type is part of the blob ID, so a blob cannot change type. */
export const BLOB_DATA = 0;
export const BLOB_TREE = 1;
export const BLOB_LIST = 2;
/**
 * A database page stored as the XOR of its bytes with an earlier version of the page (its base,
 * a data blob of the same length that the file's content list names right after it).
 */
export const BLOB_DELTA = 3;
/** A list blob written as changes to an earlier list blob (format/list-patch.ts). */
export const BLOB_LIST_PATCH = 4;
export type BlobType = 0 | 1 | 2 | 3 | 4;

/** Bytes of a blob ID. */
export const ID_BYTES = 32;
/** Largest blob plaintext accepted anywhere (hostile sizes are refused before allocation). */
export const MAX_BLOB_BYTES = 8 * 1024 * 1024;

/** Whether `t` is a known blob type. */
export function isBlobType(t: number): t is BlobType {
  return (
    t === BLOB_DATA ||
    t === BLOB_TREE ||
    t === BLOB_LIST ||
    t === BLOB_DELTA ||
    t === BLOB_LIST_PATCH
  );
}

const TYPE_PREFIX = [0, 1, 2, 3, 4].map((t) => Uint8Array.of(t));

/** A blob's keyed ID: HMAC-SHA256(idKey, type || plaintext). Reveals nothing without the key. */
export function blobId(
  p: Primitives,
  idKey: Uint8Array,
  type: BlobType,
  plaintext: Uint8Array,
): Uint8Array {
  return p.hmacSha256(idKey, TYPE_PREFIX[type], plaintext);
}
