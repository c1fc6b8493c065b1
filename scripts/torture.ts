// npm run test:torture -- [--rounds N] [--seed S] [--messages N] [--media-mb M] [--json FILE]
// The kill torture (packages/node/test/torture.ts) for as many rounds as asked; prints each
// round and a summary, and exits 1 when any promise broke. A seed is chosen and printed when
// none is given, so a failing run can be replayed.
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { freshSeed, runTorture } from "../packages/node/test/torture.ts";

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "100" },
    seed: { type: "string" },
    messages: { type: "string", default: "4000" },
    "media-mb": { type: "string", default: "6" },
    json: { type: "string" },
  },
});
const seed = values.seed === undefined ? freshSeed() : Number(values.seed);
console.log(`torture: ${values.rounds} rounds, seed ${seed}`);
const result = await runTorture({
  rounds: Number(values.rounds),
  seed,
  messages: Number(values.messages),
  mediaMb: Number(values["media-mb"]),
  log: (line) => console.log(`  ${line}`),
});
console.log(JSON.stringify({ seed, ...result }, null, 2));
if (values.json) writeFileSync(values.json, `${JSON.stringify({ seed, ...result }, null, 2)}\n`);
process.exit(result.failures.length === 0 ? 0 : 1);
