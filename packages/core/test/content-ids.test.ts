import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ContentIds } from "../src/engine/content-ids.ts";
import { randomBytes } from "./helpers.ts";

describe("ContentIds", () => {
  it("keeps IDs in order, flags delta entries, and grows past its first buffer", () => {
    const all = randomBytes(32 * 3000, 31);
    const ids = new ContentIds();
    for (let i = 0; i < 3000; i++) ids.push(all.subarray(32 * i, 32 * i + 32), i % 7 === 3);
    assert.equal(ids.length, 3000);
    assert.deepEqual(ids.bytes, all);
    for (const i of [0, 63, 64, 1023, 1024, 2047, 2999]) {
      assert.deepEqual(ids.at(i), all.subarray(32 * i, 32 * i + 32));
      assert.equal(ids.isDelta(i), i % 7 === 3, `entry ${i}`);
    }
    // What is pushed is copied: changing the source later changes nothing.
    all.fill(0);
    assert.notDeepEqual(ids.at(5), new Uint8Array(32));
  });

  it("pushFrom appends the ID at an offset, as push of a view there does", () => {
    const all = randomBytes(32 * 200 + 5, 32);
    const a = new ContentIds();
    const b = new ContentIds();
    for (let i = 0; i < 200; i++) {
      const at = 5 + 32 * i;
      if (i % 3 === 0) a.push(all.subarray(at, at + 32), true);
      else a.pushFrom(all, at);
      b.push(all.subarray(at, at + 32), i % 3 === 0);
    }
    assert.deepEqual(a.bytes, b.bytes);
    assert.deepEqual(a.bytes, all.subarray(5));
    for (let i = 0; i < 200; i++) assert.equal(a.isDelta(i), i % 3 === 0, `entry ${i}`);
  });
});
