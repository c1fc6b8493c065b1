import { type RetentionDecision, type RetentionPolicy, forget as runForget } from "@locket/core";
import type { Command } from "../command.ts";

const RULES = [
  ["keep-last", "keepLast"],
  ["keep-hourly", "keepHourly"],
  ["keep-daily", "keepDaily"],
  ["keep-weekly", "keepWeekly"],
  ["keep-monthly", "keepMonthly"],
  ["keep-yearly", "keepYearly"],
] as const;

export const forget: Command = {
  name: "forget",
  summary: "forget snapshots by ID or by retention policy (then prune reclaims space)",
  usage: "locket forget [SNAPSHOT...] [--keep-last N] [--keep-daily N] ... [--dry-run]",
  help: `Forgets snapshots: those named, and those no retention rule keeps. Rules apply to each
group of snapshots with the same host and paths; a snapshot any rule keeps is kept. Calendar
rules keep the newest snapshot of each of the N most recent hours, days, ISO weeks, months or
years that have one (local time). The newest snapshot is always kept.

Forgetting is quick and deletes no data: run 'locket prune' to reclaim the space that no
remaining snapshot needs. The forgotten snapshots are recorded in an index file, so the
history check (parent links, sequence numbers) keeps working.

Options:
      --keep-last N        keep the N newest snapshots
      --keep-hourly N      keep one snapshot for each of the last N hours with one
      --keep-daily N       ... days
      --keep-weekly N      ... ISO weeks
      --keep-monthly N     ... months
      --keep-yearly N      ... years
  -n, --dry-run            show what would be forgotten; change nothing

Examples:
  locket forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run
  locket forget 3f2a9c1b
  locket forget --keep-last 30 && locket prune`,
  options: {
    ...Object.fromEntries(RULES.map(([flag]) => [flag, { type: "string" as const }])),
    "dry-run": { type: "boolean", short: "n" },
  },
  async run(ctx) {
    const { repo, state } = await ctx.openRepo();
    const policy: Record<string, number> = {};
    for (const [flag, key] of RULES) {
      if (ctx.str(flag) !== undefined) policy[key] = ctx.int(flag, 0);
    }
    const dryRun = ctx.values["dry-run"] === true;
    const result = await runForget(repo, {
      ids: ctx.positionals,
      policy: policy as RetentionPolicy,
      dryRun,
      minSeq: state.lastSeq,
    });
    const line = (d: RetentionDecision) =>
      `  ${d.ref.id.slice(0, 12)}  #${String(d.ref.snapshot.seq).padEnd(4)} ${d.ref.snapshot.time}  ${d.ref.snapshot.host}  ${d.ref.snapshot.paths.join(" ")}` +
      (d.reasons.length ? `  (${d.reasons.join(", ")})` : "");
    ctx.say(`keep ${result.kept.length} snapshot(s):`);
    for (const d of result.kept) ctx.say(line(d));
    ctx.say(`${dryRun ? "would forget" : "forgot"} ${result.forgotten.length} snapshot(s):`);
    for (const d of result.forgotten) ctx.say(line(d));
    if (!dryRun && result.forgotten.length) ctx.say("run 'locket prune' to reclaim their space");
    const summary = (d: RetentionDecision) => ({
      id: d.ref.id,
      seq: d.ref.snapshot.seq,
      time: d.ref.snapshot.time,
      host: d.ref.snapshot.host,
      paths: d.ref.snapshot.paths,
      reasons: d.reasons,
    });
    return {
      dryRun,
      kept: result.kept.map(summary),
      forgotten: result.forgotten.map(summary),
    };
  },
};
