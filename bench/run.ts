/**
 * `npm run bench`: Locket, restic and borg side by side on the same generated chat data set.
 *
 *   node bench/run.ts [--size small|medium|full] [--runs N] [--write-doc] ...
 *
 * Generates the data set (see bench/dataset.ts), then, for each run, gives every tool a fresh
 * repository and times: the first backup, a backup with nothing changed, a day of chat with
 * status updates on random rows, a second day with updates on the newest rows, a full restore of
 * the latest snapshot, and a check that reads all data. Prints a Markdown table of medians with
 * the ratio Locket/peer and the goals, and writes bench/results/<timestamp>.json.
 *
 * No timing is asserted: the exit status is 1 only when a command fails or a restore comes back
 * with the wrong bytes, so CI can run `npm run bench:small` to keep the harness working.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { type CodeMode, locketCode } from "./code.ts";
import { prepareDataSet, SIZES, type SizeName } from "./dataset.ts";
import { dropCaches, rssMethod, treeSize } from "./proc.ts";
import {
  type BenchResult,
  fmtMb,
  fmtSeconds,
  goals,
  machine,
  markdown,
  PHASES,
  type Phase,
  PRUNE_KEEP_LAST,
  type Sample,
  summarize,
  writeDoc,
} from "./report.ts";
import {
  aptInstall,
  borgTool,
  borgVersion,
  locketTool,
  resticTool,
  resticVersion,
  TOOL_NAMES,
  type Tool,
  type ToolName,
} from "./tools.ts";

const USAGE = `Usage: node bench/run.ts [options]    (npm run bench -- [options])

Runs Locket, restic and borg side by side on the same generated chat data set and prints a
Markdown table of medians with the ratio Locket/peer; writes bench/results/<timestamp>.json.

Options:
  --size small|medium|full  data set: small 20 k messages + 30 MiB media (CI), medium 200 k +
                            150 MiB (default), full 2 M + 1490 MiB (the issue's 2 GB set)
  --runs N                  runs of every phase, medians reported (default 3; 1 for full)
  --tools LIST              comma-separated subset of locket,restic,borg (default: all)
  --code head|worktree      run Locket from the checked-out commit (unpacked with git archive)
                            or from the working tree as it is (default: worktree)
  --tmp DIR                 where the temporary folder goes (default: the system's temp folder)
  --keep                    keep the temporary folder (data set, repositories)
  --write-doc               put the table into docs/benchmarks.md (this size's section)
  --no-install              do not apt-get install missing restic, borg or GNU time
  --no-drop-caches          do not try to drop the page cache before each timed command
  --render FILE             print (and with --write-doc, write) the table of a saved result
                            (bench/results/*.json) instead of running anything
  -h, --help                this help

restic and borg come from Debian's packages; when missing, they are installed with apt-get if
this runs as root, or skipped (the table says so).`;

const root = resolve(import.meta.dirname, "..");
const log = (line: string) => process.stderr.write(`${line}\n`);

function fail(message: string, status = 2): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(status);
}

const { values } = parseArgs({
  options: {
    size: { type: "string", default: "medium" },
    runs: { type: "string" },
    tools: { type: "string", default: TOOL_NAMES.join(",") },
    code: { type: "string", default: "worktree" },
    tmp: { type: "string" },
    keep: { type: "boolean", default: false },
    "write-doc": { type: "boolean", default: false },
    "no-install": { type: "boolean", default: false },
    "no-drop-caches": { type: "boolean", default: false },
    render: { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
  strict: true,
});
if (values.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
if (values.render !== undefined) {
  const saved = JSON.parse(readFileSync(values.render, "utf8")) as BenchResult;
  if (saved.schema !== 1) fail(`${values.render} is not a result file of this benchmark`);
  // Goals are judged again, so a change of their wording or targets applies to old results.
  if (saved.tools.some((t) => t.name === "locket")) saved.goals = goals(saved.summary, saved.spec);
  const md = markdown(saved);
  process.stdout.write(`${md}\n`);
  if (values["write-doc"]) {
    writeDoc(join(root, "docs", "benchmarks.md"), saved.size, md);
    log(`bench: wrote the ${saved.size} section of docs/benchmarks.md`);
  }
  process.exit(0);
}
if (Number(process.versions.node.split(".")[0]) < 24) {
  fail(`needs Node.js 24 or newer (this is ${process.version}); run it through npm run bench`);
}
const size = values.size as SizeName;
if (!(size in SIZES)) fail(`--size must be small, medium or full, not ${values.size}`);
const spec = SIZES[size];
const runs = values.runs === undefined ? (size === "full" ? 1 : 3) : Number(values.runs);
if (!Number.isInteger(runs) || runs < 1) fail(`--runs must be a positive integer`);
const codeMode = values.code as CodeMode;
if (codeMode !== "head" && codeMode !== "worktree") fail("--code must be head or worktree");
const wanted = values.tools.split(",").map((t) => t.trim()) as ToolName[];
for (const t of wanted) if (!TOOL_NAMES.includes(t)) fail(`unknown tool ${t} in --tools`);
const install = !values["no-install"];

// ---------------------------------------------------------------------------------------------
// Tools and the machine

const skipped: BenchResult["skipped"] = [];
const versions: Partial<Record<ToolName, string>> = {};
{
  const missing = () =>
    (["restic", "borg"] as const).filter(
      (t) => wanted.includes(t) && (t === "restic" ? resticVersion() : borgVersion()) === null,
    );
  let why = "not installed";
  const before = missing();
  if (before.length && install) {
    const pkgs = before.map((t) => (t === "borg" ? "borgbackup" : t));
    const err = aptInstall(pkgs, log);
    if (err) why = `not installed, and not installed now: ${err}`;
  } else if (before.length) {
    why = "not installed (--no-install)";
  }
  for (const t of ["restic", "borg"] as const) {
    if (!wanted.includes(t)) continue;
    const v = t === "restic" ? resticVersion() : borgVersion();
    if (v === null) {
      const pkg = t === "borg" ? "borgbackup" : t;
      skipped.push({ name: t, reason: `${why}; install it with \`apt-get install ${pkg}\`` });
      log(`bench: ${t} skipped: ${why}; install it with: apt-get install ${pkg}`);
    } else {
      versions[t] = v;
    }
  }
}
let rss = rssMethod();
if (rss === "proc-poll" && install && aptInstall(["time"], log) === null) rss = rssMethod();
if (rss === "proc-poll") log("bench: GNU time not found; peak RSS polled from /proc/PID/status");

const tmpBase = resolve(values.tmp ?? tmpdir());
mkdirSync(tmpBase, { recursive: true });
{
  const fs = statfsSync(tmpBase);
  const free = fs.bavail * fs.bsize;
  // The data set and its day copies, one repository per tool, and one restore at a time.
  const need = spec.estimatedBytes * (2.5 + wanted.length) * 1.1;
  if (free < need) {
    fail(
      `${tmpBase} has ${fmtMb(free)} free; --size ${size} needs about ${fmtMb(need)} ` +
        `(use --tmp DIR on a larger disk)`,
      1,
    );
  }
}
const work = mkdtempSync(join(tmpBase, "locket-bench-"));
let cleaned = false;
const cleanup = () => {
  if (cleaned) return;
  cleaned = true;
  if (values.keep) log(`bench: kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
};
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    log(`bench: ${sig}, cleaning up`);
    cleanup();
    process.exit(130);
  });
}

let status = 0;
try {
  status = await main();
} catch (err) {
  log(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  status = 1;
} finally {
  cleanup();
}
process.exit(status);

// ---------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const startedAt = new Date();
  const mach = machine(work);
  log(`bench: --size ${size}, ${runs} run(s), in ${work}`);
  const code = locketCode(root, codeMode, join(work, "code"));
  log(
    `bench: Locket ${code.version} from ` +
      `${codeMode === "head" ? "commit" : "the working tree at"} ` +
      `${code.commit?.slice(0, 12) ?? "(no git)"}` +
      (code.dirty.length ? ` with uncommitted changes in ${code.dirty.length} file(s)` : ""),
  );

  log("bench: generating the data set");
  const dataDir = join(work, "data");
  await mkdir(dataDir);
  const data = await prepareDataSet(dataDir, spec, log);

  const tools: Tool[] = [];
  for (const name of wanted) {
    const ctx = { dir: join(work, name), rss };
    if (name === "locket") tools.push(locketTool(ctx, code));
    else if (name === "restic" && versions.restic) tools.push(resticTool(ctx, versions.restic));
    else if (name === "borg" && versions.borg) tools.push(borgTool(ctx, versions.borg));
  }
  if (tools.length === 0) throw new Error("no tool to run");
  for (const t of tools) log(`bench: ${t.version}: ${t.settings}`);

  const canDrop = !values["no-drop-caches"] && dropCaches();
  log(`bench: page cache ${canDrop ? "dropped before every timed command" : "not dropped (warm)"}`);

  const samples: Sample[] = [];
  const errors: string[] = [];
  for (let run = 1; run <= runs; run++) {
    // Rotate who goes first, so no tool always meets the freshest or the coldest caches.
    const k = (run - 1) % tools.length;
    const order = [...tools.slice(k), ...tools.slice(0, k)];
    const failed = new Set<ToolName>();
    const attempt = async (tool: Tool, what: string, fn: () => Promise<void>) => {
      if (failed.has(tool.name)) return;
      try {
        await fn();
      } catch (err) {
        failed.add(tool.name);
        const why = err instanceof Error ? err.message : String(err);
        const msg = `run ${run}, ${what}, ${tool.label}: ${why}`;
        errors.push(msg);
        log(`bench: FAILED ${msg}`);
      }
    };
    for (const tool of order) {
      await attempt(tool, "init", async () => {
        await tool.reset();
        await tool.init();
      });
    }
    for (const phase of PHASES) {
      data.use(phase.state);
      for (const tool of order) {
        await attempt(tool, phase.label, async () => {
          const s = await runPhase(tool, phase, run);
          samples.push(s);
          const added =
            s.addedBytes === undefined
              ? ""
              : `  ${s.addedBytes < 0 ? "−" : "+"}${fmtMb(Math.abs(s.addedBytes))}`;
          const mem = s.peakRssKiB === null ? "" : `  ${(s.peakRssKiB / 1024).toFixed(0)} MiB`;
          log(
            `  run ${run}/${runs}  ${phase.label.padEnd(20)} ${tool.label.padEnd(7)}` +
              `${fmtSeconds(s.wallMs).padStart(9)}${mem}${added}`,
          );
        });
      }
    }
    for (const tool of order) await tool.reset();
  }
  data.use("base");

  async function runPhase(tool: Tool, phase: Phase, run: number): Promise<Sample> {
    const dataBytes = data.states[phase.state].bytes;
    const timed = async <T>(fn: () => Promise<T>) => {
      const dropped = canDrop && dropCaches();
      const load = loadavg()[0];
      return { m: await fn(), dropped, load };
    };
    const sample = (
      m: { wallMs: number; peakRssKiB: number | null },
      dropped: boolean,
      load: number,
    ) => ({
      run,
      tool: tool.name,
      phase: phase.id,
      wallMs: m.wallMs,
      peakRssKiB: m.peakRssKiB,
      dataBytes,
      load,
      cachesDropped: dropped,
    });
    if (phase.kind === "backup") {
      const before = await tool.repoBytes();
      const { m, dropped, load } = await timed(() => tool.backup(data.paths));
      const after = await tool.repoBytes();
      return { ...sample(m, dropped, load), addedBytes: after - before };
    }
    if (phase.kind === "restore") {
      const target = join(work, "restore", tool.name);
      await rm(target, { recursive: true, force: true });
      await mkdir(target, { recursive: true });
      try {
        const { m, dropped, load } = await timed(() => tool.restore(target));
        // Not timed: the restored files must add up to the data set, byte for byte in size.
        const got = await treeSize(target);
        const want = data.states[phase.state];
        if (got.bytes !== want.bytes || got.files !== want.files) {
          throw new Error(
            `restored ${got.files} files, ${got.bytes} bytes; ` +
              `expected ${want.files} files, ${want.bytes} bytes`,
          );
        }
        return sample(m, dropped, load);
      } finally {
        await rm(target, { recursive: true, force: true });
      }
    }
    if (phase.kind === "prune") {
      await tool.forget(PRUNE_KEEP_LAST);
      const before = await tool.repoBytes();
      const { m, dropped, load } = await timed(() => tool.prune());
      const after = await tool.repoBytes();
      return { ...sample(m, dropped, load), addedBytes: after - before, repoBytes: after };
    }
    const { m, dropped, load } = await timed(() => tool.verify());
    return sample(m, dropped, load);
  }

  const summary = summarize(samples, data.states);
  const result: BenchResult = {
    schema: 1,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    size,
    spec,
    runs,
    code: { mode: code.mode, commit: code.commit, dirty: code.dirty },
    machine: mach,
    cachesDropped: canDrop,
    rssMethod: rss,
    tools: tools.map((t) => ({
      name: t.name,
      label: t.label,
      version: t.version,
      settings: t.settings,
    })),
    skipped,
    states: data.states,
    samples,
    summary,
    goals: tools.some((t) => t.name === "locket") ? goals(summary, spec) : [],
    errors,
  };
  const resultsDir = join(root, "bench", "results");
  await mkdir(resultsDir, { recursive: true });
  const stamp = startedAt
    .toISOString()
    .replace(/:/g, "-")
    .replace(/\.\d+Z$/, "Z");
  const jsonPath = join(resultsDir, `${stamp}-${size}.json`);
  writeFileSync(jsonPath, `${JSON.stringify(result, null, 2)}\n`);
  const md = markdown(result);
  process.stdout.write(`${md}\n`);
  log(`bench: results in ${jsonPath}`);
  if (values["write-doc"]) {
    const doc = join(root, "docs", "benchmarks.md");
    writeDoc(doc, size, md);
    log(`bench: wrote the ${size} section of ${doc}`);
  }
  if (errors.length) log(`bench: ${errors.length} command(s) failed (see above)`);
  return errors.length ? 1 : 0;
}
