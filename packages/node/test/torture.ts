// The kill torture: backups, forgets and prunes of a changing chat data set, many of them killed
// with SIGKILL at a random moment, each followed by `locket check`; now and then, and at the end,
// every snapshot still listed is restored and compared with the data set as it was backed up
// (byte for byte; a database read while an app had rows in its WAL, by its rows), and
// `check --read-data` reads everything. `npm test` runs a few rounds
// (torture.test.ts); `npm run test:torture -- --rounds N` runs as many as asked
// (scripts/torture.ts), and docs/reliability.md holds the figures of a long run.
import { createHash, randomBytes } from "node:crypto";
import { lstat, mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { hashTree } from "../src/compare.ts";
import { simulateDay, writeDemoData } from "../src/demo-data.ts";
import { type CliResult, cliEnv, locket, parseJson, show, start } from "./harness.ts";

export interface TortureOptions {
  /** Rounds: each changes the data (usually) and runs one command, perhaps killed. */
  readonly rounds: number;
  /** Seed of the choices (commands, kill times, days); the same seed makes the same choices. */
  readonly seed?: number;
  /** Messages in the first version of the data set (default 4000). */
  readonly messages?: number;
  /** MiB of media in the first version (default 6). */
  readonly mediaMb?: number;
  /** Restore every listed snapshot and compare after this many rounds (default 10), and at the end. */
  readonly verifyEvery?: number;
  /** Where to work (a fresh temporary folder by default, removed at the end). */
  readonly dir?: string;
  /** Each round's outcome, as it happens. */
  readonly log?: (line: string) => void;
}

/** What a run did; `failures` lists every broken promise (empty when all held). */
export interface TortureResult {
  readonly rounds: number;
  /** Commands run, by command: how many ran to the end and how many were killed. */
  readonly commands: Record<string, { completed: number; killed: number }>;
  /** `check` runs after a round, all of which must pass. */
  readonly checks: number;
  /** Snapshots restored and compared with what was backed up (bytes; rows for live-writer ones). */
  readonly restoresVerified: number;
  /** `check --read-data` runs. */
  readonly readDataChecks: number;
  /** Backups run while an app had committed pages in the database's WAL (a private copy). */
  readonly liveWriterBackups: number;
  /** Private database copies left in the temporary folder at the end (made in the last minute). */
  readonly copiesLeft: number;
  readonly failures: readonly string[];
  readonly seconds: number;
}

/** A small seeded PRNG (mulberry32): the same seed gives the same rounds. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Command = "backup" | "forget" | "prune" | "prune-now";

const ARGS: Record<Command, readonly string[]> = {
  backup: ["backup"],
  forget: ["forget", "--keep-last", "3"],
  prune: ["prune"],
  // Deletes condemned packs at once: the documented single-user use (no backup runs meanwhile).
  "prune-now": ["prune", "--keep-delete", "0"],
};

export async function runTorture(opts: TortureOptions): Promise<TortureResult> {
  const t0 = Date.now();
  const seed = opts.seed ?? 1;
  const rand = prng(seed);
  const log = opts.log ?? (() => {});
  const own = opts.dir === undefined;
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), "locket-torture-")));
  const data = join(dir, "data");
  const repo = join(dir, "repo");
  // The commands' own temporary folder: the database copies killed backups leave are counted.
  const tmp = join(dir, "tmp");
  const env = cliEnv(join(dir, "home"), { LOCKET_REPOSITORY: repo, TMPDIR: tmp });
  const paths = [join(data, "chat.db"), join(data, "Media")];
  const commands: Record<string, { completed: number; killed: number }> = {};
  const failures: string[] = [];
  // What each completed backup was given, by its snapshot ID.
  const expected = new Map<string, Given>();
  // How long each command took when it ran to the end, to pick kill times within it.
  const lastMs: Record<Command, number> = {
    backup: 3000,
    forget: 800,
    prune: 1500,
    "prune-now": 1500,
  };
  let checks = 0;
  let restoresVerified = 0;
  let readDataChecks = 0;
  let liveWriterBackups = 0;
  let copiesLeft = 0;

  const fail = (what: string, r?: CliResult) => {
    failures.push(r ? `${what}\n${show(r)}` : what);
    log(`FAIL ${what}`);
  };

  const listed = async (round: number): Promise<{ id: string; seq: number }[]> => {
    const r = await locket(["snapshots", "--json"], env);
    if (r.status !== 0) {
      fail(`round ${round}: snapshots`, r);
      return [];
    }
    return parseJson(r).snapshots as { id: string; seq: number }[];
  };
  // The snapshots listed after the last round: none may vanish but what a forget may drop.
  let previous: { id: string; seq: number }[] = [];

  const verify = async (round: number): Promise<void> => {
    for (const { id } of await listed(round)) {
      const want = expected.get(id);
      if (!want) {
        fail(`round ${round}: snapshot ${id} was made by no backup of this run`);
        continue;
      }
      const target = join(dir, `restore-${round}-${id.slice(0, 8)}`);
      const r = await locket(["restore", id, "--target", target, "--json"], env);
      if (r.status !== 0) {
        fail(`round ${round}: restore ${id}`, r);
        continue;
      }
      const got = await hashTree(target);
      const diff = [...new Set([...want.files.keys(), ...got.keys()])].filter(
        (p) => want.files.get(p) !== got.get(p) && !(want.liveDb && p === "chat.db"),
      );
      if (want.liveDb) {
        const db = new DatabaseSync(join(target, "chat.db"));
        const ok = db.prepare("PRAGMA integrity_check").get() as { integrity_check: string };
        if (ok.integrity_check !== "ok" || contentOf(db) !== want.liveDb)
          diff.push("chat.db (rows)");
        db.close();
      }
      if (diff.length > 0)
        fail(`round ${round}: snapshot ${id} restores other bytes: ${diff.join(", ")}`);
      else restoresVerified++;
      await rm(target, { recursive: true, force: true });
    }
    const deep = await locket(["check", "--read-data", "--json"], env);
    readDataChecks++;
    if (deep.status !== 0) fail(`round ${round}: check --read-data`, deep);
  };

  try {
    await mkdir(data, { recursive: true });
    await mkdir(tmp, { recursive: true });
    writeDemoData(data, { messages: opts.messages ?? 4000, mediaMb: opts.mediaMb ?? 6, seed });
    const init = await locket(["init", "--repo", repo, "--json"], env);
    if (init.status !== 0) throw new Error(`init failed\n${show(init)}`);

    for (let round = 1; round <= opts.rounds; round++) {
      if (rand() < 0.75) {
        simulateDay(data, {
          newMessages: 50 + Math.floor(rand() * 400),
          statusUpdates: rand() * 0.03,
          recent: rand() < 0.5,
          newMedia: Math.floor(rand() * 3),
          seed: seed * 100_000 + round,
        });
      }
      const x = rand();
      const command: Command =
        x < 0.7 ? "backup" : x < 0.8 ? "forget" : x < 0.92 ? "prune" : "prune-now";
      const args = command === "backup" ? [...ARGS.backup, ...paths] : ARGS[command];
      // Killed in 60 % of the rounds, at a moment spread over the command's usual run.
      const killAfter = rand() < 0.6 ? Math.floor(rand() * lastMs[command] * 1.2) : undefined;
      // A third of the backups run while an app has committed pages in the WAL (not yet in the
      // database file): the backup then reads a private copy, made with SQLite's backup API.
      const live = command === "backup" && rand() < 0.3 ? liveWriter(data, round) : undefined;
      if (live) liveWriterBackups++;
      const given = command === "backup" ? await givenTo(data, live) : undefined;
      const { child, done } = start([...args, "--json"], env, { timeoutMs: 120_000 });
      let killed = false;
      const timer =
        killAfter === undefined
          ? undefined
          : setTimeout(() => {
              killed = true;
              child.kill("SIGKILL");
            }, killAfter);
      const r = await done;
      clearTimeout(timer);
      live?.close();
      commands[command] ??= { completed: 0, killed: 0 };
      const tally = commands[command];
      if (killed && r.signal === "SIGKILL") {
        tally.killed++;
        log(`round ${round}: ${command} killed after ${killAfter} ms`);
      } else if (r.status === 0) {
        tally.completed++;
        lastMs[command] = r.ms;
        if (given) expected.set(String(parseJson(r).snapshot), given);
        log(`round ${round}: ${command} done in ${r.ms} ms`);
      } else {
        // Not killed by the torture: a failure, a crash, or a hang that its timeout ended.
        fail(`round ${round}: ${command} failed`, r);
      }
      const now = await listed(round);
      const ids = new Set(now.map((snap) => snap.id));
      // A backup killed after storing its snapshot: that snapshot must restore what it saw.
      if (given) for (const id of ids) if (!expected.has(id)) expected.set(id, given);
      // Only a forget drops snapshots, and never the 3 newest (--keep-last 3), however it ends.
      const newest = [...previous].sort((a, b) => b.seq - a.seq).slice(0, 3);
      for (const snap of command === "forget" ? newest : previous) {
        if (!ids.has(snap.id))
          fail(`round ${round}: snapshot ${snap.id} vanished after ${command}`);
      }
      previous = now;
      const check = await locket(["check", "--json"], env);
      checks++;
      if (check.status !== 0) fail(`round ${round}: check after ${command}`, check);
      if (round % (opts.verifyEvery ?? 10) === 0) await verify(round);
    }
    // A last backup that runs to the end, with a live writer (so it makes a copy, and first
    // removes those of killed backups), then everything restored and read.
    const live = liveWriter(data, opts.rounds + 1);
    const given = await givenTo(data, live);
    const lastStart = Date.now();
    const last = await locket(["backup", ...paths, "--json"], env);
    live.close();
    if (last.status !== 0) fail("final backup", last);
    else expected.set(String(parseJson(last).snapshot), given);
    await verify(opts.rounds + 1);
    // Copies of killed backups over a minute old when the last backup started: it must have
    // removed them (5 s of slack for the clock and its start-up).
    for (const name of await readdir(tmp)) {
      if (!name.startsWith("locket-sqlite-")) continue;
      copiesLeft++;
      const made = (await lstat(join(tmp, name))).mtimeMs;
      if (made < lastStart - 65_000) {
        fail(
          `a killed backup's copy ${name}, made ${lastStart - made} ms before the last backup, is left`,
        );
      }
    }
  } finally {
    if (own) await rm(dir, { recursive: true, force: true });
  }
  return {
    rounds: opts.rounds,
    commands,
    checks,
    restoresVerified,
    readDataChecks,
    liveWriterBackups,
    copiesLeft,
    failures,
    seconds: Math.round((Date.now() - t0) / 100) / 10,
  };
}

/**
 * What a backup was given: the files' hashes by the path a restore gives them, and, when an app
 * had committed pages in the database's WAL, the database's content (its rows, see contentOf):
 * then the database file alone is not what the backup stores.
 */
interface Given {
  readonly files: Map<string, string>;
  readonly liveDb?: string;
}

async function givenTo(data: string, live: DatabaseSync | undefined): Promise<Given> {
  const files = await backedUp(data);
  return live ? { files, liveDb: contentOf(live) } : { files };
}

/**
 * An app's connection to `data`'s database with rows committed to the WAL and not checkpointed
 * into the database file; closing it checkpoints them.
 */
function liveWriter(data: string, round: number): DatabaseSync {
  const db = new DatabaseSync(join(data, "chat.db"));
  db.exec("PRAGMA wal_autocheckpoint = 0");
  db.exec("CREATE TABLE IF NOT EXISTS torture_live (round INTEGER, payload BLOB)");
  const insert = db.prepare("INSERT INTO torture_live VALUES (?, randomblob(3000))");
  for (let i = 0; i < 20; i++) insert.run(round);
  return db;
}

/** A hash of every row of every table, as `db` sees them (committed WAL pages included). */
function contentOf(db: DatabaseSync): string {
  const h = createHash("sha256");
  const tables = db
    .prepare(
      "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .all() as { name: string }[];
  for (const { name } of tables) {
    h.update(`${name}\n`);
    for (const row of db.prepare(`SELECT * FROM "${name}"`).iterate()) {
      h.update(
        JSON.stringify(row, (_, v) =>
          v instanceof Uint8Array ? Buffer.from(v).toString("base64") : v,
        ),
      );
    }
  }
  return h.digest("hex");
}

/**
 * The files a backup of `data`'s chat.db and Media takes, by the path a restore gives them: not
 * the `-wal` and `-shm` files SQLite leaves beside a WAL database when a process that had it
 * open is killed (a backup folds a live WAL into its copy of the database; a killed backup
 * leaves them as any killed SQLite reader does, and the next opener of the database clears them).
 */
async function backedUp(data: string): Promise<Map<string, string>> {
  const all = await hashTree(data);
  return new Map([...all].filter(([p]) => p === "chat.db" || p.startsWith("Media/")));
}

/** A seed from the clock, for runs that should differ (printed, so a failure can be replayed). */
export function freshSeed(): number {
  return randomBytes(4).readUInt32LE(0) >>> 1;
}
