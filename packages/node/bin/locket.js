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
