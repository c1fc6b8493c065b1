/**
 * The cryptographic and compression primitives the core composes. The core never implements a
 * primitive: this interface is filled by WebCrypto plus @noble/hashes in browsers
 * (`webPrimitives`) and by node:crypto plus node:zlib in Node (`@locket/node`'s
 * `nodePrimitives`). Both must produce identical bytes; the test vectors check that.
 */

/** An AES-256-GCM key, imported once and reused for many messages. */
export interface AeadKey {
  /**
   * Encrypts; returns ciphertext || 16-byte tag, in a fresh array the caller owns (the packer
   * releases it once copied). `nonce` is 12 bytes.
   */
  seal(nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Promise<Uint8Array>;
  /**
   * Optional: `seal`'s bytes as pieces that are not joined (ciphertext, then tag), each a fresh
   * array the caller owns, for a caller that writes them out as they are: joining them copied
   * every byte a backup stores once more (0.6 s of a 2 GB first backup's main thread).
   */
  sealParts?(nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Promise<Uint8Array[]>;
  /** Decrypts and authenticates; returns null when authentication fails (never throws for that). */
  open(nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Promise<Uint8Array | null>;
}

export interface Primitives {
  /** `n` bytes from a CSPRNG. */
  randomBytes(n: number): Uint8Array;
  /** SHA-256. */
  sha256(data: Uint8Array): Uint8Array;
  /**
   * HMAC-SHA256 of the concatenation of `data`, synchronous because chunk IDs are computed per
   * 4 KiB page. Several parts avoid copying a chunk just to prefix it.
   */
  hmacSha256(key: Uint8Array, ...data: Uint8Array[]): Uint8Array;
  /** HKDF-SHA256 (RFC 5869) with the given salt and info, `length` bytes of output. */
  hkdfSha256(
    ikm: Uint8Array,
    salt: Uint8Array,
    info: Uint8Array,
    length: number,
  ): Promise<Uint8Array>;
  /** Imports a 32-byte AES-256-GCM key. */
  aesGcmKey(raw: Uint8Array): Promise<AeadKey>;
  /** Constant-time equality of two byte strings (false for different lengths). */
  timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean;
  /** zstd-compresses `data` (frame format, RFC 8878), or returns null where no compressor exists. */
  zstdCompress(data: Uint8Array): Uint8Array | null;
  /**
   * Optional: the same as `zstdCompress` off the calling thread (Node's threadpool), so that a
   * backup compresses one segment while it chunks and hashes the next. `data` must not change
   * until the promise settles.
   */
  zstdCompressAsync?(data: Uint8Array): Promise<Uint8Array | null>;
  /**
   * Decompresses one zstd frame whose output must be at most `maxOutput` bytes.
   * @throws {Error} on malformed input or output larger than `maxOutput`.
   */
  zstdDecompress(data: Uint8Array, maxOutput: number): Uint8Array;
}
