import type { RepoKeys } from "./crypto/keys.ts";
import type { Primitives } from "./crypto/primitives.ts";
import { IntegrityError } from "./errors.ts";
import { type BlobType, blobId } from "./format/blob.ts";
import { openSegment, type PackEntry } from "./format/pack.ts";

/** A blob whose keyed ID is checked once its segment is open. */
export interface BlobToCheck {
  readonly id: Uint8Array;
  readonly type: BlobType;
  /** Place of the blob in the segment's decoded payload. */
  readonly offset: number;
  readonly length: number;
}

/** One sealed segment inside the bytes of a ranged read. */
export interface SegmentToOpen {
  /** Where the sealed segment (nonce, ciphertext, tag) starts in the bytes, and its length. */
  readonly start: number;
  readonly length: number;
  /** Blobs of this segment to check against their IDs. */
  readonly blobs: readonly BlobToCheck[];
}

/** An opened segment. */
export interface OpenedSegment {
  /** The decoded payload; empty when the caller asked for checks only. */
  readonly payload: Uint8Array;
  /** For each blob listed, in order: whether its bytes match its keyed ID (and fit the payload). */
  readonly matches: readonly boolean[];
}

/** How `SegmentOpener.open` treats a read. */
export interface OpenOptions {
  /** Whether the decoded payloads are wanted (a restore) or only the checks (`check`). */
  readonly payloads: boolean;
}

/**
 * Opens data segments (SPEC §8: AES-256-GCM under the data key, then the payload encoding) and
 * checks blobs against their keyed IDs. This is where a restore or a `check --read-data` spends
 * its CPU, so an implementation may do it off the calling thread: the Node package runs it on
 * worker threads, one per core, while the main thread reads and writes files.
 */
export interface SegmentOpener {
  /**
   * Opens the segments that lie in `bytes` (one ranged read of pack `objectName`). Takes
   * ownership of `bytes`: the caller must not use them afterwards (they may be moved to another
   * thread). Returns one promise per segment, in order; each rejects with IntegrityError (naming
   * `objectName`) when its segment fails authentication or does not decode. Needs at least one
   * segment.
   */
  open(
    bytes: Uint8Array,
    segments: readonly SegmentToOpen[],
    objectName: string,
    options: OpenOptions,
  ): Promise<OpenedSegment>[];
}

/** A segment of a pack with its entries (PackEntry carries what BlobToCheck needs). */
export interface PackSegment extends SegmentToOpen {
  readonly blobs: readonly PackEntry[];
}

/**
 * A pack's entries grouped into the segments that hold them, in pack order; `start` is the
 * segment's offset in the pack. A segment's entries are listed together (SPEC §8).
 */
export function packSegments(entries: readonly PackEntry[]): PackSegment[] {
  const out: { start: number; length: number; blobs: PackEntry[] }[] = [];
  for (const e of entries) {
    const last = out[out.length - 1];
    if (last?.start === e.segmentOffset) last.blobs.push(e);
    else out.push({ start: e.segmentOffset, length: e.segmentLength, blobs: [e] });
  }
  return out;
}

/**
 * Checks that `bytes` hash to `sha256`, the name of content-addressed object `objectName`.
 * @throws {IntegrityError} on a mismatch.
 */
export function checkName(
  p: Primitives,
  bytes: Uint8Array,
  sha256: Uint8Array,
  objectName: string,
): void {
  if (!p.timingSafeEqual(p.sha256(bytes), sha256)) {
    throw new IntegrityError(
      "content does not match its name (corrupt, truncated or swapped)",
      objectName,
    );
  }
}

/** Opens one segment and checks its blobs: the work itself, wherever it runs. */
export async function openAndCheck(
  p: Primitives,
  keys: RepoKeys,
  sealed: Uint8Array,
  blobs: readonly BlobToCheck[],
  objectName: string,
): Promise<{ payload: Uint8Array; matches: boolean[] }> {
  const payload = await openSegment(p, keys, sealed, objectName);
  const matches = blobs.map((b) => {
    if (b.offset + b.length > payload.length) return false;
    const actual = blobId(p, keys.id, b.type, payload.subarray(b.offset, b.offset + b.length));
    return p.timingSafeEqual(actual, b.id);
  });
  return { payload, matches };
}

/** A SegmentOpener that does the work on the calling thread (browsers, tests, small jobs). */
export function localSegmentOpener(p: Primitives, keys: RepoKeys): SegmentOpener {
  return {
    open(bytes, segments, objectName, { payloads }) {
      return segments.map(async (s) => {
        const sealed = bytes.subarray(s.start, s.start + s.length);
        const { payload, matches } = await openAndCheck(p, keys, sealed, s.blobs, objectName);
        return { payload: payloads ? payload : new Uint8Array(0), matches };
      });
    },
  };
}
