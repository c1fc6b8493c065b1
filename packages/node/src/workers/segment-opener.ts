import {
  type BlobToCheck,
  type BlobType,
  IntegrityError,
  LocketError,
  type OpenedSegment,
  type OpenOptions,
  type SegmentOpener,
  type SegmentToOpen,
} from "@locket/core";
import type { PoolWorker, WorkerError, WorkerPool, WorkerReply } from "./pool.ts";

/**
 * The blobs of one segment to check, packed into two arrays: a list of small objects, each with
 * an ID in a buffer of its own, cost more to clone to the worker than the worker took to check.
 */
export interface PackedBlobs {
  /** 32 bytes per blob, in order. */
  readonly ids: Uint8Array;
  /** Type, offset and length per blob, in order. */
  readonly fields: Uint32Array;
}

/** A segment to open, as sent to a worker. */
export interface SegmentMessage {
  readonly start: number;
  readonly length: number;
  readonly blobs: PackedBlobs;
}

/** What the main thread sends a worker: one ranged read of a pack and the segments in it. */
export interface OpenMessage {
  readonly kind: "open";
  readonly job: number;
  readonly bytes: Uint8Array;
  readonly segments: readonly SegmentMessage[];
  readonly objectName: string;
  readonly payloads: boolean;
}

/** What a worker sends back, once per segment, in order. */
export interface OpenedMessage extends WorkerReply {
  readonly kind: "opened";
  readonly job: number;
  readonly index: number;
  readonly payload?: Uint8Array;
  readonly matches?: readonly boolean[];
  readonly error?: WorkerError;
}

interface Job {
  readonly worker: PoolWorker;
  readonly results: { resolve: (o: OpenedSegment) => void; reject: (e: unknown) => void }[];
  left: number;
}

/**
 * A SegmentOpener that opens segments on the pool's worker threads. A restore or
 * `check --read-data` then decrypts, decompresses and hashes on every core while the main thread
 * reads and writes files.
 */
export class WorkerSegmentOpener implements SegmentOpener {
  private readonly pool: WorkerPool;
  private readonly jobs = new Map<number, Job>();
  private nextJob = 0;

  constructor(pool: WorkerPool) {
    this.pool = pool;
    pool.register("opened", {
      onReply: (_, m) => this.settle(m as OpenedMessage),
      onLost: (w, err) => {
        const lost = new LocketError("failure", `a worker thread stopped: ${err.message}`);
        for (const [id, job] of this.jobs) {
          if (job.worker !== w) continue;
          for (const r of job.results) r.reject(lost);
          this.jobs.delete(id);
        }
      },
    });
  }

  open(
    bytes: Uint8Array,
    segments: readonly SegmentToOpen[],
    objectName: string,
    { payloads }: OpenOptions,
  ): Promise<OpenedSegment>[] {
    if (segments.length === 0) return [];
    const worker = this.pool.acquire(segments.length);
    const id = this.nextJob++;
    const job: Job = { worker, results: [], left: segments.length };
    const promises = segments.map(
      (_, i) =>
        new Promise<OpenedSegment>((resolve, reject) => {
          job.results[i] = { resolve, reject };
        }),
    );
    this.jobs.set(id, job);
    // Move the bytes rather than copy them when they own their whole buffer (storage returns
    // fresh arrays: Storage.load); otherwise copy just the range the segments need.
    const sent = owns(bytes) ? bytes : new Uint8Array(bytes);
    const message: OpenMessage = {
      kind: "open",
      job: id,
      bytes: sent,
      segments: segments.map((s) => ({
        start: s.start,
        length: s.length,
        blobs: packBlobs(s.blobs),
      })),
      objectName,
      payloads,
    };
    worker.worker.postMessage(message, [sent.buffer as ArrayBuffer]);
    return promises;
  }

  private settle(m: OpenedMessage): void {
    const job = this.jobs.get(m.job);
    if (!job) return;
    const r = job.results[m.index];
    if (m.error) r.reject(rebuildError(m.error));
    else r.resolve({ payload: m.payload ?? new Uint8Array(0), matches: m.matches ?? [] });
    this.pool.release(job.worker);
    if (--job.left === 0) this.jobs.delete(m.job);
  }
}

/** Whether `b` spans its whole ArrayBuffer, so moving the buffer moves exactly `b`. */
export function owns(b: Uint8Array): boolean {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength;
}

/** Packs blobs to check for the trip to a worker (see PackedBlobs). */
export function packBlobs(blobs: readonly BlobToCheck[]): PackedBlobs {
  const ids = new Uint8Array(32 * blobs.length);
  const fields = new Uint32Array(3 * blobs.length);
  blobs.forEach((b, k) => {
    ids.set(b.id, 32 * k);
    fields[3 * k] = b.type;
    fields[3 * k + 1] = b.offset;
    fields[3 * k + 2] = b.length;
  });
  return { ids, fields };
}

/** The blobs packed by packBlobs; the IDs are views into `packed.ids`. */
export function unpackBlobs(packed: PackedBlobs): BlobToCheck[] {
  const out: BlobToCheck[] = [];
  for (let k = 0; k < packed.fields.length / 3; k++) {
    out.push({
      id: packed.ids.subarray(32 * k, 32 * k + 32),
      type: packed.fields[3 * k] as BlobType,
      offset: packed.fields[3 * k + 1],
      length: packed.fields[3 * k + 2],
    });
  }
  return out;
}

/** A worker's error as the typed error it was: an IntegrityError stays one, naming its object. */
export function rebuildError(e: WorkerError): LocketError {
  if (e.code === "integrity") {
    const prefix = e.object ? `${e.object}: ` : "";
    const message = e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message;
    return new IntegrityError(message, e.object);
  }
  return new LocketError(e.code, e.message);
}
