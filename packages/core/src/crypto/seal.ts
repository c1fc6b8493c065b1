import { concat, utf8 } from "../bytes.ts";
import type { AeadKey, Primitives } from "./primitives.ts";

/** Bytes of the random AES-GCM nonce that starts every sealed message. */
export const NONCE_BYTES = 12;
/** Bytes of the AES-GCM tag that ends every sealed message. */
export const TAG_BYTES = 16;
/** Overhead of `seal`: nonce plus tag. */
export const SEAL_OVERHEAD = NONCE_BYTES + TAG_BYTES;

/**
 * Additional authenticated data for each kind of sealed message (SPEC.md "Sealed messages"), so
 * that a message of one kind can never be accepted as another.
 */
export const AAD = {
  segment: utf8("locket/v1/segment"),
  packHeader: utf8("locket/v1/pack-header"),
  index: utf8("locket/v1/index"),
  snapshot: utf8("locket/v1/snapshot"),
} as const;

/** `nonce || AES-256-GCM(key, nonce, plaintext, aad)`, with a fresh random 96-bit nonce. */
export async function seal(
  p: Primitives,
  key: AeadKey,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Promise<Uint8Array> {
  const nonce = p.randomBytes(NONCE_BYTES);
  return concat(nonce, await key.seal(nonce, plaintext, aad));
}

/**
 * Opens a message made by `seal`. Returns null when it is too short or fails authentication;
 * callers turn that into an IntegrityError that names the object.
 */
export async function open(
  key: AeadKey,
  sealed: Uint8Array,
  aad: Uint8Array,
): Promise<Uint8Array | null> {
  if (sealed.length < SEAL_OVERHEAD) return null;
  return key.open(sealed.subarray(0, NONCE_BYTES), sealed.subarray(NONCE_BYTES), aad);
}
