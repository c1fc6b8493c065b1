import { ByteReader } from "../bytes.ts";
import type { Primitives } from "../crypto/primitives.ts";

/** Payload encodings (SPEC.md "Payloads"). */
export const PAYLOAD_STORED = 0;
export const PAYLOAD_ZSTD = 1;
/** Bytes of the payload header: encoding (u8) and raw length (u32 LE). */
export const PAYLOAD_HEADER_BYTES = 5;

/**
 * Encodes `raw` as `encoding || rawLength || body`, zstd-compressed when `compress` is set and
 * compression saves more than 1/32 of the size (media rarely does, and decompressing costs time).
 */
export function encodePayload(p: Primitives, raw: Uint8Array, compress: boolean): Uint8Array {
  const buf = new Uint8Array(PAYLOAD_HEADER_BYTES + raw.length);
  buf.set(raw, PAYLOAD_HEADER_BYTES);
  return encodePayloadInPlace(p, buf, raw.length, compress);
}

/**
 * Like `encodePayload`, without copying the raw bytes: `buf` holds PAYLOAD_HEADER_BYTES of room
 * followed by `rawLength` raw bytes. A stored payload is `buf` itself with its header filled in
 * (a view); a compressed one is a new array.
 */
export function encodePayloadInPlace(
  p: Primitives,
  buf: Uint8Array,
  rawLength: number,
  compress: boolean,
): Uint8Array {
  return choose(buf, rawLength, compress ? p.zstdCompress(rawOf(buf, rawLength)) : null);
}

/**
 * `encodePayloadInPlace`, compressing off the calling thread when the primitives can.
 * `buf` must not change until the promise settles.
 */
export async function encodePayloadInPlaceAsync(
  p: Primitives,
  buf: Uint8Array,
  rawLength: number,
  compress: boolean,
): Promise<Uint8Array> {
  const raw = rawOf(buf, rawLength);
  const z = !compress
    ? null
    : p.zstdCompressAsync
      ? await p.zstdCompressAsync(raw)
      : p.zstdCompress(raw);
  return choose(buf, rawLength, z);
}

function rawOf(buf: Uint8Array, rawLength: number): Uint8Array {
  return buf.subarray(PAYLOAD_HEADER_BYTES, PAYLOAD_HEADER_BYTES + rawLength);
}

/** The zstd payload when it saves enough, else the stored payload in `buf`. */
function choose(buf: Uint8Array, rawLength: number, z: Uint8Array | null): Uint8Array {
  if (z && z.length < rawLength - (rawLength >> 5)) {
    const out = new Uint8Array(PAYLOAD_HEADER_BYTES + z.length);
    writeHeader(out, PAYLOAD_ZSTD, rawLength);
    out.set(z, PAYLOAD_HEADER_BYTES);
    return out;
  }
  writeHeader(buf, PAYLOAD_STORED, rawLength);
  return buf.subarray(0, PAYLOAD_HEADER_BYTES + rawLength);
}

function writeHeader(out: Uint8Array, encoding: number, rawLength: number): void {
  out[0] = encoding;
  new DataView(out.buffer, out.byteOffset + 1, 4).setUint32(0, rawLength, true);
}

/**
 * Decodes a payload, refusing a declared raw length above `maxRaw` before any work is done.
 * @throws {RangeError} for an unknown encoding, a hostile length, or a body that does not
 *   decode to exactly the declared length. Callers wrap it into an IntegrityError.
 */
export function decodePayload(p: Primitives, payload: Uint8Array, maxRaw: number): Uint8Array {
  const r = new ByteReader(payload);
  const encoding = r.u8();
  const rawLength = r.u32();
  if (rawLength > maxRaw)
    throw new RangeError(`payload declares ${rawLength} bytes, limit ${maxRaw}`);
  const body = r.bytes(r.remaining);
  if (encoding === PAYLOAD_STORED) {
    if (body.length !== rawLength) throw new RangeError("stored payload length mismatch");
    return body;
  }
  if (encoding !== PAYLOAD_ZSTD) throw new RangeError(`unknown payload encoding ${encoding}`);
  const out = p.zstdDecompress(body, rawLength);
  if (out.length !== rawLength) throw new RangeError("zstd payload length mismatch");
  return out;
}
