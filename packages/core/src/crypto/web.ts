import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import type { AeadKey, Primitives } from "./primitives.ts";
import { zstdDecompressJs } from "./zstd-js.ts";

// WebCrypto wants ArrayBuffer-backed views; TypeScript 5.9 types Uint8Array generically.
const ab = (b: Uint8Array) => b as Uint8Array<ArrayBuffer>;

/**
 * Primitives from the Web platform: WebCrypto for AES-GCM, HKDF and randomness, @noble/hashes for
 * synchronous SHA-256 and HMAC, and fzstd (plain JavaScript) to decompress zstd, so a browser
 * restores what a device backed up with zstd. No zstd compressor by default: backups written
 * here store segments uncompressed, which the format allows. `zstd` replaces either half (a
 * WASM or native zstd, where the platform has one).
 */
export function webPrimitives(
  zstd?: Partial<Pick<Primitives, "zstdCompress" | "zstdDecompress">>,
): Primitives {
  const subtle = globalThis.crypto.subtle;
  return {
    randomBytes(n) {
      const out = new Uint8Array(n);
      globalThis.crypto.getRandomValues(out);
      return out;
    },
    sha256: (data) => sha256(data),
    hmacSha256: (key, ...data) => {
      const h = hmac.create(sha256, key);
      for (const d of data) h.update(d);
      return h.digest();
    },
    async hkdfSha256(ikm, salt, info, length) {
      const key = await subtle.importKey("raw", ab(ikm), "HKDF", false, ["deriveBits"]);
      const bits = await subtle.deriveBits(
        { name: "HKDF", hash: "SHA-256", salt: ab(salt), info: ab(info) },
        key,
        length * 8,
      );
      return new Uint8Array(bits);
    },
    async aesGcmKey(raw): Promise<AeadKey> {
      const key = await subtle.importKey("raw", ab(raw), "AES-GCM", false, ["encrypt", "decrypt"]);
      return {
        async seal(nonce, plaintext, aad) {
          const ct = await subtle.encrypt(
            { name: "AES-GCM", iv: ab(nonce), additionalData: ab(aad) },
            key,
            ab(plaintext),
          );
          return new Uint8Array(ct);
        },
        async open(nonce, sealed, aad) {
          try {
            const pt = await subtle.decrypt(
              { name: "AES-GCM", iv: ab(nonce), additionalData: ab(aad) },
              key,
              ab(sealed),
            );
            return new Uint8Array(pt);
          } catch {
            return null;
          }
        },
      };
    },
    timingSafeEqual(a, b) {
      if (a.length !== b.length) return false;
      let d = 0;
      for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
      return d === 0;
    },
    zstdCompress: zstd?.zstdCompress ?? (() => null),
    zstdDecompress: zstd?.zstdDecompress ?? zstdDecompressJs,
  };
}
