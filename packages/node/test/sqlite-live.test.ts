/**
 * Backing up a SQLite database while another process writes to it, through the real `locket`
 * CLI: every snapshot must restore to a database that passes integrity_check and holds a
 * transaction-consistent state from the time of the backup.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { type TestContext, test } from "node:test";
import { backup, MemoryStorage, Repository, type SourceFile } from "@locket/core";
import { writeDemoData } from "../src/demo-data.ts";
import { nodePrimitives } from "../src/primitives.ts";
import { fsSource } from "../src/source.ts";
import { WorkerChunker } from "../src/workers/chunker.ts";
import { WorkerPool } from "../src/workers/pool.ts";
import { cliEnv, ok, scratch, stoppingChunker } from "./harness.ts";

const WRITER_MAX_MS = 30_000;
const BACKUPS = 3;

// ---------------------------------------------------------------------------------------------
// Helpers

async function sha256(path: string): Promise<string> {
  return createHash("sha256")
    .update(await readFile(path))
    .digest("hex");
}

/** Whether the database header says WAL (file format read/write versions 2). */
async function isWalHeader(path: string): Promise<boolean> {
  const header = (await readFile(path)).subarray(0, 20);
  return header[18] === 2 && header[19] === 2;
}

/** Rows the writer has committed so far, read through a short-lived read-only connection. */
function committedRows(dbPath: string): number {
  const db = new DatabaseSync(dbPath, { readOnly: true, timeout: 20_000 });
  try {
    return Number((db.prepare("SELECT count(*) AS n FROM live_log").get() as { n: number }).n);
  } finally {
    db.close();
  }
}

/**
 * The writer: small transactions, each inserting a message and a log row, bumping a counter and
 * updating an existing message, so every committed state satisfies
 *   messages = base + counter.n  and  count(live_log) = counter.n.
 * Runs until the stop file exists (at most WRITER_MAX_MS).
 */
const WRITER = `
import { existsSync } from "node:fs";
import { DatabaseSync } from "node:sqlite";

const [dbPath, stopFile, journalMode, maxMs] = process.argv.slice(2);
const db = new DatabaseSync(dbPath, { timeout: 20000 });
const mode = db.prepare("PRAGMA journal_mode = " + journalMode).get().journal_mode;
if (mode !== journalMode.toLowerCase()) throw new Error("journal_mode is " + mode);
db.exec("PRAGMA synchronous = OFF");
db.exec(\`CREATE TABLE IF NOT EXISTS live_log (
  id INTEGER PRIMARY KEY, message_id INTEGER NOT NULL, ts INTEGER NOT NULL, note TEXT NOT NULL)\`);
db.exec("CREATE TABLE IF NOT EXISTS live_counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)");
db.exec("INSERT OR IGNORE INTO live_counter VALUES (1, 0)");
const chats = db.prepare("SELECT id FROM chats ORDER BY id").all().map((r) => r.id);
const maxId = db.prepare("SELECT max(id) AS m FROM messages").get().m;
const insertMessage = db.prepare(
  "INSERT INTO messages (chat_id, key_id, from_me, timestamp, status, text) VALUES (?, ?, 1, ?, 4, ?)",
);
const insertLog = db.prepare("INSERT INTO live_log (message_id, ts, note) VALUES (?, ?, ?)");
const bump = db.prepare("UPDATE live_counter SET n = n + 1 WHERE id = 1");
const touch = db.prepare("UPDATE messages SET status = 13, starred = 1 - starred WHERE id = ?");
const pause = new Int32Array(new SharedArrayBuffer(4));
const words = ["ok", "see you", "on my way", "lunch?", "haha", "sounds good", "call me", "thanks"];
const deadline = Date.now() + Number(maxMs);
let n = 0;
let seed = 12345;
const rand = (k) => {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed % k;
};
while (!existsSync(stopFile) && Date.now() < deadline) {
  db.exec("BEGIN IMMEDIATE");
  const text = Array.from({ length: 8 + rand(40) }, () => words[rand(words.length)]).join(" ");
  const now = Date.now();
  const { lastInsertRowid } = insertMessage.run(chats[rand(chats.length)], "live-" + n, now, text);
  insertLog.run(lastInsertRowid, now, text);
  bump.run();
  touch.run(1 + rand(maxId));
  db.exec("COMMIT");
  n++;
  if (n === 1) process.stdout.write("ready\\n");
  Atomics.wait(pause, 0, 0, 1);
}
db.close();
process.stdout.write("done " + n + "\\n");
`;

interface Writer {
  readonly child: ChildProcess;
  /** Resolves with the writer's exit code once it has stopped. */
  readonly exited: Promise<number | null>;
  stop(): Promise<number | null>;
  output(): string;
}

async function startWriter(dir: string, dbPath: string, journalMode: string): Promise<Writer> {
  const script = join(dir, "writer.mjs");
  const stopFile = join(dir, "stop");
  await writeFile(script, WRITER);
  const child = spawn(
    process.execPath,
    [script, dbPath, stopFile, journalMode, String(WRITER_MAX_MS)],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  let err = "";
  child.stdout?.setEncoding("utf8").on("data", (d: string) => {
    out += d;
  });
  child.stderr?.setEncoding("utf8").on("data", (d: string) => {
    err += d;
  });
  const exited = new Promise<number | null>((resolve) =>
    child.on("close", (code) => resolve(code)),
  );
  const ready = new Promise<void>((resolve, reject) => {
    const onData = () => {
      if (out.includes("ready\n")) resolve();
    };
    child.stdout?.on("data", onData);
    exited.then((code) => reject(new Error(`writer exited (${code}) before ready: ${err}`)));
  });
  const killTimer = setTimeout(() => child.kill("SIGKILL"), WRITER_MAX_MS + 10_000);
  exited.finally(() => clearTimeout(killTimer));
  await ready;
  return {
    child,
    exited,
    async stop() {
      await writeFile(stopFile, "");
      return exited;
    },
    output: () => `${out}${err}`,
  };
}

interface TakenBackup {
  readonly snapshot: string;
  /** Rows committed before the backup started and after it ended. */
  readonly before: number;
  readonly after: number;
}

/**
 * The live scenario: a demo database, a writer in `journalMode`, BACKUPS backups of the folder
 * holding the database while it writes, then a restore and a check of every snapshot.
 */
async function liveBackups(t: TestContext, journalMode: "WAL" | "DELETE"): Promise<void> {
  const dir = await scratch(t, journalMode.toLowerCase());
  const live = join(dir, "live");
  const demo = writeDemoData(live, { messages: 3000, mediaMb: 0 });
  await rm(demo.mediaDir, { recursive: true });
  const dbPath = demo.dbPath;
  const env = cliEnv(join(dir, "home"));
  await ok(["init", "--repo", join(dir, "repo")], env);

  const writer = await startWriter(dir, dbPath, journalMode);
  const taken: TakenBackup[] = [];
  try {
    for (let i = 0; i < BACKUPS; i++) {
      // Let the writer commit a few more transactions (and, in WAL mode, grow the WAL).
      await new Promise((r) => setTimeout(r, 150));
      const before = committedRows(dbPath);
      const companions = (await readdir(live)).filter((n) => n !== "chat.db");
      const b = await ok<{ snapshot: string; skipped: unknown[] }>(["backup", live], env);
      const after = committedRows(dbPath);
      taken.push({ snapshot: b.snapshot, before, after });
      t.diagnostic(
        `backup ${i + 1}: ${before}..${after} rows committed; beside the db: ${companions.join(", ") || "nothing"}`,
      );
      const listing = await ok<{ entries: { path: string; type: string }[] }>(
        ["ls", b.snapshot],
        env,
      );
      assert.deepEqual(
        listing.entries.map((e) => e.path),
        ["live", "live/chat.db"],
        "the database's -wal/-shm/-journal companions are not stored beside it",
      );
    }
  } finally {
    const code = await writer.stop();
    assert.equal(code, 0, `the writer failed:\n${writer.output()}`);
  }
  const total = Number(/done (\d+)/.exec(writer.output())?.[1]);
  t.diagnostic(`writer committed ${total} transactions in all`);
  assert.ok(
    taken[taken.length - 1].after > taken[0].before,
    "the writer kept committing while the backups ran",
  );
  assert.deepEqual(await readdir(live), ["chat.db"], "nothing left beside the database");

  for (const [i, b] of taken.entries()) {
    const target = join(dir, `restored-${i + 1}`);
    await ok(["restore", b.snapshot, "--target", target], env);
    const db = new DatabaseSync(join(target, "live", "chat.db"));
    try {
      const integrity = db
        .prepare("PRAGMA integrity_check")
        .all()
        .map((r) => String(r.integrity_check))
        .join("; ");
      assert.equal(integrity, "ok", `snapshot ${i + 1} restores a healthy database`);
      const logged = Number(
        (db.prepare("SELECT count(*) AS n FROM live_log").get() as { n: number }).n,
      );
      const counter = Number(
        (db.prepare("SELECT n FROM live_counter WHERE id = 1").get() as { n: number }).n,
      );
      const messages = Number(
        (db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n,
      );
      t.diagnostic(`snapshot ${i + 1}: ${logged} rows (taken between ${b.before} and ${b.after})`);
      assert.ok(logged >= b.before, `snapshot ${i + 1} holds every row committed before it began`);
      assert.ok(logged <= b.after, `snapshot ${i + 1} holds no row committed after it ended`);
      assert.equal(counter, logged, "a transaction-consistent state (counter matches the log)");
      assert.equal(messages, demo.messages + logged, "a transaction-consistent state (messages)");
      // The restored database is usable: indexes answer queries, and it accepts writes.
      const newest = db
        .prepare(
          "SELECT m.id, c.jid FROM messages m JOIN chats c ON c.id = m.chat_id" +
            " WHERE m.chat_id = ? ORDER BY m.timestamp DESC LIMIT 5",
        )
        .all(1);
      assert.ok(newest.length > 0);
      const joined = db
        .prepare("SELECT count(*) AS n FROM live_log l JOIN messages m ON m.id = l.message_id")
        .get() as { n: number };
      assert.equal(Number(joined.n), logged, "every logged message is present");
      db.exec("INSERT INTO live_log (message_id, ts, note) VALUES (1, 0, 'after restore')");
    } finally {
      db.close();
    }
  }
}

// ---------------------------------------------------------------------------------------------

test("backups of a WAL database while another process writes to it restore consistently", async (t) => {
  await liveBackups(t, "WAL");
});

test("backups of a rollback-journal (DELETE) database while another process writes restore consistently", async (t) => {
  await liveBackups(t, "DELETE");
});

test("backing up a WAL database no other connection has open leaves no -wal/-shm behind", async (t) => {
  const dir = await scratch(t, "leftovers");
  const demo = writeDemoData(join(dir, "chat"), { messages: 3000, mediaMb: 0 });
  assert.ok(await isWalHeader(demo.dbPath), "the demo database is in WAL mode");
  const before = (await readdir(join(dir, "chat"))).sort();
  assert.deepEqual(before, ["Media", "chat.db"]);
  const env = cliEnv(join(dir, "home"));
  await ok(["init", "--repo", join(dir, "repo")], env);
  await ok(["backup", demo.dbPath], env);
  await ok(["backup", join(dir, "chat")], env);
  assert.deepEqual((await readdir(join(dir, "chat"))).sort(), before);
});

test("a quiescent database restores byte-identical (WAL and rollback-journal mode)", async (t) => {
  const dir = await scratch(t, "quiescent");
  const chat = join(dir, "chat");
  const demo = writeDemoData(chat, { messages: 3000, mediaMb: 0 });
  // A second copy in rollback-journal mode.
  const walCopy = await readFile(demo.dbPath);
  const deletePath = join(chat, "delete-mode.db");
  await writeFile(deletePath, walCopy);
  const conv = new DatabaseSync(deletePath);
  conv.exec("PRAGMA journal_mode = DELETE");
  conv.close();
  assert.ok(await isWalHeader(demo.dbPath));
  assert.ok(!(await isWalHeader(deletePath)));
  const hashes = { wal: await sha256(demo.dbPath), delete: await sha256(deletePath) };
  const sizes = { wal: (await stat(demo.dbPath)).size, delete: (await stat(deletePath)).size };

  const env = cliEnv(join(dir, "home"));
  await ok(["init", "--repo", join(dir, "repo")], env);
  await ok(["backup", demo.dbPath, deletePath], env);
  const target = join(dir, "restored");
  await ok(["restore", "latest", "--target", target], env);
  assert.equal((await stat(join(target, "chat.db"))).size, sizes.wal);
  assert.equal(await sha256(join(target, "chat.db")), hashes.wal);
  assert.equal((await stat(join(target, "delete-mode.db"))).size, sizes.delete);
  assert.equal(await sha256(join(target, "delete-mode.db")), hashes.delete);
  // The sources were not changed by being backed up.
  assert.equal(await sha256(demo.dbPath), hashes.wal);
  assert.equal(await sha256(deletePath), hashes.delete);
});

/** A rollback-journal database of ~12 MB at `path` (three of the workers' stripes); its path. */
function fillerDatabase(path: string): string {
  const db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode = DELETE; CREATE TABLE filler (b BLOB)");
  const insert = db.prepare("INSERT INTO filler (b) VALUES (?)");
  for (let i = 0; i < 400; i++) insert.run(randomBytes(30_000));
  db.close();
  return path;
}

/**
 * Whether another process can write `dbPath` now (a write that must wait for a lock fails at once).
 */
function writableByAnother(dbPath: string): boolean {
  const probe = spawnSync(
    process.execPath,
    [
      "-e",
      `const { DatabaseSync } = require("node:sqlite");
       const db = new DatabaseSync(process.argv[1], { timeout: 0 });
       try { db.exec("INSERT INTO filler (b) VALUES (x'00')"); process.stdout.write("wrote"); }
       catch (e) { process.stdout.write(String(e.message)); }`,
      dbPath,
    ],
    { encoding: "utf8" },
  );
  if (probe.stdout !== "wrote" && !/locked/.test(probe.stdout)) {
    throw new Error(`probe failed: ${probe.stdout}${probe.stderr}`);
  }
  return probe.stdout === "wrote";
}

test("a rollback-journal database read in place by the workers stays locked until it is read", async (t) => {
  // Closing any descriptor of a file drops every POSIX lock this process holds on it, SQLite's
  // read lock among them: the workers must read the database without closing a descriptor of
  // it before the read transaction ends, or a writer could change it mid-read.
  const dir = await scratch(t, "in-place-lock");
  const dbPath = fillerDatabase(join(dir, "chat.db"));
  assert.equal(writableByAnother(dbPath), true, "control: nothing holds it yet");

  const [entry] = await fsSource([dbPath]);
  assert.equal(entry.type, "file");
  const pool = new WorkerPool(new Uint8Array(32).fill(3), { threads: 2 });
  const repo = await Repository.init(new MemoryStorage(), nodePrimitives, new Uint8Array(32));
  const chunker = new WorkerChunker(pool, nodePrimitives, repo.keys);
  const writableSoon = async () => {
    for (let i = 0; i < 200 && !writableByAnother(dbPath); i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    return writableByAnother(dbPath);
  };
  // Cancelled mid-read (one worker, which waits once it has read 8 MiB ahead): the file is
  // closed, and the transaction ended, once the worker has said it stopped.
  const single = new WorkerPool(new Uint8Array(32).fill(3), { threads: 1 });
  try {
    const cancelled = new WorkerChunker(single, nodePrimitives, repo.keys).start(
      entry as SourceFile,
    );
    for await (const _ of cancelled) {
      assert.equal(writableByAnother(dbPath), false, "held while being read");
      cancelled.cancel();
    }
    assert.equal(await writableSoon(), true, "a cancelled job lets the database go");
  } finally {
    await single.close();
  }

  const job = chunker.start(entry as SourceFile);
  try {
    let bytes = 0;
    let probed = false;
    for await (const batch of job) {
      bytes += batch.bytes.length;
      // Once a stripe has been read whole and the next is being read.
      if (!probed && bytes > 5 * 1024 * 1024) {
        probed = true;
        assert.equal(writableByAnother(dbPath), false, "no other process may write it mid-read");
      }
    }
    assert.ok(probed);
    assert.equal(bytes, (await stat(dbPath)).size);
  } finally {
    job.cancel();
    await pool.close();
  }
  // The job closed the local file: the read transaction has ended.
  assert.equal(await writableSoon(), true, "writable again once read");
});

test("a database renamed over as its read begins is read as the read transaction sees it, never the new file unlocked", async (t) => {
  // The read transaction locks the file the connection opened; the descriptor the workers read
  // through is opened by name just after. An app that replaces its database by rename in that
  // instant (restoring one, say) must not have the new file read in place, without a lock.
  const dir = await scratch(t, "renamed-over");
  const path = join(dir, "chat.db");
  const other = join(dir, "other.db");
  for (const [file, value] of [
    [path, "before"],
    [other, "after"],
  ]) {
    const db = new DatabaseSync(file);
    db.exec("PRAGMA journal_mode = DELETE; CREATE TABLE t (v TEXT)");
    db.prepare("INSERT INTO t VALUES (?)").run(value);
    db.close();
  }
  const [entry] = await fsSource([path]);
  assert.equal(entry.type, "file");
  // Renames `other` over the database just before the source opens it by name to read it.
  const fs = (await import("node:fs")).default;
  const { syncBuiltinESMExports } = await import("node:module");
  const openSync = fs.openSync;
  let renamed = false;
  fs.openSync = ((file: string, ...rest: unknown[]) => {
    if (file === path && !renamed) {
      renamed = true;
      fs.renameSync(other, path);
    }
    return (openSync as (...a: unknown[]) => number)(file, ...rest);
  }) as typeof fs.openSync;
  syncBuiltinESMExports();
  t.after(() => {
    fs.openSync = openSync;
    syncBuiltinESMExports();
  });
  const local = await (entry as SourceFile).localFile!();
  assert.ok(renamed, "the database was replaced as its read began");
  const bytes =
    local.fd === undefined
      ? await readFile(local.path)
      : (() => {
          const out = Buffer.alloc(fs.fstatSync(local.fd).size);
          fs.readSync(local.fd, out, 0, out.length, 0);
          return out;
        })();
  await local.close();
  const read = join(dir, "read.db");
  await writeFile(read, bytes);
  const db = new DatabaseSync(read, { readOnly: true });
  const rows = db.prepare("SELECT v FROM t").all() as { v: string }[];
  db.close();
  assert.deepEqual(
    rows.map((r) => r.v),
    ["before"],
  );
});

test("a hard link to a database read in place is read through a copy, and the first read keeps its lock", async (t) => {
  // Both names are one file: a second in-place read would open a descriptor of it and close it
  // when done, dropping the first read's lock (closing any descriptor of a file ends the
  // process's POSIX locks on it).
  const dir = await scratch(t, "hard-link");
  const dbPath = join(dir, "chat.db");
  const db = new DatabaseSync(dbPath);
  db.exec("PRAGMA journal_mode = DELETE; CREATE TABLE filler (b BLOB)");
  db.prepare("INSERT INTO filler (b) VALUES (?)").run(randomBytes(10_000));
  db.close();
  const { linkSync } = await import("node:fs");
  linkSync(dbPath, join(dir, "link.db"));
  const entries = await fsSource([dir]);
  const children = entries[0].type === "dir" ? await entries[0].children() : [];
  const [first, second] = children as SourceFile[];
  assert.deepEqual(
    children.map((c) => c.name),
    ["chat.db", "link.db"],
  );
  const a = await first.localFile!();
  assert.notEqual(a.fd, undefined, "the first is read in place");
  assert.equal(writableByAnother(dbPath), false, "held by the first read");
  const b = await second.localFile!();
  assert.equal(b.fd, undefined, "the second is read through a copy");
  const rows = (file: string) => {
    const conn = new DatabaseSync(file, { readOnly: true });
    try {
      return conn.prepare("SELECT b FROM filler").all();
    } finally {
      conn.close();
    }
  };
  assert.deepEqual(rows(b.path), rows(a.path), "the copy holds the same rows");
  await b.close();
  assert.equal(writableByAnother(dbPath), false, "still held by the first read");
  await a.close();
  assert.equal(writableByAnother(dbPath), true, "let go once both are done");
});

test("a backup that fails while it reads a database in place has let it go when it settles", async (t) => {
  // The workers stop reading at their next pause after the abort; the read transaction ends
  // only then. `backup` must not settle before, or the app stays locked out after it.
  const dir = await scratch(t, "failed-lets-go");
  const dbPath = fillerDatabase(join(dir, "chat.db"));
  const key = new Uint8Array(32).fill(3);
  const repo = await Repository.init(new MemoryStorage(), nodePrimitives, key);
  const pool = new WorkerPool(key, { threads: 2 });
  t.after(() => pool.close());
  const workers = new WorkerChunker(pool, nodePrimitives, repo.keys);
  // Fails the backup at its first batch of the database, as a storage error would.
  const chunker = stoppingChunker(workers, () => 0, "failed (test)");
  await assert.rejects(
    backup(repo, await fsSource([dbPath]), { host: "h", paths: [dbPath], chunker }),
    /failed \(test\)/,
  );
  assert.equal(writableByAnother(dbPath), true, "let go when the backup settled");
});
