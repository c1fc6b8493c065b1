import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { BlobIndex, type BlobLocation } from "../src/blob-index.ts";
import { ByteWriter, toHex } from "../src/bytes.ts";
import { PACK_ENTRY_BYTES, writeEntries } from "../src/format/pack.ts";

function loc(i: number): BlobLocation {
  return {
    pack: `pack-${i % 7}`,
    type: (i % 3) as 0 | 1 | 2,
    segmentOffset: i * 3,
    segmentLength: 28 + (i % 1000),
    offset: i % 4096,
    length: (i * 7) % 65536,
  };
}

describe("BlobIndex", () => {
  it("agrees with a Map on 50 000 random IDs, through several growths", () => {
    const index = new BlobIndex(4);
    const reference = new Map<string, BlobLocation>();
    for (let i = 0; i < 50_000; i++) {
      const id = new Uint8Array(randomBytes(32));
      index.add(id, loc(i));
      reference.set(toHex(id), loc(i));
    }
    assert.equal(index.size, reference.size);
    for (const [hex, expected] of reference) {
      assert.equal(index.has(hex), true);
      assert.deepEqual(index.get(hex), expected);
    }
    for (let i = 0; i < 1000; i++) assert.equal(index.has(randomBytes(32).toString("hex")), false);
    for (const hex of [...reference.keys()].slice(0, 1000)) {
      assert.equal(index.hasId(Buffer.from(hex, "hex")), true);
    }
    for (let i = 0; i < 1000; i++) assert.equal(index.hasId(randomBytes(32)), false);
    for (const [hex, expected] of [...reference].slice(0, 1000)) {
      const id = Buffer.from(hex, "hex");
      assert.deepEqual(index.getId(id), expected);
      assert.equal(index.lengthOfId(id, expected.type), expected.length);
      assert.equal(index.lengthOfId(id, ((expected.type + 1) % 3) as 0 | 1 | 2), -1, "other type");
    }
    assert.equal(index.lengthOfId(randomBytes(32), 0), -1);
    assert.equal(index.getId(randomBytes(32)), undefined);
    assert.equal(index.hasId(Buffer.from([...reference.keys()][0], "hex").subarray(0, 31)), false);
  });

  it("adds whole packs, reserved or not, as add does blob by blob", () => {
    const one = new BlobIndex(4);
    const bulk = new BlobIndex(4);
    const packs = Array.from({ length: 30 }, (_, k) =>
      Array.from({ length: 700 }, (_, i) => {
        const { pack: _pack, ...rest } = loc(k * 700 + i);
        return { id: new Uint8Array(randomBytes(32)), ...rest };
      }),
    );
    packs[7][3].id = packs[2][5].id; // a duplicate across packs: the first location wins
    bulk.reserve(10_000); // less than all: addPack grows past it
    packs.forEach((entries, k) => {
      for (const e of entries) one.add(e.id, { pack: `p${k}`, ...e });
      bulk.addPack(`p${k}`, entries);
    });
    assert.equal(bulk.size, 30 * 700 - 1);
    assert.equal(bulk.size, one.size);
    for (const entries of packs) {
      for (const e of entries) assert.deepEqual(bulk.get(toHex(e.id)), one.get(toHex(e.id)));
    }
    assert.equal(bulk.get(toHex(packs[7][3].id))?.pack, "p2");
  });

  it("adds packs from their index-file encoding as addPack does from objects", () => {
    const objects = new BlobIndex(4);
    const encoded = new BlobIndex(4);
    for (let k = 0; k < 5; k++) {
      const entries = Array.from({ length: 900 }, (_, i) => {
        const { pack: _pack, ...rest } = loc(k * 900 + i + 1);
        return { id: new Uint8Array(randomBytes(32)), ...rest, segmentOffset: 2 ** 32 - 1 - i };
      });
      const w = new ByteWriter(entries.length * PACK_ENTRY_BYTES);
      writeEntries(w, entries);
      objects.addPack(`p${k}`, entries);
      encoded.addEncodedPack(`p${k}`, w.finish());
      for (const e of entries) assert.deepEqual(encoded.get(toHex(e.id)), objects.get(toHex(e.id)));
    }
    assert.equal(encoded.size, 5 * 900);
  });

  it("keeps the first location of a duplicate ID", () => {
    const index = new BlobIndex();
    const id = new Uint8Array(32).fill(9);
    index.add(id, loc(1));
    index.add(id, loc(2));
    assert.equal(index.size, 1);
    assert.deepEqual(index.get(toHex(id)), loc(1));
  });

  it("finds IDs whose first four bytes collide", () => {
    const index = new BlobIndex(8);
    const ids = Array.from({ length: 100 }, (_, i) => {
      const id = new Uint8Array(32);
      id[31] = i; // same hash prefix for all
      return id;
    });
    for (const [i, id] of ids.entries()) index.add(id, loc(i));
    for (const [i, id] of ids.entries()) assert.deepEqual(index.get(toHex(id)), loc(i));
  });

  it("answers no for malformed IDs and refuses IDs of the wrong length", () => {
    const index = new BlobIndex();
    index.add(new Uint8Array(32), loc(0));
    for (const bad of [
      "",
      "00",
      "0".repeat(63),
      "0".repeat(65),
      "G".repeat(64),
      "0".repeat(62) + "ZZ",
    ]) {
      assert.equal(index.has(bad), false, bad);
      assert.equal(index.get(bad), undefined);
    }
    assert.equal(index.has("0".repeat(64)), true);
    assert.throws(() => index.add(new Uint8Array(31), loc(0)), RangeError);
  });
});
