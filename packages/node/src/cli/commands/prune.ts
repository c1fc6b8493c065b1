import {
  DEFAULT_KEEP_DELETE_MS,
  DEFAULT_MAX_UNUSED,
  prune as runPrune,
  UsageError,
} from "@locket/core";
import type { Command } from "../command.ts";
import { bytes, seconds } from "../format.ts";

/** "90s", "30m", "24h", "7d" or "0" to milliseconds. */
export function parseDuration(text: string, flag: string): number {
  const m = /^(\d+)(s|m|h|d)?$/.exec(text.trim());
  if (!m)
    throw new UsageError(
      `--${flag} takes a duration such as 30m, 24h or 7d, got ${JSON.stringify(text)}`,
    );
  const unit = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[(m[2] ?? "s") as "s" | "m" | "h" | "d"];
  return Number(m[1]) * unit;
}

export const prune: Command = {
  name: "prune",
  summary: "reclaim space that no snapshot needs (two-phase; backups may run meanwhile)",
  usage: "locket prune [--keep-delete DURATION] [--max-unused PERCENT] [--dry-run]",
  help: `Reclaims the space of data that no remaining snapshot needs (after 'locket forget').
It never locks out backups, in two phases:

  1. a pack nothing needs is condemned: no longer used for deduplication, still readable;
     a pack that is mostly unused has its needed parts copied into a new pack, then is
     condemned; so is a pack that no index names and that no backup can adopt (damaged,
     or not this repository's: 'locket check' warns of it);
  2. a later prune deletes packs condemned at least --keep-delete ago, unless a backup that
     ran alongside the first phase has come to need one again (then it is kept).

So a daily prune frees yesterday's condemned packs. A prune stopped at any point (crash, ^C,
network loss) loses nothing and the next one finishes the job. No lock: backups, restores and
even another prune may run meanwhile.

Options:
      --keep-delete DURATION  how long condemned packs wait before deletion (default 24h;
                              0 deletes at once: only when no backup runs at the same time)
      --max-unused PERCENT    unused data that partly used packs may keep, in percent of the
                              used data; past it the emptiest packs are repacked (default 5)
  -n, --dry-run               show what would happen; change nothing

Examples:
  locket forget --keep-daily 7 --keep-weekly 5 && locket prune
  locket prune --keep-delete 0       # single user, no backup running: reclaim space now`,
  options: {
    "keep-delete": { type: "string" },
    "max-unused": { type: "string" },
    "dry-run": { type: "boolean", short: "n" },
  },
  async run(ctx) {
    const { repo, state } = await ctx.openRepo();
    const keepDelete = ctx.str("keep-delete");
    const maxUnused = ctx.int("max-unused", DEFAULT_MAX_UNUSED * 100);
    if (maxUnused > 100) throw new UsageError("--max-unused is a percentage from 0 to 100");
    const dryRun = ctx.values["dry-run"] === true;
    const report = await runPrune(repo, {
      keepDeleteMs:
        keepDelete === undefined
          ? DEFAULT_KEEP_DELETE_MS
          : parseDuration(keepDelete, "keep-delete"),
      maxUnused: maxUnused / 100,
      dryRun,
      minSeq: state.lastSeq,
      onProgress: (p) =>
        ctx.progress.update({
          phase: p.phase,
          bytes: p.phase === "repack" ? p.done : 0,
          totalBytes: p.phase === "repack" ? p.total : undefined,
          files: p.phase === "repack" ? 0 : p.done,
          totalFiles: p.phase === "repack" ? undefined : p.total,
          unit: p.phase === "mark" ? "snapshots" : "packs",
        }),
    });
    ctx.progress.done();
    const would = dryRun ? "would " : "";
    const condemned = dryRun ? "would be condemned" : "condemned";
    ctx.say(`${report.snapshots} snapshot(s) need ${report.usedBlobs} blobs`);
    ctx.say(
      `${report.keptPacks} pack(s) kept; ${report.condemnedPacks} ${condemned} (${bytes(report.condemnedBytes)})` +
        (report.repackedPacks
          ? `, of which ${report.repackedPacks} repacked (${bytes(report.repackedBytes)} copied into ${dryRun ? "new" : report.newPacks} pack(s))`
          : ""),
    );
    if (report.damagedPacks)
      ctx.say(
        `${report.damagedPacks} of them in no index and damaged (no backup can adopt them): ${condemned} like the others`,
      );
    if (report.recoveredPacks)
      ctx.say(`${report.recoveredPacks} condemned pack(s) needed again by a newer snapshot: kept`);
    ctx.say(
      `${would}delete ${report.deletedPacks} pack(s): ${bytes(report.deletedBytes)} reclaimed`,
    );
    if (report.waitingPacks)
      ctx.say(
        `${report.waitingPacks} condemned pack(s) (${bytes(report.waitingBytes)}) wait for a prune after the --keep-delete delay`,
      );
    if (report.staleRemoved)
      ctx.say(`removed ${report.staleRemoved} file(s) an interrupted backup left in tmp/`);
    ctx.say(`done in ${seconds(report.durationMs)}`);
    return { dryRun, ...report };
  },
};
