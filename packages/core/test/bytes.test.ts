import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { concatAll, fromHex, idsFromHex, sameIdAt, toHex } from "../src/bytes.ts";

describe("toHex and fromHex", () => {
  it("give node's own hex for every byte value and for lengths around the piece size", () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    assert.equal(toHex(all), Buffer.from(all).toString("hex"));
    for (const n of [0, 1, 31, 32, 33, 4095, 4096, 4097, 8192, 10_001]) {
      const bytes = new Uint8Array(randomBytes(n));
      const hex = toHex(bytes);
      assert.equal(hex, Buffer.from(bytes).toString("hex"), `length ${n}`);
      assert.deepEqual(fromHex(hex), bytes);
    }
  });

  it("converts a view by its own bytes, not its buffer's", () => {
    const buffer = Uint8Array.from({ length: 64 }, (_, i) => i);
    assert.equal(toHex(buffer.subarray(10, 13)), "0a0b0c");
  });

  it("parses uppercase and rejects odd lengths and non-hex characters", () => {
    assert.deepEqual(fromHex("0AfF"), Uint8Array.of(10, 255));
    assert.throws(() => fromHex("abc"), TypeError);
    assert.throws(() => fromHex("zz"), TypeError);
  });
});

describe("concatAll and idsFromHex", () => {
  it("join 300 000 parts, more than a spread of arguments can take", () => {
    const parts = Array.from({ length: 300_000 }, (_, i) => Uint8Array.of(i & 255, i >> 8));
    const joined = concatAll(parts);
    assert.equal(joined.length, 600_000);
    assert.deepEqual([...joined.subarray(2 * 299_999)], [299_999 & 255, (299_999 >> 8) & 255]);
  });

  it("give blob IDs' bytes back to back, and refuse what is not a lowercase 64-digit ID", () => {
    const ids = Array.from({ length: 5 }, () => randomBytes(32).toString("hex"));
    assert.equal(toHex(idsFromHex(ids)), ids.join(""));
    assert.equal(idsFromHex([]).length, 0);
    for (const bad of [ids[0].toUpperCase(), ids[0].slice(2), `${ids[0].slice(2)}zz`]) {
      assert.throws(() => idsFromHex([ids[1], bad]), RangeError);
    }
  });
});

describe("sameIdAt", () => {
  it("compares 32 bytes at two offsets, and is false where either array ends sooner", () => {
    const a = new Uint8Array(randomBytes(100));
    const b = new Uint8Array(40);
    b.set(a.subarray(10, 42), 8);
    assert.equal(sameIdAt(a, 10, b, 8), true);
    assert.equal(sameIdAt(b, 8, a, 10), true);
    assert.equal(sameIdAt(a, 10, a.subarray(10, 42)), true, "offset 0 by default");
    b[39] ^= 1;
    assert.equal(sameIdAt(a, 10, b, 8), false, "the last byte differs");
    assert.equal(sameIdAt(a, 70, a, 70), false, "a ends before 32 bytes");
    assert.equal(sameIdAt(a, 0, b, 9), false, "b ends before 32 bytes");
  });
});
