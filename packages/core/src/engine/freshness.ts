import { RollbackError } from "../errors.ts";
import type { SnapshotRef } from "../repository.ts";

/**
 * Checks the repository's history. Every snapshot after the first must name as its parent a
 * snapshot that exists with the sequence number one lower (two devices racing may fork the
 * history, which is allowed; a missing link is not), and the newest sequence number must not be
 * below `minSeq`, the highest this device has seen. Storage that hides snapshots, or serves an
 * old copy of the repository, fails here.
 * @throws {RollbackError} naming what is missing.
 */
export function checkFreshness(snapshots: readonly SnapshotRef[], minSeq: number): void {
  const byId = new Map(snapshots.map((s) => [s.id, s.snapshot]));
  for (const { id, snapshot: s } of snapshots) {
    if (s.parent === null) {
      if (s.seq !== 1) {
        throw new RollbackError(
          `snapshot ${id.slice(0, 12)} (#${s.seq}) has no parent: storage hides earlier snapshots`,
        );
      }
      continue;
    }
    const parent = byId.get(s.parent);
    if (!parent || parent.seq !== s.seq - 1) {
      throw new RollbackError(
        `snapshot ${id.slice(0, 12)} (#${s.seq}) names parent ${s.parent.slice(0, 12)}, which storage does not show: ` +
          "storage hides snapshots",
      );
    }
  }
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
