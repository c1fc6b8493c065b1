import type { Repository } from "../repository.ts";

export interface RepoStats {
  readonly snapshots: number;
  /** Bytes of files in the newest snapshot (what a restore writes). */
  readonly latestBytes: number;
  /** Bytes of files summed over every snapshot (what storing each snapshot in full would take). */
  readonly logicalBytes: number;
  /** Raw bytes of the distinct blobs, before compression and encryption. */
  readonly uniqueBytes: number;
  readonly blobs: number;
  readonly packs: number;
  /** Bytes in storage: packs, index files, snapshots and config. */
  readonly storedBytes: number;
  /** logicalBytes / storedBytes. */
  readonly dedupRatio: number;
  /** uniqueBytes / pack bytes. */
  readonly compressionRatio: number;
}

/**
 * Size figures for a repository, from the index, the snapshots' summaries and the storage
 * listing; nothing is downloaded beyond what opening the repository reads.
 */
export async function stats(repo: Repository): Promise<RepoStats> {
  const indexed = await repo.livePacks();
  const snaps = await repo.snapshots();
  let uniqueBytes = 0;
  let blobs = 0;
  for (const pack of indexed) {
    for (const e of pack.entries) {
      uniqueBytes += e.length;
      blobs++;
    }
  }
  let storedBytes = 0;
  let packBytes = 0;
  for (const kind of ["config", "data", "index", "snapshots"] as const) {
    for await (const { size } of repo.storage.list(kind)) {
      storedBytes += size;
      if (kind === "data") packBytes += size;
    }
  }
  const logicalBytes = snaps.reduce((n, s) => n + s.snapshot.summary.bytes, 0);
  return {
    snapshots: snaps.length,
    latestBytes: snaps.length ? snaps[snaps.length - 1].snapshot.summary.bytes : 0,
    logicalBytes,
    uniqueBytes,
    blobs,
    packs: indexed.length,
    storedBytes,
    dedupRatio: storedBytes ? logicalBytes / storedBytes : 0,
    compressionRatio: packBytes ? uniqueBytes / packBytes : 0,
  };
}
