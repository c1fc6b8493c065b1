import { Decompress, decompress } from "fzstd";

/** The largest window a frame may ask for: zstd's own default limit for decoders (2^27). */
const MAX_WINDOW = 1 << 27;
const FRAME_MAGIC = 0xfd2fb528;
/** Skippable frames: magic 0x184D2A50..0x184D2A5F, then a 4-byte length. */
const SKIPPABLE_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;
const MAX_BLOCK = 128 * 1024;

/**
 * Decompresses zstd data (one or more RFC 8878 frames) in plain JavaScript, for platforms
 * without a native zstd (browsers), with fzstd. The output is at most `maxOutput` bytes, and a
 * frame never makes it allocate more than that plus one window of at most 128 MiB: the frame
 * headers are read first, and frames that do not declare their size are decoded as a stream
 * that stops at the limit.
 * @throws {RangeError} when the data is not zstd, is cut short, asks for a larger window, or
 *   decodes to more than `maxOutput` bytes.
 */
export function zstdDecompressJs(data: Uint8Array, maxOutput: number): Uint8Array {
  const declared = declaredSize(data);
  if (declared !== null && declared > maxOutput) {
    throw new RangeError(`zstd data declares ${declared} bytes, limit ${maxOutput}`);
  }
  try {
    if (declared !== null) return decompress(data);
    const out = new Uint8Array(maxOutput);
    let n = 0;
    const stream = new Decompress((chunk) => {
      if (n + chunk.length > maxOutput)
        throw new RangeError(`zstd data exceeds ${maxOutput} bytes`);
      out.set(chunk, n);
      n += chunk.length;
    });
    stream.push(data, true);
    return out.subarray(0, n);
  } catch (err) {
    if (err instanceof RangeError) throw err;
    throw new RangeError(`zstd data does not decode: ${(err as Error).message}`);
  }
}

/**
 * Walks the frames' headers and block headers: the total size they declare, or null when a
 * frame does not declare its size.
 * @throws {RangeError} when the framing is damaged or a window exceeds MAX_WINDOW.
 */
function declaredSize(data: Uint8Array): number | null {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const need = (pos: number, n: number) => {
    if (pos + n > data.length) throw new RangeError("zstd data is cut short");
  };
  let pos = 0;
  let total: number | null = 0;
  if (data.length === 0) throw new RangeError("zstd data is empty");
  while (pos < data.length) {
    need(pos, 4);
    const magic = view.getUint32(pos, true);
    if ((magic & SKIPPABLE_MASK) >>> 0 === SKIPPABLE_MAGIC) {
      need(pos, 8);
      pos += 8 + view.getUint32(pos + 4, true);
      need(0, pos);
      continue;
    }
    if (magic !== FRAME_MAGIC) throw new RangeError("not a zstd frame");
    need(pos, 5);
    const fhd = data[pos + 4];
    if (fhd & 0x08) throw new RangeError("zstd frame header has its reserved bit set");
    const singleSegment = (fhd >> 5) & 1;
    const checksum = (fhd >> 2) & 1;
    const dictBytes = [0, 1, 2, 4][fhd & 3];
    const fcsFlag = fhd >> 6;
    const fcsBytes = fcsFlag === 0 ? singleSegment : 1 << fcsFlag;
    pos += 5;
    let window = 0;
    if (!singleSegment) {
      need(pos, 1);
      const wd = data[pos++];
      const base = 2 ** (10 + (wd >> 3));
      window = base + (base / 8) * (wd & 7);
    }
    need(pos, dictBytes + fcsBytes);
    pos += dictBytes;
    let size = 0;
    for (let i = fcsBytes - 1; i >= 0; i--) size = size * 256 + data[pos + i];
    if (fcsBytes === 2) size += 256;
    pos += fcsBytes;
    if (singleSegment) window = size;
    if (window > MAX_WINDOW) throw new RangeError(`zstd frame asks for a ${window}-byte window`);
    if (fcsBytes === 0) total = null;
    else if (total !== null) total += size;
    for (let last = 0; !last; ) {
      need(pos, 3);
      const header = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16);
      last = header & 1;
      const type = (header >> 1) & 3;
      const blockSize = header >>> 3;
      if (type === 3) throw new RangeError("zstd block of the reserved type");
      if (blockSize > MAX_BLOCK) throw new RangeError("zstd block larger than 128 KiB");
      pos += 3 + (type === 1 ? 1 : blockSize);
      need(0, pos);
    }
    pos += checksum * 4;
    need(0, pos);
  }
  return total;
}
