import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { NotFoundError, StorageError } from "../src/errors.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import {
  assertBytes,
  listAll,
  randomData,
  randomName,
  storageConformance,
} from "./storage-conformance.ts";

storageConformance("MemoryStorage", async () => ({
  storage: new MemoryStorage(),
  cleanup: async () => {},
}));

describe("MemoryStorage test hooks", () => {
  it("has location memory:", () => {
    assert.equal(new MemoryStorage().location, "memory:");
  });

  it("corrupt replaces the stored bytes with the mutation's result", async () => {
    const s = new MemoryStorage();
    const n = randomName();
    const data = randomData(32);
    await s.save("data", n, data);
    s.corrupt("data", n, (b) => {
      b[0] ^= 1;
      return b.subarray(0, 16);
    });
    const expected = data.slice(0, 16);
    expected[0] ^= 1;
    assertBytes(await s.load("data", n), expected);
    assert.deepEqual(await listAll(s, "data"), [{ name: n, size: 16 }]);
  });

  it("corrupt hands the mutator a copy and stores a copy of its result", async () => {
    const s = new MemoryStorage();
    const n = randomName();
    const data = randomData(8);
    await s.save("index", n, data);
    let seen: Uint8Array | undefined;
    let returned: Uint8Array | undefined;
    s.corrupt("index", n, (b) => {
      seen = b;
      returned = new Uint8Array(8);
      return returned;
    });
    seen!.fill(7);
    returned!.fill(9);
    assertBytes(await s.load("index", n), new Uint8Array(8));
  });

  it("corrupt of a missing object throws NotFoundError, of a bad name StorageError", () => {
    const s = new MemoryStorage();
    assert.throws(() => s.corrupt("data", randomName(), (b) => b), NotFoundError);
    assert.throws(() => s.corrupt("data", "../x", (b) => b), StorageError);
  });

  it("failAfter fails every save after that many successes and stores nothing", async () => {
    const s = new MemoryStorage({ failAfter: 2 });
    const names = [randomName(), randomName(), randomName(), randomName()];
    await s.save("data", names[0], randomData(1));
    await s.save("data", names[1], randomData(1));
    await assert.rejects(s.save("data", names[2], randomData(1)), {
      name: "StorageError",
      message: "injected fault",
    });
    await assert.rejects(
      s.save("data", names[3], randomData(1), { exclusive: true }),
      StorageError,
    );
    assert.equal(s.saveCount, 2);
    assert.equal((await listAll(s, "data")).length, 2);
    await assert.rejects(s.load("data", names[2]), NotFoundError);
  });

  it("failAfter can be set later, relative to saveCount, and cleared", async () => {
    const s = new MemoryStorage();
    await s.save("data", randomName(), randomData(1));
    s.failAfter = s.saveCount + 1;
    await s.save("data", randomName(), randomData(1));
    await assert.rejects(s.save("data", randomName(), randomData(1)), StorageError);
    s.failAfter = undefined;
    await s.save("data", randomName(), randomData(1));
    assert.equal(s.saveCount, 3);
  });

  it("failAfter: 0 fails the first save", async () => {
    const s = new MemoryStorage({ failAfter: 0 });
    await assert.rejects(s.save("config", "config", randomData(1)), StorageError);
  });

  it("rejects an unknown kind with StorageError", async () => {
    const s = new MemoryStorage();
    const bogus = "../etc" as "data";
    await assert.rejects(s.save(bogus, randomName(), randomData(1)), StorageError);
    await assert.rejects(listAll(s, bogus), StorageError);
  });
});
