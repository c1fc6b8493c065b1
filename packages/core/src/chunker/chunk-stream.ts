import { CDC_MAX, cdcCut } from "./fastcdc.ts";
import { SQLITE_HEADER_BYTES, sqlitePageSize } from "./sqlite.ts";

const INITIAL_BUFFER = 64 * 1024;
// Buffers of finished streams, reused by the next ones (one per concurrent stream is enough).
const spare: Uint8Array[] = [];
const MAX_SPARE = 4;

/** How a file was chunked; recorded nowhere, derived from the content each time. */
export type ChunkingMode = { kind: "cdc" } | { kind: "pages"; pageSize: number };

/**
 * Splits a byte stream into chunks: one per page for a SQLite database (detected from its
 * header), FastCDC otherwise. Each chunk is a view that is valid only until the next one is
 * requested (copy it to keep it): not copying saved a quarter of a backup's time in GC. Memory is bounded by
 * about twice the largest chunk plus one input block.
 */
export async function* chunkStream(
  source: AsyncIterable<Uint8Array>,
  gear: Uint32Array,
  onMode?: (mode: ChunkingMode) => void,
  /**
   * The mode, when the caller knows it: a stripe of a SQLite database read from a page boundary
   * (its header, which names the page size, is elsewhere in the file).
   */
  fixed?: ChunkingMode,
): AsyncGenerator<Uint8Array> {
  // A buffer from the pool, grown by doubling when needed and returned at the end: allocating one
  // per file (and regrowing it) made allocation and GC dominate backups of many media files.
  let buf = spare.pop() ?? new Uint8Array(INITIAL_BUFFER);
  let start = 0;
  let end = 0;
  let mode: ChunkingMode | null = fixed ?? null;

  const cut = (final: boolean): number => {
    if (mode!.kind === "pages") {
      const n = end - start;
      if (n >= mode!.pageSize) return mode!.pageSize;
      return final ? n : 0;
    }
    // Cut only once a whole maximum-size window is buffered (or at the end): scanning a partial
    // window and rescanning it after every input block would be quadratic.
    if (!final && end - start < CDC_MAX) return 0;
    return cdcCut(gear, buf, start, end, final);
  };
  const decideMode = (final: boolean) => {
    if (mode || (!final && end - start < SQLITE_HEADER_BYTES)) return;
    const pageSize = sqlitePageSize(buf.subarray(start, end));
    mode = pageSize ? { kind: "pages", pageSize } : { kind: "cdc" };
    onMode?.(mode);
  };

  try {
    for await (const block of source) {
      let off = 0;
      while (off < block.length) {
        if (end === buf.length) {
          // Compact, or grow when the caller's blocks are larger than our buffer.
          if (start > 0) {
            buf.copyWithin(0, start, end);
            end -= start;
            start = 0;
          } else {
            const bigger = new Uint8Array(buf.length * 2);
            bigger.set(buf);
            buf = bigger;
          }
        }
        const take = Math.min(block.length - off, buf.length - end);
        buf.set(block.subarray(off, off + take), end);
        end += take;
        off += take;
        decideMode(false);
        if (!mode) continue;
        for (;;) {
          const n = cut(false);
          if (n === 0) break;
          yield buf.subarray(start, start + n);
          start += n;
        }
      }
    }
    decideMode(true);
    while (end > start) {
      const n = cut(true);
      yield buf.subarray(start, start + n);
      start += n;
    }
  } finally {
    if (spare.length < MAX_SPARE) spare.push(buf);
  }
}
