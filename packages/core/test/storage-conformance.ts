/**
 * The Storage contract as tests. Every backend runs this suite; each case names the clause of
 * `src/storage/storage.ts` it checks.
 */

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { afterEach, beforeEach, describe, it } from "node:test";
import { concatAll } from "../src/bytes.ts";
import { AlreadyExistsError, NotFoundError, OutOfRangeError, StorageError } from "../src/errors.ts";
import {
  OBJECT_KINDS,
  type ObjectInfo,
  type ObjectKind,
  type Storage,
} from "../src/storage/storage.ts";

/** A fresh, empty backend and a way to dispose of it. */
export interface StorageFixture {
  readonly storage: Storage;
  readonly cleanup: () => Promise<void>;
}

/** A random valid object name (64 lowercase hex digits). */
export function randomName(): string {
  return randomBytes(32).toString("hex");
}

/** A valid name for `kind`: "config" for config, otherwise random. */
export function nameFor(kind: ObjectKind): string {
  return kind === "config" ? "config" : randomName();
}

/** `n` random bytes as a plain Uint8Array (not a Buffer). */
export function randomData(n: number): Uint8Array {
  return new Uint8Array(randomBytes(n));
}

/**
 * Asserts byte equality with a short message (deepStrictEqual would dump megabytes and treats a
 * Buffer and a Uint8Array with equal bytes as different).
 * @throws {AssertionError} when the arrays differ.
 */
export function assertBytes(actual: Uint8Array, expected: Uint8Array, what = "bytes"): void {
  assert.ok(actual instanceof Uint8Array, `${what}: expected a Uint8Array`);
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] !== expected[i]) {
      assert.fail(`${what}: differs at byte ${i}: ${actual[i]} !== ${expected[i]}`);
    }
  }
}

/** Everything `list(kind)` yields, in order. */
export async function listAll(storage: Storage, kind: ObjectKind): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const info of storage.list(kind)) out.push(info);
  return out;
}

/** Listed objects as a name → size map, failing when a name appears twice. */
async function listMap(storage: Storage, kind: ObjectKind): Promise<Map<string, number>> {
  const map = new Map<string, number>();
  for (const { name, size } of await listAll(storage, kind)) {
    assert.ok(!map.has(name), `${kind}/${name} listed twice`);
    map.set(name, size);
  }
  return map;
}

/** Names that must be rejected for `kind`, with why. */
function invalidNames(kind: ObjectKind): [string, string][] {
  const hex = "ab".repeat(32);
  const common: [string, string][] = [
    ["../x", "path traversal"],
    ["ABC", "uppercase, too short"],
    ["abcd", "too short"],
    ["", "empty"],
    [hex.toUpperCase(), "uppercase hex"],
    [hex + "0", "65 digits"],
    [hex.slice(1), "63 digits"],
    [`../${hex.slice(3)}`, "64 characters with a path"],
    [`ab/${hex.slice(3)}`, "64 characters with a slash"],
    [`${hex.slice(1)}g`, "non-hex digit"],
    [`${hex.slice(1)}\n`, "trailing newline"],
  ];
  return kind === "config"
    ? [...common, [hex, "hex name for config"], ["config/", "config with a slash"]]
    : [...common, ["config", "config name for another kind"]];
}

/** What a backend declares it offers beyond the required methods. */
export interface StorageFeatures {
  /** It implements `createWriter` (objects written in parts); checked both ways. */
  readonly writesInParts?: boolean;
}

/**
 * Registers node:test cases that check `make()`'s backend against the Storage contract. Each
 * case gets its own fresh backend and cleans it up afterwards.
 */
export function storageConformance(
  name: string,
  make: () => Promise<StorageFixture>,
  features: StorageFeatures = {},
): void {
  describe(`Storage conformance: ${name}`, () => {
    let fixture: StorageFixture | undefined;
    let s: Storage;

    beforeEach(async () => {
      fixture = await make();
      s = fixture.storage;
    });

    afterEach(async () => {
      await fixture?.cleanup();
      fixture = undefined;
    });

    it("has a non-empty location", () => {
      assert.equal(typeof s.location, "string");
      assert.ok(s.location.length > 0);
    });

    it(`${features.writesInParts ? "offers" : "does not offer"} createWriter, as declared`, () => {
      assert.equal(typeof s.createWriter === "function", features.writesInParts === true);
    });

    if (features.writesInParts) {
      describe("objects written in parts (createWriter)", () => {
        it("stores the parts in call order, with writes in flight together", async () => {
          const parts = [
            randomData(300_000),
            new Uint8Array(0),
            randomData(7),
            randomData(1 << 20),
          ];
          const backing = randomData(2000);
          const w = await s.createWriter!("data");
          // Not awaited one by one: the order of the calls is the order of the bytes.
          const writes = [
            w.write(parts[0], parts[1]),
            w.write(parts[2]),
            w.write(backing.subarray(500, 1500)),
            w.write(parts[3]),
          ];
          await Promise.all(writes);
          const whole = concatAll([...parts.slice(0, 3), backing.subarray(500, 1500), parts[3]]);
          const n = randomName();
          await w.commit(n);
          assertBytes(await s.load("data", n), whole);
          assert.deepEqual(await s.stat("data", n), { name: n, size: whole.length });
          assert.deepEqual(await listAll(s, "data"), [{ name: n, size: whole.length }]);
        });

        it("shows nothing before commit, and nothing after abort", async () => {
          const w = await s.createWriter!("index");
          await w.write(randomData(1000));
          assert.deepEqual(await listAll(s, "index"), []);
          await w.abort();
          await w.abort(); // idempotent
          assert.deepEqual(await listAll(s, "index"), []);
          await assert.rejects(w.write(randomData(1)), StorageError);
          await assert.rejects(w.commit(randomName()), StorageError);
          assert.deepEqual(await listAll(s, "index"), []);
        });

        it("stores an empty object", async () => {
          const w = await s.createWriter!("snapshots");
          const n = randomName();
          await w.commit(n);
          assert.deepEqual(await s.stat("snapshots", n), { name: n, size: 0 });
        });

        it("refuses writes and a second commit once committed", async () => {
          const w = await s.createWriter!("data");
          await w.write(randomData(10));
          const n = randomName();
          await w.commit(n);
          await assert.rejects(w.write(randomData(1)), StorageError);
          await assert.rejects(w.commit(randomName()), StorageError);
          await w.abort(); // a no-op now: the object stays
          assert.equal((await s.stat("data", n)).size, 10);
        });

        it("replaces an existing object of the same name, as save does", async () => {
          const n = randomName();
          await s.save("data", n, randomData(100));
          const second = randomData(40);
          const w = await s.createWriter!("data");
          await w.write(second);
          await w.commit(n);
          assertBytes(await s.load("data", n), second);
          assert.deepEqual(await listAll(s, "data"), [{ name: n, size: 40 }]);
        });

        it("rejects an invalid name at commit and leaves nothing", async () => {
          const w = await s.createWriter!("data");
          await w.write(randomData(10));
          await assert.rejects(w.commit("../x"), StorageError);
          assert.deepEqual(await listAll(s, "data"), []);
        });

        it("refuses kind config, which has a fixed name", async () => {
          await assert.rejects(s.createWriter!("config"), StorageError);
        });
      });
    }

    describe("save and load", () => {
      for (const kind of OBJECT_KINDS) {
        it(`round-trips an object of kind ${kind}`, async () => {
          const n = nameFor(kind);
          const data = randomData(1000);
          await s.save(kind, n, data);
          assertBytes(await s.load(kind, n), data);
          assert.deepEqual(await s.stat(kind, n), { name: n, size: data.length });
        });
      }

      it("round-trips every byte value", async () => {
        const data = new Uint8Array(512);
        for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
        const sorted = new Set(data);
        assert.equal(sorted.size, 256);
        const n = randomName();
        await s.save("data", n, data);
        assertBytes(await s.load("data", n), data);
      });

      it("stores an empty object", async () => {
        const n = randomName();
        await s.save("index", n, new Uint8Array(0));
        assertBytes(await s.load("index", n), new Uint8Array(0));
        assert.deepEqual(await s.stat("index", n), { name: n, size: 0 });
        assert.deepEqual(await listAll(s, "index"), [{ name: n, size: 0 }]);
      });

      it("stores a 5 MiB object", async () => {
        const n = randomName();
        const data = randomData(5 * 1024 * 1024);
        await s.save("data", n, data);
        assert.equal((await s.stat("data", n)).size, data.length);
        assertBytes(await s.load("data", n), data);
        assertBytes(
          await s.load("data", n, 3_000_000, 100_000),
          data.subarray(3_000_000, 3_100_000),
          "range",
        );
      });

      it("accepts a view into a larger buffer and stores only the view", async () => {
        const backing = randomData(300);
        const view = backing.subarray(100, 200);
        const n = randomName();
        await s.save("data", n, view);
        assertBytes(await s.load("data", n), backing.slice(100, 200));
      });

      it("replaces an existing object when not exclusive", async () => {
        const n = randomName();
        await s.save("snapshots", n, randomData(100));
        const second = randomData(40);
        await s.save("snapshots", n, second);
        assertBytes(await s.load("snapshots", n), second);
        assert.equal((await s.stat("snapshots", n)).size, 40);
        assert.deepEqual(await listAll(s, "snapshots"), [{ name: n, size: 40 }]);
      });

      it("keeps stored data when the caller mutates the saved array", async () => {
        const n = randomName();
        const data = randomData(64);
        const original = data.slice();
        await s.save("data", n, data);
        data.fill(0);
        assertBytes(await s.load("data", n), original);
      });

      it("returns copies: mutating loaded bytes does not change the stored object", async () => {
        const n = randomName();
        const data = randomData(64);
        // Kept apart from `data` so a backend that hands out the saved array itself is caught.
        const original = data.slice();
        await s.save("data", n, data);
        const first = await s.load("data", n);
        first.fill(0);
        const part = await s.load("data", n, 8, 8);
        part.fill(0);
        assertBytes(await s.load("data", n), original);
      });
    });

    describe("exclusive save", () => {
      for (const kind of OBJECT_KINDS) {
        it(`creates a new object of kind ${kind}`, async () => {
          const n = nameFor(kind);
          const data = randomData(10);
          await s.save(kind, n, data, { exclusive: true });
          assertBytes(await s.load(kind, n), data);
        });

        it(`rejects an existing ${kind} object with AlreadyExistsError, keeping it`, async () => {
          const n = nameFor(kind);
          const first = randomData(50);
          await s.save(kind, n, first, { exclusive: true });
          await assert.rejects(
            s.save(kind, n, randomData(60), { exclusive: true }),
            AlreadyExistsError,
          );
          assertBytes(await s.load(kind, n), first);
          assert.equal((await s.stat(kind, n)).size, 50);
        });
      }

      it("also rejects an object that was saved non-exclusively", async () => {
        const n = randomName();
        const first = randomData(50);
        await s.save("index", n, first);
        await assert.rejects(
          s.save("index", n, randomData(5), { exclusive: true }),
          AlreadyExistsError,
        );
        assertBytes(await s.load("index", n), first);
      });

      it("exclusive: false replaces like a plain save", async () => {
        const n = randomName();
        await s.save("index", n, randomData(5));
        const second = randomData(6);
        await s.save("index", n, second, { exclusive: false });
        assertBytes(await s.load("index", n), second);
      });

      it("lets exactly one of many concurrent exclusive saves of one name win", async () => {
        const n = randomName();
        const contents = Array.from({ length: 10 }, () => randomData(1000));
        const results = await Promise.allSettled(
          contents.map((c) => s.save("snapshots", n, c, { exclusive: true })),
        );
        const winners = results.flatMap((r, i) => (r.status === "fulfilled" ? [i] : []));
        assert.equal(winners.length, 1, "exactly one exclusive save succeeds");
        for (const r of results) {
          if (r.status === "rejected") {
            assert.ok(r.reason instanceof AlreadyExistsError, String(r.reason));
          }
        }
        assertBytes(await s.load("snapshots", n), contents[winners[0]], "winner's content");
        assert.deepEqual(await listAll(s, "snapshots"), [{ name: n, size: 1000 }]);
      });
    });

    describe("ranged load", () => {
      const data = new Uint8Array(1000);
      for (let i = 0; i < data.length; i++) data[i] = (i * 31 + 7) & 0xff;
      let n: string;

      beforeEach(async () => {
        n = randomName();
        await s.save("data", n, data);
      });

      it("reads from the start", async () => {
        assertBytes(await s.load("data", n, 0, 10), data.subarray(0, 10));
      });

      it("reads from the middle", async () => {
        assertBytes(await s.load("data", n, 400, 123), data.subarray(400, 523));
      });

      it("reads up to the last byte", async () => {
        assertBytes(await s.load("data", n, 990, 10), data.subarray(990));
      });

      it("reads the whole object as a range", async () => {
        assertBytes(await s.load("data", n, 0, 1000), data);
      });

      it("reads zero bytes inside the object and at its end", async () => {
        assertBytes(await s.load("data", n, 5, 0), new Uint8Array(0));
        assertBytes(await s.load("data", n, 1000, 0), new Uint8Array(0));
      });

      it("rejects a range that reaches past the end with OutOfRangeError (a StorageError), not a short read", async () => {
        await assert.rejects(s.load("data", n, 995, 10), OutOfRangeError);
        await assert.rejects(s.load("data", n, 0, 1001), OutOfRangeError);
        await assert.rejects(s.load("data", n, 1000, 1), OutOfRangeError);
        await assert.rejects(s.load("data", n, 1001, 0), OutOfRangeError);
        await assert.rejects(s.load("data", n, 5000, 10), OutOfRangeError);
      });

      it("rejects a negative offset or length with OutOfRangeError", async () => {
        await assert.rejects(s.load("data", n, -1, 10), OutOfRangeError);
        await assert.rejects(s.load("data", n, 10, -1), OutOfRangeError);
      });

      it("rejects any range of an empty object except zero bytes at 0", async () => {
        const e = randomName();
        await s.save("data", e, new Uint8Array(0));
        assertBytes(await s.load("data", e, 0, 0), new Uint8Array(0));
        await assert.rejects(s.load("data", e, 0, 1), OutOfRangeError);
      });

      it("is idempotent", async () => {
        const a = await s.load("data", n, 100, 50);
        const b = await s.load("data", n, 100, 50);
        assertBytes(a, b);
      });
    });

    describe("missing objects", () => {
      for (const kind of OBJECT_KINDS) {
        it(`load, ranged load and stat of a missing ${kind} object throw NotFoundError`, async () => {
          const n = nameFor(kind);
          await assert.rejects(s.load(kind, n), NotFoundError);
          await assert.rejects(s.load(kind, n, 0, 1), NotFoundError);
          await assert.rejects(s.stat(kind, n), NotFoundError);
        });

        it(`remove of a missing ${kind} object succeeds`, async () => {
          await s.remove(kind, nameFor(kind));
        });
      }

      it("an object of one kind is not found under another kind", async () => {
        const n = randomName();
        await s.save("index", n, randomData(3));
        await assert.rejects(s.load("data", n), NotFoundError);
        await assert.rejects(s.stat("snapshots", n), NotFoundError);
      });
    });

    describe("list", () => {
      for (const kind of OBJECT_KINDS) {
        it(`lists nothing for an empty ${kind}`, async () => {
          assert.deepEqual(await listAll(s, kind), []);
        });
      }

      it("lists each object exactly once, with its size, only under its kind", async () => {
        const saved = new Map<ObjectKind, Map<string, number>>(
          OBJECT_KINDS.map((k) => [k, new Map()]),
        );
        const counts: Record<ObjectKind, number> = { config: 1, data: 30, index: 4, snapshots: 2 };
        for (const kind of OBJECT_KINDS) {
          for (let i = 0; i < counts[kind]; i++) {
            const n = nameFor(kind);
            const size = (i * 37) % 200;
            await s.save(kind, n, randomData(size));
            saved.get(kind)!.set(n, size);
          }
        }
        // Names sharing a first byte land in the same data folder on sharded backends.
        const sibling = `${[...saved.get("data")!.keys()][0].slice(0, 2)}${randomName().slice(2)}`;
        await s.save("data", sibling, randomData(9));
        saved.get("data")!.set(sibling, 9);
        for (const kind of OBJECT_KINDS) {
          assert.deepEqual(await listMap(s, kind), saved.get(kind), `list(${kind})`);
        }
      });

      it("lists an overwritten object once with its new size", async () => {
        const n = randomName();
        await s.save("data", n, randomData(10));
        await s.save("data", n, randomData(20));
        assert.deepEqual(await listAll(s, "data"), [{ name: n, size: 20 }]);
      });

      it("no longer lists a removed object", async () => {
        const keep = randomName();
        const drop = randomName();
        await s.save("data", keep, randomData(5));
        await s.save("data", drop, randomData(6));
        await s.remove("data", drop);
        assert.deepEqual(await listAll(s, "data"), [{ name: keep, size: 5 }]);
        await assert.rejects(s.load("data", drop), NotFoundError);
        await assert.rejects(s.stat("data", drop), NotFoundError);
        await s.remove("data", drop);
        await s.remove("data", keep);
        assert.deepEqual(await listAll(s, "data"), []);
      });

      it("removes config", async () => {
        await s.save("config", "config", randomData(5));
        await s.remove("config", "config");
        assert.deepEqual(await listAll(s, "config"), []);
        await assert.rejects(s.load("config", "config"), NotFoundError);
      });
    });

    describe("invalid names", () => {
      for (const kind of OBJECT_KINDS) {
        for (const [bad, why] of invalidNames(kind)) {
          it(`rejects ${JSON.stringify(bad)} for ${kind} (${why}) with StorageError`, async () => {
            await assert.rejects(s.save(kind, bad, randomData(4)), StorageError);
            await assert.rejects(
              s.save(kind, bad, randomData(4), { exclusive: true }),
              StorageError,
            );
            await assert.rejects(s.load(kind, bad), StorageError);
            await assert.rejects(s.load(kind, bad, 0, 1), StorageError);
            await assert.rejects(s.stat(kind, bad), StorageError);
            await assert.rejects(s.remove(kind, bad), StorageError);
            for (const k of OBJECT_KINDS) assert.deepEqual(await listAll(s, k), [], `list(${k})`);
          });
        }
      }
    });

    describe("concurrency", () => {
      it("lands 20 concurrent saves of different objects", async () => {
        const objects = Array.from({ length: 20 }, (_, i) => ({
          name: randomName(),
          data: randomData(1000 + i * 100),
        }));
        await Promise.all(objects.map((o) => s.save("data", o.name, o.data)));
        const listed = await listMap(s, "data");
        assert.equal(listed.size, 20);
        for (const o of objects) {
          assert.equal(listed.get(o.name), o.data.length);
          assertBytes(await s.load("data", o.name), o.data, o.name);
        }
      });

      it("serves concurrent loads of one object", async () => {
        const n = randomName();
        const data = randomData(100_000);
        await s.save("data", n, data);
        const loads = await Promise.all(
          Array.from({ length: 10 }, (_, i) => s.load("data", n, i * 1000, 5000)),
        );
        loads.forEach((b, i) => {
          assertBytes(b, data.subarray(i * 1000, i * 1000 + 5000));
        });
      });

      it("leaves one whole object after concurrent overwrites of one name", async () => {
        const n = randomName();
        const contents = Array.from({ length: 10 }, (_, i) => randomData(500 + i));
        await Promise.all(contents.map((c) => s.save("index", n, c)));
        const stored = await s.load("index", n);
        const match = contents.find((c) => c.length === stored.length);
        assert.ok(match, "stored object is one of the written versions");
        assertBytes(stored, match);
        assert.equal((await listAll(s, "index")).length, 1);
      });
    });
  });
}
