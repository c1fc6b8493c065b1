import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { ErrorCode } from "@locket/core";

/** At most this many worker threads, whatever the machine: the disk and the main thread cap the gain. */
const MAX_THREADS = 4;

/** A worker thread of the pool and the work it holds. */
export interface PoolWorker {
  readonly worker: Worker;
  /** Units of work given and not yet released: new work goes to the least loaded worker. */
  load: number;
}

/** A message from a worker: `kind` says which client of the pool it is for. */
export interface WorkerReply {
  readonly kind: string;
}

/** An error that crossed from a worker: enough to rebuild the typed error. */
export interface WorkerError {
  readonly code: ErrorCode;
  /** The error's class name, for errors that are not LocketErrors (VanishedError). */
  readonly name?: string;
  readonly message: string;
  readonly object?: string;
}

/** What uses the pool: it gets the replies of its kind, and hears of a worker that stopped. */
export interface PoolClient {
  onReply(from: PoolWorker, reply: WorkerReply): void;
  onLost(worker: PoolWorker, err: Error): void;
}

/**
 * Worker threads (`thread.ts`) shared by WorkerSegmentOpener and WorkerChunker: one per core by
 * default (at most MAX_THREADS), each started when work first needs it. A worker keeps the
 * process alive only while it holds work (`acquire` refs it, the last `release` unrefs it), so a
 * command ends without closing the pool.
 *
 * The workers derive the repository keys from `rootKey`, as the main thread does: they are
 * threads of the same process, not a separate trust domain.
 */
export class WorkerPool {
  readonly threads: number;
  private readonly rootKey: Uint8Array;
  private readonly workers: PoolWorker[] = [];
  private readonly clients = new Map<string, PoolClient>();

  constructor(rootKey: Uint8Array, options: { threads?: number } = {}) {
    this.rootKey = new Uint8Array(rootKey);
    this.threads = Math.max(1, options.threads ?? Math.min(availableParallelism(), MAX_THREADS));
  }

  /** Routes the replies of `kind` to `client`. */
  register(kind: string, client: PoolClient): void {
    this.clients.set(kind, client);
  }

  /** A worker for `units` of new work: an idle one, a new one while under the limit, else the least loaded. */
  acquire(units = 1): PoolWorker {
    let w = this.workers.find((x) => x.load === 0);
    if (!w && this.workers.length < this.threads) w = this.start();
    if (!w) for (const x of this.workers) if (!w || x.load < w.load) w = x;
    w!.load += units;
    w!.worker.ref();
    return w!;
  }

  /** Gives back `units` of work taken with `acquire`. */
  release(w: PoolWorker, units = 1): void {
    w.load = Math.max(0, w.load - units);
    if (w.load === 0) w.worker.unref();
  }

  /** Stops every worker; their clients hear of it through `onLost`. */
  async close(): Promise<void> {
    const all = this.workers.splice(0);
    for (const w of all) this.lose(w, new Error("worker pool closed"));
    await Promise.all(all.map((w) => w.worker.terminate()));
  }

  private start(): PoolWorker {
    const worker = new Worker(new URL("./thread.ts", import.meta.url), {
      workerData: { rootKey: this.rootKey },
    });
    const w: PoolWorker = { worker, load: 0 };
    worker.unref();
    worker.on("message", (m: WorkerReply) => this.clients.get(m.kind)?.onReply(w, m));
    worker.on("error", (err) => this.lose(w, err));
    worker.on("exit", (code) => this.lose(w, new Error(`exit code ${code}`)));
    this.workers.push(w);
    return w;
  }

  private lose(w: PoolWorker, err: Error): void {
    const i = this.workers.indexOf(w);
    if (i >= 0) this.workers.splice(i, 1);
    for (const c of this.clients.values()) c.onLost(w, err);
    w.load = 0;
    w.worker.unref();
  }
}
