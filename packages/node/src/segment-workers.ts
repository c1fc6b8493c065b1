import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import {
  type BlobToCheck,
  type ErrorCode,
  IntegrityError,
  LocketError,
  type OpenedSegment,
  type SegmentOpener,
  type SegmentToOpen,
} from "@locket/core";

/** What the main thread sends a worker: one ranged read of a pack and the segments in it. */
export interface JobMessage {
  readonly job: number;
  readonly bytes: Uint8Array;
  readonly segments: readonly SegmentToOpen[];
  readonly objectName: string;
  readonly payloads: boolean;
}

/** What a worker sends back, once per segment, in order. */
export interface ResultMessage {
  readonly job: number;
  readonly index: number;
  readonly payload?: Uint8Array;
  readonly matches?: readonly boolean[];
  readonly error?: { code: ErrorCode; message: string; object?: string };
}

interface Pending {
  readonly results: {
    resolve: (o: OpenedSegment) => void;
    reject: (e: unknown) => void;
  }[];
  left: number;
}

interface Slot {
  readonly worker: Worker;
  readonly jobs: Map<number, Pending>;
  /** Segments sent and not answered yet: new work goes to the least loaded worker. */
  load: number;
}

/** At most this many worker threads, whatever the machine: the disk and the main thread cap the gain. */
const MAX_THREADS = 4;

/**
 * A SegmentOpener that opens segments on worker threads, one per core (at most MAX_THREADS),
 * started on first use. A restore or `check --read-data` then decrypts, decompresses and hashes
 * on every core while the main thread reads and writes files. Workers keep the process alive
 * only while they have work, so a command ends without closing the pool; `close` ends it early.
 *
 * The workers hold the repository keys (derived from `rootKey`), as the main thread does: they
 * are threads of the same process, not a separate trust domain.
 */
export class WorkerSegmentOpener implements SegmentOpener {
  private readonly rootKey: Uint8Array;
  private readonly threads: number;
  private readonly slots: Slot[] = [];
  private nextJob = 0;

  constructor(rootKey: Uint8Array, options: { threads?: number } = {}) {
    this.rootKey = new Uint8Array(rootKey);
    this.threads = Math.max(1, options.threads ?? Math.min(availableParallelism(), MAX_THREADS));
  }

  open(
    bytes: Uint8Array,
    segments: readonly SegmentToOpen[],
    objectName: string,
    { payloads }: { readonly payloads: boolean },
  ): Promise<OpenedSegment>[] {
    if (segments.length === 0) return [];
    const slot = this.pick();
    const job = this.nextJob++;
    const pending: Pending = { results: [], left: segments.length };
    const promises = segments.map(
      (_, i) =>
        new Promise<OpenedSegment>((resolve, reject) => {
          pending.results[i] = { resolve, reject };
        }),
    );
    slot.jobs.set(job, pending);
    slot.load += segments.length;
    slot.worker.ref();
    // Move the bytes rather than copy them when they own their whole buffer (storage returns
    // fresh arrays: Storage.load); otherwise copy just the range the segments need.
    const owned = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
    const sent = owned ? bytes : new Uint8Array(bytes);
    const message: JobMessage = {
      job,
      bytes: sent,
      segments: segments.map((s) => ({
        start: s.start,
        length: s.length,
        blobs: plainBlobs(s.blobs),
      })),
      objectName,
      payloads,
    };
    slot.worker.postMessage(message, [sent.buffer as ArrayBuffer]);
    return promises;
  }

  /** Stops every worker; pending segments fail. */
  async close(): Promise<void> {
    const slots = this.slots.splice(0);
    for (const slot of slots) this.fail(slot, new LocketError("failure", "segment workers closed"));
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }

  private pick(): Slot {
    if (this.slots.length < this.threads) {
      const idle = this.slots.find((s) => s.load === 0);
      if (idle) return idle;
      return this.start();
    }
    let best = this.slots[0];
    for (const s of this.slots) if (s.load < best.load) best = s;
    return best;
  }

  private start(): Slot {
    const worker = new Worker(new URL("./segment-worker.ts", import.meta.url), {
      workerData: { rootKey: this.rootKey },
    });
    const slot: Slot = { worker, jobs: new Map(), load: 0 };
    worker.unref();
    worker.on("message", (m: ResultMessage) => this.settle(slot, m));
    const lost = (err: unknown) => {
      const i = this.slots.indexOf(slot);
      if (i >= 0) this.slots.splice(i, 1);
      this.fail(
        slot,
        new LocketError("failure", `a segment worker stopped: ${(err as Error)?.message ?? err}`),
      );
    };
    worker.on("error", lost);
    worker.on("exit", (code) => lost(new Error(`exit code ${code}`)));
    this.slots.push(slot);
    return slot;
  }

  private settle(slot: Slot, m: ResultMessage): void {
    const pending = slot.jobs.get(m.job);
    if (!pending) return;
    const r = pending.results[m.index];
    if (m.error) r.reject(rebuildError(m.error));
    else r.resolve({ payload: m.payload ?? new Uint8Array(0), matches: m.matches ?? [] });
    slot.load--;
    if (--pending.left === 0) slot.jobs.delete(m.job);
    if (slot.load === 0) slot.worker.unref();
  }

  private fail(slot: Slot, err: unknown): void {
    for (const pending of slot.jobs.values()) for (const r of pending.results) r.reject(err);
    slot.jobs.clear();
    slot.load = 0;
    slot.worker.unref();
  }
}

/** Blobs as plain objects with fresh ID arrays, so they clone cleanly to the worker. */
function plainBlobs(blobs: readonly BlobToCheck[]): BlobToCheck[] {
  return blobs.map((b) => ({ id: b.id, type: b.type, offset: b.offset, length: b.length }));
}

/** The worker's error as the typed error it was: an IntegrityError stays one, naming its object. */
function rebuildError(e: NonNullable<ResultMessage["error"]>): LocketError {
  if (e.code === "integrity") {
    const prefix = e.object ? `${e.object}: ` : "";
    const message = e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message;
    return new IntegrityError(message, e.object);
  }
  return new LocketError(e.code, e.message);
}
