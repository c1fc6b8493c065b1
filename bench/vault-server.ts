/**
 * The vault server half of `bench/vault-load.ts`, run as its own process so that the load
 * generator does not share its event loop:
 *
 *   node bench/vault-server.ts --data-dir DIR [--db sqlite:PATH|postgres://…]
 *
 * Listens on 127.0.0.1 on a free port with rate limits too high to interfere and no logging,
 * then prints one JSON line `{"url": …, "pid": …}` on stdout. Each line `loop` on stdin is
 * answered with one JSON line `{"active": MS, "idle": MS}`: the event loop's cumulative busy and
 * idle time (`performance.eventLoopUtilization()`). Stops on SIGTERM or SIGINT, and when stdin
 * closes (the parent died without stopping it).
 */

import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { silentLogger } from "../packages/vault/src/server/log.ts";
import { serveVault } from "../packages/vault/src/server/serve.ts";

const { values } = parseArgs({
  options: { "data-dir": { type: "string" }, db: { type: "string" } },
});
const dataDir = values["data-dir"];
if (!dataDir) {
  process.stderr.write("usage: node bench/vault-server.ts --data-dir DIR [--db URL]\n");
  process.exit(2);
}

const vault = await serveVault({
  db: values.db,
  dataDir,
  port: 0,
  config: {
    ipRateLimit: { burst: 1e9, perSecond: 1e9 },
    accountRateLimit: { burst: 1e9, perSecond: 1e9 },
  },
  log: silentLogger,
});
process.stdout.write(`${JSON.stringify({ url: vault.url, pid: process.pid })}\n`);

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  const force = setTimeout(() => process.exit(1), 5000);
  force.unref();
  try {
    await vault.close();
  } finally {
    // A normal exit, so that `--cpu-prof` (when the parent passes it) writes its profile.
    process.exit(0);
  }
}
process.on("SIGTERM", () => void stop());
process.on("SIGINT", () => void stop());
process.stdin.on("error", () => void stop());
const commands = createInterface({ input: process.stdin });
commands.on("line", (line) => {
  if (line.trim() !== "loop") return;
  const { active, idle } = performance.eventLoopUtilization();
  process.stdout.write(`${JSON.stringify({ active, idle })}\n`);
});
commands.on("close", () => void stop());
