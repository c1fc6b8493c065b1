import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { toHex } from "../src/bytes.ts";
import { IdRefSet, IdSet } from "../src/id-set.ts";

describe("IdSet", () => {
  it("agrees with a Set of hex strings on 60 000 random IDs, through several growths", () => {
    const set = new IdSet(4);
    const reference = new Set<string>();
    const order: string[] = [];
    for (let i = 0; i < 60_000; i++) {
      const id = new Uint8Array(randomBytes(32));
      const hex = toHex(id);
      assert.equal(i % 2 ? set.add(id) : set.addHex(hex), true, "new");
      assert.equal(set.add(id), false, "already there");
      reference.add(hex);
      order.push(hex);
    }
    assert.equal(set.size, reference.size);
    for (const hex of order.slice(0, 5000)) {
      assert.equal(set.hasHex(hex), true);
      assert.equal(set.has(Buffer.from(hex, "hex")), true);
    }
    for (let i = 0; i < 5000; i++) {
      assert.equal(set.has(randomBytes(32)), false);
      assert.equal(set.hasHex(randomBytes(32).toString("hex")), false);
    }
    const seen: string[] = [];
    set.forEach((id) => {
      seen.push(toHex(id));
    });
    assert.deepEqual(seen, order, "forEach in the order added");
    assert.equal(
      set.findHex((id) => id[0] === Buffer.from(order[777], "hex")[0]),
      order.find((h) => h.slice(0, 2) === order[777].slice(0, 2)),
    );
    assert.equal(
      set.findHex(() => false),
      undefined,
    );
  });

  it("finds IDs whose first four bytes collide", () => {
    const set = new IdSet();
    const ids = Array.from({ length: 50 }, (_, i) => {
      const id = new Uint8Array(32);
      id[31] = i;
      return id;
    });
    for (const id of ids) set.add(id);
    for (const id of ids) assert.equal(set.has(id), true);
    const other = new Uint8Array(32);
    other[31] = 200;
    assert.equal(set.has(other), false);
  });

  it("answers no for malformed hex and refuses IDs of the wrong length", () => {
    const set = new IdSet();
    const hex = randomBytes(32).toString("hex");
    set.addHex(hex);
    for (const bad of [hex.toUpperCase(), hex.slice(1), `${hex}0`, `${hex.slice(1)}g`, ""]) {
      assert.equal(set.hasHex(bad), false, bad);
      assert.throws(() => set.addHex(bad), RangeError);
    }
    assert.equal(set.has(new Uint8Array(31)), false);
    assert.throws(() => set.add(new Uint8Array(33)), RangeError);
    assert.equal(set.size, 1);
  });

  it("adds and finds IDs where they lie in a larger buffer, and nothing past its ends", () => {
    const bytes = new Uint8Array(randomBytes(32 * 100 + 5));
    const set = new IdSet(4);
    // At offsets that are not multiples of 32, through growths.
    for (let k = 0; k < 100; k++) assert.equal(set.addAt(bytes, 32 * k + 5 - (k % 6)), true);
    assert.equal(set.addAt(bytes, 5), false, "already there");
    assert.equal(set.size, 100);
    for (let k = 0; k < 100; k++) {
      const at = 32 * k + 5 - (k % 6);
      const id = bytes.slice(at, at + 32);
      assert.equal(set.indexOf(id), k, "the copy kept the bytes");
      assert.equal(set.indexOfAt(bytes, at), k);
    }
    assert.equal(set.indexOfAt(bytes, 6), -1);
    for (const at of [-1, bytes.length - 31, bytes.length]) {
      assert.equal(set.indexOfAt(bytes, at), -1, `at ${at}`);
      assert.throws(() => set.addAt(bytes, at), RangeError);
    }
    bytes.fill(0);
    assert.equal(set.indexOf(new Uint8Array(32)), -1, "IDs are copied, not held");
  });
});

describe("IdRefSet", () => {
  /** An ID whose first 30 bits are `key`'s and whose other bits come from `rest`. */
  const sharing = (key: Uint8Array, rest: Uint8Array): Uint8Array => {
    const id = new Uint8Array(rest);
    id.set(key.subarray(0, 3));
    id[3] = (key[3] & 0x3f) | (rest[3] & 0xc0);
    return id;
  };

  it("agrees with a Set of hex strings through adds and deletes of random IDs", () => {
    const set = new IdRefSet();
    const reference = new Set<string>();
    const ids: Uint8Array[] = [];
    for (let i = 0; i < 20_000; i++) {
      const id = new Uint8Array(randomBytes(32));
      set.add(id);
      reference.add(toHex(id));
      ids.push(id);
      if (i % 3 === 0) {
        const gone = ids[Math.floor(i / 2)];
        set.delete(gone);
        reference.delete(toHex(gone));
      }
    }
    assert.equal(set.size, reference.size);
    for (const id of ids) assert.equal(set.has(id), reference.has(toHex(id)));
    for (let i = 0; i < 2000; i++) assert.equal(set.has(randomBytes(32)), false);
  });

  it("tells apart IDs whose first 30 bits are equal, in adds, lookups and deletes", () => {
    const set = new IdRefSet();
    const first = new Uint8Array(randomBytes(32));
    // Same key: one differs only in byte 3's two high bits (not part of the key), two further on.
    const highBits = new Uint8Array(first);
    highBits[3] ^= 0xc0;
    const later = sharing(first, new Uint8Array(randomBytes(32)));
    const third = sharing(first, new Uint8Array(randomBytes(32)));
    const absent = sharing(first, new Uint8Array(randomBytes(32)));
    for (const id of [first, highBits, later, third]) set.add(id);
    assert.equal(set.size, 4);
    assert.equal(set.has(absent), false, "same key, never added");
    set.delete(absent);
    assert.equal(set.size, 4, "deleting an ID not held changes nothing");
    set.delete(highBits);
    assert.deepEqual(
      [first, highBits, later, third].map((id) => set.has(id)),
      [true, false, true, true],
    );
    set.delete(first);
    set.delete(third);
    assert.deepEqual(
      [first, highBits, later, third].map((id) => set.has(id)),
      [false, false, true, false],
    );
    assert.equal(set.has(new Uint8Array(later)), true, "found by value, not by reference");
    set.delete(later);
    assert.equal(set.size, 0);
    assert.equal(set.has(later), false);
  });

  it("finds IDs where they lie in a larger buffer (hasAt), and nothing past its ends", () => {
    const set = new IdRefSet();
    const held = new Uint8Array(randomBytes(32));
    const twin = sharing(held, new Uint8Array(randomBytes(32)));
    set.add(held);
    set.add(twin);
    const bytes = new Uint8Array(100);
    bytes.set(held, 7);
    bytes.set(twin, 50);
    assert.equal(set.hasAt(bytes, 7), true);
    assert.equal(set.hasAt(bytes, 50), true);
    assert.equal(set.hasAt(bytes, 8), false);
    bytes.set(held.subarray(0, 31), 69); // runs past the end
    assert.equal(set.hasAt(bytes, 69), false);
    assert.equal(set.hasAt(bytes, -1), false);
    assert.equal(set.has(Uint8Array.of(...held, 0)), false, "33 bytes are not an ID");
  });

  it("keeps the one ID under a key when asked to delete another ID with that key", () => {
    const set = new IdRefSet();
    const held = new Uint8Array(randomBytes(32));
    const other = sharing(held, new Uint8Array(randomBytes(32)));
    set.add(held);
    set.delete(other);
    assert.equal(set.has(held), true);
    assert.equal(set.size, 1);
  });
});
