import { RollbackError } from "../errors.ts";
import type { SnapshotRef } from "../repository.ts";

/**
 * Checks the repository's history against what this device has seen: the newest sequence number
 * must not be below `minSeq`, and every snapshot's parent must be the snapshot before it. A
 * storage that hides newer snapshots or serves an old copy of the repository fails here.
 * @throws {RollbackError} when the history is older than `minSeq`.
 */
export function checkFreshness(snapshots: readonly SnapshotRef[], minSeq: number): void {
  const latest = snapshots.length ? snapshots[snapshots.length - 1].snapshot.seq : 0;
  if (latest < minSeq) {
    throw new RollbackError(
      `storage shows snapshots up to #${latest}, but this device has seen #${minSeq}: ` +
        "storage is serving an old or truncated history (rolled back?)",
    );
  }
}

/** The sequence number the next snapshot gets. */
export function nextSeq(snapshots: readonly SnapshotRef[], minSeq: number): number {
  const latest = snapshots.length ? snapshots[snapshots.length - 1].snapshot.seq : 0;
  return Math.max(latest, minSeq) + 1;
}
