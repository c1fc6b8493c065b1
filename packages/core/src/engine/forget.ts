import { fromHex } from "../bytes.ts";
import { UsageError } from "../errors.ts";
import type { Repository, SnapshotRef } from "../repository.ts";

/**
 * Retention, as restic and borg spell it: within each group of snapshots (same host and paths),
 * newest first, `keepLast` keeps the n newest, and each calendar rule keeps the newest snapshot
 * of each of the n most recent hours, days, ISO weeks, months or years that have one. Calendar
 * units are in local time. A snapshot any rule keeps is kept; the rest are forgotten.
 */
export interface RetentionPolicy {
  readonly keepLast?: number;
  readonly keepHourly?: number;
  readonly keepDaily?: number;
  readonly keepWeekly?: number;
  readonly keepMonthly?: number;
  readonly keepYearly?: number;
}

/** What the policy decided for one snapshot, with the rules that keep it. */
export interface RetentionDecision {
  readonly ref: SnapshotRef;
  readonly keep: boolean;
  /** "last", "hourly", "daily", ...: the rules that keep it (empty when forgotten). */
  readonly reasons: readonly string[];
}

const RULES: readonly [keyof RetentionPolicy, string, (d: Date) => string][] = [
  ["keepLast", "last", () => ""],
  ["keepHourly", "hourly", (d) => `${dayKey(d)}T${d.getHours()}`],
  ["keepDaily", "daily", (d) => dayKey(d)],
  ["keepWeekly", "weekly", (d) => isoWeekKey(d)],
  ["keepMonthly", "monthly", (d) => `${d.getFullYear()}-${d.getMonth() + 1}`],
  ["keepYearly", "yearly", (d) => `${d.getFullYear()}`],
];

function dayKey(d: Date): string {
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}

/** ISO 8601 week (weeks start on Monday; week 1 holds the year's first Thursday), local time. */
function isoWeekKey(d: Date): string {
  // The local calendar date, placed in UTC so daylight-saving shifts cannot move it.
  const t = new Date(Date.UTC(d.getFullYear(), d.getMonth(), d.getDate()));
  t.setUTCDate(t.getUTCDate() + 4 - (t.getUTCDay() || 7)); // this week's Thursday
  const yearStart = Date.UTC(t.getUTCFullYear(), 0, 1);
  const week = Math.ceil(((t.getTime() - yearStart) / 86_400_000 + 1) / 7);
  return `${t.getUTCFullYear()}-W${week}`;
}

/** Whether `policy` keeps anything at all (a policy of only zeros would forget everything). */
export function hasRetentionRule(policy: RetentionPolicy): boolean {
  return RULES.some(([key]) => (policy[key] ?? 0) > 0);
}

/** Applies `policy` to `snapshots`, group by group (host and paths). Pure: decides, changes nothing. */
export function applyRetention(
  snapshots: readonly SnapshotRef[],
  policy: RetentionPolicy,
): RetentionDecision[] {
  for (const [key] of RULES) {
    const n = policy[key];
    if (n !== undefined && (!Number.isInteger(n) || n < 0))
      throw new UsageError(`${key} must be a whole number ≥ 0, got ${n}`);
  }
  const groups = new Map<string, SnapshotRef[]>();
  for (const ref of snapshots) {
    const key = JSON.stringify([ref.snapshot.host, [...ref.snapshot.paths].sort()]);
    groups.set(key, [...(groups.get(key) ?? []), ref]);
  }
  const reasons = new Map<string, string[]>();
  for (const group of groups.values()) {
    const newestFirst = [...group].sort(
      (a, b) =>
        Date.parse(b.snapshot.time) - Date.parse(a.snapshot.time) ||
        b.snapshot.seq - a.snapshot.seq,
    );
    for (const [key, label, bucket] of RULES) {
      let left = policy[key] ?? 0;
      let last: string | undefined;
      for (const ref of newestFirst) {
        if (left === 0) break;
        const b = key === "keepLast" ? ref.id : bucket(new Date(ref.snapshot.time));
        if (b === last) continue;
        last = b;
        left--;
        reasons.set(ref.id, [...(reasons.get(ref.id) ?? []), label]);
      }
    }
  }
  return snapshots.map((ref) => {
    const why = reasons.get(ref.id) ?? [];
    return { ref, keep: why.length > 0, reasons: why };
  });
}

export interface ForgetOptions {
  /** Snapshots to forget, by full ID or unique prefix (with or instead of a policy). */
  readonly ids?: readonly string[];
  readonly policy?: RetentionPolicy;
  /** Decide and report, change nothing. */
  readonly dryRun?: boolean;
  /** Highest snapshot sequence this device has seen (a rolled-back history is refused). */
  readonly minSeq?: number;
}

export interface ForgetResult {
  readonly kept: readonly RetentionDecision[];
  readonly forgotten: readonly RetentionDecision[];
}

/**
 * Forgets snapshots: by ID, by retention policy, or both. It first writes an index file that
 * records each forgotten snapshot's ID and sequence number (so the history check still accepts
 * their children, and sequence numbers are never reused), then removes the snapshot objects.
 * Stopped in between, the records win: the snapshots are no longer listed, and a rerun removes
 * them. Data is not deleted here; `prune` reclaims what no remaining snapshot needs.
 *
 * The newest snapshot (highest `seq`) is never forgotten: the next backup names it as parent.
 * @throws {UsageError} when neither IDs nor a rule are given, or an ID is the newest snapshot.
 * @throws {NotFoundError} when an ID matches no snapshot.
 * @throws {RollbackError} when storage hides snapshots or serves an older history.
 */
export async function forget(repo: Repository, opts: ForgetOptions): Promise<ForgetResult> {
  const ids = opts.ids ?? [];
  const policy = opts.policy ?? {};
  if (ids.length === 0 && !hasRetentionRule(policy)) {
    throw new UsageError(
      "forget needs snapshot IDs or a retention rule (--keep-last, --keep-daily, ...)",
    );
  }
  const snapshots = await repo.checkedSnapshots(opts.minSeq ?? 0);
  const named = new Set<string>();
  for (const id of ids) named.add((await repo.findSnapshot(id, snapshots)).id);

  const decisions = hasRetentionRule(policy)
    ? applyRetention(snapshots, policy)
    : snapshots.map((ref) => ({ ref, keep: true, reasons: [] as string[] }));
  const newest = Math.max(0, ...snapshots.map((s) => s.snapshot.seq));
  const final = decisions.map((d): RetentionDecision => {
    if (d.ref.snapshot.seq === newest) {
      if (named.has(d.ref.id)) {
        throw new UsageError(
          `snapshot ${d.ref.id.slice(0, 12)} is the newest (#${newest}) and cannot be forgotten: ` +
            "the next backup names it as its parent",
        );
      }
      return d.keep ? d : { ref: d.ref, keep: true, reasons: ["newest"] };
    }
    if (named.has(d.ref.id)) return { ref: d.ref, keep: false, reasons: [] };
    return d;
  });
  const kept = final.filter((d) => d.keep);
  const forgotten = final.filter((d) => !d.keep);
  if (opts.dryRun || forgotten.length === 0) return { kept, forgotten };

  await repo.saveIndex([], {
    condemned: [],
    forgotten: forgotten.map((d) => ({ snapshotId: fromHex(d.ref.id), seq: d.ref.snapshot.seq })),
  });
  for (const d of forgotten) await repo.storage.remove("snapshots", d.ref.id);
  return { kept, forgotten };
}
