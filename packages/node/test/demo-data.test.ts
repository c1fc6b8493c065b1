import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, test } from "node:test";
import { zstdCompressSync } from "node:zlib";
import { type DemoDataResult, simulateDay, writeDemoData } from "../src/demo-data.ts";

const SMALL = { messages: 3000, mediaMb: 4 };
const root = mkdtempSync(join(tmpdir(), "locket-demo-data-"));
after(() => rmSync(root, { recursive: true, force: true }));

let base: DemoDataResult;
let leftovers: string[];
const progress: [number, number][] = [];
before(() => {
  base = writeDemoData(join(root, "a"), {
    ...SMALL,
    seed: 7,
    onProgress: (done, total) => progress.push([done, total]),
  });
  // Read-only connections below leave -wal/-shm files behind, so look before any of them.
  leftovers = readdirSync(join(root, "a")).sort();
});

interface MediaRow {
  id: number;
  message_id: number;
  path: string;
  mime_type: string;
  size: number;
  sha256: string;
}

function withDb<T>(dbPath: string, fn: (db: DatabaseSync) => T): T {
  const db = new DatabaseSync(dbPath, { readOnly: true });
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

function rowHashes(dbPath: string): Map<number, string> {
  return withDb(dbPath, (db) => {
    const out = new Map<number, string>();
    for (const row of db.prepare("SELECT * FROM messages ORDER BY id").all()) {
      out.set(row.id as number, JSON.stringify(row));
    }
    return out;
  });
}

function messagesHash(dbPath: string): string {
  const h = createHash("sha256");
  for (const row of rowHashes(dbPath).values()) h.update(row).update("\n");
  return h.digest("hex");
}

function mediaRows(dbPath: string): MediaRow[] {
  return withDb(
    dbPath,
    (db) => db.prepare("SELECT * FROM media ORDER BY id").all() as unknown as MediaRow[],
  );
}

function mediaFiles(mediaDir: string): string[] {
  return readdirSync(mediaDir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(mediaDir.length + 1))
    .sort();
}

function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

function assertMediaMatches(dir: string, rows: readonly MediaRow[]): void {
  for (const row of rows) {
    const path = join(dir, "Media", row.path);
    assert.equal(statSync(path).size, row.size, row.path);
    assert.equal(sha256(path), row.sha256, row.path);
  }
}

test("the same seed gives identical data and a different seed does not", () => {
  const again = writeDemoData(join(root, "b"), { ...SMALL, seed: 7 });
  const other = writeDemoData(join(root, "c"), { ...SMALL, seed: 8 });
  assert.equal(messagesHash(again.dbPath), messagesHash(base.dbPath));
  assert.notEqual(messagesHash(other.dbPath), messagesHash(base.dbPath));
  assert.equal(again.mediaFiles, base.mediaFiles);
  assert.equal(again.bytes, base.bytes);

  const files = mediaFiles(base.mediaDir);
  assert.deepEqual(mediaFiles(again.mediaDir), files);
  for (const f of files) {
    assert.ok(
      readFileSync(join(base.mediaDir, f)).equals(readFileSync(join(again.mediaDir, f))),
      f,
    );
  }
  const otherHashes = new Set(mediaRows(other.dbPath).map((r) => r.sha256));
  for (const row of mediaRows(base.dbPath)) assert.ok(!otherHashes.has(row.sha256), row.path);
});

test("the database is intact, in WAL mode and checkpointed", () => {
  assert.equal(base.messages, SMALL.messages);
  assert.deepEqual(leftovers, ["Media", "chat.db"]);
  withDb(base.dbPath, (db) => {
    assert.equal(db.prepare("PRAGMA integrity_check").get()?.integrity_check, "ok");
    assert.equal(db.prepare("PRAGMA journal_mode").get()?.journal_mode, "wal");
    assert.equal(db.prepare("PRAGMA page_size").get()?.page_size, 4096);
    assert.equal(db.prepare("SELECT count(*) AS n FROM messages").get()?.n, SMALL.messages);
    const names = db
      .prepare("SELECT name FROM sqlite_schema")
      .all()
      .map((r) => r.name);
    for (const name of ["contacts", "chats", "messages", "receipts", "media", "messages_chat_ts"]) {
      assert.ok(names.includes(name), name);
    }
    assert.ok((db.prepare("SELECT count(*) AS n FROM receipts").get()?.n as number) > 0);
    // Chats point at their newest message and count their unread incoming ones.
    const stale = db
      .prepare(
        "SELECT count(*) AS n FROM chats c WHERE last_message_id IS NOT" +
          " (SELECT max(id) FROM messages WHERE chat_id = c.id) OR unread_count !=" +
          " (SELECT count(*) FROM messages WHERE chat_id = c.id AND from_me = 0 AND status < 13)",
      )
      .get();
    assert.equal(stale?.n, 0);
  });
  assert.deepEqual(progress.at(-1), [SMALL.messages, SMALL.messages]);
});

test("media rows match the files and the budget", () => {
  const rows = mediaRows(base.dbPath);
  assert.equal(rows.length, base.mediaFiles);
  assert.deepEqual(mediaFiles(base.mediaDir), rows.map((r) => r.path).sort());
  assertMediaMatches(join(root, "a"), rows);
  const total = rows.reduce((sum, r) => sum + r.size, 0);
  assert.ok(total <= SMALL.mediaMb * 1024 * 1024 && total > (SMALL.mediaMb - 0.1) * 1024 * 1024);
  assert.equal(base.bytes, statSync(base.dbPath).size + total);
  const times = withDb(base.dbPath, (db) => {
    const stmt = db.prepare("SELECT timestamp FROM messages WHERE id = ?");
    return rows.map((r) => stmt.get(r.message_id)?.timestamp as number);
  });
  rows.forEach((r, i) => {
    assert.ok(Math.abs(statSync(join(base.mediaDir, r.path)).mtimeMs - times[i]) < 1, r.path);
  });
});

test("media files carry the right magic", () => {
  const seen = new Set<string>();
  for (const row of mediaRows(base.dbPath)) {
    const b = readFileSync(join(base.mediaDir, row.path));
    seen.add(row.mime_type);
    if (row.path.endsWith(".jpg")) {
      assert.match(row.path, /^Images\/IMG-\d{8}-WA\d{4}\.jpg$/);
      assert.deepEqual([...b.subarray(0, 3)], [0xff, 0xd8, 0xff]);
      assert.equal(b.toString("latin1", 6, 11), "JFIF\0");
      assert.deepEqual([...b.subarray(-2)], [0xff, 0xd9]);
    } else if (row.path.endsWith(".mp4")) {
      assert.match(row.path, /^Video\/VID-\d{8}-WA\d{4}\.mp4$/);
      assert.equal(b.toString("latin1", 4, 8), "ftyp");
      const ftypSize = b.readUInt32BE(0);
      assert.equal(b.toString("latin1", ftypSize + 4, ftypSize + 8), "mdat");
      assert.equal(b.readUInt32BE(ftypSize), b.length - ftypSize);
    } else {
      assert.match(row.path, /^Voice Notes\/PTT-\d{8}-WA\d{4}\.opus$/);
      assert.equal(b.toString("latin1", 0, 4), "OggS");
      assert.equal(b.toString("latin1", 28, 36), "OpusHead");
      assert.ok(b.subarray(0, 200).includes("OpusTags"));
    }
  }
  assert.equal(seen.size, 3, [...seen].join());
});

test("text compresses like chat data while media does not", () => {
  const db = readFileSync(base.dbPath);
  assert.ok(db.length / zstdCompressSync(db).length >= 1.5);
  let raw = 0;
  let packed = 0;
  for (const f of mediaFiles(base.mediaDir)) {
    const b = readFileSync(join(base.mediaDir, f));
    raw += b.length;
    packed += zstdCompressSync(b).length;
  }
  assert.ok(raw / packed < 1.02, `${raw / packed}`);
});

test("refuses to overwrite an existing chat.db", () => {
  const dir = join(root, "existing");
  assert.throws(() => writeDemoData(join(root, "a"), SMALL), /already exists|overwrite/);
  writeDemoData(dir, { messages: 10, mediaMb: 0 });
  writeFileSync(join(dir, "chat.db"), "not a database");
  assert.throws(() => writeDemoData(dir, { messages: 10 }), /overwrite/);
  assert.equal(readFileSync(join(dir, "chat.db"), "utf8"), "not a database");
  assert.throws(() => simulateDay(join(root, "missing")), /does not exist/);
});

test("simulateDay appends messages, updates a random fraction and is deterministic", () => {
  const dirs = [join(root, "day1"), join(root, "day2")];
  for (const dir of dirs) writeDemoData(dir, { messages: 2000, mediaMb: 1, seed: 11 });
  const dbPath = join(dirs[0], "chat.db");
  const before = rowHashes(dbPath);
  const maxTs = Math.max(...[...before.values()].map((r) => JSON.parse(r).timestamp as number));
  const opts = { newMessages: 300, statusUpdates: 0.05, newMedia: 6, seed: 3 };
  const results = dirs.map((dir) => simulateDay(dir, opts));
  assert.deepEqual(results[0], results[1]);
  assert.equal(messagesHash(dbPath), messagesHash(join(dirs[1], "chat.db")));
  assert.equal(results[0].newMessages, 300);
  assert.equal(results[0].updatedRows, 100);
  assert.equal(results[0].newMediaFiles, 6);

  const afterRows = rowHashes(dbPath);
  assert.equal(afterRows.size, 2300);
  const changed = [...before].filter(([id, row]) => afterRows.get(id) !== row).map(([id]) => id);
  assert.ok(changed.length >= 90 && changed.length <= 110, `${changed.length}`);
  assert.ok(changed[0] < 1000, "random updates spread over the table");
  for (const [id, row] of afterRows) {
    if (!before.has(id)) assert.ok(JSON.parse(row).timestamp > maxTs);
  }

  const media = mediaRows(dbPath).filter((r) => r.message_id > 2000);
  assert.equal(media.length, 6);
  assert.equal(
    media.reduce((sum, r) => sum + r.size, 0),
    results[0].newMediaBytes,
  );
  assertMediaMatches(dirs[0], mediaRows(dbPath));
  withDb(dbPath, (db) => {
    assert.equal(db.prepare("PRAGMA integrity_check").get()?.integrity_check, "ok");
    const stale = db
      .prepare(
        "SELECT count(*) AS n FROM chats c WHERE last_message_id IS NOT" +
          " (SELECT max(id) FROM messages WHERE chat_id = c.id)",
      )
      .get();
    assert.equal(stale?.n, 0);
  });
});

test("simulateDay with recent updates the newest rows", () => {
  const dir = join(root, "recent");
  writeDemoData(dir, { messages: 2000, mediaMb: 0, seed: 12 });
  const dbPath = join(dir, "chat.db");
  const before = rowHashes(dbPath);
  const res = simulateDay(dir, { newMessages: 50, statusUpdates: 0.02, recent: true, seed: 5 });
  assert.equal(res.updatedRows, 40);
  assert.equal(res.newMediaFiles, 3);
  const afterRows = rowHashes(dbPath);
  const changed = [...before].filter(([id, row]) => afterRows.get(id) !== row).map(([id]) => id);
  assert.equal(changed.length, 40);
  assert.ok(changed.every((id) => id > 1960));
});
