import { fromUtf8, utf8 } from "../bytes.ts";
import type { RepoKeys } from "../crypto/keys.ts";
import type { Primitives } from "../crypto/primitives.ts";
import { AAD, open, seal } from "../crypto/seal.ts";
import { IntegrityError, UnsupportedVersionError } from "../errors.ts";
import { decodePayload, encodePayload } from "./payload.ts";

/**
 * Snapshots (SPEC.md "Snapshots"): sealed UTF-8 JSON naming the root tree, written last. `seq`
 * increases by one per snapshot and `parent` names the previous one, so a device that remembers
 * the latest `seq` it saw detects storage that serves an older or truncated history.
 */

export const SNAPSHOT_VERSION = 1;
const MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024;

export interface SnapshotSummary {
  readonly files: number;
  readonly dirs: number;
  /** Bytes of file content read. */
  readonly bytes: number;
  /** Bytes added to storage by this backup's packs and index file (the snapshot itself excluded). */
  readonly addedBytes: number;
  readonly newBlobs: number;
  /** Files not read because the parent snapshot had them unchanged (optional; absent before). */
  readonly unchangedFiles?: number;
  readonly durationMs: number;
}

export interface Snapshot {
  readonly version: number;
  readonly seq: number;
  /** The previous snapshot's ID (hex), or null for the first one. */
  readonly parent: string | null;
  /** ISO 8601 time the backup started. */
  readonly time: string;
  readonly host: string;
  readonly paths: readonly string[];
  readonly tags: readonly string[];
  /** Root tree blob ID (hex). */
  readonly tree: string;
  readonly summary: SnapshotSummary;
}

/** Seals a snapshot. Its storage name (and ID) is the hex SHA-256 of the result. */
export function sealSnapshot(p: Primitives, keys: RepoKeys, s: Snapshot): Promise<Uint8Array> {
  return seal(p, keys.meta, encodePayload(p, utf8(JSON.stringify(s)), true), AAD.snapshot);
}

/**
 * Opens and validates a snapshot.
 * @throws {IntegrityError} naming `objectName` when forged, corrupt or malformed.
 * @throws {UnsupportedVersionError} for an unknown snapshot version.
 */
export async function openSnapshot(
  p: Primitives,
  keys: RepoKeys,
  sealed: Uint8Array,
  objectName: string,
): Promise<Snapshot> {
  const payload = await open(keys.meta, sealed, AAD.snapshot);
  if (!payload)
    throw new IntegrityError("snapshot fails authentication (corrupt or forged)", objectName);
  let s: Snapshot;
  try {
    s = JSON.parse(fromUtf8(decodePayload(p, payload, MAX_SNAPSHOT_BYTES)));
  } catch (err) {
    throw new IntegrityError(`snapshot does not decode: ${(err as Error).message}`, objectName);
  }
  if (!s || typeof s !== "object")
    throw new IntegrityError("snapshot is not an object", objectName);
  if (s.version !== SNAPSHOT_VERSION) {
    throw new UnsupportedVersionError(
      `${objectName}: snapshot version ${s.version} is not supported`,
    );
  }
  const hex = /^[0-9a-f]{64}$/;
  if (
    !Number.isSafeInteger(s.seq) ||
    s.seq < 1 ||
    !(s.parent === null || (typeof s.parent === "string" && hex.test(s.parent))) ||
    typeof s.tree !== "string" ||
    !hex.test(s.tree) ||
    typeof s.time !== "string" ||
    !Array.isArray(s.paths)
  ) {
    throw new IntegrityError("snapshot fields are malformed", objectName);
  }
  return s;
}
