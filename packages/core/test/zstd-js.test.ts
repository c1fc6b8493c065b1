// The plain-JavaScript zstd decoder that webPrimitives uses (browsers), against Node's zstd:
// the same bytes out for what Node writes, and a RangeError, never a crash, a hang or an
// allocation beyond the limit, for what it should refuse.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { constants, zstdCompressSync } from "node:zlib";
import { zstdDecompressJs } from "../src/crypto/zstd-js.ts";
import { fakeSqlite, randomBytes, textBytes } from "./helpers.ts";

const compress = (d: Uint8Array, level = 3) =>
  new Uint8Array(zstdCompressSync(d, { params: { [constants.ZSTD_c_compressionLevel]: level } }));

/** A frame that does not declare its size (raw blocks): the decoder's other path. */
function compressUndeclared(d: Uint8Array): Uint8Array {
  // FHD 0x00 (no single segment, no size), a window descriptor for 128 KiB, then raw blocks of
  // at most 128 KiB, the last one marked.
  const out = new Uint8Array(6 + d.length + 3 * (Math.ceil(d.length / BLOCK) || 1));
  out.set([0x28, 0xb5, 0x2f, 0xfd, 0x00, (17 - 10) << 3]);
  let pos = 6;
  let off = 0;
  do {
    const block = d.subarray(off, off + BLOCK);
    off += block.length;
    const header = (block.length << 3) | (off >= d.length ? 1 : 0); // type 0: raw
    out.set([header & 0xff, (header >> 8) & 0xff, header >> 16], pos);
    out.set(block, pos + 3);
    pos += 3 + block.length;
  } while (off < d.length);
  return out;
}
const BLOCK = 128 * 1024;

const inputs: [string, Uint8Array][] = [
  ["empty", new Uint8Array(0)],
  ["3 bytes", Uint8Array.of(1, 2, 3)],
  ["random 70 kB", randomBytes(70_000, 1)],
  ["text 1 MB", textBytes(1_000_000, 2)],
  ["database pages", fakeSqlite(128, 3)],
  ["zeros 512 KiB", new Uint8Array(512 * 1024)],
];

describe("zstdDecompressJs (browsers' zstd)", () => {
  it("decodes what Node's zstd writes, at several levels", () => {
    for (const [name, d] of inputs) {
      for (const level of [1, 3, 19]) {
        const z = compress(d, level);
        assert.deepEqual(zstdDecompressJs(z, d.length), d, `${name} at level ${level}`);
      }
    }
  });

  it("decodes several frames, skippable frames, and frames that do not declare their size", () => {
    const a = textBytes(300_000, 4);
    const b = randomBytes(200_000, 5);
    const skippable = Uint8Array.of(0x5a, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 9, 9, 9);
    const joined = new Uint8Array([...compress(a), ...skippable, ...compress(b)]);
    assert.deepEqual(zstdDecompressJs(joined, a.length + b.length), new Uint8Array([...a, ...b]));
    for (const [name, d] of inputs) {
      assert.deepEqual(zstdDecompressJs(compressUndeclared(d), d.length), d, name);
    }
  });

  it("refuses output beyond the limit, declared or not", () => {
    const d = textBytes(300_000, 6);
    assert.throws(() => zstdDecompressJs(compress(d), d.length - 1), /declares 300000 bytes/);
    assert.throws(() => zstdDecompressJs(compressUndeclared(d), d.length - 1), /exceeds/);
    // A tiny frame of RLE blocks that would expand to 16 MiB, without declaring it.
    const bomb: number[] = [0x28, 0xb5, 0x2f, 0xfd, 0x00, (17 - 10) << 3];
    for (let i = 0; i < 128; i++) {
      const header = ((128 * 1024) << 3) | (1 << 1) | (i === 127 ? 1 : 0);
      bomb.push(header & 0xff, (header >> 8) & 0xff, (header >> 16) & 0xff, 0x41);
    }
    assert.throws(() => zstdDecompressJs(Uint8Array.from(bomb), 1024 * 1024), /exceeds/);
  });

  it("refuses a window larger than 128 MiB before allocating it", () => {
    // No single segment, no size, window descriptor 2^31.
    const big = Uint8Array.of(0x28, 0xb5, 0x2f, 0xfd, 0x00, (31 - 10) << 3, 1, 0, 0);
    assert.throws(() => zstdDecompressJs(big, 1 << 20), /window/);
  });

  it("gives a RangeError for damaged data, never another error or a hang", () => {
    const d = textBytes(200_000, 7);
    const z = compress(d);
    assert.throws(() => zstdDecompressJs(new Uint8Array(0), 10), RangeError);
    assert.throws(() => zstdDecompressJs(Uint8Array.of(1, 2, 3, 4, 5, 6), 10), /not a zstd frame/);
    for (const cut of [1, 4, 5, 6, 12, z.length >> 1, z.length - 1]) {
      assert.throws(() => zstdDecompressJs(z.subarray(0, cut), d.length), RangeError, `cut ${cut}`);
    }
    // Flipped bytes: either a RangeError or some output (the engine then checks lengths and
    // keyed IDs); anything else (a TypeError, a hang) fails here.
    let seed = 1;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed;
    };
    for (let i = 0; i < 300; i++) {
      const bad = z.slice();
      for (let k = 0; k < 1 + (i % 4); k++) bad[rand() % bad.length] ^= 1 + (rand() % 255);
      try {
        zstdDecompressJs(bad, d.length);
      } catch (err) {
        assert.ok(err instanceof RangeError, `mutation ${i}: ${err}`);
      }
    }
  });
});
