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
} from "node:crypto";
import { zstdCompressSync, zstdDecompressSync } from "node:zlib";
import type { AeadKey, Primitives } from "@locket/core";
import { ZSTD_CHUNK_BYTES, ZSTD_OPTIONS, zstdCompressReused } from "./zstd.ts";

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
 * An AES-256-GCM key, through node:crypto on the calling thread. Large messages once went
 * through WebCrypto, on the libuv threadpool, and packs were hashed there too; but WebCrypto
 * copies its input before it starts, and with chunking moved to the worker threads those copies
 * took as much main-thread CPU as the work itself (1.2 s in a 600 MB backup, --cpu-prof).
 * Without them a backup takes the same time for about 0.3 s less CPU, and `check --read-data`,
 * which hashes every pack, about 5 % less time. The key is imported once: given as bytes,
 * createCipheriv imports it on every call (~20 against ~5 µs per call here; a 2 GB backup or
 * restore seals or opens ~4,000 segments).
 */
async function aesGcmKey(raw: Uint8Array): Promise<AeadKey> {
  if (raw.length !== 32)
    throw new RangeError(`aes-256-gcm key: expected 32 bytes, got ${raw.length}`);
  const key = createSecretKey(raw);
  return {
    async seal(nonce, plaintext, aad) {
      const c = createCipheriv("aes-256-gcm", key, nonce);
      c.setAAD(aad);
      return u8(Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]));
    },
    async sealParts(nonce, plaintext, aad) {
      const c = createCipheriv("aes-256-gcm", key, nonce);
      c.setAAD(aad);
      // GCM's final() returns no bytes: the ciphertext is update's.
      const body = c.update(plaintext);
      c.final();
      return [u8(body), u8(c.getAuthTag())];
    },
    async open(nonce, sealed, aad) {
      if (sealed.length < 16) return null;
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
  hmacSha256: (key, ...data) => {
    const h = createHmac("sha256", hmacKey(key));
    for (const d of data) h.update(d);
    return u8(h.digest());
  },
  hkdfSha256: async (ikm, salt, info, length) =>
    new Uint8Array(hkdfSync("sha256", ikm, salt, info, length)),
  aesGcmKey,
  timingSafeEqual: (a, b) => a.length === b.length && timingSafeEqual(a, b),
  zstdCompressAsync: async (data) => u8(await zstdCompressReused(data)),
  zstdCompress: (data) => u8(zstdCompressSync(data, ZSTD_OPTIONS)),
  zstdDecompress: (data, maxOutput) =>
    u8(
      zstdDecompressSync(data, {
        maxOutputLength: Math.max(1, maxOutput),
        chunkSize: Math.min(Math.max(64 * 1024, maxOutput), ZSTD_CHUNK_BYTES),
      }),
    ),
};
