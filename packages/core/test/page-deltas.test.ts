import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { describe, it } from "node:test";
import { toHex } from "../src/bytes.ts";
import { backup } from "../src/engine/backup.ts";
import { check } from "../src/engine/check.ts";
import { forget } from "../src/engine/forget.ts";
import {
  decodeDeltaMemo,
  MemoryPageBaseStore,
  type PageBaseStore,
} from "../src/engine/page-deltas.ts";
import { prune } from "../src/engine/prune.ts";
import { BLOB_DATA, BLOB_DELTA, blobId } from "../src/format/blob.ts";
import type { FileNode } from "../src/format/tree.ts";
import { type ContentEntry, Repository } from "../src/repository.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { fakeSqlite, p, randomBytes, restoreToMemory, SQLITE_PAGE, sourceTree } from "./helpers.ts";

const KEY = Uint8Array.from({ length: 32 }, (_, i) => i * 5 + 3);
const PAGES = 300;

/** A small edit inside page `page`: `n` bytes at offset 200, as a row update would make. */
function touch(db: Uint8Array, page: number, seed: number, n = 40): void {
  db.set(randomBytes(n, seed), page * SQLITE_PAGE + 200);
}

async function setup() {
  const storage = new MemoryStorage();
  const repo = await Repository.init(storage, p, KEY);
  const bases = new MemoryPageBaseStore();
  return { storage, repo, bases };
}

async function run(repo: Repository, db: Uint8Array, pageBases?: PageBaseStore) {
  await repo.loadIndex();
  return backup(repo, sourceTree({ "chat.db": db }), {
    host: "h",
    paths: ["chat.db"],
    ...(pageBases ? { pageBases } : {}),
  });
}

/** The database's content entries in snapshot `id`, as a fresh device reads them. */
async function entries(storage: MemoryStorage, id: string): Promise<ContentEntry[]> {
  const repo = await Repository.open(storage, p, KEY);
  await repo.loadIndex();
  const ref = await repo.findSnapshot(id);
  const tree = await repo.loadTree(ref.snapshot.tree);
  return repo.contentEntries(tree.nodes[0] as FileNode);
}

async function restored(storage: MemoryStorage, id: string): Promise<Uint8Array> {
  const repo = await Repository.open(storage, p, KEY);
  await repo.loadIndex();
  return (await restoreToMemory(repo, await repo.findSnapshot(id)))["chat.db"] as Uint8Array;
}

describe("page deltas", () => {
  it("stores pages that changed a little as deltas against the parent's pages, and restores exactly", async () => {
    const { storage, repo, bases } = await setup();
    const day0 = fakeSqlite(PAGES, 1);
    const first = await run(repo, day0, bases);
    const before = await entries(storage, first.id);
    assert.ok(before.every((e) => e.base === undefined));
    // The image holds every page: the bases of the next backup.
    assert.deepEqual(bases.images.get("chat.db"), day0);

    const day1 = Uint8Array.from(day0);
    for (let page = 10; page < 20; page++) touch(day1, page, page);
    day1.set(randomBytes(SQLITE_PAGE, 99), 30 * SQLITE_PAGE); // rewritten: too much for a delta
    const grown = new Uint8Array(day1.length + 2 * SQLITE_PAGE);
    grown.set(day1);
    grown.set(randomBytes(2 * SQLITE_PAGE, 98), day1.length);
    const second = await run(repo, grown, bases);

    const after = await entries(storage, second.id);
    assert.equal(after.length, PAGES + 2);
    for (let page = 0; page < after.length; page++) {
      const delta = page >= 10 && page < 20;
      assert.equal(after[page].base, delta ? before[page].id : undefined, `page ${page}`);
      if (!delta && page < PAGES && page !== 30) assert.equal(after[page].id, before[page].id);
    }
    assert.deepEqual(await restored(storage, second.id), grown);
    assert.deepEqual(await restored(storage, first.id), day0);
    // Whole pages are the new bases; pages stored as deltas keep theirs.
    const image = bases.images.get("chat.db")!;
    assert.deepEqual(
      image.subarray(30 * SQLITE_PAGE, 31 * SQLITE_PAGE),
      grown.subarray(30 * SQLITE_PAGE, 31 * SQLITE_PAGE),
    );
    assert.deepEqual(
      image.subarray(10 * SQLITE_PAGE, 20 * SQLITE_PAGE),
      day0.subarray(10 * SQLITE_PAGE, 20 * SQLITE_PAGE),
    );
    assert.equal(image.length, grown.length);

    // The same day without deltas stores ten whole random pages more.
    const plain = await setup();
    await run(plain.repo, day0);
    const wholePages = await run(plain.repo, grown);
    assert.ok(
      second.snapshot.summary.addedBytes + 8 * SQLITE_PAGE < wholePages.snapshot.summary.addedBytes,
      `${second.snapshot.summary.addedBytes} vs ${wholePages.snapshot.summary.addedBytes}`,
    );
    assert.ok((await check(repo, { readData: true })).errors.length === 0);
  });

  it("keeps every delta and its base in one list blob, where a list would otherwise end between them", async () => {
    const { storage, repo, bases } = await setup();
    const pages = 2100; // about two lists' worth of entries at the 1024-ID cap
    const day0 = fakeSqlite(pages, 3);
    await run(repo, day0, bases);
    const day1 = Uint8Array.from(day0);
    for (let page = 1; page < pages; page++) touch(day1, page, 1000 + page);
    const second = await run(repo, day1, bases);

    const reader = await Repository.open(storage, p, KEY);
    await reader.loadIndex();
    const tree = await reader.loadTree(second.snapshot.tree);
    const node = tree.nodes[0] as FileNode;
    let deltas = 0;
    let cutAfterZero = 0;
    for (const list of node.lists!) {
      const ids = await reader.listIds(list);
      for (let i = 0; i < ids.length; i++) {
        if (reader.lookup(ids[i])?.type !== BLOB_DELTA) continue;
        deltas++;
        // A list ends after an ID starting with byte 0 (SPEC §8), unless it is a delta's.
        if (ids[i].startsWith("00")) cutAfterZero++;
        assert.ok(i + 1 < ids.length, `list ${list} ends with delta ${ids[i]}, its base elsewhere`);
        assert.equal(reader.lookup(ids[i + 1])?.type, BLOB_DATA);
        i++;
      }
    }
    assert.equal(deltas, pages - 1);
    assert.ok(cutAfterZero > 0, "some delta IDs start with byte 0, so the rule is exercised");
    assert.deepEqual(await restored(storage, second.id), day1);
  });

  it("contentIdBytes lists a file's content IDs as bytes, from list blobs or inline", async () => {
    // What a backup reads of its parent's database (PageDeltas.open), without hex strings.
    const { storage, repo, bases } = await setup();
    const db = fakeSqlite(PAGES, 7);
    await run(repo, db, bases);
    for (let page = 1; page < PAGES; page += 10) touch(db, page, 100 + page);
    const second = await run(repo, db, bases);
    const reader = await Repository.open(storage, p, KEY);
    await reader.loadIndex();
    const ref = await reader.findSnapshot(second.id);
    const node = (await reader.loadTree(ref.snapshot.tree)).nodes[0] as FileNode;
    assert.ok(node.lists?.length, "a database's content is in list blobs");
    const hex = await reader.contentIds(node);
    const bytes = await reader.contentIdBytes(node);
    assert.equal(bytes.length, 32 * hex.length);
    assert.deepEqual(
      hex,
      Array.from({ length: hex.length }, (_, k) =>
        Buffer.from(bytes.subarray(32 * k, 32 * k + 32)).toString("hex"),
      ),
    );
    const inline: FileNode = { ...node, lists: undefined, content: hex.slice(0, 3) };
    assert.deepEqual(await reader.contentIdBytes(inline), bytes.subarray(0, 96));
    // Deltas are in there, each followed by its base: the next backup finds them.
    assert.ok((await entries(storage, second.id)).some((e) => e.base !== undefined));
  });

  it("an unchanged page stored as a delta costs nothing the next time; a changed one keeps its base", async () => {
    const { storage, repo, bases } = await setup();
    const db = fakeSqlite(PAGES, 2);
    const first = await run(repo, db, bases);
    const base12 = (await entries(storage, first.id))[12].id;
    touch(db, 12, 1);
    const second = await run(repo, db, bases);
    const third = await run(repo, db, bases);
    assert.equal(third.snapshot.summary.newBlobs, 0);
    assert.deepEqual(await entries(storage, third.id), await entries(storage, second.id));
    touch(db, 12, 2, 80);
    const fourth = await run(repo, db, bases);
    const e = (await entries(storage, fourth.id))[12];
    assert.equal(e.base, base12, "the base stays the last whole page, never a delta");
    assert.deepEqual(await restored(storage, fourth.id), db);
  });

  it("a page unchanged since its parent's delta is listed again from the delta memo, without reading its base", async () => {
    const { storage, repo, bases } = await setup();
    let reads = 0;
    const counted: PageBaseStore = {
      open: async (path) => {
        const image = await bases.open(path);
        return {
          ...image,
          read: (offset, length) => {
            reads++;
            return image.read(offset, length);
          },
        };
      },
      readMemo: (path) => bases.readMemo(path),
      writeMemo: (path, bytes) => bases.writeMemo(path, bytes),
    };
    const db = fakeSqlite(PAGES, 12);
    await run(repo, db, counted);
    const firstMemo = decodeDeltaMemo(repo, bases.memos.get("chat.db")!)!;
    assert.equal(firstMemo.records.length, 0, "no deltas yet");
    assert.equal(firstMemo.pageSize, SQLITE_PAGE);
    touch(db, 12, 1);
    touch(db, 200, 2);
    const second = await run(repo, db, counted);
    const memo = decodeDeltaMemo(repo, bases.memos.get("chat.db")!)!;
    assert.equal(memo.records.length, 2 * 100, "a record per delta");
    // The layout of SPEC §15, checked byte by byte.
    const file = bases.memos.get("chat.db")!;
    assert.equal(Buffer.from(file.subarray(0, 8)).toString(), "LKTMEMO2");
    const view = new DataView(file.buffer, file.byteOffset);
    assert.equal(view.getUint32(8, true), SQLITE_PAGE);
    // The image is certified to hold this snapshot's version: the hash of its content IDs.
    const ids = await repo.contentIdBytes(
      (await repo.loadTree(second.snapshot.tree)).nodes[0] as FileNode,
    );
    assert.equal(toHex(file.subarray(12, 44)), toHex(p.sha256(ids)));
    const listed = await entries(storage, second.id);
    [12, 200].forEach((page, i) => {
      const r = file.subarray(44 + 100 * i, 44 + 100 * (i + 1));
      assert.equal(new DataView(r.buffer, r.byteOffset).getUint32(0, true), page);
      const bytes = db.subarray(page * SQLITE_PAGE, (page + 1) * SQLITE_PAGE);
      assert.equal(toHex(r.subarray(4, 36)), toHex(blobId(p, repo.keys.id, BLOB_DATA, bytes)));
      assert.equal(toHex(r.subarray(36, 68)), listed[page].id);
      assert.equal(toHex(r.subarray(68, 100)), listed[page].base);
    });
    const mac = createHmac("sha256", repo.keys.id)
      .update("locket delta memo 2")
      .update(file.subarray(0, 244))
      .digest();
    assert.deepEqual(file.subarray(244), new Uint8Array(mac));
    reads = 0;
    const third = await run(repo, db, counted);
    assert.equal(reads, 0, "no base was read: the memo knew both pages");
    assert.equal(third.snapshot.summary.newBlobs, 0);
    assert.deepEqual(await entries(storage, third.id), await entries(storage, second.id));
    assert.deepEqual(await restored(storage, third.id), db);

    // A memo that does not check out is ignored: the pages are worked out again, to the same end.
    const tampered = bases.memos.get("chat.db")!;
    tampered[20] ^= 1;
    bases.memos.set("chat.db", tampered);
    const fourth = await run(repo, db, counted);
    assert.ok(reads > 0, "the bases were read again");
    assert.deepEqual(await entries(storage, fourth.id), await entries(storage, second.id));
    // Rewritten by that backup: the next one trusts it again.
    reads = 0;
    await run(repo, db, counted);
    assert.equal(reads, 0);

    // A page changed again is not the one the memo knew: a new delta against the same base.
    touch(db, 12, 3);
    const fifth = await run(repo, db, counted);
    const [before, after] = [await entries(storage, second.id), await entries(storage, fifth.id)];
    assert.notEqual(after[12].id, before[12].id);
    assert.equal(after[12].base, before[12].base);
    assert.equal(after[200].id, before[200].id);
    assert.deepEqual(await restored(storage, fifth.id), db);
  });

  it("a stale or tampered base image costs whole pages, never a wrong byte", async () => {
    const { storage, repo, bases } = await setup();
    const db = fakeSqlite(PAGES, 3);
    await run(repo, db, bases);
    const image = bases.images.get("chat.db")!;
    image[40 * SQLITE_PAGE + 9] ^= 1; // tampered
    bases.images.set("chat.db", image.subarray(0, 100 * SQLITE_PAGE)); // and cut short
    touch(db, 40, 1);
    touch(db, 50, 2);
    touch(db, 150, 3);
    const second = await run(repo, db, bases);
    const after = await entries(storage, second.id);
    assert.equal(after[40].base, undefined);
    assert.notEqual(after[50].base, undefined);
    assert.equal(after[150].base, undefined);
    assert.deepEqual(await restored(storage, second.id), db);
    // The image was repaired where the pages were stored whole.
    const repaired = bases.images.get("chat.db")!;
    assert.deepEqual(
      repaired.subarray(40 * SQLITE_PAGE, 41 * SQLITE_PAGE),
      db.subarray(40 * SQLITE_PAGE, 41 * SQLITE_PAGE),
    );
  });

  it("no deltas without a base store, nor for files that are not SQLite databases", async () => {
    const { storage, repo, bases } = await setup();
    const db = fakeSqlite(PAGES, 5);
    await run(repo, db);
    touch(db, 7, 1);
    const second = await run(repo, db);
    assert.ok((await entries(storage, second.id)).every((e) => e.base === undefined));
    const notDb = randomBytes(300_000, 6);
    await run(repo, notDb, bases);
    assert.equal(bases.images.size, 0);
  });

  it("prune keeps the bases of the deltas that remain; forgetting every snapshot frees them", async () => {
    const { storage, repo, bases } = await setup();
    const db = fakeSqlite(PAGES, 7);
    const first = await run(repo, db, bases);
    for (let page = 1; page < PAGES; page += 3) touch(db, page, page);
    const second = await run(repo, db, bases);
    await forget(await Repository.open(storage, p, KEY), { ids: [first.id] });
    await prune(await Repository.open(storage, p, KEY), { keepDeleteMs: 0, maxUnused: 0 });
    assert.deepEqual(await restored(storage, second.id), db);
    const reader = await Repository.open(storage, p, KEY);
    assert.equal((await check(reader, { readData: true })).errors.length, 0);
  });
});
