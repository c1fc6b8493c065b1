import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CDC_AVG, CDC_MAX, CDC_MIN, cdcCut, cdcCutJs } from "../src/chunker/fastcdc.ts";
import { createGearScanner } from "../src/chunker/gear-scan.ts";
import { deriveKeys } from "../src/crypto/keys.ts";
import { p, Rng, randomBytes } from "./helpers.ts";

const KEY = Uint8Array.from({ length: 32 }, (_, i) => i * 3 + 11);

describe("FastCDC: the WebAssembly scanner against the JavaScript reference", () => {
  it("is available here, so the comparisons below test it", async () => {
    const { gear } = await deriveKeys(p, KEY);
    assert.ok(createGearScanner(gear), "WebAssembly scanner");
  });

  it("cuts a long random input at the same places", async () => {
    const { gear } = await deriveKeys(p, KEY);
    const data = randomBytes(40 * 1024 * 1024 + 12_345, 21);
    let cuts = 0;
    for (let s = 0; s < data.length; cuts++) {
      const n = cdcCut(gear, data, s, data.length, true);
      assert.equal(n, cdcCutJs(gear, data, s, data.length, true), `chunk at ${s}`);
      assert.ok(n > 0 && n <= CDC_MAX);
      s += n;
    }
    assert.ok(cuts > 20, `${cuts} chunks`);
  });

  it("finds a cut on the window's last byte, at every alignment, and asks for more just before it", async () => {
    const { gear } = await deriveKeys(p, KEY);
    const data = randomBytes(24 * 1024 * 1024, 22);
    const rng = new Rng(23);
    let checked = 0;
    const alignments = new Set<number>();
    for (let trial = 0; trial < 40; trial++) {
      const s = rng.int(data.length - CDC_MAX);
      const c = cdcCutJs(gear, data, s, s + CDC_MAX, false);
      alignments.add((c - CDC_MIN) % 8); // the scanner hashes 8 bytes per loop iteration
      // Windows ending at the cut, one byte before it, and a few past it; final and not.
      for (const end of [s + c, s + c - 1, s + c + 1, s + c + 7, s + c + 8, s + c + 9]) {
        for (const final of [false, true]) {
          assert.equal(
            cdcCut(gear, data, s, end, final),
            cdcCutJs(gear, data, s, end, final),
            `start ${s}, end ${end}, final ${final}`,
          );
          checked++;
        }
      }
    }
    assert.equal(checked, 480);
    assert.equal(alignments.size, 8, "cuts at every position of the unrolled loop");
  });

  it("agrees on short windows: at most CDC_MIN, around CDC_AVG and CDC_MAX", async () => {
    const { gear } = await deriveKeys(p, KEY);
    const data = randomBytes(CDC_MAX + 64, 24);
    for (const n of [
      0,
      1,
      CDC_MIN - 1,
      CDC_MIN,
      CDC_MIN + 1,
      CDC_MIN + 9,
      CDC_AVG - 1,
      CDC_AVG,
      CDC_AVG + 3,
      CDC_MAX - 5,
      CDC_MAX,
      CDC_MAX + 64,
    ]) {
      for (const final of [false, true]) {
        for (const s of [0, 3]) {
          const end = Math.min(data.length, s + n);
          assert.equal(
            cdcCut(gear, data, s, end, final),
            cdcCutJs(gear, data, s, end, final),
            `n ${n}, start ${s}, final ${final}`,
          );
        }
      }
    }
  });

  it("agrees on random windows of views into larger buffers, shared ones too, with other gear tables", () => {
    const rng = new Rng(25);
    const bytes = randomBytes(6 * 1024 * 1024, 26);
    let checked = 0;
    for (let g = 0; g < 4; g++) {
      const gear = Uint32Array.from({ length: 256 }, () => rng.u32());
      for (const shared of [false, true]) {
        // A view that does not start at its buffer's first byte, in a plain or a shared buffer.
        const offset = 1 + rng.int(4096);
        const backing = shared
          ? new Uint8Array(new SharedArrayBuffer(bytes.length + offset))
          : new Uint8Array(bytes.length + offset);
        backing.set(bytes, offset);
        const view = backing.subarray(offset);
        for (let k = 0; k < 40; k++) {
          const start = rng.int(view.length - CDC_MIN);
          const end = start + rng.int(Math.min(CDC_MAX + 4096, view.length - start) + 1);
          const final = rng.int(2) === 1;
          assert.equal(
            cdcCut(gear, view, start, end, final),
            cdcCutJs(gear, view, start, end, final),
            `gear ${g}, shared ${shared}, start ${start}, end ${end}, final ${final}`,
          );
          checked++;
        }
      }
    }
    assert.equal(checked, 320);
  });

  it("agrees where the fingerprint never reaches zero (a maximum-size cut) and on all-zero input", () => {
    // Every gear entry has its top bit set, so no cut is ever found before CDC_MAX.
    const high = Uint32Array.from({ length: 256 }, (_, i) => 0x80000000 | (i * 0x01010101));
    const zeros = new Uint8Array(CDC_MAX + 100);
    assert.equal(cdcCut(high, zeros, 0, zeros.length, false), CDC_MAX);
    assert.equal(cdcCutJs(high, zeros, 0, zeros.length, false), CDC_MAX);
    assert.equal(cdcCut(high, zeros, 0, CDC_MAX - 1, false), 0);
    assert.equal(cdcCut(high, zeros, 0, CDC_MAX - 1, true), CDC_MAX - 1);
    // A zero gear entry for byte 0 makes the first byte looked at a cut.
    const low = Uint32Array.from({ length: 256 }, (_, i) => (i === 0 ? 0 : 0xffffffff));
    assert.equal(cdcCut(low, zeros, 0, zeros.length, true), CDC_MIN + 1);
    assert.equal(cdcCutJs(low, zeros, 0, zeros.length, true), CDC_MIN + 1);
  });
});
