import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createSecretKey,
  hkdfSync,
  type KeyObject,
  randomBytes,
  timingSafeEqual,
  webcrypto,
} from "node:crypto";
import { constants, zstdCompress, zstdCompressSync, zstdDecompressSync } from "node:zlib";
import type { AeadKey, Primitives } from "@locket/core";

/** zstd level for segments and metadata: level 3 is zstd's default speed/ratio balance. */
const ZSTD_LEVEL = 3;
/** Messages at least this large are encrypted on the threadpool (see aesGcmKey). */
const THREADPOOL_MIN_BYTES = 64 * 1024;
// node:zlib hands output back in `chunkSize` pieces (16 KiB by default), one callback and one
// copy on the calling thread each: a 512 KiB segment made dozens. One piece per segment instead.
const ZSTD_CHUNK_BYTES = 1024 * 1024;
const ZSTD_OPTIONS = {
  chunkSize: ZSTD_CHUNK_BYTES,
  params: { [constants.ZSTD_c_compressionLevel]: ZSTD_LEVEL },
};

const u8 = (b: Buffer) => new Uint8Array(b.buffer, b.byteOffset, b.byteLength);

// Importing the key once: createHmac with raw bytes builds a KeyObject on every call, which cost
// ~5% of a backup that hashes every 4 KiB page.
const hmacKeys = new WeakMap<Uint8Array, KeyObject>();
function hmacKey(key: Uint8Array): KeyObject {
  let k = hmacKeys.get(key);
  if (!k) {
    k = createSecretKey(key);
    hmacKeys.set(key, k);
  }
  return k;
}

/**
 * An AES-256-GCM key. Messages of `threadpoolMinBytes` or more go through WebCrypto, which runs
 * on the libuv threadpool: segments are then sealed and opened on the second core while the
 * main thread chunks and hashes. Smaller ones stay on node:crypto, whose synchronous call is
 * cheaper than a trip to the pool.
 */
async function aesGcmKey(raw: Uint8Array, threadpoolMinBytes: number): Promise<AeadKey> {
  if (raw.length !== 32)
    throw new RangeError(`aes-256-gcm key: expected 32 bytes, got ${raw.length}`);
  const key = Buffer.from(raw);
  const subtleKey = await webcrypto.subtle.importKey("raw", key, "AES-GCM", false, [
    "encrypt",
    "decrypt",
  ]);
  return {
    async seal(nonce, plaintext, aad) {
      if (plaintext.length >= threadpoolMinBytes) {
        return new Uint8Array(
          await webcrypto.subtle.encrypt(
            { name: "AES-GCM", iv: nonce, additionalData: aad },
            subtleKey,
            plaintext,
          ),
        );
      }
      const c = createCipheriv("aes-256-gcm", key, nonce);
      c.setAAD(aad);
      return u8(Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]));
    },
    async open(nonce, sealed, aad) {
      if (sealed.length < 16) return null;
      if (sealed.length >= threadpoolMinBytes) {
        try {
          return new Uint8Array(
            await webcrypto.subtle.decrypt(
              { name: "AES-GCM", iv: nonce, additionalData: aad },
              subtleKey,
              sealed,
            ),
          );
        } catch {
          return null;
        }
      }
      const d = createDecipheriv("aes-256-gcm", key, nonce);
      d.setAAD(aad);
      d.setAuthTag(sealed.subarray(sealed.length - 16));
      try {
        const out = d.update(sealed.subarray(0, sealed.length - 16));
        // GCM's final() only checks the tag and returns no bytes: no concatenation needed.
        d.final();
        return u8(out);
      } catch {
        return null;
      }
    },
  };
}

/**
 * Primitives from node:crypto (OpenSSL) and node:zlib (zstd). Same bytes as `webPrimitives`,
 * several times faster for the per-page HMAC and for AES-GCM.
 */
export const nodePrimitives: Primitives = {
  randomBytes: (n) => u8(randomBytes(n)),
  sha256: (data) => u8(createHash("sha256").update(data).digest()),
  // WebCrypto's digest runs on the libuv threadpool: a pack's hash no longer holds the main thread.
  sha256Async: async (data) => new Uint8Array(await webcrypto.subtle.digest("SHA-256", data)),
  hmacSha256: (key, ...data) => {
    const h = createHmac("sha256", hmacKey(key));
    for (const d of data) h.update(d);
    return u8(h.digest());
  },
  hkdfSha256: async (ikm, salt, info, length) =>
    new Uint8Array(hkdfSync("sha256", ikm, salt, info, length)),
  aesGcmKey: (raw) => aesGcmKey(raw, THREADPOOL_MIN_BYTES),
  timingSafeEqual: (a, b) => a.length === b.length && timingSafeEqual(a, b),
  zstdCompressAsync: (data) =>
    new Promise((resolve, reject) =>
      zstdCompress(data, ZSTD_OPTIONS, (err, out) => (err ? reject(err) : resolve(u8(out)))),
    ),
  zstdCompress: (data) => u8(zstdCompressSync(data, ZSTD_OPTIONS)),
  zstdDecompress: (data, maxOutput) =>
    u8(
      zstdDecompressSync(data, {
        maxOutputLength: Math.max(1, maxOutput),
        chunkSize: Math.min(Math.max(64 * 1024, maxOutput), ZSTD_CHUNK_BYTES),
      }),
    ),
};

/**
 * nodePrimitives for a worker thread, which is itself the parallelism: AES-GCM always runs
 * synchronously on the calling thread rather than hopping to the shared libuv threadpool.
 */
export const workerPrimitives: Primitives = {
  ...nodePrimitives,
  aesGcmKey: (raw) => aesGcmKey(raw, Number.POSITIVE_INFINITY),
};
