// What a day did to a SQLite database, page by page, and what its changed pages cost compressed.
//
//   node bench/day-pages.ts OLD.db NEW.db
//
// Sorts the pages of NEW that differ from OLD's page at the same place into: new at the end of
// the file, changed little (at most a quarter of the 4-byte words differ: what Locket stores as an
// XOR delta, SPEC §6) and changed too much (stored whole). Each kind is compressed alone in
// segments of 128 pages at zstd level 3, as Locket's 512 KiB segments; the pages changed too
// much also with their old page (or the old pages around them) as a zstd dictionary, to show
// how much of them is new content. Nothing is stored; the benchmark data set is made by
// `npm run bench` (days under its data folder: chat/, day1/, day2/).
import { readFileSync } from "node:fs";
import { constants, zstdCompressSync } from "node:zlib";

const [oldPath, newPath] = process.argv.slice(2);
if (!oldPath || !newPath) {
  console.error("usage: node bench/day-pages.ts OLD.db NEW.db");
  process.exit(2);
}
const before = readFileSync(oldPath);
const after = readFileSync(newPath);
const pageSize = after.readUInt16BE(16) === 1 ? 65536 : after.readUInt16BE(16);
const SEGMENT_PAGES = Math.max(1, (512 * 1024) / pageSize);
const level = { params: { [constants.ZSTD_c_compressionLevel]: 3 } };
const zstd = (data: Buffer, dictionary?: Buffer) =>
  // Node 24's zstd takes a dictionary; its type declarations do not say so yet.
  zstdCompressSync(data, (dictionary ? { ...level, dictionary } : level) as object).length;

const oldPages = Math.floor(before.length / pageSize);
const pages = Math.floor(after.length / pageSize);
const page = (b: Buffer, i: number) => b.subarray(i * pageSize, (i + 1) * pageSize);
const fresh: Buffer[] = [];
const deltas: Buffer[] = [];
const whole: { at: number; page: Buffer; old: Buffer }[] = [];
for (let i = 0; i < pages; i++) {
  const now = page(after, i);
  if (i >= oldPages) {
    fresh.push(now);
    continue;
  }
  const old = page(before, i);
  if (now.equals(old)) continue;
  const xor = Buffer.alloc(pageSize);
  let words = 0;
  for (let w = 0; w < pageSize; w += 4) {
    if (now.readUInt32LE(w) !== old.readUInt32LE(w)) words++;
    xor.writeUInt32LE((now.readUInt32LE(w) ^ old.readUInt32LE(w)) >>> 0, w);
  }
  if (words <= pageSize / 16) deltas.push(xor);
  else whole.push({ at: i, page: now, old });
}

/** Bytes of `bufs` compressed in segments, each with its own dictionary if `dict` gives one. */
function segments(bufs: Buffer[], dict?: (from: number, to: number) => Buffer): number {
  let out = 0;
  for (let i = 0; i < bufs.length; i += SEGMENT_PAGES) {
    const to = Math.min(bufs.length, i + SEGMENT_PAGES);
    out += zstd(Buffer.concat(bufs.slice(i, to)), dict?.(i, to));
  }
  return out;
}
const mb = (n: number) => `${(n / 1e6).toFixed(2)} MB`;
const perPage = (dict: (w: (typeof whole)[number]) => Buffer) =>
  whole.reduce((n, w) => n + zstd(w.page, dict(w)), 0);
const around = (r: number) => (w: (typeof whole)[number]) =>
  before.subarray(Math.max(0, w.at - r) * pageSize, Math.min(oldPages, w.at + r + 1) * pageSize);

console.log(`page size ${pageSize}; pages ${oldPages} -> ${pages}`);
console.log(`new at the end:          ${fresh.length} pages, ${mb(segments(fresh))}`);
console.log(`changed, as XOR deltas:  ${deltas.length} pages, ${mb(segments(deltas))}`);
const pagesOf = whole.map((w) => w.page);
console.log(`changed too much, whole: ${whole.length} pages, ${mb(segments(pagesOf))}`);
console.log(`  with the old page as dictionary, per page:      ${mb(perPage((w) => w.old))}`);
const oldOf = (from: number, to: number) => Buffer.concat(whole.slice(from, to).map((w) => w.old));
console.log(`  a segment with its old pages as one dictionary: ${mb(segments(pagesOf, oldOf))}`);
for (const r of [1, 4, 16]) {
  console.log(`  with the ${2 * r + 1} old pages around it, per page:   ${mb(perPage(around(r)))}`);
}
