/**
 * How the `locket` command tunes its process: for the commands that read packs a restart with
 * glibc malloc tunables and a small V8 young generation, for `backup` with the young generation
 * only; an 8-thread libuv pool for `restore`, and the fsyncs a restore runs at once. A probe loaded with `--import` prints each process's settings, so the test sees both the
 * first process and the one it restarts as.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, type TestContext, test } from "node:test";
import { defaultFsyncsAtOnce } from "../src/restore.ts";
import { cliEnv, LOCKET_JS, scratch } from "./harness.ts";

const GLIBC = Boolean(
  (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header
    ?.glibcVersionRuntime,
);
const ARENAS = "glibc.malloc.arena_max=2";
const TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864";
const YOUNG = "--max-semi-space-size=2";

/** Runs `locket ARGS` under the probe; returns the settings each process printed, and the run. */
async function probe(t: TestContext, args: string[], extra: Record<string, string> = {}) {
  const dir = await scratch(t, "tuning");
  const file = join(dir, "probe.mjs");
  await writeFile(
    file,
    'import { isMainThread } from "node:worker_threads";\n' +
      "if (isMainThread) process.stderr.write(`probe ${JSON.stringify({ " +
      "tunables: process.env.GLIBC_TUNABLES ?? null, " +
      "pool: process.env.UV_THREADPOOL_SIZE ?? null, " +
      'young: process.execArgv.find((a) => a.startsWith("--max-semi-space-size")) ?? null ' +
      "})}\\n`);\n",
  );
  const env = cliEnv(join(dir, "home"), extra);
  if (!("GLIBC_TUNABLES" in extra)) delete env.GLIBC_TUNABLES;
  if (!("UV_THREADPOOL_SIZE" in extra)) delete env.UV_THREADPOOL_SIZE;
  const repo = join(dir, "no-repository-here");
  const r = spawnSync(process.execPath, [`--import=${file}`, LOCKET_JS, ...args, "--repo", repo], {
    env,
    encoding: "utf8",
    timeout: 60_000,
  });
  const processes = r.stderr
    .split("\n")
    .filter((l) => l.startsWith("probe "))
    .map(
      (l) =>
        JSON.parse(l.slice(6)) as {
          tunables: string | null;
          pool: string | null;
          young: string | null;
        },
    );
  // The rest of standard error, with this run's own folder named alike in every run.
  const rest = r.stderr
    .split("\n")
    .filter((l) => !l.startsWith("probe "))
    .join("\n")
    .replaceAll(dir, "DIR");
  return { processes, status: r.status, stdout: r.stdout, rest };
}

describe("process tuning", () => {
  test("check restarts once with the malloc tunables, with the same result as without", async (t) => {
    if (!GLIBC) return t.skip("glibc only");
    const tuned = await probe(t, ["check"]);
    assert.deepEqual(tuned.processes, [
      { tunables: null, pool: null, young: null },
      { tunables: TUNABLES, pool: null, young: YOUNG },
    ]);
    // Without the malloc tuning it still restarts, for the young generation only.
    const plain = await probe(t, ["check"], { LOCKET_MALLOC_TUNING: "0" });
    assert.deepEqual(plain.processes, [
      { tunables: null, pool: null, young: null },
      { tunables: null, pool: null, young: YOUNG },
    ]);
    // The restarted command is the same command: same exit status, same output.
    assert.notEqual(tuned.status, 0, tuned.rest);
    assert.equal(tuned.status, plain.status);
    assert.equal(tuned.stdout, plain.stdout);
    assert.match(tuned.rest, /no-repository-here/);
    assert.equal(tuned.rest, plain.rest);
  });

  test("restore restarts with the tunables, two arenas and a 32-thread pool; a pool size set is kept", async (t) => {
    if (!GLIBC) return t.skip("glibc only");
    const r = await probe(t, ["restore", "latest", "--target", "out"]);
    // The probe runs before the command sets the pool size in the first process.
    assert.deepEqual(r.processes, [
      { tunables: null, pool: null, young: null },
      { tunables: `${TUNABLES}:${ARENAS}`, pool: "32", young: YOUNG },
    ]);
    const own = await probe(t, ["restore", "latest", "--target", "out"], {
      UV_THREADPOOL_SIZE: "3",
    });
    assert.deepEqual(own.processes.at(-1), {
      tunables: `${TUNABLES}:${ARENAS}`,
      pool: "3",
      young: YOUNG,
    });
  });

  test("backup restarts with two malloc arenas only; GLIBC_TUNABLES set is the user's", async (t) => {
    if (!GLIBC) return t.skip("glibc only");
    const backup = await probe(t, ["backup", "nothing"]);
    assert.deepEqual(backup.processes, [
      { tunables: null, pool: null, young: null },
      { tunables: ARENAS, pool: null, young: YOUNG },
    ]);
    const plain = await probe(t, ["backup", "nothing"], { LOCKET_MALLOC_TUNING: "0" });
    assert.deepEqual(plain.processes.at(-1), { tunables: null, pool: null, young: YOUNG });
    const own = await probe(t, ["check"], { GLIBC_TUNABLES: "glibc.malloc.arena_max=4" });
    assert.deepEqual(own.processes, [
      { tunables: "glibc.malloc.arena_max=4", pool: null, young: null },
      { tunables: "glibc.malloc.arena_max=4", pool: null, young: YOUNG },
    ]);
    const other = await probe(t, ["snapshots"]);
    assert.deepEqual(other.processes, [{ tunables: null, pool: null, young: null }]);
  });

  test("a restore fsyncs all of libuv's threadpool but two threads at once, at least one", () => {
    const saved = process.env.UV_THREADPOOL_SIZE;
    try {
      delete process.env.UV_THREADPOOL_SIZE;
      assert.equal(defaultFsyncsAtOnce(), 2);
      process.env.UV_THREADPOOL_SIZE = "8";
      assert.equal(defaultFsyncsAtOnce(), 6);
      process.env.UV_THREADPOOL_SIZE = "2";
      assert.equal(defaultFsyncsAtOnce(), 1);
      process.env.UV_THREADPOOL_SIZE = "many";
      assert.equal(defaultFsyncsAtOnce(), 2);
    } finally {
      if (saved === undefined) delete process.env.UV_THREADPOOL_SIZE;
      else process.env.UV_THREADPOOL_SIZE = saved;
    }
  });
});
