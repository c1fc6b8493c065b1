import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { concat, fromHex } from "../src/bytes.ts";
import { backup } from "../src/engine/backup.ts";
import { ListBases } from "../src/engine/list-bases.ts";
import {
  applyListPatch,
  listPatchBase,
  makeListPatch,
  OP_COPY,
  OP_IDS,
} from "../src/format/list-patch.ts";
import { LIST_MAX_IDS } from "../src/format/tree.ts";
import { Repository } from "../src/repository.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { fakeSqlite, p, randomBytes, sourceTree } from "./helpers.ts";

const BASE_ID = new Uint8Array(32).fill(0xbb);

/** `n` random IDs, back to back. */
function ids(n: number, seed: number): Uint8Array {
  return randomBytes(32 * n, seed);
}

/** An exact index of a base's IDs, as ListBases keeps (here by hex, to be plainly right). */
function indexOf(base: Uint8Array) {
  const at = new Map<string, number>();
  for (let j = 0; j < base.length / 32; j++) {
    at.set(Buffer.from(base.subarray(32 * j, 32 * j + 32)).toString("hex"), j);
  }
  return (list: Uint8Array, i: number) =>
    at.get(Buffer.from(list.subarray(i, i + 32)).toString("hex")) ?? -1;
}

function copy(from: number, count: number): Uint8Array {
  const op = new Uint8Array(5);
  const v = new DataView(op.buffer);
  op[0] = OP_COPY;
  v.setUint16(1, from, true);
  v.setUint16(3, count, true);
  return op;
}

function literal(body: Uint8Array, count = body.length / 32): Uint8Array {
  const op = new Uint8Array(3);
  op[0] = OP_IDS;
  new DataView(op.buffer).setUint16(1, count, true);
  return concat(op, body);
}

describe("list patches", () => {
  it("rebuild lists edited at random (changed, inserted, removed IDs) from their bases", () => {
    for (let seed = 1; seed <= 60; seed++) {
      const base = ids(1 + ((seed * 37) % 500), seed);
      const parts: Uint8Array[] = [];
      let fresh = 0;
      for (let j = 0; j < base.length / 32; j++) {
        const r = (seed * 7919 + j * 104729) % 100;
        if (r < 10)
          parts.push(ids(1, 1000 * seed + fresh++)); // changed
        else if (r < 15) parts.push(base.subarray(32 * j, 32 * j + 32), ids(1, 5000 + fresh++));
        else if (r < 18)
          continue; // removed
        else parts.push(base.subarray(32 * j, 32 * j + 32));
      }
      const list = concat(...parts).subarray(0, 32 * LIST_MAX_IDS);
      if (list.length === 0) continue;
      const patch = makeListPatch(list, BASE_ID, base, indexOf(base));
      assert.deepEqual(listPatchBase(patch), BASE_ID);
      assert.deepEqual(applyListPatch(patch, base), list, `seed ${seed}`);
      // Deterministic: the same list and base give the same bytes, so the same blob ID.
      assert.deepEqual(makeListPatch(list, BASE_ID, base, indexOf(base)), patch);
    }
  });

  it("copy unchanged runs in one op and store only changed IDs", () => {
    const base = ids(300, 1);
    const list = base.slice();
    list.set(ids(1, 2), 32 * 100);
    const patch = makeListPatch(list, BASE_ID, base, indexOf(base));
    // Base ID, copy 0..100, one new ID, copy 101..300.
    assert.equal(patch.length, 32 + 5 + (3 + 32) + 5);
    assert.deepEqual(
      patch,
      concat(BASE_ID, copy(0, 100), literal(list.subarray(3200, 3232)), copy(101, 199)),
    );
  });

  it("treat a wrong index hint as a new ID, never as a wrong copy", () => {
    const base = ids(50, 3);
    const list = ids(50, 4); // nothing in common
    const patch = makeListPatch(list, BASE_ID, base, () => 7);
    assert.deepEqual(applyListPatch(patch, base), list);
    assert.deepEqual(patch, concat(BASE_ID, literal(list)));
  });

  it("refuse malformed patches and bases with a RangeError", () => {
    const base = ids(10, 5);
    const bad: [string, Uint8Array, Uint8Array?][] = [
      ["empty", new Uint8Array(0)],
      ["a base ID and no op", BASE_ID],
      ["37 bytes, under a whole copy op", concat(BASE_ID, copy(0, 1).subarray(0, 4))],
      [
        "a copy cut short after a whole one",
        concat(BASE_ID, copy(0, 1), copy(1, 1).subarray(0, 4)),
      ],
      ["new IDs' count cut short", concat(BASE_ID, copy(0, 1), Uint8Array.of(OP_IDS, 1))],
      ["an unknown op", concat(BASE_ID, Uint8Array.of(2, 0, 0, 1, 0))],
      ["a copy of 0 IDs", concat(BASE_ID, copy(0, 0))],
      ["a copy past the base's end", concat(BASE_ID, copy(5, 6))],
      ["a copy starting past the end", concat(BASE_ID, copy(10, 1))],
      ["new IDs of count 0", concat(BASE_ID, literal(new Uint8Array(0)), copy(0, 1))],
      ["new IDs cut short", concat(BASE_ID, literal(ids(2, 6), 3))],
      ["a trailing byte", concat(BASE_ID, copy(0, 1), Uint8Array.of(0))],
      ["a base that is not a list", concat(BASE_ID, copy(0, 1)), new Uint8Array(33)],
      ["an empty base", concat(BASE_ID, literal(ids(1, 7))), new Uint8Array(0)],
    ];
    for (const [what, patch, b = base] of bad) {
      assert.throws(() => applyListPatch(patch, b), RangeError, what);
    }
  });

  it("refuse a patch longer than the largest one, a base ID and 1024 one-ID ops", () => {
    const base = ids(10, 10);
    const ops = (n: number) => Array.from({ length: n }, (_, k) => literal(ids(1, 100 + k)));
    assert.equal(applyListPatch(concat(BASE_ID, ...ops(1024)), base).length, 32 * 1024);
    assert.throws(() => applyListPatch(concat(BASE_ID, ...ops(1025)), base), /35907 bytes/);
  });

  it("refuse a patch that makes more than LIST_MAX_IDS IDs before allocating them", () => {
    const base = ids(LIST_MAX_IDS, 8);
    assert.equal(applyListPatch(concat(BASE_ID, copy(0, LIST_MAX_IDS)), base).length, 32768);
    // 1024 copies of the whole base would be 32 MiB of IDs from a 5 KB patch.
    const ops = new Uint8Array(5 * 1024);
    for (let k = 0; k < 1024; k++) ops.set(copy(0, LIST_MAX_IDS), 5 * k);
    assert.throws(() => applyListPatch(concat(BASE_ID, ops), base), /over 1024 IDs/);
    assert.throws(
      () => applyListPatch(concat(BASE_ID, copy(0, 1), copy(0, LIST_MAX_IDS)), base),
      /over 1024 IDs/,
    );
  });
});

describe("ListBases", () => {
  it("patches a list that changed a little, and leaves whole a list that is a base or all new", async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, p, new Uint8Array(32).fill(7));
    const first = await backup(repo, sourceTree({ "chat.db": fakeSqlite(3000, 3) }), {
      host: "h",
      paths: ["chat.db"],
    });
    const node = (await repo.loadTree(first.snapshot.tree)).nodes[0];
    assert.ok(node.type === "file" && node.lists && node.lists.length > 2);
    const bases = await ListBases.load(repo, node);
    const list = await repo.listIdBytes(node.lists[1]);
    assert.equal(bases.patchFor(list), undefined, "the base itself is stored as it is");
    const changed = list.slice();
    changed.set(ids(1, 42), 32 * 5);
    const patch = bases.patchFor(changed);
    assert.ok(patch, "one ID changed: a patch");
    assert.deepEqual(applyListPatch(patch, list), changed);
    assert.deepEqual(listPatchBase(patch), fromHex(node.lists[1]));
    assert.equal(bases.patchFor(ids(list.length / 32, 43)), undefined, "all new: whole");
    // Every other ID changed (not the sampled ones, every 8th from the first): the patch, a copy
    // op and a new ID per pair, would be over half the list.
    const most = list.slice();
    for (let i = 1; i < list.length / 32; i += 2) most.set(ids(1, 1000 + i), 32 * i);
    assert.equal(bases.patchFor(most), undefined, "half the IDs changed: whole");
  });
});
