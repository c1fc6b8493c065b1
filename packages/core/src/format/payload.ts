import { ByteReader, ByteWriter } from "../bytes.ts";
import type { Primitives } from "../crypto/primitives.ts";

/** Payload encodings (SPEC.md "Payloads"). */
export const PAYLOAD_STORED = 0;
export const PAYLOAD_ZSTD = 1;
/** Bytes of the payload header: encoding (u8) and raw length (u32 LE). */
export const PAYLOAD_HEADER_BYTES = 5;

/**
 * Encodes `raw` as `encoding || rawLength || body`, zstd-compressed when `compress` is set and
 * compression saves at least 1/32 of the size (media rarely does, and decompressing costs time).
 */
export function encodePayload(p: Primitives, raw: Uint8Array, compress: boolean): Uint8Array {
  let body = raw;
  let encoding = PAYLOAD_STORED;
  if (compress) {
    const z = p.zstdCompress(raw);
    if (z && z.length < raw.length - (raw.length >> 5)) {
      body = z;
      encoding = PAYLOAD_ZSTD;
    }
  }
  const w = new ByteWriter(PAYLOAD_HEADER_BYTES + body.length);
  w.u8(encoding);
  w.u32(raw.length);
  w.bytes(body);
  return w.finish();
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
