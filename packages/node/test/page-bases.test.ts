/**
 * Page bases on a device: the file store passes the same conformance suite as the memory one,
 * and the CLI keeps them in the cache, stores a day's database changes as page deltas, and
 * restores them byte for byte.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import {
  copyFile,
  open,
  readdir,
  readFile as readFileBytes,
  rm,
  stat,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { describe, test } from "node:test";
import {
  backup,
  decodeDeltaMemo,
  type FileNode,
  MemoryPageBaseStore,
  MemoryStorage,
  type ObjectKind,
  type PageBaseStore,
  Repository,
  readFile,
  type SaveOptions,
  StorageError,
} from "@locket/core";
import { randomBytes } from "../../core/test/helpers.ts";
import { diffTrees } from "../src/compare.ts";
import { simulateDay, writeDemoData } from "../src/demo-data.ts";
import { FsPageBaseStore } from "../src/page-bases.ts";
import { nodePrimitives } from "../src/primitives.ts";
import { fsSource } from "../src/source.ts";
import { WorkerChunker } from "../src/workers/chunker.ts";
import { WorkerPool } from "../src/workers/pool.ts";
import { cliEnv, ok, scratch, stoppingChunker } from "./harness.ts";

const stores: [string, (dir: string) => PageBaseStore][] = [
  ["MemoryPageBaseStore", () => new MemoryPageBaseStore()],
  ["FsPageBaseStore", (dir) => new FsPageBaseStore(join(dir, "pages"))],
];

for (const [name, make] of stores) {
  describe(`${name} conformance`, () => {
    test("an image starts empty, grows with writes, and reads back what was written", async (t) => {
      const store = make(await scratch(t, "bases"));
      const a = await store.open("chat/msgstore.db");
      assert.equal((await a.read(0, 4096)).length, 0);
      await a.write(
        8192,
        Uint8Array.from({ length: 4096 }, (_, i) => i & 0xff),
      );
      const head = await a.read(0, 8192);
      assert.deepEqual(head, new Uint8Array(8192), "a gap reads as zeros");
      const page = await a.read(8192, 4096);
      assert.equal(page[255], 255);
      assert.equal((await a.read(10000, 4096)).length, 12288 - 10000, "short at the end");
      assert.equal((await a.read(20000, 10)).length, 0, "nothing past the end");
      await a.close();
    });

    test("images are kept per path and survive reopening", async (t) => {
      const store = make(await scratch(t, "bases"));
      const a = await store.open("one.db");
      await a.write(0, Uint8Array.of(1, 2, 3));
      await a.close();
      const b = await store.open("two.db");
      assert.equal((await b.read(0, 3)).length, 0);
      await b.close();
      const again = await store.open("one.db");
      assert.deepEqual(await again.read(0, 3), Uint8Array.of(1, 2, 3));
      await again.write(1, Uint8Array.of(9));
      assert.deepEqual(await again.read(0, 3), Uint8Array.of(1, 9, 3));
      await again.close();
    });

    test("a delta memo: none at first, then what was last written, per path", async (t) => {
      const store = make(await scratch(t, "bases"));
      assert.equal(await store.readMemo?.("one.db"), undefined);
      await store.writeMemo?.("one.db", Uint8Array.of(1, 2, 3));
      await store.writeMemo?.("one.db", Uint8Array.of(4, 5));
      assert.deepEqual(await store.readMemo?.("one.db"), Uint8Array.of(4, 5));
      assert.equal(await store.readMemo?.("two.db"), undefined);
    });
  });
}

test("FsPageBaseStore: a cache folder that cannot be made gives an empty image, not an error", async (t) => {
  const dir = await scratch(t, "bases");
  await writeFile(join(dir, "file"), "not a folder");
  const image = await new FsPageBaseStore(join(dir, "file", "pages")).open("chat.db");
  await image.write(0, Uint8Array.of(1, 2, 3));
  assert.equal((await image.read(0, 3)).length, 0);
  await image.close();
  const warnings: string[] = [];
  const store = new FsPageBaseStore(join(dir, "file", "pages"), {
    onWarning: (m) => warnings.push(m),
  });
  await store.writeMemo("chat.db", Uint8Array.of(1));
  assert.equal(await store.readMemo("chat.db"), undefined);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /page deltas off for chat\.db in this backup: cannot make /);
});

/**
 * Routes every FileHandle's datasync through `spy` (given the real call) until the test ends:
 * how the tests below see the image's background flushes.
 */
async function onDatasync(
  t: { after: (fn: () => void) => void },
  dir: string,
  spy: (real: () => Promise<void>) => Promise<void>,
): Promise<void> {
  const handle = await open(join(dir, "probe"), "w");
  const proto = Object.getPrototypeOf(handle);
  await handle.close();
  const datasync = proto.datasync;
  proto.datasync = function (this: unknown) {
    return spy(() => datasync.call(this));
  };
  t.after(() => {
    proto.datasync = datasync;
  });
}

test("FsPageBaseStore: an image written past its flush size (flushed as it goes) reads back whole, syncs and closes", async (t) => {
  const dir = await scratch(t, "bases-flush");
  let flushes = 0;
  await onDatasync(t, dir, (real) => {
    flushes++;
    return real();
  });
  const store = new FsPageBaseStore(join(dir, "pages"));
  const image = await store.open("chat.db");
  const piece = 4 << 20;
  const pieces = 20; // 80 MiB: flushes begin in the background at 32 MiB written, and again
  const fill = (k: number) => new Uint8Array(piece).fill(k + 1);
  for (let k = 0; k < pieces; k++) {
    await image.write(k * piece, fill(k));
    // Reads and writes go on while a flush runs.
    assert.equal((await image.read(k * piece + piece - 1, 1))[0], k + 1);
  }
  assert.ok(flushes >= 1, "the image was flushed before it was synced");
  assert.equal(await image.sync?.(), true);
  await image.close();
  const again = await store.open("chat.db");
  for (let k = 0; k < pieces; k++) {
    assert.deepEqual(await again.read(k * piece, piece), fill(k), `piece ${k}`);
  }
  await again.close();
});

test("FsPageBaseStore: a background flush that fails leaves the image uncertifiable (sync says false)", async (t) => {
  const dir = await scratch(t, "bases-flush-fails");
  let calls = 0;
  // The first flush fails (a write-back error, reported once), every later one succeeds.
  await onDatasync(t, dir, (real) =>
    calls++ === 0 ? Promise.reject(Object.assign(new Error("EIO"), { code: "EIO" })) : real(),
  );
  const image = await new FsPageBaseStore(join(dir, "pages")).open("chat.db");
  await image.write(0, new Uint8Array(33 << 20).fill(7)); // past the flush size: a flush begins
  assert.equal(await image.sync?.(), false);
  assert.ok(calls >= 1, "a flush was begun");
  await image.close();
});

test("FsPageBaseStore: one backup at a time uses a database's image and memo; a process's lock ends with it", async (t) => {
  const dir = join(await scratch(t, "bases-lock"), "pages");
  const first = new FsPageBaseStore(dir);
  const image = await first.open("chat.db");
  await image.write(0, Uint8Array.of(1, 2, 3));
  await first.writeMemo("chat.db", Uint8Array.of(7));
  assert.deepEqual(await first.readMemo("chat.db"), Uint8Array.of(7));

  // The folder is tagged as a cache, for backup tools that leave such folders out.
  assert.match(
    await readFileBytes(join(dir, "CACHEDIR.TAG"), "utf8"),
    /^Signature: 8a477f597d28d172789f06886806bc55/,
  );

  // A second backup meanwhile (another store; here or in another process) gets neither, with
  // no warning (the other backup uses them), and letting go of what it does not hold lets go of
  // nothing.
  const warnings: string[] = [];
  const second = new FsPageBaseStore(dir, { onWarning: (m) => warnings.push(m) });
  assert.equal(await second.readMemo("chat.db"), undefined);
  assert.deepEqual(warnings, []);
  second.release("chat.db");
  assert.equal(await new FsPageBaseStore(dir).readMemo("chat.db"), undefined);
  const none = await second.open("chat.db");
  await none.write(0, Uint8Array.of(9));
  assert.equal((await none.read(0, 3)).length, 0);
  assert.equal(await none.sync?.(), undefined);
  await none.close();
  assert.deepEqual(await image.read(0, 3), Uint8Array.of(1, 2, 3), "its write went nowhere");

  // Once the first is done, the next backup has them.
  await image.close();
  assert.deepEqual(await second.readMemo("chat.db"), Uint8Array.of(7));
  second.release("chat.db");

  // A backup in another process holds the lock until that process ends, however it ends: no
  // lock outlives its process, so none is ever taken over (a killed process leaves none).
  const child = spawn(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `import { FsPageBaseStore } from ${JSON.stringify(new URL("../src/page-bases.ts", import.meta.url).href)};
       const memo = await new FsPageBaseStore(${JSON.stringify(dir)}).readMemo("chat.db");
       console.log(memo ? "held" : "refused");
       setInterval(() => {}, 1000);`,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  t.after(() => child.kill("SIGKILL"));
  const [said] = await once(child.stdout!, "data");
  assert.equal(String(said).trim(), "held");
  const third = new FsPageBaseStore(dir);
  assert.equal(await third.readMemo("chat.db"), undefined, "held by the other process");
  child.kill("SIGKILL");
  await once(child, "exit");
  assert.deepEqual(await third.readMemo("chat.db"), Uint8Array.of(7), "let go when it was killed");
  third.release("chat.db");

  // A lock that cannot be taken for another reason (here a lock file that is not SQLite's) is
  // said once per database and backup: that backup stores the changed pages whole.
  const lockDb = (await readdir(dir)).find((f) => f.endsWith(".lock.db"))!;
  await writeFile(join(dir, lockDb), "not a database\n");
  const notes: string[] = [];
  const broken = new FsPageBaseStore(dir, { onWarning: (m) => notes.push(m) });
  assert.equal(await broken.readMemo("chat.db"), undefined);
  assert.equal(await broken.readMemo("chat.db"), undefined);
  assert.equal(notes.length, 1, notes.join("\n"));
  assert.match(notes[0], /page deltas off for chat\.db .*cannot lock .*not a database/);
  await rm(join(dir, lockDb));

  // The lock file of earlier builds (a process ID in `<name>.lock`) is deleted, never read.
  const old = (await readdir(dir)).find((f) => f.endsWith(".memo"))!.replace(/memo$/, "lock");
  await writeFile(join(dir, old), "12345\n");
  const fourth = new FsPageBaseStore(dir);
  assert.deepEqual(await fourth.readMemo("chat.db"), Uint8Array.of(7));
  assert.ok(!(await readdir(dir)).includes(old));
  fourth.release("chat.db");
});

/** MemoryStorage whose saves of packs fail while `failPacks` is set. */
class FailingStorage extends MemoryStorage {
  failPacks = false;
  override async save(kind: ObjectKind, name: string, data: Uint8Array, options?: SaveOptions) {
    if (kind === "data" && this.failPacks) throw new StorageError("the disk is full (test)");
    return super.save(kind, name, data, options);
  }
}

test("a backup that stops after writing to a certified image leaves no certificate the next one trusts", async (t) => {
  const dir = await scratch(t, "certificate");
  const key = new Uint8Array(32).fill(3);
  const storage = new FailingStorage();
  const repo = await Repository.init(storage, nodePrimitives, key);
  const pool = new WorkerPool(key, { threads: 2 });
  t.after(() => pool.close());
  const workers = new WorkerChunker(pool, nodePrimitives, repo.keys);
  // Stops the backup after `batches` batches of the database, as a kill would.
  let batches = Number.POSITIVE_INFINITY;
  const chunker = stoppingChunker(workers, () => batches, "killed (test)");
  const pageBases = new FsPageBaseStore(join(dir, "pages"));
  const path = join(dir, "chat.db");
  const run = async () =>
    backup(repo, await fsSource([path]), { host: "h", paths: [path], chunker, pageBases });
  const memo = async () => {
    const bytes = await pageBases.readMemo("chat.db");
    return bytes && decodeDeltaMemo(repo, bytes);
  };
  const certified = async () => (await memo())?.image.some((b) => b !== 0) === true;
  const holds = async (snapshotTree: string, bytes: Uint8Array) => {
    const tree = await repo.loadTree(snapshotTree);
    const chunks: Buffer[] = [];
    for await (const c of readFile(repo, tree.nodes[0] as FileNode)) chunks.push(Buffer.from(c));
    return Buffer.concat(chunks).equals(bytes);
  };

  // A row per page, 24 MB in all: read in stripes by the workers.
  const rows = 6000;
  const sql = new DatabaseSync(path);
  const rewrite = (seed: number) => {
    sql.exec("BEGIN");
    const update = sql.prepare("UPDATE t SET b = ? WHERE id = ?");
    for (let i = 0; i < rows; i++) update.run(randomBytes(3000, seed + i), i + 1);
    sql.exec("COMMIT");
  };
  sql.exec("PRAGMA page_size = 4096; CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)");
  sql.exec("BEGIN");
  const insert = sql.prepare("INSERT INTO t (b) VALUES (?)");
  for (let i = 0; i < rows; i++) insert.run(randomBytes(3000, i));
  sql.exec("COMMIT");
  await run();
  assert.ok(await certified(), "the first backup certifies the image");

  // Every row rewritten in place; the backup is killed after two batches of pages, which went
  // to the image. Trusting the image next time would list the parent's pages for them.
  rewrite(10_000);
  batches = 2;
  await assert.rejects(run(), /killed/);
  assert.equal(await memo(), undefined, "the certificate went with the first write to the image");
  batches = Number.POSITIVE_INFINITY;
  const second = await run();
  assert.ok(await holds(second.snapshot.tree, await readFileBytes(path)), "the database as it is");
  assert.ok(await certified(), "and the image certified again");

  // Rewritten again, and the backup fails once the database is read (its packs cannot be
  // stored): its memo certifies a version no snapshot has, which the next backup ignores.
  rewrite(20_000);
  storage.failPacks = true;
  await assert.rejects(run(), StorageError);
  assert.ok(await certified());
  storage.failPacks = false;
  const third = await run();
  assert.ok(await holds(third.snapshot.tree, await readFileBytes(path)));
  sql.close();
});

interface BackupJson {
  readonly summary: { readonly addedBytes: number };
}

test("the CLI keeps page bases in the cache, and a day of chat costs a fraction of the pages", async (t) => {
  const dir = await scratch(t, "pagebases");
  const chat = join(dir, "chat");
  writeDemoData(chat, { messages: 20_000, mediaMb: 0 });
  const db = join(chat, "chat.db");
  // The same two database states for both repositories: as generated, and a day later.
  const day0 = join(dir, "day0.db");
  const day1 = join(dir, "day1.db");
  await copyFile(db, day0);
  simulateDay(chat, { newMessages: 200, newMedia: 0, seed: 9 });
  await copyFile(db, day1);
  const added: Record<string, number> = {};
  for (const deltas of ["1", "0"]) {
    const home = join(dir, `home${deltas}`);
    const repo = join(dir, `repo${deltas}`);
    const env = cliEnv(home, { LOCKET_PAGE_DELTAS: deltas });
    const init = await ok<{ repositoryId: string }>(["init", "--repo", repo], env);
    await copyFile(day0, db);
    await ok(["backup", db], env);
    const pages = join(home, "cache", "pages", init.repositoryId);
    if (deltas === "1") {
      const image = (await readdir(pages)).find((f) => f.endsWith(".image"))!;
      const s = await stat(join(pages, image));
      assert.equal(s.size, (await stat(db)).size, "the image holds every page");
      assert.equal(s.mode & 0o777, 0o600);
      // The lock is let go: another connection can take it.
      const lock = (await readdir(pages)).find((f) => f.endsWith(".lock.db"))!;
      const held = new DatabaseSync(join(pages, lock), { timeout: 0 });
      held.exec("BEGIN EXCLUSIVE");
      held.close();
    } else {
      await assert.rejects(stat(pages), { code: "ENOENT" });
    }
    await copyFile(day1, db);
    added[deltas] = (await ok<BackupJson>(["backup", db], env)).summary.addedBytes;
    if (deltas === "1") {
      // Beside the image, the delta memo of the pages stored as deltas (100 bytes each).
      const memo = (await readdir(pages)).find((f) => f.endsWith(".memo"))!;
      const m = await stat(join(pages, memo));
      assert.equal(m.mode & 0o777, 0o600);
      assert.ok(m.size > 100 * 10, `${m.size} bytes`);
    }
    const target = join(dir, `restored${deltas}`);
    await ok(["restore", "latest", "--target", target], env);
    assert.deepEqual(await diffTrees(chat, target), [], "restored byte for byte");
    await ok(["check", "--read-data"], env);
  }
  assert.ok(added["1"] * 2 < added["0"], `with deltas ${added["1"]} B, without ${added["0"]} B`);
});
