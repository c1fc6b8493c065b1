/**
 * Results of a benchmark run: medians per tool and phase, the goals from the issue, the machine,
 * and the Markdown that `npm run bench` prints and `--write-doc` puts into docs/benchmarks.md.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, loadavg, release, totalmem } from "node:os";
import { basename } from "node:path";
import type { SizeName, SizeSpec, StateInfo, StateName } from "./dataset.ts";
import { median, probe, type RssMethod } from "./proc.ts";
import { TOOL_NAMES, type ToolName } from "./tools.ts";

export type PhaseId = "first" | "nochange" | "day1" | "day2" | "restore" | "verify" | "prune";

/** One timed phase: which data state it works on and what it does. */
export interface Phase {
  id: PhaseId;
  label: string;
  state: StateName;
  kind: "backup" | "restore" | "verify" | "prune";
}

export const PHASES: readonly Phase[] = [
  { id: "first", label: "first backup", state: "base", kind: "backup" },
  { id: "nochange", label: "no-change backup", state: "base", kind: "backup" },
  { id: "day1", label: "day 1 (random rows)", state: "day1", kind: "backup" },
  { id: "day2", label: "day 2 (newest rows)", state: "day2", kind: "backup" },
  { id: "restore", label: "full restore", state: "day2", kind: "restore" },
  { id: "verify", label: "verify all data", state: "day2", kind: "verify" },
  // After the four backups: forget the two oldest (half), then reclaim their space.
  { id: "prune", label: "prune (½ forgotten)", state: "day2", kind: "prune" },
];

/** Snapshots the prune phase keeps: half of the four backups. */
export const PRUNE_KEEP_LAST = 2;

/** One measured command. */
export interface Sample {
  run: number;
  tool: ToolName;
  phase: PhaseId;
  wallMs: number;
  peakRssKiB: number | null;
  /** Repository growth (backups; negative for prune: the space freed). */
  addedBytes?: number;
  /** Bytes of the repository after the command (prune only). */
  repoBytes?: number;
  /** Bytes of the data state the phase works on (the throughput numerator). */
  dataBytes: number;
  /** 1-minute load average just before the command. */
  load: number;
  cachesDropped: boolean;
}

/** Medians of one tool's samples of one phase. */
export interface PhaseSummary {
  runs: number;
  wallMs: number;
  /** Data-state bytes per second, in MB/s (10^6). */
  mbPerS: number;
  peakRssKiB: number | null;
  addedBytes?: number;
  repoBytes?: number;
  /** Repository growth minus the day's new media bytes (day phases only). */
  dbBytes?: number;
}

export type Summary = Partial<Record<PhaseId, Partial<Record<ToolName, PhaseSummary>>>>;

/** One goal from the issue, judged on the measured medians. */
export interface Goal {
  goal: string;
  target: string;
  measured: string;
  /** null when it cannot be judged (a peer was skipped or failed). */
  met: boolean | null;
}

/** The machine the benchmark ran on. */
export interface Machine {
  cpus: number;
  cpuModel: string;
  memoryBytes: number;
  disk: string;
  kernel: string;
  node: string;
  load: [number, number, number];
}

export interface ToolInfo {
  name: ToolName;
  label: string;
  version: string;
  settings: string;
}

/** Everything a run produced; written as bench/results/<timestamp>.json. */
export interface BenchResult {
  schema: 1;
  startedAt: string;
  finishedAt: string;
  size: SizeName;
  spec: SizeSpec;
  runs: number;
  code: { mode: string; commit: string | null; dirty: string[] };
  machine: Machine;
  /** Whether the page cache was dropped before each timed command. */
  cachesDropped: boolean;
  rssMethod: RssMethod;
  tools: ToolInfo[];
  skipped: { name: ToolName; reason: string }[];
  states: Record<StateName, StateInfo>;
  samples: Sample[];
  summary: Summary;
  goals: Goal[];
  errors: string[];
}

/** Medians per tool and phase. */
export function summarize(
  samples: readonly Sample[],
  states: Record<StateName, StateInfo>,
): Summary {
  const out: Summary = {};
  for (const phase of PHASES) {
    for (const tool of TOOL_NAMES) {
      const s = samples.filter((x) => x.phase === phase.id && x.tool === tool);
      if (s.length === 0) continue;
      const wallMs = median(s.map((x) => x.wallMs));
      const rss = s.map((x) => x.peakRssKiB).filter((x): x is number => x !== null);
      const added = s.map((x) => x.addedBytes).filter((x): x is number => x !== undefined);
      const sum: PhaseSummary = {
        runs: s.length,
        wallMs,
        mbPerS: s[0].dataBytes / 1e6 / (wallMs / 1000),
        peakRssKiB: rss.length ? median(rss) : null,
      };
      if (added.length) sum.addedBytes = median(added);
      const size = s.map((x) => x.repoBytes).filter((x): x is number => x !== undefined);
      if (size.length) sum.repoBytes = median(size);
      const day = states[phase.state].day;
      if (phase.kind === "backup" && day && sum.addedBytes !== undefined) {
        sum.dbBytes = sum.addedBytes - day.newMediaBytes;
      }
      out[phase.id] ??= {};
      out[phase.id]![tool] = sum;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Goals

/** Judges the issue's goals (set for the 2 GB set; byte budgets scale down with the database). */
export function goals(summary: Summary, spec: SizeSpec): Goal[] {
  const scale = spec.messages / 2_000_000;
  const scaled = scale === 1 ? "" : ` (${fmtMb(40e6 * scale)} at this size: 40 MB × ${scale})`;
  const scaledRecent = scale === 1 ? "" : ` (${fmtMb(5e6 * scale)} at this size)`;
  const get = (p: PhaseId, t: ToolName) => summary[p]?.[t];
  const out: Goal[] = [];

  const ratioGoal = (
    goal: string,
    target: string,
    p: PhaseId,
    peer: ToolName,
    value: (s: PhaseSummary) => number,
    ok: (r: number) => boolean,
  ) => {
    const l = get(p, "locket");
    const o = get(p, peer);
    if (!l || !o) {
      out.push({ goal, target, measured: `n/a (${!l ? "Locket" : peer} not measured)`, met: null });
      return;
    }
    const r = value(l) / value(o);
    out.push({ goal, target, measured: `${fmtRatio(r)}`, met: ok(r) });
  };
  ratioGoal(
    "first backup throughput vs restic",
    "≥ 2×",
    "first",
    "restic",
    (s) => s.mbPerS,
    (r) => r >= 2,
  );
  ratioGoal(
    "first backup throughput vs borg",
    "≥ 1.5×",
    "first",
    "borg",
    (s) => s.mbPerS,
    (r) => r >= 1.5,
  );
  const dbGoal = (goal: string, p: PhaseId, limit: number, note: string) => {
    const l = get(p, "locket");
    if (l?.dbBytes === undefined) {
      out.push({ goal, target: `≤ ${fmtMb(limit)}`, measured: "n/a", met: null });
      return;
    }
    const peers = TOOL_NAMES.filter((t) => t !== "locket" && get(p, t)?.dbBytes !== undefined)
      .map((t) => `${t} ${fmtMb(get(p, t)!.dbBytes!)}`)
      .join(", ");
    out.push({
      goal,
      target: `≤ ${fmtMb(limit)}${note}`,
      measured: `${fmtMb(l.dbBytes)}${peers ? ` (${peers})` : ""}`,
      met: l.dbBytes <= limit * scale,
    });
  };
  dbGoal("day 1 (random rows): database bytes added", "day1", 40e6, scaled);
  dbGoal("day 2 (newest rows): database bytes added", "day2", 5e6, scaledRecent);
  for (const p of ["day1", "day2"] as const) {
    ratioGoal(
      `${p === "day1" ? "day 1" : "day 2"} incremental wall time vs restic`,
      "≤ ½ (0.50×)",
      p,
      "restic",
      (s) => s.wallMs,
      (r) => r <= 0.5,
    );
  }
  {
    const l = get("nochange", "locket");
    const note = scale === 1 ? "" : " (the goal is for the 2 GB set)";
    out.push({
      goal: "no-change backup",
      target: `well under 1 s${note}`,
      measured: l ? fmtSeconds(l.wallMs) : "n/a",
      met: l ? l.wallMs < 1000 : null,
    });
  }
  ratioGoal(
    "restore throughput vs restic",
    "≥ 1.5×",
    "restore",
    "restic",
    (s) => s.mbPerS,
    (r) => r >= 1.5,
  );
  {
    const l = get("prune", "locket");
    const r = get("prune", "restic");
    out.push({
      goal: "prune after forgetting half the snapshots (report; restic's is its slowest command)",
      target: "reported",
      measured: l
        ? `${fmtSeconds(l.wallMs)}${r ? ` vs restic ${fmtSeconds(r.wallMs)} (${fmtRatio(l.wallMs / r.wallMs)})` : ""}`
        : "n/a",
      met: null,
    });
  }
  ratioGoal(
    "verify throughput vs restic",
    "≥ 1.5×",
    "verify",
    "restic",
    (s) => s.mbPerS,
    (r) => r >= 1.5,
  );
  {
    const peak = (t: ToolName) => {
      const v = PHASES.map((p) => get(p.id, t)?.peakRssKiB).filter(
        (x): x is number => typeof x === "number",
      );
      return v.length ? Math.max(...v) : null;
    };
    const l = peak("locket");
    const r = peak("restic");
    const phasesOver = PHASES.filter((p) => {
      const a = get(p.id, "locket")?.peakRssKiB;
      const b = get(p.id, "restic")?.peakRssKiB;
      return typeof a === "number" && typeof b === "number" && a > b;
    }).map((p) => p.label);
    out.push({
      goal: "peak memory vs restic (highest over all phases)",
      target: "≤ restic's",
      measured:
        l === null || r === null
          ? "n/a"
          : `${fmtMib(l)} vs ${fmtMib(r)} (${fmtRatio(l / r)}); above restic in ` +
            `${phasesOver.length} of ${PHASES.length} phases`,
      met: l === null || r === null ? null : l <= r,
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Markdown

const SIZE_TITLE: Record<SizeName, string> = { small: "small", medium: "medium", full: "full" };

/** The results as Markdown: a heading, the setup, the table with ratios and the goals. */
export function markdown(r: BenchResult): string {
  const tools = TOOL_NAMES.filter((t) => r.tools.some((x) => x.name === t));
  const peers = tools.filter((t) => t !== "locket");
  const label = (t: ToolName) => r.tools.find((x) => x.name === t)!.label;
  const base = r.states.base;
  const lines: string[] = [];
  lines.push(
    `### ${SIZE_TITLE[r.size]}: ${r.spec.messages.toLocaleString("en")} messages, ` +
      `${fmtMb(base.dbBytes)} database + ${fmtMb(base.bytes - base.dbBytes)} media ` +
      `(${base.files.toLocaleString("en")} files)`,
    "",
  );
  const day = (s: StateName) => {
    const d = r.states[s].day!;
    return (
      `${d.newMessages.toLocaleString("en")} new messages, ${d.updatedRows.toLocaleString("en")} ` +
      `rows updated, ${d.newMediaFiles} new media files (${fmtMb(d.newMediaBytes)})`
    );
  };
  const caches = r.cachesDropped
    ? "dropped before every timed command"
    : "**not** dropped (not permitted here, or `--no-drop-caches`): warm-cache figures";
  const rssHow = r.rssMethod === "gnu-time" ? "GNU time (`%M`)" : "polling /proc/PID/status VmHWM";
  lines.push(
    `- Measured ${r.startedAt.slice(0, 16).replace("T", " ")} UTC, ${r.runs} run(s), medians; ` +
      `page cache ${caches}; peak RSS by ${rssHow}.`,
    `- Day 1: ${day("day1")}. Day 2: ${day("day2")}.`,
    `- Code: ${codeLine(r.code)}.`,
    `- Machine: ${machineLine(r.machine)}.`,
  );
  for (const t of r.tools) lines.push(`- ${t.label}: ${t.version}; ${t.settings}.`);
  for (const s of r.skipped) lines.push(`- **${s.name} skipped**: ${s.reason}.`);
  for (const e of r.errors) lines.push(`- **error**: ${e.split("\n")[0]}`);
  lines.push("");

  const head = ["phase", "metric", ...tools.map(label), ...peers.map((p) => `Locket/${label(p)}`)];
  lines.push(`| ${head.join(" | ")} |`);
  lines.push(`|${head.map((_, i) => (i < 2 ? "---" : "--:")).join("|")}|`);
  type Metric = {
    name: string;
    value: (s: PhaseSummary) => number | null | undefined;
    fmt: (v: number) => string;
  };
  const time: Metric = { name: "wall time", value: (s) => s.wallMs, fmt: fmtSeconds };
  const rate: Metric = { name: "throughput", value: (s) => s.mbPerS, fmt: fmtRate };
  const rss: Metric = { name: "peak RSS", value: (s) => s.peakRssKiB, fmt: fmtMib };
  const added: Metric = { name: "repo growth", value: (s) => s.addedBytes, fmt: fmtMb };
  const db: Metric = { name: "database bytes", value: (s) => s.dbBytes, fmt: fmtMb };
  const freed: Metric = {
    name: "space freed",
    value: (s) => (s.addedBytes === undefined ? undefined : -s.addedBytes),
    fmt: fmtMb,
  };
  const after: Metric = { name: "repository after", value: (s) => s.repoBytes, fmt: fmtMb };
  const metrics: Record<PhaseId, Metric[]> = {
    first: [time, rate, rss, added],
    nochange: [time, rss, added],
    day1: [time, rss, added, db],
    day2: [time, rss, added, db],
    restore: [time, rate, rss],
    verify: [time, rate, rss],
    prune: [time, rss, freed, after],
  };
  for (const phase of PHASES) {
    const row = r.summary[phase.id];
    if (!row) continue;
    metrics[phase.id].forEach((m, i) => {
      const cells = [i === 0 ? `**${phase.label}**` : "", m.name];
      const vals = tools.map((t) => {
        const s = row[t];
        const v = s ? m.value(s) : undefined;
        return typeof v === "number" ? v : null;
      });
      for (const v of vals) cells.push(v === null ? "–" : m.fmt(v));
      const lv = vals[0];
      for (const p of peers) {
        const pv = vals[tools.indexOf(p)];
        cells.push(
          lv === null || pv === null || tools[0] !== "locket" || pv === 0 ? "–" : fmtRatio(lv / pv),
        );
      }
      lines.push(`| ${cells.join(" | ")} |`);
    });
  }
  lines.push(
    "",
    "Ratios are Locket's figure divided by the peer's: below 1× is better for wall time, memory " +
      "and bytes, above 1× is better for throughput. Throughput is the data set's size (the " +
      "state backed up, or restored and verified) divided by wall time, so a throughput ratio is " +
      "the inverse of the time ratio. Repository growth is the change in the bytes of the files in " +
      "the repository folder; database bytes are repository growth minus the day's new media " +
      "bytes (so they include the snapshot's metadata). The prune phase forgets the two oldest " +
      "of the four snapshots (untimed: Locket `forget`, restic `forget`, borg `prune`), then " +
      "times the command that frees their space (Locket `prune --keep-delete 0`, restic " +
      "`prune`, borg `compact`). Locket frees next to nothing there, as it should: the " +
      "forgotten snapshots hold nothing the kept ones do not (their database pages are the " +
      "bases of the later page deltas, their media is in every snapshot), while restic and " +
      "borg free the copies of the database they stored again each day; compare the " +
      "repository sizes after. MB = 10^6 bytes, MiB = 2^20 bytes.",
    "",
  );
  if (r.goals.length) {
    lines.push("| goal (from the issue) | target | Locket measured | met? |", "|---|---|---|---|");
    for (const g of r.goals) {
      const met = g.met === null ? "n/a" : g.met ? "met" : "**not met**";
      lines.push(`| ${g.goal} | ${g.target} | ${g.measured} | ${met} |`);
    }
    lines.push("");
  }
  return lines.join("\n");
}

function codeLine(c: BenchResult["code"]): string {
  const commit = c.commit ? `commit \`${c.commit.slice(0, 12)}\`` : "not a git checkout";
  if (c.mode === "head")
    return `${commit} (\`--code head\`: the commit itself, unpacked with git archive)`;
  if (c.dirty.length === 0) return `${commit} (working tree, clean)`;
  return `${commit} plus uncommitted changes in ${c.dirty.map((d) => `\`${d}\``).join(", ")}`;
}

function machineLine(m: Machine): string {
  return (
    `${m.cpus} CPUs (${m.cpuModel}), ${(m.memoryBytes / 2 ** 30).toFixed(1)} GiB RAM, ${m.disk}, ` +
    `Linux ${m.kernel}, Node ${m.node}, ` +
    `load average ${m.load.map((x) => x.toFixed(1)).join(" ")} at start`
  );
}

// ---------------------------------------------------------------------------------------------
// Machine

/** Describes this machine; `dir` is where the benchmark's files live (for the disk). */
export function machine(dir: string): Machine {
  const la = loadavg();
  return {
    cpus: availableParallelism(),
    cpuModel: cpus()[0]?.model.trim() ?? "unknown",
    memoryBytes: totalmem(),
    disk: disk(dir),
    kernel: release(),
    node: process.version,
    load: [la[0], la[1], la[2]],
  };
}

function disk(dir: string): string {
  const df = probe("df", ["-P", "-T", "-B1", dir]);
  const row = df?.split("\n")[1]?.trim().split(/\s+/);
  if (!row || row.length < 7) return "disk unknown";
  const [source, type, size, , avail] = row;
  let kind = "";
  const dev = basename(source).replace(/p?\d+$/, "");
  for (const name of [basename(source), dev]) {
    const f = `/sys/block/${name}/queue/rotational`;
    if (existsSync(f)) {
      kind = readFileSync(f, "utf8").trim() === "1" ? ", rotational flag set" : ", non-rotational";
      break;
    }
  }
  const gb = (s: string) => `${(Number(s) / 1e9).toFixed(0)} GB`;
  return `${type} on ${source} (${gb(size)}, ${gb(avail)} free${kind})`;
}

// ---------------------------------------------------------------------------------------------
// docs/benchmarks.md

/**
 * Replaces this size's section of the results in the doc (between its markers), or appends it.
 *
 * @throws Error when the doc does not exist.
 */
export function writeDoc(path: string, size: SizeName, body: string): void {
  const start = `<!-- bench:${size}:start -->`;
  const end = `<!-- bench:${size}:end -->`;
  const doc = readFileSync(path, "utf8");
  const block = `${start}\n${body.trim()}\n${end}`;
  const i = doc.indexOf(start);
  const j = doc.indexOf(end);
  const next =
    i >= 0 && j > i
      ? doc.slice(0, i) + block + doc.slice(j + end.length)
      : `${doc.trimEnd()}\n\n${block}\n`;
  writeFileSync(path, next);
}

// ---------------------------------------------------------------------------------------------
// Formatting

export function fmtMb(n: number): string {
  if (Math.abs(n) < 1e6) return `${(n / 1e3).toFixed(n === 0 ? 0 : 1)} kB`;
  const v = n / 1e6;
  const a = Math.abs(v);
  return `${a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2)} MB`;
}

export function fmtSeconds(ms: number): string {
  const s = ms / 1000;
  return `${s >= 100 ? s.toFixed(0) : s >= 10 ? s.toFixed(1) : s.toFixed(2)} s`;
}

function fmtRate(v: number): string {
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} MB/s`;
}

function fmtMib(kib: number): string {
  return `${(kib / 1024).toFixed(0)} MiB`;
}

function fmtRatio(r: number): string {
  return `${r >= 10 ? r.toFixed(1) : r.toFixed(2)}×`;
}
