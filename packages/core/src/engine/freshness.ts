import { RollbackError } from "../errors.ts";
import type { SnapshotRef } from "../repository.ts";

/**
 * Checks the repository's history. Every snapshot after the first must name as its parent a
 * snapshot with the sequence number one lower that exists or that `forget` recorded in an index
 * file (`forgotten`: ID to seq). Two devices racing may fork the history, which is allowed; a
 * missing link is not. The newest sequence number (forgotten ones included) must not be below
 * `minSeq`, the highest this device has seen. Storage that hides snapshots, or serves an old copy
 * of the repository, fails here.
 * @throws {RollbackError} naming what is missing.
 */
export function checkFreshness(
  snapshots: readonly SnapshotRef[],
  minSeq: number,
  forgotten: ReadonlyMap<string, number> = new Map(),
): void {
  const byId = new Map(snapshots.map((s) => [s.id, s.snapshot.seq]));
  for (const [id, seq] of forgotten) if (!byId.has(id)) byId.set(id, seq);
  for (const { id, snapshot: s } of snapshots) {
    if (s.parent === null) {
      if (s.seq !== 1) {
        throw new RollbackError(
          `snapshot ${id.slice(0, 12)} (#${s.seq}) has no parent: storage hides earlier snapshots`,
        );
      }
      continue;
    }
    const parentSeq = byId.get(s.parent);
    if (parentSeq !== s.seq - 1) {
      throw new RollbackError(
        `snapshot ${id.slice(0, 12)} (#${s.seq}) names parent ${s.parent.slice(0, 12)}, which storage does not show: ` +
          "storage hides snapshots",
      );
    }
  }
  const latest = latestSeq(snapshots, forgotten);
  if (latest < minSeq) {
    throw new RollbackError(
      `storage shows snapshots up to #${latest}, but this device has seen #${minSeq}: ` +
        "storage is serving an old or truncated history (rolled back?)",
    );
  }
}

/** The sequence number the next snapshot gets. */
export function nextSeq(
  snapshots: readonly SnapshotRef[],
  minSeq: number,
  forgotten: ReadonlyMap<string, number> = new Map(),
): number {
  return Math.max(latestSeq(snapshots, forgotten), minSeq) + 1;
}

/** The highest sequence number storage shows, counting forgotten snapshots (seqs are never reused). */
function latestSeq(snapshots: readonly SnapshotRef[], forgotten: ReadonlyMap<string, number>) {
  let latest = 0;
  for (const s of snapshots) latest = Math.max(latest, s.snapshot.seq);
  for (const seq of forgotten.values()) latest = Math.max(latest, seq);
  return latest;
}
