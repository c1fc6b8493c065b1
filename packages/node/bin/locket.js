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
const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
