import { utf8 } from "../bytes.ts";
import { UsageError } from "../errors.ts";
import type { AeadKey, Primitives } from "./primitives.ts";

/** Length of the root key and of every derived 256-bit key, in bytes. */
export const KEY_BYTES = 32;

/** HKDF-SHA256 `info` labels (SPEC.md "Key hierarchy"). Changing one is a new format version. */
export const LABELS = {
  dataKey: "locket/v1/data-key",
  metaKey: "locket/v1/meta-key",
  idKey: "locket/v1/id-key",
  keyCheck: "locket/v1/key-check",
  chunkerGear: "locket/v1/chunker-gear",
} as const;

/** Every key a repository uses, derived from the root key. Holds secrets: never log it. */
export interface RepoKeys {
  /** AES-256-GCM key for data segments. */
  readonly data: AeadKey;
  /** AES-256-GCM key for pack headers, index files and snapshots. */
  readonly meta: AeadKey;
  /** HMAC-SHA256 key for blob IDs. */
  readonly id: Uint8Array;
  /** The key commitment stored in the repository config. */
  readonly keyCheck: Uint8Array;
  /** The content-defined chunker's gear table (256 entries), keyed so boundaries leak nothing. */
  readonly gear: Uint32Array;
}

const EMPTY_SALT = new Uint8Array(0);

/**
 * Derives every repository key from the 32-byte root key with HKDF-SHA256 (empty salt).
 * @throws {RangeError} when `rootKey` is not 32 bytes.
 */
export async function deriveKeys(p: Primitives, rootKey: Uint8Array): Promise<RepoKeys> {
  if (!(rootKey instanceof Uint8Array)) throw new TypeError("root key: expected Uint8Array");
  if (rootKey.length !== KEY_BYTES) {
    throw new RangeError(`root key: expected ${KEY_BYTES} bytes, got ${rootKey.length}`);
  }
  const derive = (label: string, n = KEY_BYTES) =>
    p.hkdfSha256(rootKey, EMPTY_SALT, utf8(label), n);
  const [dataRaw, metaRaw, id, keyCheck, gearBytes] = await Promise.all([
    derive(LABELS.dataKey),
    derive(LABELS.metaKey),
    derive(LABELS.idKey),
    derive(LABELS.keyCheck),
    derive(LABELS.chunkerGear, 1024),
  ]);
  const gear = new Uint32Array(256);
  const view = new DataView(gearBytes.buffer, gearBytes.byteOffset, gearBytes.byteLength);
  for (let i = 0; i < 256; i++) gear[i] = view.getUint32(4 * i, true);
  return {
    data: await p.aesGcmKey(dataRaw),
    meta: await p.aesGcmKey(metaRaw),
    id,
    keyCheck,
    gear,
  };
}

/** A fresh root key from the CSPRNG. */
export function generateRootKey(p: Primitives): Uint8Array {
  return p.randomBytes(KEY_BYTES);
}

/**
 * Validates a raw root key given by a caller.
 * @throws {UsageError} when it is not 32 bytes.
 */
export function assertRootKey(rootKey: Uint8Array): void {
  if (rootKey.length !== KEY_BYTES) throw new UsageError(`root key must be ${KEY_BYTES} bytes`);
}
