/**
 * FastCDC content-defined chunking (Xia et al., USENIX ATC 2016) with normalized chunking level 2,
 * over a gear table derived from the repository key so that chunk boundaries, and so the sizes an
 * observer of storage could see, do not fingerprint known files.
 */

import { createGearScanner, type GearScanner } from "./gear-scan.ts";

/** Chunk size bounds for general files (SPEC.md "Chunking"). */
export const CDC_MIN = 256 * 1024;
export const CDC_AVG = 1024 * 1024;
export const CDC_MAX = 4 * 1024 * 1024;

// Top-bit masks: 22 bits before the average size, 18 after (normalization level 2 around 2^20).
const MASK_S = 0xfffffc00 | 0;
const MASK_L = 0xffffc000 | 0;

/** One WebAssembly scanner per gear table (per repository key), or null without WebAssembly. */
const scanners = new WeakMap<Uint32Array, GearScanner | null>();

/**
 * Length of the next chunk at the start of `buf[start, end)`. When `final` is false and no
 * boundary is found before `end`, returns 0 to ask for more data (unless `CDC_MAX` bytes are
 * available, which always yields a cut). Scans with WebAssembly where it can (gear-scan.ts), with
 * `cdcCutJs` otherwise: the same boundaries.
 */
export function cdcCut(
  gear: Uint32Array,
  buf: Uint8Array,
  start: number,
  end: number,
  final: boolean,
): number {
  let scanner = scanners.get(gear);
  if (scanner === undefined) {
    scanner = createGearScanner(gear);
    scanners.set(gear, scanner);
  }
  if (!scanner) return cdcCutJs(gear, buf, start, end, final);
  const n = end - start;
  if (n <= CDC_MIN) return final ? n : 0;
  const limit = Math.min(n, CDC_MAX);
  const normal = Math.min(limit, CDC_AVG);
  let at = scanner.scan(buf, start + CDC_MIN, start + normal, 0, MASK_S);
  if (at >= 0) return at - start;
  at = scanner.scan(buf, start + normal, start + limit, scanner.fp, MASK_L);
  if (at >= 0) return at - start;
  if (limit === CDC_MAX || final) return limit;
  return 0;
}

/** `cdcCut` in plain JavaScript: the reference the WebAssembly scanner is tested against. */
export function cdcCutJs(
  gear: Uint32Array,
  buf: Uint8Array,
  start: number,
  end: number,
  final: boolean,
): number {
  const n = end - start;
  if (n <= CDC_MIN) return final ? n : 0;
  const limit = Math.min(n, CDC_MAX);
  const normal = Math.min(limit, CDC_AVG);
  let fp = 0;
  let i = CDC_MIN;
  for (; i < normal; i++) {
    fp = ((fp << 1) + gear[buf[start + i]]) | 0;
    if ((fp & MASK_S) === 0) return i + 1;
  }
  for (; i < limit; i++) {
    fp = ((fp << 1) + gear[buf[start + i]]) | 0;
    if ((fp & MASK_L) === 0) return i + 1;
  }
  if (limit === CDC_MAX || final) return limit;
  return 0;
}
