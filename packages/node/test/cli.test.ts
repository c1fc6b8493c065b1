/**
 * End-to-end tests of the `locket` CLI: every test spawns the real command (bin/locket.js) in a
 * child process, with its own temporary folders and its own LOCKET_HOME.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  chmod,
  cp,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  rm,
  stat,
  truncate,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, describe, type TestContext, test } from "node:test";
import { diffTrees } from "../src/compare.ts";
import { simulateDay, writeDemoData } from "../src/demo-data.ts";
import { cliEnv, fails, locket, ok, scratch, show } from "./harness.ts";

const RECOVERY_KEY_FORMAT = /^[0-9a-f]{4}( [0-9a-f]{4}){16}$/;

// ---------------------------------------------------------------------------------------------
// Helpers

interface Summary {
  readonly files: number;
  readonly dirs: number;
  readonly bytes: number;
  readonly addedBytes: number;
  readonly newBlobs: number;
  readonly durationMs: number;
}

interface InitJson {
  readonly repository: string;
  readonly repositoryId: string;
  readonly recoveryKey: string;
}

interface BackupJson {
  readonly snapshot: string;
  readonly seq: number;
  readonly summary: Summary;
  readonly skipped: readonly { path: string; reason: string }[];
}

interface SnapshotsJson {
  readonly snapshots: readonly {
    id: string;
    seq: number;
    parent: string | null;
    paths: string[];
    summary: Summary;
  }[];
}

interface LsJson {
  readonly snapshot: string;
  readonly entries: readonly { path: string; type: "file" | "dir"; size?: number }[];
}

interface RestoreJson {
  readonly snapshot: string;
  readonly files: number;
  readonly bytes: number;
  readonly resumedFiles: number;
  readonly skippedFiles: number;
}

/** Every pack under REPO/data/xx/, as `{ name, path, size }`, in name order. */
async function listPacks(repo: string): Promise<{ name: string; path: string; size: number }[]> {
  const out: { name: string; path: string; size: number }[] = [];
  for (const prefix of (await readdir(join(repo, "data"))).sort()) {
    for (const name of (await readdir(join(repo, "data", prefix))).sort()) {
      const path = join(repo, "data", prefix, name);
      out.push({ name, path, size: (await stat(path)).size });
    }
  }
  return out;
}

/** Flips every bit of the byte at `offset` (objects are read-only, so it makes the file writable). */
async function flipByte(path: string, offset: number): Promise<void> {
  await chmod(path, 0o644);
  const fh = await open(path, "r+");
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, offset);
    b[0] ^= 0xff;
    await fh.write(b, 0, 1, offset);
  } finally {
    await fh.close();
  }
}

/** PRAGMA integrity_check of a database, as one string ("ok" when healthy). */
function integrityCheck(dbPath: string): string {
  const db = new DatabaseSync(dbPath);
  try {
    return db
      .prepare("PRAGMA integrity_check")
      .all()
      .map((r) => String(r.integrity_check))
      .join("; ");
  } finally {
    db.close();
  }
}

/** Paths of the regular files under `root`, relative, sorted. */
async function filesUnder(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(root.length + 1))
    .sort();
}

/** Asserts that a failed restore left nothing under the snapshot's final names in `target`. */
async function assertNothingRestored(target: string, names: readonly string[]): Promise<void> {
  let entries: string[] = [];
  try {
    entries = await readdir(target);
  } catch {
    return; // not even created
  }
  for (const n of names) assert.ok(!entries.includes(n), `${n} must not appear in ${target}`);
  for (const e of entries) assert.match(e, /^\.locket-restore-/, `unexpected ${e} in target`);
}

/** A different but well-formed recovery key: one digit changed, so the check digits fail. */
function typo(key: string): string {
  const digit = Number.parseInt(key[0], 16);
  return ((digit + 1) % 16).toString(16) + key.slice(1);
}

// ---------------------------------------------------------------------------------------------
// A shared repository with two snapshots, only ever read or copied by the tests below.

interface Base {
  readonly dir: string;
  readonly chat: string;
  readonly repo: string;
  readonly key: string;
  readonly first: BackupJson;
  readonly second: BackupJson;
  /** Packs written by the first backup (every blob in them belongs to the first snapshot). */
  readonly firstPacks: readonly string[];
}

let base: Base;

before(async () => {
  const dir = await mkdtemp(join(tmpdir(), "locket-cli-base-"));
  const chat = join(dir, "chat");
  const repo = join(dir, "repo");
  writeDemoData(chat, { messages: 3000, mediaMb: 3 });
  const env = cliEnv(join(dir, "home"));
  const init = await ok<InitJson>(["init", "--repo", repo], env);
  const paths = [join(chat, "chat.db"), join(chat, "Media")];
  const first = await ok<BackupJson>(["backup", ...paths], env);
  const firstPacks = (await listPacks(repo)).map((p) => p.name);
  simulateDay(chat, { newMessages: 100, newMedia: 0, seed: 5 });
  const second = await ok<BackupJson>(["backup", ...paths], env);
  base = { dir, chat, repo, key: init.recoveryKey, first, second, firstPacks };
});

after(async () => {
  if (base) await rm(base.dir, { recursive: true, force: true });
});

/** A copy of the base repository in a fresh folder, with a fresh home that has only the key. */
async function copyOfBase(
  t: TestContext,
  label: string,
): Promise<{ dir: string; repo: string; env: NodeJS.ProcessEnv }> {
  const dir = await scratch(t, label);
  const repo = join(dir, "repo");
  await cp(base.repo, repo, { recursive: true });
  const env = cliEnv(join(dir, "home"), { LOCKET_RECOVERY_KEY: base.key, LOCKET_REPOSITORY: repo });
  return { dir, repo, env };
}

// ---------------------------------------------------------------------------------------------
// Usage

describe("usage", () => {
  test("locket --help lists every command and the exit statuses", async (t) => {
    const env = cliEnv(join(await scratch(t, "usage"), "home"));
    const r = await locket(["--help"], env);
    assert.equal(r.status, 0, show(r));
    for (const c of ["init", "backup", "snapshots", "ls", "restore", "drill", "check"]) {
      assert.match(r.stdout, new RegExp(`^  ${c} `, "m"), `--help lists ${c}`);
    }
    assert.match(r.stdout, /Exit status/);
    assert.match(r.stdout, /LOCKET_RECOVERY_KEY/);
  });

  test("the CLI keeps V8's compile cache in the user's cache folder, unless told otherwise", async (t) => {
    const dir = await scratch(t, "compile-cache");
    const base = cliEnv(join(dir, "home"));
    delete base.NODE_COMPILE_CACHE;
    delete base.NODE_DISABLE_COMPILE_CACHE;
    const r = await locket(["--version"], { ...base, XDG_CACHE_HOME: join(dir, "cache") });
    assert.equal(r.status, 0, show(r));
    const cached = await readdir(join(dir, "cache", "locket", "compile-cache"), {
      recursive: true,
    });
    assert.ok(cached.length > 0, "the cache folder has entries");
    const off = await locket(["--version"], {
      ...base,
      XDG_CACHE_HOME: join(dir, "cache-off"),
      NODE_DISABLE_COMPILE_CACHE: "1",
    });
    assert.equal(off.status, 0, show(off));
    await assert.rejects(readdir(join(dir, "cache-off")), { code: "ENOENT" });
  });

  test("locket backup --help describes the options", async (t) => {
    const env = cliEnv(join(await scratch(t, "usage"), "home"));
    const r = await locket(["backup", "--help"], env);
    assert.equal(r.status, 0, show(r));
    assert.match(r.stdout, /^Usage: locket backup/);
    for (const opt of [
      "--exclude-videos",
      "--exclude GLOB",
      "--include GLOB",
      "--tag",
      "--host",
      "--repo",
      "--recovery-key",
      "--json",
      "--progress",
    ]) {
      assert.ok(r.stdout.includes(opt), `backup --help mentions ${opt}`);
    }
  });

  test("no command is a usage error (exit 2) that prints the usage", async (t) => {
    const env = cliEnv(join(await scratch(t, "usage"), "home"));
    const r = await locket([], env);
    assert.equal(r.status, 2, show(r));
    assert.match(r.stdout + r.stderr, /Usage: locket COMMAND/);
  });

  test("an unknown command is a usage error (exit 2)", async (t) => {
    const env = cliEnv(join(await scratch(t, "usage"), "home"));
    const r = await fails(["frobnicate"], env, 2);
    assert.equal(r.error.code, "usage");
    assert.match(r.stderr, /unknown command "frobnicate"/);
  });

  test("an unknown flag is a usage error (exit 2) naming the flag", async (t) => {
    const env = cliEnv(join(await scratch(t, "usage"), "home"));
    const r = await fails(["backup", "--bogus", "x"], env, 2);
    assert.equal(r.error.code, "usage");
    assert.match(r.stderr, /--bogus/);
    assert.match(r.stderr, /locket backup --help/);
  });

  test("backup without a PATH is a usage error (exit 2)", async (t) => {
    const env = cliEnv(join(await scratch(t, "usage"), "home"));
    const r = await fails(["backup"], env, 2);
    assert.match(r.error.message, /PATH/);
    const human = await locket(["backup"], env);
    assert.equal(human.status, 2, show(human));
    assert.equal(human.stdout, "");
    assert.match(human.stderr, /backup needs at least one PATH/);
  });
});

// ---------------------------------------------------------------------------------------------
// The whole story, one step per test (each step needs the ones before it).

describe("the full story", () => {
  let dir: string;
  let chat: string;
  let repo: string;
  let env: NodeJS.ProcessEnv;
  let recoveryKey: string;
  let firstSnapshot: string;
  let mediaFiles: string[];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "locket-cli-story-"));
    chat = join(dir, "chat");
    repo = join(dir, "repo");
    env = cliEnv(join(dir, "home"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test("demo-data writes a chat data set", async () => {
    const r = await ok<{ dbPath: string; mediaFiles: number }>(
      ["demo-data", chat, "--messages", "3000", "--media-mb", "3"],
      env,
    );
    assert.equal(r.dbPath, join(chat, "chat.db"));
    mediaFiles = (await filesUnder(join(chat, "Media"))).map((f) => `Media/${f}`);
    assert.equal(mediaFiles.length, r.mediaFiles);
    assert.ok(mediaFiles.length > 0, "the data set has media");
  });

  test("init --json prints the recovery key: 68 hex digits in 17 groups", async () => {
    const r = await ok<InitJson>(["init", "--repo", repo], env);
    assert.match(r.recoveryKey, RECOVERY_KEY_FORMAT);
    assert.equal(r.recoveryKey.replaceAll(" ", "").length, 68);
    assert.match(r.repositoryId, /^[0-9a-f]+$/);
    recoveryKey = r.recoveryKey;
    // The key must not be written into the repository itself.
    const config = await readFile(join(repo, "config"));
    assert.ok(!config.toString("latin1").includes(recoveryKey.replaceAll(" ", "").slice(0, 64)));
  });

  test("backup --json stores a first snapshot", async () => {
    const r = await ok<BackupJson>(["backup", join(chat, "chat.db"), join(chat, "Media")], env);
    assert.equal(r.seq, 1);
    assert.match(r.snapshot, /^[0-9a-f]{64}$/);
    assert.equal(r.summary.files, 1 + mediaFiles.length);
    assert.ok(r.summary.addedBytes > 0);
    assert.deepEqual(r.skipped, []);
    firstSnapshot = r.snapshot;
    // Backing up the database left no companion files in the user's folder.
    assert.deepEqual((await readdir(chat)).sort(), ["Media", "chat.db"]);
  });

  test("snapshots --json lists it", async () => {
    const r = await ok<SnapshotsJson>(["snapshots"], env);
    assert.equal(r.snapshots.length, 1);
    assert.equal(r.snapshots[0].id, firstSnapshot);
    assert.equal(r.snapshots[0].seq, 1);
    assert.equal(r.snapshots[0].parent, null);
  });

  test("ls --json lists chat.db and every media file", async () => {
    const r = await ok<LsJson>(["ls", "latest"], env);
    assert.equal(r.snapshot, firstSnapshot);
    const files = r.entries.filter((e) => e.type === "file").map((e) => e.path);
    assert.deepEqual(files.sort(), ["chat.db", ...mediaFiles].sort());
    const db = r.entries.find((e) => e.path === "chat.db");
    assert.equal(db?.size, (await stat(join(chat, "chat.db"))).size);
    assert.ok(r.entries.some((e) => e.path === "Media" && e.type === "dir"));
  });

  for (const how of ["LOCKET_RECOVERY_KEY", "--recovery-key"] as const) {
    test(`a new device restores with only the repository and ${how}`, async (t) => {
      const device = await scratch(t, "newdevice");
      const target = join(device, "restored");
      const args = ["restore", "latest", "--target", target, "--repo", repo];
      const newEnv =
        how === "--recovery-key"
          ? cliEnv(join(device, "home"))
          : cliEnv(join(device, "home"), { LOCKET_RECOVERY_KEY: recoveryKey });
      if (how === "--recovery-key") args.push("--recovery-key", recoveryKey);
      const r = await ok<RestoreJson>(args, newEnv);
      assert.equal(r.snapshot, firstSnapshot);
      assert.equal(r.files, 1 + mediaFiles.length);
      assert.equal(r.resumedFiles, 0);
      assert.deepEqual(await diffTrees(chat, target), [], "every file is byte-identical");
      assert.deepEqual((await readdir(target)).sort(), ["Media", "chat.db"], "no staging left");
      assert.equal(integrityCheck(join(target, "chat.db")), "ok");
    });
  }

  test("drill passes on a new device", async (t) => {
    const device = await scratch(t, "drill");
    const newEnv = cliEnv(join(device, "home"), { LOCKET_RECOVERY_KEY: recoveryKey });
    const r = await ok<{ files: number; bytes: number }>(["drill", "--repo", repo], newEnv);
    assert.equal(r.files, 1 + mediaFiles.length);
    assert.ok(r.bytes > 0);
  });

  test("check --read-data passes", async () => {
    const r = await ok<{ errors: unknown[]; packsRead: number; snapshots: number }>(
      ["check", "--read-data"],
      env,
    );
    assert.deepEqual(r.errors, []);
    assert.equal(r.snapshots, 1);
    assert.ok(r.packsRead >= 1);
  });

  test("LOCKET_THREADS sets the segment workers; a bad value is a usage error", async () => {
    const r = await ok<{ errors: unknown[]; packsRead: number }>(["check", "--read-data"], {
      ...env,
      LOCKET_THREADS: "1",
    });
    assert.deepEqual(r.errors, []);
    assert.ok(r.packsRead >= 1);
    const bad = await fails(["check", "--read-data"], { ...env, LOCKET_THREADS: "many" }, 2);
    assert.match(bad.error.message, /LOCKET_THREADS/);
  });

  test("after a day of chat, the second backup stores a small fraction of the database", async (t) => {
    // About the data set's daily volume (3000 messages over ~25 days), receipts on recent rows;
    // no new media, whose bytes would be stored in full whatever the engine does.
    const day = simulateDay(chat, { newMessages: 120, newMedia: 0, recent: true, seed: 2 });
    const dbSize = (await stat(join(chat, "chat.db"))).size;
    const r = await ok<BackupJson>(["backup", join(chat, "chat.db"), join(chat, "Media")], env);
    assert.equal(r.seq, 2);
    const share = r.summary.addedBytes / dbSize;
    t.diagnostic(
      `day: +${day.newMessages} messages, ${day.updatedRows} rows updated; chat.db ${dbSize} B; ` +
        `second backup read ${r.summary.bytes} B, added ${r.summary.addedBytes} B ` +
        `(${(share * 100).toFixed(1)}% of the database), ${r.summary.newBlobs} new blobs`,
    );
    assert.ok(r.summary.addedBytes > 0, "the day's changes were stored");
    assert.ok(share < 0.25, `added ${r.summary.addedBytes} B of a ${dbSize} B database`);
  });
});

// ---------------------------------------------------------------------------------------------
// Keys

describe("keys", () => {
  test("a valid recovery key of another repository exits 4: the key does not open it", async (t) => {
    const dir = await scratch(t, "wrongkey");
    const other = await ok<InitJson>(
      ["init", "--repo", join(dir, "other")],
      cliEnv(join(dir, "home-other")),
    );
    assert.notEqual(other.recoveryKey, base.key);
    const target = join(dir, "restored");
    const env = cliEnv(join(dir, "home"));
    const r = await fails(
      [
        "restore",
        "latest",
        "--repo",
        base.repo,
        "--recovery-key",
        other.recoveryKey,
        "--target",
        target,
      ],
      env,
      4,
    );
    assert.equal(r.error.code, "wrong_key");
    assert.match(r.error.message, /key does not open the repository/);
    assert.ok(!r.stderr.includes(other.recoveryKey), "the key is not echoed");
    await assertNothingRestored(target, ["chat.db", "Media"]);
    // Also through the environment.
    const viaEnv = await fails(
      ["snapshots", "--repo", base.repo],
      cliEnv(join(dir, "home"), { LOCKET_RECOVERY_KEY: other.recoveryKey }),
      4,
    );
    assert.match(viaEnv.error.message, /does not open/);
  });

  test("a mistyped recovery key exits 4 pointing at the check digits", async (t) => {
    const dir = await scratch(t, "typo");
    const env = cliEnv(join(dir, "home"));
    const r = await fails(
      ["snapshots", "--repo", base.repo, "--recovery-key", typo(base.key)],
      env,
      4,
    );
    assert.equal(r.error.code, "wrong_key");
    assert.match(r.error.message, /check digits/);
  });

  test("no key on a new device exits 2 and says to pass --recovery-key", async (t) => {
    const dir = await scratch(t, "nokey");
    const r = await fails(["snapshots", "--repo", base.repo], cliEnv(join(dir, "home")), 2);
    assert.equal(r.error.code, "usage");
    assert.match(r.error.message, /--recovery-key/);
    assert.match(r.error.message, /LOCKET_RECOVERY_KEY/);
  });
});

// ---------------------------------------------------------------------------------------------
// Damage: each test works on its own copy of the base repository.

describe("damaged repositories", () => {
  const finalNames = ["chat.db", "Media"];

  test("a flipped byte in the middle of a pack: restore exits 3 naming the pack, nothing restored", async (t) => {
    const { dir, repo, env } = await copyOfBase(t, "flip");
    const pack = (await listPacks(repo)).find((p) => p.name === base.firstPacks[0])!;
    await flipByte(pack.path, Math.floor(pack.size / 2));
    const target = join(dir, "restored");
    const r = await fails(["restore", base.first.snapshot, "--target", target], env, 3);
    assert.equal(r.error.code, "integrity");
    assert.ok(r.stderr.includes(`data/${pack.name}`), show(r));
    await assertNothingRestored(target, finalNames);
    const check = await fails(["check", "--read-data"], env, 3);
    assert.ok(check.stderr.includes(`data/${pack.name}`), show(check));
  });

  test("a truncated pack: restore exits 3", async (t) => {
    const { dir, repo, env } = await copyOfBase(t, "truncate");
    const pack = (await listPacks(repo)).find((p) => p.name === base.firstPacks[0])!;
    await chmod(pack.path, 0o644);
    await truncate(pack.path, Math.floor(pack.size / 2));
    const target = join(dir, "restored");
    const r = await fails(["restore", base.first.snapshot, "--target", target], env, 3);
    assert.ok(r.stderr.includes(`data/${pack.name}`), show(r));
    await assertNothingRestored(target, finalNames);
    const check = await fails(["check", "--read-data"], env, 3);
    assert.ok(check.stderr.includes(`data/${pack.name}`), show(check));
  });

  test("a deleted pack: check exits 3 naming it, restore exits 3", async (t) => {
    const { dir, repo, env } = await copyOfBase(t, "delete");
    const pack = (await listPacks(repo)).find((p) => p.name === base.firstPacks[0])!;
    await rm(pack.path);
    const check = await fails(["check"], env, 3);
    assert.ok(check.stderr.includes(`data/${pack.name}`), show(check));
    assert.match(check.error.message, /missing/);
    const target = join(dir, "restored");
    const r = await fails(["restore", "latest", "--target", target], env, 3);
    assert.ok(r.stderr.includes(`data/${pack.name}`), show(r));
    await assertNothingRestored(target, finalNames);
  });

  test("two snapshot files with swapped contents: snapshots exits 3", async (t) => {
    const { repo, env } = await copyOfBase(t, "swap");
    const a = join(repo, "snapshots", base.first.snapshot);
    const b = join(repo, "snapshots", base.second.snapshot);
    const [ba, bb] = await Promise.all([readFile(a), readFile(b)]);
    await chmod(a, 0o644);
    await chmod(b, 0o644);
    await writeFile(a, bb);
    await writeFile(b, ba);
    const r = await fails(["snapshots"], env, 3);
    assert.equal(r.error.code, "integrity");
    assert.match(r.error.message, /snapshots\/[0-9a-f]{64}/);
  });

  test("a flipped byte in an index file: restore and check exit 3 naming it", async (t) => {
    const { dir, repo, env } = await copyOfBase(t, "index");
    const [name] = (await readdir(join(repo, "index"))).sort();
    const path = join(repo, "index", name);
    await flipByte(path, Math.floor((await stat(path)).size / 2));
    const target = join(dir, "restored");
    const r = await fails(["restore", "latest", "--target", target], env, 3);
    assert.ok(r.stderr.includes(`index/${name}`), show(r));
    await assertNothingRestored(target, finalNames);
    const check = await fails(["check"], env, 3);
    assert.ok(check.stderr.includes(`index/${name}`), show(check));
  });
});

// ---------------------------------------------------------------------------------------------
// Rollback

describe("rollback", () => {
  /** A repository with three snapshots of a small folder, and the home that made them. */
  async function threeBackups(t: TestContext): Promise<{
    dir: string;
    repo: string;
    env: NodeJS.ProcessEnv;
    snaps: BackupJson[];
  }> {
    const dir = await scratch(t, "rollback");
    const data = join(dir, "notes");
    const repo = join(dir, "repo");
    await mkdir(data);
    const env = cliEnv(join(dir, "home"));
    await ok(["init", "--repo", repo], env);
    const snaps: BackupJson[] = [];
    for (let i = 1; i <= 3; i++) {
      await writeFile(join(data, `day-${i}.txt`), `notes of day ${i}\n`.repeat(100));
      snaps.push(await ok<BackupJson>(["backup", data], env));
    }
    assert.deepEqual(
      snaps.map((s) => s.seq),
      [1, 2, 3],
    );
    return { dir, repo, env, snaps };
  }

  test("storage that drops the newest snapshot: snapshots and backup exit 3 (rollback)", async (t) => {
    const { dir, repo, env, snaps } = await threeBackups(t);
    await rm(join(repo, "snapshots", snaps[2].snapshot));
    const list = await fails(["snapshots"], env, 3);
    assert.equal(list.error.code, "rollback");
    assert.match(list.error.message, /roll/);
    const backup = await fails(["backup", join(dir, "notes")], env, 3);
    assert.equal(backup.error.code, "rollback");
    assert.match(backup.error.message, /roll/);
    const restore = await fails(["restore", "latest", "--target", join(dir, "out")], env, 3);
    assert.equal(restore.error.code, "rollback");
    // The failed backup stored no snapshot.
    assert.equal((await readdir(join(repo, "snapshots"))).length, 2);
  });

  test("storage that hides a middle snapshot (broken parent chain): snapshots exits 3", async (t) => {
    // freshness.ts documents "every snapshot's parent must be the snapshot before it", and the
    // threat model lists "storage hides snapshots"; #3's parent, #2, is gone here.
    const { repo, env, snaps } = await threeBackups(t);
    await rm(join(repo, "snapshots", snaps[1].snapshot));
    const list = await fails(["snapshots"], env, 3);
    assert.equal(list.error.code, "rollback");
  });
});

// ---------------------------------------------------------------------------------------------
// Restore behaviour

describe("restore", () => {
  test("refuses to overwrite existing entries (exit 1, nothing changed); --overwrite replaces them", async (t) => {
    const dir = await scratch(t, "overwrite");
    const env = cliEnv(join(dir, "home"), { LOCKET_RECOVERY_KEY: base.key });
    const target = join(dir, "restored");
    await mkdir(target);
    await writeFile(join(target, "chat.db"), "my own file");
    await writeFile(join(target, "keep.txt"), "unrelated");
    const args = ["restore", "latest", "--repo", base.repo, "--target", target];
    const r = await fails(args, env, 1);
    assert.equal(r.error.code, "already_exists");
    assert.match(r.error.message, /chat\.db already exists/);
    assert.match(r.error.message, /--overwrite/);
    assert.deepEqual((await readdir(target)).sort(), ["chat.db", "keep.txt"]);
    assert.equal(await readFile(join(target, "chat.db"), "utf8"), "my own file");

    const again = await ok<RestoreJson>([...args, "--overwrite"], env);
    assert.equal(again.snapshot, base.second.snapshot);
    assert.deepEqual(await diffTrees(base.chat, target), ["keep.txt"]);
    assert.equal(await readFile(join(target, "keep.txt"), "utf8"), "unrelated");
    assert.equal(integrityCheck(join(target, "chat.db")), "ok");
  });

  test("--include, --exclude and --exclude-videos restore a part of the snapshot, and only its folders", async (t) => {
    const dir = await scratch(t, "select");
    const env = cliEnv(join(dir, "home"), { LOCKET_RECOVERY_KEY: base.key });
    const restore = (target: string, ...options: string[]) =>
      ok<RestoreJson>(
        ["restore", "latest", "--repo", base.repo, "--target", target, ...options],
        env,
      );
    const media = (await readdir(join(base.chat, "Media"), { recursive: true })).sort();
    const files = async (root: string) =>
      (await readdir(root, { recursive: true, withFileTypes: true }))
        .filter((e) => e.isFile())
        .map((e) => join(e.parentPath, e.name).slice(root.length + 1))
        .sort();

    // The chats alone: no Media folder at all.
    const chats = join(dir, "chats");
    const r = await restore(chats, "--include", "chat.db");
    assert.deepEqual(await readdir(chats), ["chat.db"]);
    assert.equal(r.files, 1);
    assert.equal(r.skippedFiles, media.filter((m) => m.includes(".")).length);
    assert.equal(integrityCheck(join(chats, "chat.db")), "ok");

    // Then the media without the videos, into the same folder (chat.db is not touched again).
    const videos = media.filter((m) => m.startsWith("Video/") && m.includes("."));
    assert.ok(videos.length > 0, "the demo data has videos");
    await restore(chats, "--exclude-videos", "--exclude", "*.db");
    const got = await files(chats);
    assert.ok(!got.some((f) => f.startsWith("Media/Video")), got.join(", "));
    assert.ok(got.includes("chat.db"));
    for (const f of got.filter((f) => f.startsWith("Media/"))) {
      assert.deepEqual(await readFile(join(chats, f)), await readFile(join(base.chat, f)), f);
    }
    assert.equal(got.length, 1 + media.filter((m) => m.includes(".")).length - videos.length);

    // A second restore of the same part refuses to overwrite it; a pattern that matches nothing
    // restores nothing and says so.
    const clash = await fails(
      ["restore", "latest", "--repo", base.repo, "--target", chats, "--include", "chat.db"],
      env,
      1,
    );
    assert.equal(clash.error.code, "already_exists");
    const none = await locket(
      [
        "restore",
        "latest",
        "--repo",
        base.repo,
        "--target",
        join(dir, "none"),
        "--include",
        "*.xyz",
      ],
      env,
    );
    assert.equal(none.status, 0, show(none));
    assert.match(none.stdout, /nothing restored: none of the snapshot's \d+ file\(s\) matched/);
    assert.deepEqual(await readdir(join(dir, "none")), []);
  });

  test("an interrupted restore resumes: rerun after repairing the pack gives identical files", async (t) => {
    const dir = await scratch(t, "resume");
    const data = join(dir, "d");
    await mkdir(data);
    // a.jpg is not worth compressing and b.bin is, so no segment holds chunks of both (a segment
    // never mixes the two): the damage below hits b.bin's chunks alone, wherever CDC cuts.
    await writeFile(join(data, "a.jpg"), randomBytes(3 << 20));
    await writeFile(join(data, "b.bin"), randomBytes(3 << 20));
    const repo = join(dir, "repo");
    const env = cliEnv(join(dir, "home"));
    await ok(["init", "--repo", repo], env);
    await ok<BackupJson>(["backup", data], env);
    const packs = await listPacks(repo);
    assert.equal(packs.length, 1, "both files fit in one pack");
    const [pack] = packs;
    const pristine = join(dir, "pristine-pack");
    await cp(pack.path, pristine);

    // a.jpg's chunks fill the first half of the pack and b.bin's the second: damage b.bin's.
    await flipByte(pack.path, Math.floor(pack.size * 0.75));
    const target = join(dir, "restored");
    const failed = await fails(["restore", "latest", "--target", target], env, 3);
    assert.ok(failed.stderr.includes(`data/${pack.name}`), show(failed));
    await assertNothingRestored(target, ["d"]);
    const [staging] = await readdir(target);
    assert.match(staging ?? "", /^\.locket-restore-/, "the staging folder is kept for a rerun");
    assert.deepEqual(await readdir(join(target, staging, "d")), ["a.jpg"], "no partial file left");
    // A restore killed while it wrote b.bin leaves it in the staging folder under its own name,
    // at full size (its size first, its bytes not yet on the disk): the rerun must not keep it.
    await writeFile(join(target, staging, "d", "b.bin"), new Uint8Array(3 << 20));

    await chmod(pack.path, 0o644);
    await cp(pristine, pack.path);
    await chmod(pack.path, 0o444);
    const r = await ok<RestoreJson>(["restore", "latest", "--target", target], env);
    assert.equal(r.files, 2);
    assert.equal(r.resumedFiles, 1, "a.jpg was verified and kept, not restored again");
    assert.deepEqual(await readdir(target), ["d"]);
    assert.deepEqual(await diffTrees(data, join(target, "d")), []);
  });

  test("a rerun with a narrower filter moves nothing an earlier run left in the staging folder", async (t) => {
    const dir = await scratch(t, "leftovers");
    const data = join(dir, "d");
    await mkdir(join(data, "sub"), { recursive: true });
    await writeFile(join(data, "a.jpg"), randomBytes(100_000));
    await writeFile(join(data, "b.bin"), randomBytes(200_000));
    await writeFile(join(data, "sub", "c.txt"), "c");
    const env = cliEnv(join(dir, "home"));
    await ok(["init", "--repo", join(dir, "repo")], env);
    const { snapshot } = await ok<BackupJson>(["backup", data], env);
    // A whole restore killed midway: b.bin half-written, a file of an older version's naming.
    const target = join(dir, "restored");
    const staging = join(target, `.locket-restore-${snapshot.slice(0, 16)}`);
    await mkdir(join(staging, "d", "sub"), { recursive: true });
    await writeFile(join(staging, "d", "b.bin"), randomBytes(100_000));
    await writeFile(join(staging, "d", "b.bin.partial"), randomBytes(10));
    await writeFile(join(staging, "d", "sub", "c.txt"), "not c");

    const r = await ok<RestoreJson>(
      ["restore", "latest", "--target", target, "--include", "a.jpg"],
      env,
    );
    assert.equal(r.files, 1);
    assert.deepEqual(await readdir(target), ["d"]);
    assert.deepEqual(await readdir(join(target, "d")), ["a.jpg"], "only what this restore holds");
    assert.deepEqual(
      await readFile(join(target, "d", "a.jpg")),
      await readFile(join(data, "a.jpg")),
    );
  });

  test("a restore that fails while it writes a database and media at once leaves no partial file", async (t) => {
    const dir = await scratch(t, "interleaved");
    const data = join(dir, "d");
    await mkdir(join(data, "Media"), { recursive: true });
    // A database of ~9 MiB (2,300 pages): read in pieces between the media's (readFiles'
    // `interleave`), so both are being written when the restore fails.
    const db = new DatabaseSync(join(data, "chat.db"));
    db.exec("PRAGMA journal_mode = DELETE; CREATE TABLE m (id INTEGER PRIMARY KEY, body BLOB)");
    const insert = db.prepare("INSERT INTO m (body) VALUES (?)");
    for (let i = 0; i < 9000; i++) insert.run(randomBytes(1000));
    db.close();
    for (let i = 1; i <= 4; i++) {
      await writeFile(join(data, "Media", `VID-${i}.mp4`), randomBytes(3 << 20));
    }
    const env = cliEnv(join(dir, "home"));
    await ok(["init", "--repo", join(dir, "repo")], env);
    const { snapshot } = await ok<BackupJson>(["backup", data], env);
    // The second video cannot be created: a folder stands in its place in the staging folder.
    const target = join(dir, "restored");
    const staging = join(target, `.locket-restore-${snapshot.slice(0, 16)}`);
    await mkdir(join(staging, "d", "Media", "VID-2.mp4"), { recursive: true });
    const failed = await fails(["restore", "latest", "--target", target], env, 1);
    assert.ok(failed.stderr.includes("VID-2.mp4"), show(failed));
    await assertNothingRestored(target, ["d"]);
    // Every file left in the staging folder is whole (kept for a rerun); the database, cut off
    // in the middle, and the files created ahead of the writer are gone.
    const left = (await readdir(join(staging, "d"), { recursive: true })).sort();
    assert.ok(!left.includes("chat.db"), `the partial database is gone: ${left}`);
    for (const name of left) {
      if (name === "Media" || name === join("Media", "VID-2.mp4")) continue;
      assert.deepEqual(
        await readFile(join(staging, "d", name)),
        await readFile(join(data, name)),
        `${name} left whole`,
      );
    }
    await rm(join(staging, "d", "Media", "VID-2.mp4"), { recursive: true });
    const r = await ok<RestoreJson>(["restore", "latest", "--target", target], env);
    assert.equal(r.files, 5);
    assert.deepEqual(await diffTrees(data, join(target, "d")), []);
  });
});

// ---------------------------------------------------------------------------------------------
// Media selection and progress

describe("backup options", () => {
  test("--exclude-videos, --exclude and --include select the files stored", async (t) => {
    const dir = await scratch(t, "select");
    const media = join(dir, "Media");
    const files: Record<string, number> = {
      "Images/IMG-0001.jpg": 3000,
      "Images/IMG-0002.JPG": 2000,
      "Video/VID-0001.mp4": 5000,
      "Video/VID-0002.MP4": 4000,
      "Voice Notes/PTT-0001.opus": 1500,
      "Documents/notes.txt": 100,
    };
    for (const [rel, size] of Object.entries(files)) {
      await mkdir(join(media, rel, ".."), { recursive: true });
      await writeFile(join(media, rel), randomBytes(size));
    }
    const repo = join(dir, "repo");
    const env = cliEnv(join(dir, "home"));
    await ok(["init", "--repo", repo], env);

    const stored = async (...flags: string[]) => {
      const b = await ok<BackupJson>(["backup", ...flags, media], env);
      const l = await ok<LsJson>(["ls", b.snapshot], env);
      const kept = l.entries.filter((e) => e.type === "file").map((e) => e.path);
      const skipped = b.skipped.map((s) => `Media/${s.path}`);
      assert.deepEqual(
        [...kept, ...skipped].sort(),
        Object.keys(files)
          .map((f) => `Media/${f}`)
          .sort(),
        "every file is either stored or reported as skipped",
      );
      return kept.sort();
    };

    assert.deepEqual(await stored("--exclude-videos"), [
      "Media/Documents/notes.txt",
      "Media/Images/IMG-0001.jpg",
      "Media/Images/IMG-0002.JPG",
      "Media/Voice Notes/PTT-0001.opus",
    ]);
    assert.deepEqual(await stored("--exclude", "*.opus"), [
      "Media/Documents/notes.txt",
      "Media/Images/IMG-0001.jpg",
      "Media/Images/IMG-0002.JPG",
      "Media/Video/VID-0001.mp4",
      "Media/Video/VID-0002.MP4",
    ]);
    assert.deepEqual(await stored("--include", "*.jpg", "--include", "*.txt"), [
      "Media/Documents/notes.txt",
      "Media/Images/IMG-0001.jpg",
    ]);
  });

  test("--progress json writes NDJSON progress events on stderr", async (t) => {
    const dir = await scratch(t, "progress");
    const chat = join(dir, "chat");
    await cp(base.chat, chat, { recursive: true });
    const env = cliEnv(join(dir, "home"));
    await ok(["init", "--repo", join(dir, "repo")], env);
    const r = await ok<BackupJson>(
      ["backup", "--progress", "json", join(chat, "chat.db"), join(chat, "Media")],
      env,
    );
    const lines = r.stderr.split("\n").filter((l) => l !== "");
    assert.ok(lines.length >= 1, `progress events expected on stderr\n${show(r)}`);
    for (const line of lines) {
      const ev = JSON.parse(line) as Record<string, unknown>;
      assert.equal(ev.event, "progress");
      assert.equal(ev.phase, "backup");
      assert.equal(typeof ev.bytes, "number");
      assert.equal(typeof ev.files, "number");
      assert.equal(ev.totalBytes, r.summary.bytes);
      assert.equal(ev.totalFiles, r.summary.files);
    }
    // No terminal bar drawing sneaks into either stream.
    assert.ok(!r.stderr.includes("\r") && !r.stdout.includes("\r"));
  });

  test("--progress with an unknown mode is a usage error", async (t) => {
    const dir = await scratch(t, "progress-bad");
    const r = await fails(
      ["backup", "--progress", "fancy", dir],
      cliEnv(join(dir, "home"), { LOCKET_REPOSITORY: dir }),
      2,
    );
    assert.match(r.error.message, /--progress/);
  });
});

describe("locket demo", () => {
  interface DemoJson {
    identical: boolean;
    integrityCheck: string;
    restoredFiles: number;
    databaseNewBytes: number;
    secondBackup: { addedBytes: number; unchangedFiles: number };
  }
  const demo = (t: TestContext, extra: Record<string, string>) =>
    scratch(t, "demo").then((dir) =>
      ok<DemoJson>(
        ["demo", "--messages", "2000", "--media-mb", "2"],
        cliEnv(join(dir, "home"), { TMPDIR: dir, ...extra }),
      ),
    );

  test("runs through, and its day stores changed pages as deltas (less than without)", async (t) => {
    const withDeltas = await demo(t, {});
    assert.equal(withDeltas.identical, true);
    assert.equal(withDeltas.integrityCheck, "ok");
    assert.ok(withDeltas.restoredFiles > 0);
    assert.ok(withDeltas.secondBackup.unchangedFiles > 0, "unchanged media are not stored again");
    const without = await demo(t, { LOCKET_PAGE_DELTAS: "0" });
    assert.equal(without.identical, true);
    // The same day changes the same pages; as deltas they compress to much less (measured:
    // ~60 KB less for 274 KB of changed pages; runs differ by a few hundred bytes otherwise).
    assert.equal(withDeltas.databaseNewBytes, without.databaseNewBytes);
    const saved = without.secondBackup.addedBytes - withDeltas.secondBackup.addedBytes;
    assert.ok(saved > without.databaseNewBytes / 8, `deltas saved ${saved} bytes`);
  });
});
