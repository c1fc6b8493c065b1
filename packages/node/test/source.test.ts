/**
 * The file-system source under change: files that vanish between the listing and the read must
 * be left out with a note, never crash the backup, and never be re-created in the user's folder.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import {
  chmod,
  mkdir,
  readdir,
  rename,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import { dirname, join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import {
  backup,
  MemoryStorage,
  Repository,
  type SourceDir,
  type SourceEntry,
  type SourceFile,
  UsageError,
  VanishedError,
} from "@locket/core";
import { restoreToMemory } from "../../core/test/helpers.ts";
import { BUSY, takeLock } from "../src/file-lock.ts";
import { nodePrimitives } from "../src/primitives.ts";
import {
  fsSource,
  measure,
  readSmallFile,
  removeStaleCopies,
  type SkipNote,
  SMALL_FILE_BYTES,
} from "../src/source.ts";
import { scratch } from "./harness.ts";

const LOCK_MODULE = fileURLToPath(new URL("../src/file-lock.ts", import.meta.url));

const KEY = new Uint8Array(32).fill(3);

/** The repository as a second device sees it: opened afresh, index loaded. */
async function reopen(storage: MemoryStorage): Promise<Repository> {
  const repo = await Repository.open(storage, nodePrimitives, KEY);
  await repo.loadIndex();
  return repo;
}

/** Lists every folder now (as the walk does before reading), so later deletions race the read. */
async function listed(entries: readonly SourceEntry[]): Promise<SourceEntry[]> {
  return Promise.all(
    entries.map(async (e): Promise<SourceEntry> => {
      if (e.type === "file") return e;
      const children = await listed(await e.children());
      return { ...e, children: async () => children } satisfies SourceDir;
    }),
  );
}

test("files deleted after the listing are left out with a note; the rest is backed up", async (t) => {
  const dir = await scratch(t, "vanish");
  const chat = join(dir, "chat");
  await mkdir(join(chat, "Media"), { recursive: true });
  await writeFile(join(chat, "Media", "keep.jpg"), "photo");
  await writeFile(join(chat, "Media", "tmp.jpg"), "temporary");
  const dbPath = join(chat, "gone.db");
  const db = new DatabaseSync(dbPath);
  db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
  db.close();

  const walkNotes: SkipNote[] = [];
  const roots = await listed(await fsSource([chat], {}, (n) => walkNotes.push(n)));
  await rm(join(chat, "Media", "tmp.jpg"));
  await rm(dbPath);

  const storage = new MemoryStorage();
  const repo = await Repository.init(storage, nodePrimitives, KEY);
  const skipped: string[] = [];
  const result = await backup(repo, roots, {
    host: "h",
    paths: [chat],
    onSkip: (path, reason) => skipped.push(`${path}: ${reason}`),
  });
  assert.deepEqual(walkNotes, []);
  assert.deepEqual(skipped.sort(), [
    "chat/Media/tmp.jpg: vanished before it could be read",
    "chat/gone.db: vanished before it could be read",
  ]);
  assert.equal(result.snapshot.summary.files, 1);
  assert.deepEqual(await restoreToMemory(await reopen(storage), result.snapshot.tree), {
    chat: { Media: { "keep.jpg": new TextEncoder().encode("photo") } },
  });
  assert.equal(existsSync(dbPath), false, "the deleted database was not re-created");
});

test("a source error other than VanishedError still aborts the backup", async () => {
  const storage = new MemoryStorage();
  const repo = await Repository.init(storage, nodePrimitives, KEY);
  const broken: SourceEntry = {
    type: "file",
    name: "bad.bin",
    mode: 0o644,
    mtimeMs: 0,
    size: 4,
    // biome-ignore lint/correctness/useYield: fails before its first block, as a read error does
    async *open() {
      throw Object.assign(new Error("EIO: i/o error, read"), { code: "EIO" });
    },
  };
  await assert.rejects(backup(repo, [broken], { host: "h", paths: ["bad.bin"] }), /EIO/);
  assert.equal((await (await reopen(storage)).snapshots()).length, 0, "no snapshot was written");
});

test("a file that vanishes mid-read is left out, even after some blocks were stored", async () => {
  const storage = new MemoryStorage();
  const repo = await Repository.init(storage, nodePrimitives, KEY);
  const half: SourceEntry = {
    type: "file",
    name: "half.bin",
    mode: 0o644,
    mtimeMs: 0,
    size: 8 << 20,
    async *open() {
      yield new Uint8Array(4 << 20).fill(1);
      throw new VanishedError("half.bin");
    },
  };
  const skipped: string[] = [];
  const result = await backup(repo, [half], {
    host: "h",
    paths: ["half.bin"],
    onSkip: (path) => skipped.push(path),
  });
  assert.deepEqual(skipped, ["half.bin"]);
  assert.equal(result.snapshot.summary.files, 0);
  assert.equal(result.snapshot.summary.bytes, 0);
  assert.deepEqual(await restoreToMemory(await reopen(storage), result.snapshot.tree), {});
});

test("fsSource notes a root's child that is gone before it is looked at; measure ignores it", async (t) => {
  const dir = await scratch(t, "vanish-walk");
  await writeFile(join(dir, "a.txt"), "a");
  const notes: SkipNote[] = [];
  const [root] = await fsSource([dir], {}, (n) => notes.push(n));
  assert.equal(root.type, "dir");
  // The folder itself goes away after fsSource looked at it: its listing is empty, with a note.
  await rm(dir, { recursive: true });
  assert.deepEqual(await (root as SourceDir).children(), []);
  assert.equal(notes.length, 1);
  assert.match(notes[0].reason, /vanished/);
  assert.deepEqual(await measure([dir]), { files: 0, bytes: 0 });
});

/** `dir`/chat.db in WAL mode with one row of `bytes` committed and still in the -wal, left open. */
function liveWalDatabase(dir: string, bytes: number): { dbPath: string; db: DatabaseSync } {
  const dbPath = join(dir, "chat.db");
  const db = new DatabaseSync(dbPath);
  db.exec("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE m(x)");
  db.exec(`INSERT INTO m VALUES (randomblob(${bytes}))`);
  return { dbPath, db };
}

test("localFile: a database with a live WAL is a private copy until closed; a plain file is itself", async (t) => {
  const dir = await scratch(t, "local-file");
  const { dbPath, db } = liveWalDatabase(dir, 100_000);
  await writeFile(join(dir, "note.txt"), "hello");
  try {
    const [root] = await fsSource([dir]);
    assert.equal(root.type, "dir");
    const kids = await (root as SourceDir).children();
    const file = (name: string) => kids.find((k) => k.name === name) as SourceFile;

    const copy = await file("chat.db").localFile!();
    assert.notEqual(copy.path, dbPath, "the WAL's pages are in a copy");
    // While in use, its folder's lock is held: another backup tells it from a killed one's.
    assert.equal(takeLock(join(dirname(copy.path), "in-use.lock")), BUSY);
    assert.ok(existsSync(copy.path));
    const check = new DatabaseSync(copy.path, { readOnly: true });
    assert.equal((check.prepare("SELECT count(*) AS n FROM m").get() as { n: number }).n, 1);
    check.close();
    await copy.close();
    assert.ok(!existsSync(copy.path), "close removes the copy");

    const plain = await file("note.txt").localFile!();
    assert.equal(plain.path, join(dir, "note.txt"));
    await plain.close();
  } finally {
    db.close();
  }
});

test("localFile: a temporary folder any user may write without the sticky bit is not used for the copy", async (t) => {
  const dir = await scratch(t, "unsafe-tmp");
  const { dbPath, db } = liveWalDatabase(dir, 10_000);
  const tmp = join(dir, "tmp");
  const cache = join(dir, "cache");
  await mkdir(tmp);
  const saved = { TMPDIR: process.env.TMPDIR, XDG_CACHE_HOME: process.env.XDG_CACHE_HOME };
  process.env.TMPDIR = tmp;
  process.env.XDG_CACHE_HOME = cache;
  try {
    const [root] = await fsSource([dbPath]);
    const copyOf = () => (root as SourceFile).localFile!();
    // With the sticky bit (as /tmp is), or private: the copy is made there.
    for (const mode of [0o1777, 0o700]) {
      await chmod(tmp, mode);
      const copy = await copyOf();
      assert.equal(dirname(dirname(copy.path)), tmp);
      await copy.close();
    }
    // Writable by all without the sticky bit: in Locket's own owner-only folder instead.
    await chmod(tmp, 0o777);
    const copy = await copyOf();
    const own = join(cache, "locket", "tmp");
    assert.equal(dirname(dirname(copy.path)), own);
    assert.equal((await stat(own)).mode & 0o777, 0o700);
    assert.deepEqual(await readdir(tmp), [], "nothing made in the unsafe folder");
    await copy.close();
    // And when that folder cannot be made: a usage error naming both, nothing made.
    await rm(cache, { recursive: true });
    await writeFile(cache, "a file where the cache folder would be");
    await assert.rejects(copyOf(), (err) => {
      assert.ok(err instanceof UsageError, String(err));
      assert.match(err.message, /without the sticky bit/);
      assert.ok(err.message.includes(tmp) && err.message.includes(own), err.message);
      return true;
    });
    assert.deepEqual(await readdir(tmp), []);
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    db.close();
  }
});

test("fsSource lists a folder in name order, however many entries it looks at at once, and drops only a database's companions", async (t) => {
  const dir = await scratch(t, "walk-order");
  const names: string[] = [];
  for (let i = 0; i < 60; i++) names.push(`f${String((i * 37) % 60).padStart(2, "0")}.jpg`);
  for (const n of names) await writeFile(join(dir, n), n);
  // A text file and a file named like its journal: both are plain files, both kept.
  await writeFile(join(dir, "notes"), "plain text");
  await writeFile(join(dir, "notes-journal"), "not a journal");
  // A live WAL database: its -wal and -shm are folded into its copy, never listed.
  const db = new DatabaseSync(join(dir, "chat.db"));
  db.exec("PRAGMA journal_mode=WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1)");
  try {
    assert.ok(existsSync(join(dir, "chat.db-wal")));
    const [root] = await fsSource([dir]);
    const listedNames = (await (root as SourceDir).children()).map((e) => e.name);
    const expected = [...names, "notes", "notes-journal", "chat.db"].sort();
    assert.deepEqual(listedNames, expected);
  } finally {
    db.close();
  }
});

test("fsSource leaves out Locket's own cache wherever it is met, by any path to it", async (t) => {
  const dir = await scratch(t, "skip-cache");
  const cache = join(dir, "home", ".cache", "locket");
  await mkdir(join(cache, "pages", "repo"), { recursive: true });
  await writeFile(join(cache, "pages", "repo", "x.image"), "SQLite format 3\0");
  await writeFile(join(dir, "home", "notes.txt"), "kept");
  await symlink(cache, join(dir, "cache-link"));
  const notes: SkipNote[] = [];
  // Named through a symbolic link: the same folder all the same.
  const [root] = await fsSource([join(dir, "home")], {}, (n) => notes.push(n), [
    join(dir, "cache-link"),
  ]);
  const names = async (d: SourceEntry): Promise<string[]> =>
    d.type === "file"
      ? [d.name]
      : (await Promise.all((await d.children()).map(names))).flat().concat(d.name);
  assert.deepEqual((await names(root)).sort(), [".cache", "home", "notes.txt"]);
  assert.deepEqual(notes, [{ path: ".cache/locket", reason: "Locket's own cache" }]);
  // The progress estimate leaves it out too.
  assert.deepEqual(await measure([join(dir, "home")], [join(dir, "cache-link")]), {
    files: 1,
    bytes: 4,
  });
  // A cache that does not exist yet changes nothing.
  const [again] = await fsSource([join(dir, "home")], {}, () => {}, [join(dir, "nowhere")]);
  assert.ok((await names(again)).includes("x.image"));
});

test("removeStaleCopies removes the database copies of killed backups, and only those", async (t) => {
  const root = await scratch(t, "stale-copies");
  const hourAgo = new Date(Date.now() - 3_600_000);
  const make = async (name: string, mtime: Date) => {
    const dir = join(root, name);
    await mkdir(dir);
    await writeFile(join(dir, "copy.db"), "a copy");
    await utimes(dir, mtime, mtime);
    return dir;
  };
  // Locks taken by this process are let go of here: the backups that made them are "gone".
  const gone = await make("locket-sqlite-gone00", hourAgo);
  const goneLock = takeLock(join(gone, "in-use.lock"));
  if (typeof goneLock === "object") goneLock.close();
  await utimes(gone, hourAgo, hourAgo);
  const held = await make("locket-sqlite-held00", hourAgo);
  const heldLock = takeLock(join(held, "in-use.lock"));
  assert.equal(typeof heldLock, "object", "a lock this test holds");
  await utimes(held, hourAgo, hourAgo);
  const young = await make("locket-sqlite-young0", new Date());
  const youngLock = takeLock(join(young, "in-use.lock"));
  if (typeof youngLock === "object") youngLock.close();
  // Killed before taking its lock: no lock file.
  const lockless = await make("locket-sqlite-nolock", hourAgo);
  const locklessYoung = await make("locket-sqlite-nolck2", new Date());
  // Marked unlocked by a backup that could not take a lock: left for a day.
  const oldUnlocked = await make("locket-sqlite-old000", new Date(Date.now() - 2 * 86_400_000));
  await writeFile(join(oldUnlocked, "unlocked"), "");
  await utimes(
    oldUnlocked,
    new Date(Date.now() - 2 * 86_400_000),
    new Date(Date.now() - 2 * 86_400_000),
  );
  const recentUnlocked = await make("locket-sqlite-recent", hourAgo);
  await writeFile(join(recentUnlocked, "unlocked"), "");
  await utimes(recentUnlocked, hourAgo, hourAgo);
  const other = await make("other-tool-tmp", new Date(Date.now() - 2 * 86_400_000));
  const notOurs = await make("locket-sqlite-not-mkdtemp", new Date(Date.now() - 2 * 86_400_000));
  await writeFile(join(root, "locket-sqlite-file00"), "not a folder");
  try {
    assert.equal(await removeStaleCopies(root), 3);
    assert.deepEqual(
      [gone, held, young, lockless, locklessYoung, oldUnlocked, recentUnlocked, other, notOurs].map(
        (d) => existsSync(d),
      ),
      [false, true, true, false, true, false, true, true, true],
    );
    assert.ok(existsSync(join(root, "locket-sqlite-file00")));
    // Asking closed a second connection to the held lock's file: another process still finds
    // it held (SQLite keeps the descriptor while this process's lock lives).
    const probe = spawnSync(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `import { takeLock, BUSY } from ${JSON.stringify(pathToFileURL(LOCK_MODULE).href)};
         process.stdout.write(String(takeLock(process.argv[1]) === BUSY));`,
        join(held, "in-use.lock"),
      ],
      { encoding: "utf8" },
    );
    assert.equal(probe.stdout, "true", probe.stderr);
  } finally {
    if (typeof heldLock === "object") heldLock.close();
  }
  assert.equal(await removeStaleCopies(join(root, "missing")), 0, "a root that is not there");
});

/** Every block `readSmallFile` gives for `path`, copied; `after(k)` runs once block k is taken. */
async function smallBlocks(path: string, after?: (k: number) => Promise<void>): Promise<Buffer[]> {
  const blocks: Buffer[] = [];
  for await (const block of readSmallFile(path)) {
    blocks.push(Buffer.from(block));
    await after?.(blocks.length - 1);
  }
  return blocks;
}

test("readSmallFile: one descriptor for the whole file, whatever happens to its path", async (t) => {
  const dir = await scratch(t, "small-file");
  const path = join(dir, "voice.opus");
  const pattern = (n: number, byte: number) => Buffer.alloc(n, byte);

  await writeFile(path, "");
  assert.deepEqual(await smallBlocks(path), [], "an empty file gives no block");

  await writeFile(path, pattern(1000, 1));
  assert.deepEqual(await smallBlocks(path), [pattern(1000, 1)]);

  // Exactly one block: the end is found through the same descriptor, so a file deleted once its
  // block is read was still read whole (a reopen by path would call it vanished).
  await writeFile(path, pattern(SMALL_FILE_BYTES, 2));
  const exact = await smallBlocks(path, async (k) => {
    if (k === 0) await rm(path);
  });
  assert.equal(Buffer.concat(exact).length, SMALL_FILE_BYTES);

  // Listed small, grown since, and another file renamed over its path after the first block:
  // the rest still comes from the file being read, never a mix of two.
  await writeFile(path, pattern(3 * SMALL_FILE_BYTES + 5, 3));
  await writeFile(join(dir, "other"), pattern(3 * SMALL_FILE_BYTES + 5, 4));
  const grown = await smallBlocks(path, async (k) => {
    if (k === 0) await rename(join(dir, "other"), path);
  });
  assert.deepEqual(
    grown.map((b) => b.length),
    [SMALL_FILE_BYTES, SMALL_FILE_BYTES, SMALL_FILE_BYTES, 5],
  );
  assert.ok(Buffer.concat(grown).equals(pattern(3 * SMALL_FILE_BYTES + 5, 3)), "no torn content");

  await assert.rejects(
    smallBlocks(join(dir, "gone.opus")),
    (err: unknown) => err instanceof VanishedError && /gone\.opus/.test((err as Error).message),
  );
});

test("fsSource refuses a path inside another, through symbolic links too; paths side by side are fine", async (t) => {
  const dir = await scratch(t, "nested-roots");
  const chat = join(dir, "chat");
  await mkdir(join(chat, "Media"), { recursive: true });
  await writeFile(join(chat, "chat.db"), "db");
  await writeFile(join(dir, "notes.txt"), "notes");
  await symlink(chat, join(dir, "link"));
  const nested = (err: unknown) => err instanceof UsageError && /is inside/.test(String(err));
  await assert.rejects(fsSource([chat, join(chat, "chat.db")]), nested);
  await assert.rejects(fsSource([join(chat, "Media"), chat]), nested);
  await assert.rejects(fsSource([chat, join(dir, "link", "chat.db")]), nested);
  await assert.rejects(fsSource([chat, join(dir, "missing")]), /no such file or folder/);
  await mkdir(join(dir, "chatter"));
  const sideBySide = await fsSource([chat, join(dir, "chatter"), join(dir, "notes.txt")]);
  assert.deepEqual(
    sideBySide.map((e) => e.name),
    ["chat", "chatter", "notes.txt"],
  );
});
