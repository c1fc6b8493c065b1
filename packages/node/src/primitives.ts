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
import {
  constants,
  createZstdCompress,
  type ZstdCompress,
  zstdCompressSync,
  zstdDecompressSync,
} from "node:zlib";
import type { AeadKey, Primitives } from "@locket/core";

/** zstd level for segments and metadata: level 3 is zstd's default speed/ratio balance. */
const ZSTD_LEVEL = 3;
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
 * A zstd compressor on libuv's threadpool that makes one frame per call and is then used again.
 * node:zlib's `zstdCompress` builds a compressor for every call (a zstd context and a 1 MiB
 * output buffer, set up and torn down on the calling thread) and copies its output once more:
 * a backup compresses a database in ~750 segments of 512 KiB. Ending each frame with
 * `flush(ZSTD_e_end)` gives a fresh compressor's bytes (test) for ~30 % less of the calling
 * thread's time (600 segments of the benchmark's database, 4 at once: 283-574 -> 198-267 ms
 * active). One exception, harmless: where a frame ends exactly at the end of node:zlib's output
 * buffer, node:zlib asks for the frame's end again and an empty frame follows it (a payload may
 * hold several frames, SPEC §4; both decoders take them). The output is a view of the stream's
 * output buffer, which node:zlib never writes twice. A compressor that fails is dropped.
 * Exported for its tests; `nodePrimitives.zstdCompressAsync` is the way to use it.
 */
export class ReusedCompressor {
  private readonly stream: ZstdCompress = createZstdCompress(ZSTD_OPTIONS);
  private readonly out: Buffer[] = [];
  private failure: Error | undefined;
  private waiting: ((err: Error) => void) | undefined;

  constructor() {
    this.stream.on("data", (d: Buffer) => this.out.push(d));
    this.stream.on("error", (err: Error) => {
      this.failure = err;
      this.waiting?.(err);
    });
  }

  get usable(): boolean {
    return this.failure === undefined && !this.stream.destroyed;
  }

  compress(data: Uint8Array): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      this.waiting = reject;
      this.stream.write(data);
      this.stream.flush(constants.ZSTD_e_end, (err?: Error | null) => {
        this.waiting = undefined;
        // A stream destroyed without an error calls back with one, and has no output to give.
        this.failure ??= err ?? undefined;
        if (this.failure) return reject(this.failure);
        const parts = this.out.splice(0);
        resolve(u8(parts.length === 1 ? parts[0] : Buffer.concat(parts)));
      });
    });
  }

  close(): void {
    this.stream.destroy();
  }
}

// Compressors not in use, at most as many as a packer compresses segments at once (packer.ts:
// four in flight, and a fifth queued before it waits for the oldest), and closed after a second
// unused so that an idle process does not keep their ~4 MB each.
const MAX_IDLE_COMPRESSORS = 5;
const IDLE_COMPRESSOR_MS = 1000;
const idleCompressors: ReusedCompressor[] = [];
let closeIdle: ReturnType<typeof setTimeout> | undefined;

function releaseCompressor(c: ReusedCompressor): void {
  if (!c.usable || idleCompressors.length >= MAX_IDLE_COMPRESSORS) {
    c.close();
    return;
  }
  idleCompressors.push(c);
  if (closeIdle) closeIdle.refresh();
  else {
    closeIdle = setTimeout(() => {
      closeIdle = undefined;
      for (const idle of idleCompressors.splice(0)) idle.close();
    }, IDLE_COMPRESSOR_MS);
    closeIdle.unref();
  }
}

/**
 * Primitives from node:crypto (OpenSSL) and node:zlib (zstd). Same bytes as `webPrimitives`,
 * several times faster for the per-page HMAC and for AES-GCM.
 */
export const nodePrimitives: Primitives = {
  randomBytes: (n) => u8(randomBytes(n)),
  sha256: (data) => u8(createHash("sha256").update(data).digest()),
  sha256Stream: () => {
    const h = createHash("sha256");
    return { update: (data) => void h.update(data), digest: () => u8(h.digest()) };
  },
  hmacSha256: (key, ...data) => {
    const h = createHmac("sha256", hmacKey(key));
    for (const d of data) h.update(d);
    return u8(h.digest());
  },
  hkdfSha256: async (ikm, salt, info, length) =>
    new Uint8Array(hkdfSync("sha256", ikm, salt, info, length)),
  aesGcmKey,
  timingSafeEqual: (a, b) => a.length === b.length && timingSafeEqual(a, b),
  zstdCompressAsync: async (data) => {
    const c = idleCompressors.pop() ?? new ReusedCompressor();
    try {
      return await c.compress(data);
    } finally {
      releaseCompressor(c);
    }
  },
  zstdCompress: (data) => u8(zstdCompressSync(data, ZSTD_OPTIONS)),
  zstdDecompress: (data, maxOutput) =>
    u8(
      zstdDecompressSync(data, {
        maxOutputLength: Math.max(1, maxOutput),
        chunkSize: Math.min(Math.max(64 * 1024, maxOutput), ZSTD_CHUNK_BYTES),
      }),
    ),
};
