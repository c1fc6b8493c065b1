#!/usr/bin/env node
// The `locket` command. Node >= 24 runs the TypeScript sources directly (type stripping).
const [major] = process.versions.node.split(".").map(Number);
if (major < 24) {
  process.stderr.write(
    `locket: needs Node.js 24 or newer (this is ${process.version}); run it through npx or npm scripts\n`,
  );
  process.exit(1);
}
// A closed pipe (`locket snapshots | head -1`) is a normal way for a reader to stop listening.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (err) => {
    if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw err;
  });
}
// A restore fsyncs every file it writes, all of libuv's threadpool but two threads at once
// (restore.ts), and ext4 commits its journal once for all the fsyncs waiting on it: 8 threads
// instead of 4 made a 586 MiB restore 12 % faster, and 32 instead of 8 the benchmark's 1.8 GiB
// one 11 % (12.91 -> 11.44 s, 5 alternating pairs; the files' fsyncs no longer trail behind
// the writes; 64 gave the same as 32). Set before the threadpool starts, and before the restart
// below, which inherits it.
if (process.argv[2] === "restore") process.env.UV_THREADPOOL_SIZE ??= "32";
// Commands that read packs (restore, check, prune, drill) allocate and free a buffer of up to
// 16 MiB per read on every thread. glibc's malloc gives blocks that large back to the kernel at
// once, which then faults fresh zeroed pages in for the next: a third of a restore's CPU time was
// the kernel's. Keeping blocks up to 32 MiB in the heap, and trimming it only past 64 MiB of free
// space, made a 586 MiB restore 15 % faster (3.85 -> 3.3 s) and its verification 17 % (1.98 ->
// 1.65 s), for 5-10 % more peak memory. malloc reads its settings when the process starts, so the
// command starts itself again with them (~50 ms). No malloc setting where GLIBC_TUNABLES is set
// already (the user's choice), on other C libraries, or with LOCKET_MALLOC_TUNING=0.
// The restart also caps V8's young generation at 2 MiB semi-spaces (a flag read at start-up
// only; v8.setFlagsFromString later changes nothing): the decoded segments these commands churn
// through made V8 grow it to 64 MB on the main thread. Peak memory of the benchmark's 2 GB
// restore 442-464 -> 361-397 MiB and of its `check --read-data` 371-427 -> 292-309 MiB, time
// within noise (4 runs each). A backup grew it to 85-92 MB with 7-25 MB in use: capped, its
// first backup of that set peaks at 344-372 instead of 386-402 MiB and a day at 323-335 instead
// of 376-390 MiB, time within noise (3 alternating runs each). A backup does without the malloc
// tuning above: it added 35 MiB to its peak for no clear gain in time. A --max-semi-space-size
// given to node still wins: it comes later on the command line.
// `restore` and `backup` also keep malloc to two arenas (glibc makes up to 8 per core, one per
// thread that allocates at once, and a restore has two workers and 32 threadpool threads): the
// benchmark's 1.8 GiB restore peaked at 273-292 instead of 306-325 MiB, in the same time (8
// alternating pairs, medians 10.80 and 10.82 s; one arena: 259-275 MiB, but slower), and its
// first backup at 302-307 instead of 309-320 MiB (3 pairs, each faster). Not `check`: its
// `--read-data` of the same repository was 3 % slower with two (4 pairs, each slower).
const ARENAS = "glibc.malloc.arena_max=2";
const MALLOC_TUNING = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864";
/** The commands that start again, and the GLIBC_TUNABLES each gets. */
const TUNABLES = {
  restore: `${MALLOC_TUNING}:${ARENAS}`,
  check: MALLOC_TUNING,
  prune: MALLOC_TUNING,
  drill: MALLOC_TUNING,
  backup: ARENAS,
};
const YOUNG_GENERATION = "--max-semi-space-size=2";
const tuneMalloc =
  Object.hasOwn(TUNABLES, process.argv[2]) &&
  process.env.GLIBC_TUNABLES === undefined &&
  process.env.LOCKET_MALLOC_TUNING !== "0" &&
  Boolean(process.report?.getReport().header.glibcVersionRuntime);
const capYoung = Object.hasOwn(TUNABLES, process.argv[2]) && process.env.LOCKET_RESTARTED !== "1";
delete process.env.LOCKET_RESTARTED; // nothing this process starts should inherit it
if (capYoung && typeof process.execve === "function") {
  try {
    process.execve(
      process.execPath,
      [process.execPath, YOUNG_GENERATION, ...process.execArgv, ...process.argv.slice(1)],
      {
        ...process.env,
        // Set, so the command cannot start itself again (an execve failing is caught below).
        LOCKET_RESTARTED: "1",
        ...(tuneMalloc ? { GLIBC_TUNABLES: TUNABLES[process.argv[2]] } : {}),
      },
    );
  } catch {
    // Not started again: the command runs here, with V8's and malloc's defaults.
  }
}
// V8's code cache for Locket's modules (compiled from TypeScript at every start otherwise):
// loading @locket/core took ~330 ms without it and ~60 ms with it. Per user, in the platform's
// cache folder; NODE_COMPILE_CACHE chooses another, NODE_DISABLE_COMPILE_CACHE=1 turns it off.
// Worker threads inherit it through the environment.
if (!process.env.NODE_COMPILE_CACHE && !process.env.NODE_DISABLE_COMPILE_CACHE) {
  const { homedir } = await import("node:os");
  const { join } = await import("node:path");
  const base = process.env.XDG_CACHE_HOME || join(homedir(), ".cache");
  process.env.NODE_COMPILE_CACHE = join(base, "locket", "compile-cache");
}
if (process.env.NODE_COMPILE_CACHE && !process.env.NODE_DISABLE_COMPILE_CACHE) {
  const { enableCompileCache } = await import("node:module");
  try {
    enableCompileCache?.(process.env.NODE_COMPILE_CACHE);
  } catch {
    // A cache that cannot be used costs time, never correctness.
  }
}
const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
