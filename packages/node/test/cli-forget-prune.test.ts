/**
 * `locket forget` and `locket prune` through the real CLI: a week of backups, a retention
 * policy, the two phases of prune, and a repository that still checks and restores afterwards.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, readdir, rm, stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { diffTrees } from "../src/compare.ts";
import { simulateDay, writeDemoData } from "../src/demo-data.ts";
import { cliEnv, fails, locket, ok, scratch } from "./harness.ts";

interface Decision {
  readonly id: string;
  readonly seq: number;
  readonly reasons: string[];
}
interface ForgetJson {
  readonly dryRun: boolean;
  readonly kept: Decision[];
  readonly forgotten: Decision[];
}
interface PruneJson {
  readonly condemnedPacks: number;
  readonly damagedPacks: number;
  readonly deletedPacks: number;
  readonly deletedBytes: number;
  readonly waitingPacks: number;
  readonly repackedPacks: number;
  readonly staleRemoved: number;
}

async function sizeOf(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) n += (await stat(join(e.parentPath, e.name))).size;
  }
  return n;
}

test("forget --keep-last, then prune in two phases: space comes back, the rest restores", async (t) => {
  const dir = await scratch(t, "forget-prune");
  const chat = join(dir, "chat");
  const repo = join(dir, "repo");
  const env = cliEnv(join(dir, "home"));
  writeDemoData(chat, { messages: 4000, mediaMb: 2, seed: 3 });
  await ok(["init", "--repo", repo], env);
  const paths = [join(chat, "chat.db"), join(chat, "Media")];
  await ok(["backup", ...paths], env);
  for (let day = 0; day < 3; day++) {
    simulateDay(chat, { newMessages: 200, newMedia: 2, seed: 10 + day });
    await ok(["backup", ...paths], env);
  }

  const dry = await ok<ForgetJson>(["forget", "--keep-last", "2", "--dry-run"], env);
  assert.equal(dry.dryRun, true);
  assert.deepEqual(
    dry.forgotten.map((d) => d.seq),
    [1, 2],
  );
  assert.equal((await ok<{ snapshots: unknown[] }>(["snapshots"], env)).snapshots.length, 4);

  const forgot = await ok<ForgetJson>(["forget", "--keep-last", "2"], env);
  assert.deepEqual(
    forgot.kept.map((d) => [d.seq, d.reasons]),
    [
      [3, ["last"]],
      [4, ["last"]],
    ],
  );
  assert.equal((await ok<{ snapshots: unknown[] }>(["snapshots"], env)).snapshots.length, 2);

  // What a backup killed while writing a pack leaves in tmp/: removed once a day old, and only then.
  const stale = join(repo, "tmp", "left-by-a-killed-backup");
  const fresh = join(repo, "tmp", "being-written");
  await writeFile(stale, "x");
  await writeFile(fresh, "y");
  const twoDaysAgo = new Date(Date.now() - 2 * 24 * 3_600_000);
  await utimes(stale, twoDaysAgo, twoDaysAgo);
  // A pack-named file in no index whose header does not read: no backup adopts it.
  const damagedName = randomBytes(32).toString("hex");
  const damaged = join(repo, "data", damagedName.slice(0, 2), damagedName);
  await mkdir(join(repo, "data", damagedName.slice(0, 2)), { recursive: true });
  await writeFile(damaged, randomBytes(50_000));
  const dryPrune = await ok<PruneJson>(["prune", "--dry-run"], env);
  assert.equal(dryPrune.staleRemoved, 0, "a dry run removes nothing");
  assert.equal(dryPrune.damagedPacks, 1);
  const dryText = await locket(["prune", "--dry-run"], env);
  assert.equal(dryText.status, 0);
  assert.match(
    dryText.stdout,
    /1 of them in no index and damaged \(no backup can adopt them\): would be condemned/,
  );

  const before = await sizeOf(repo);
  const phase1 = await ok<PruneJson>(["prune"], env);
  assert.equal(phase1.staleRemoved, 1);
  assert.deepEqual(await readdir(join(repo, "tmp")), ["being-written"]);
  await rm(fresh);
  assert.ok(phase1.condemnedPacks > 0, "the first phase condemns");
  assert.equal(phase1.damagedPacks, 1, "the damaged pack too");
  assert.equal(phase1.deletedPacks, 0, "and deletes nothing");
  const checked = await ok(["check", "--read-data"], env);
  assert.match(checked.stderr, /pack was in no index and damaged: a prune condemned it/);
  const phase2 = await ok<PruneJson>(["prune", "--keep-delete", "0"], env);
  assert.ok(phase2.deletedPacks >= phase1.waitingPacks);
  assert.equal(phase2.waitingPacks, 0);
  await assert.rejects(stat(damaged), { code: "ENOENT" }, "the damaged pack is deleted");
  const after = await sizeOf(repo);
  t.diagnostic(`repository ${before} B → ${after} B`);
  assert.ok(after < before, `${before} → ${after}`);
  await ok(["check", "--read-data"], env);

  const target = join(dir, "restored");
  await ok(["restore", "latest", "--target", target], env);
  assert.deepEqual(await diffTrees(chat, target), [], "the newest snapshot restores exactly");

  // A backup after all this gets the next sequence number and a sound history.
  simulateDay(chat, { newMessages: 50, newMedia: 0, seed: 20 });
  const next = await ok<{ seq: number }>(["backup", ...paths], env);
  assert.equal(next.seq, 5);
  await ok(["check"], env);
});

test("forget and prune refuse bad requests with usage errors (exit 2)", async (t) => {
  const dir = await scratch(t, "forget-usage");
  const env = cliEnv(join(dir, "home"));
  await ok(["init", "--repo", join(dir, "repo")], env);
  const data = join(dir, "data");
  writeDemoData(data, { messages: 200, mediaMb: 0, seed: 1 });
  const first = await ok<{ snapshot: string }>(["backup", data], env);
  const nothing = await fails(["forget"], env, 2, { clean: true });
  assert.match(nothing.error.message, /retention rule/);
  const newest = await fails(["forget", first.snapshot], env, 2, { clean: true });
  assert.match(newest.error.message, /newest/);
  await fails(["forget", "--keep-last", "two"], env, 2, { clean: true });
  await fails(["prune", "--keep-delete", "3 weeks"], env, 2, { clean: true });
  await fails(["prune", "--max-unused", "150"], env, 2, { clean: true });
});
