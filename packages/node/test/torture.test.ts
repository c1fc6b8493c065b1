// A bounded run of the kill torture (torture.ts) for every `npm test`: a few rounds, most of
// them killed. `npm run test:torture` runs long ones.
import assert from "node:assert/strict";
import { test } from "node:test";
import { runTorture } from "./torture.ts";

test("backups, forgets and prunes killed at random moments leave a repository that checks and restores", async (t) => {
  const result = await runTorture({
    rounds: 8,
    // A seed whose 8 rounds schedule kills of plain and live-writer backups, a forget and a prune.
    seed: 12,
    messages: 2000,
    mediaMb: 3,
    verifyEvery: 4,
    log: (line) => t.diagnostic(line),
  });
  t.diagnostic(JSON.stringify({ ...result, failures: result.failures.length }));
  assert.deepEqual(result.failures, []);
  const killed = Object.values(result.commands).reduce((n, c) => n + c.killed, 0);
  assert.ok(killed >= 2, `${killed} commands killed`);
  assert.ok(result.restoresVerified >= 2, `${result.restoresVerified} restores verified`);
  assert.ok(result.liveWriterBackups >= 2, `${result.liveWriterBackups} live-writer backups`);
});
