/** Small byte helpers shared by the format code. Uint8Array only: this package runs in browsers. */

const HEX = "0123456789abcdef";
/** Character codes of the two hex digits of each byte value: [2b] high, [2b + 1] low. */
const HEX_CODES = new Uint8Array(512);
for (let b = 0; b < 256; b++) {
  HEX_CODES[2 * b] = HEX.charCodeAt(b >> 4);
  HEX_CODES[2 * b + 1] = HEX.charCodeAt(b & 15);
}
/** Bytes converted per String.fromCharCode call, far below any engine's argument limit. */
const HEX_PIECE = 4096;
const hexCodes: number[] = [];

/**
 * Lowercase hex of `bytes`, as one flat string. Appending digit by digit would build a rope of
 * 64 cons strings per blob ID (about 1.5 kB of heap while it lives, and slow to hash as a key);
 * this allocates the 64-character string once.
 */
export function toHex(bytes: Uint8Array): string {
  if (bytes.length > HEX_PIECE) {
    const parts: string[] = [];
    for (let i = 0; i < bytes.length; i += HEX_PIECE) {
      parts.push(toHex(bytes.subarray(i, i + HEX_PIECE)));
    }
    return parts.join("");
  }
  const n = bytes.length;
  hexCodes.length = 2 * n;
  for (let i = 0; i < n; i++) {
    const c = 2 * bytes[i];
    hexCodes[2 * i] = HEX_CODES[c];
    hexCodes[2 * i + 1] = HEX_CODES[c + 1];
  }
  return String.fromCharCode.apply(null, hexCodes);
}

/** Value of a hex digit's character code, either case, or -1. */
function hexDigit(c: number): number {
  if (c >= 65 && c <= 70) return c - 55; // A-F
  return lowerHexDigit(c);
}

/**
 * Parses `hex`, a blob ID as 64 lowercase hex digits, into `out` (32 bytes) without allocating;
 * false, with `out` partly written, for anything else (uppercase included: IDs are lowercase).
 */
export function parseHexId(hex: string, out: Uint8Array): boolean {
  if (hex.length !== 64) return false;
  for (let i = 0; i < 32; i++) {
    const hi = lowerHexDigit(hex.charCodeAt(2 * i));
    const lo = lowerHexDigit(hex.charCodeAt(2 * i + 1));
    if (hi < 0 || lo < 0) return false;
    out[i] = (hi << 4) | lo;
  }
  return true;
}

/**
 * Blob IDs given as hex (64 lowercase digits each), as their bytes back to back.
 * @throws {RangeError} for anything that is not such an ID.
 */
export function idsFromHex(ids: readonly string[]): Uint8Array {
  const out = new Uint8Array(32 * ids.length);
  ids.forEach((id, i) => {
    if (!parseHexId(id, out.subarray(32 * i, 32 * i + 32))) {
      throw new RangeError(`not a blob id: ${JSON.stringify(id)}`);
    }
  });
  return out;
}

/** Value of a lowercase hex digit's character code, or -1. */
function lowerHexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48; // 0-9
  if (c >= 97 && c <= 102) return c - 87; // a-f
  return -1;
}

/**
 * Parses lowercase or uppercase hex.
 * @throws {TypeError} when `hex` has an odd length or a non-hex character.
 */
export function fromHex(hex: string): Uint8Array {
  const fail = () =>
    new TypeError(`expected an even-length hex string, got ${hex.length} characters`);
  if (hex.length % 2 !== 0) throw fail();
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) {
    const hi = hexDigit(hex.charCodeAt(2 * i));
    const lo = hexDigit(hex.charCodeAt(2 * i + 1));
    if (hi < 0 || lo < 0) throw fail();
    out[i] = (hi << 4) | lo;
  }
  return out;
}

/**
 * Releases a large buffer that the caller owns alone, at once, where the platform can
 * (ArrayBuffer.prototype.transfer, ES2024), instead of when the collector gets to it: a backup
 * or a restore makes hundreds of megabytes of short-lived buffers, and V8 collects them only
 * after tens of megabytes have piled up on each thread. Does nothing to a view into a larger
 * buffer or to a small one (Node pools small buffers). The caller must hold no other view of it.
 */
export function releaseBuffer(b: Uint8Array): void {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength) releaseWhole(b.buffer);
}

/**
 * Releases `buffer` as `releaseBuffer` does, whatever views of it the caller was given: they
 * must all be dead. Only an ArrayBuffer of at least 64 KiB (never one of Node's pools of small
 * Buffers) that is not released already.
 */
export function releaseWhole(buffer: ArrayBufferLike): void {
  if (releasable(buffer)) buffer.transfer(0);
}

/** Whether `releaseWhole` would release `buffer`. */
export function releasable(buffer: ArrayBufferLike): buffer is ArrayBuffer {
  return (
    buffer instanceof ArrayBuffer &&
    buffer.byteLength >= 64 * 1024 &&
    !buffer.detached &&
    typeof buffer.transfer === "function"
  );
}

/** Concatenates byte arrays into a new one. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  return concatAll(parts);
}

/**
 * `concat` for parts in an array: a spread of 100 000 or more arguments overflows the stack, so
 * callers with an unbounded number of parts (a restore's files, a prune's blobs) use this.
 */
export function concatAll(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** UTF-8 bytes of `s`. */
export function utf8(s: string): Uint8Array {
  return encoder.encode(s);
}

/**
 * Decodes UTF-8, rejecting malformed input.
 * @throws {TypeError} on malformed UTF-8.
 */
export function fromUtf8(b: Uint8Array): string {
  return decoder.decode(b);
}

/**
 * Whether `a` holds at `at` the 32 bytes `b` holds at `bt` (false where either ends sooner),
 * without a view of either: for the comparisons made once per page or blob.
 */
export function sameIdAt(a: Uint8Array, at: number, b: Uint8Array, bt = 0): boolean {
  if (at + 32 > a.length || bt + 32 > b.length) return false;
  for (let i = 0; i < 32; i++) if (a[at + i] !== b[bt + i]) return false;
  return true;
}

/**
 * Copies the 32 bytes `from` holds at `at` into `out` at `to`, without a view of either (the
 * caller checks the bounds): for the copies made once per page or blob.
 */
export function copyIdAt(out: Uint8Array, to: number, from: Uint8Array, at: number): void {
  for (let i = 0; i < 32; i++) out[to + i] = from[at + i];
}

/** Byte-wise equality; not constant-time (use `Primitives.timingSafeEqual` for secrets). */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Writes `a XOR b` into `out` (all of one length, a multiple of 4) and returns how many of its
 * 4-byte words are not zero. Word by word where the views allow it: a byte loop over every
 * changed page took a tenth of a day's backup (page deltas, SPEC §6).
 */
export function xorInto(out: Uint8Array, a: Uint8Array, b: Uint8Array): number {
  let changed = 0;
  if ((a.byteOffset | b.byteOffset | out.byteOffset) % 4 === 0) {
    const n = out.length >> 2;
    const o = new Uint32Array(out.buffer, out.byteOffset, n);
    const x = new Uint32Array(a.buffer, a.byteOffset, n);
    const y = new Uint32Array(b.buffer, b.byteOffset, n);
    for (let i = 0; i < n; i++) {
      const w = x[i] ^ y[i];
      o[i] = w;
      if (w !== 0) changed++;
    }
    return changed;
  }
  for (let i = 0; i < out.length; i += 4) {
    let w = 0;
    for (let k = i; k < i + 4; k++) {
      out[k] = a[k] ^ b[k];
      w |= out[k];
    }
    if (w !== 0) changed++;
  }
  return changed;
}

/** A growable byte buffer for building binary formats. */
export class ByteWriter {
  private buf: Uint8Array;
  private view: DataView;
  length = 0;
  /** `initial`: the capacity to start with, or a buffer to write into (its bytes are overwritten). */
  constructor(initial: number | ArrayBuffer = 1024) {
    // Two calls: TypeScript resolves an overload per call, not per union member.
    this.buf = typeof initial === "number" ? new Uint8Array(initial) : new Uint8Array(initial);
    this.view = new DataView(this.buf.buffer);
  }
  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.length + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(v: number): void {
    this.reserve(1);
    this.buf[this.length++] = v;
  }
  u32(v: number): void {
    this.reserve(4);
    this.view.setUint32(this.length, v, true);
    this.length += 4;
  }
  u64(v: number): void {
    this.reserve(8);
    this.view.setBigUint64(this.length, BigInt(v), true);
    this.length += 8;
  }
  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  /** The bytes written so far (a view; copy it if the writer is reused). */
  finish(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

/**
 * A bounds-checked reader for binary formats. Every read past the end throws `RangeError`,
 * which format parsers turn into an IntegrityError naming the object.
 */
export class ByteReader {
  private readonly buf: Uint8Array;
  private readonly view: DataView;
  offset = 0;
  constructor(buf: Uint8Array) {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  get remaining(): number {
    return this.buf.length - this.offset;
  }
  private need(n: number): void {
    if (n > this.remaining)
      throw new RangeError(`truncated: needed ${n} bytes, ${this.remaining} left`);
  }
  u8(): number {
    this.need(1);
    return this.buf[this.offset++];
  }
  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.offset, true);
    this.offset += 4;
    return v;
  }
  u64(): number {
    this.need(8);
    const v = this.view.getBigUint64(this.offset, true);
    this.offset += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError("u64 value too large");
    return Number(v);
  }
  bytes(n: number): Uint8Array {
    this.need(n);
    const out = this.buf.subarray(this.offset, this.offset + n);
    this.offset += n;
    return out;
  }
}
