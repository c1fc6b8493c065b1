import {
  type ChunkBatch,
  type ChunkJob,
  type FileChunker,
  type LocalFile,
  LocketError,
  localChunker,
  type Primitives,
  type RepoKeys,
  type SourceFile,
  VanishedError,
} from "@locket/core";
import type { PoolWorker, WorkerError, WorkerPool, WorkerReply } from "./pool.ts";
import { rebuildError } from "./segment-opener.ts";

/**
 * What the main thread sends a worker about one file: the path to read; that the engine took
 * `bytes` of its chunks (with their buffer, back for reuse); or a cancel.
 */
export type ChunkMessage =
  | { readonly kind: "file"; readonly session: number; readonly path: string }
  | {
      readonly kind: "ack";
      readonly session: number;
      readonly bytes: number;
      readonly buffer: ArrayBuffer;
    }
  | { readonly kind: "abort"; readonly session: number };

/** What a worker sends back: chunks cut so far, with their IDs; or the end; or an error. */
export interface ChunksMessage extends WorkerReply {
  readonly kind: "chunks";
  readonly session: number;
  /** The chunks' bytes, one after the other (`length` of them used). */
  readonly bytes?: Uint8Array;
  readonly length?: number;
  readonly lengths?: Uint32Array;
  readonly ids?: Uint8Array;
  /** The last message of the file. */
  readonly done?: boolean;
  readonly error?: WorkerError;
}

/** Chunk bytes a worker cuts ahead of the engine, per file, before it pauses reading. */
export const MAX_OUTPUT_AHEAD = 8 * 1024 * 1024;

/**
 * A FileChunker that reads, chunks and hashes files on the pool's worker threads. `start`
 * begins at once: the engine starts a few files ahead, so while it packs one file the workers
 * read and chunk the next ones on the other cores. A file that can be read by path
 * (`localFile`: any file of the file-system source, a SQLite database through its consistent
 * state, which stays held until the worker is done) goes to a worker; others (in-memory
 * sources) are chunked here. Chunks come back with their IDs in batches whose buffers move to
 * the main thread and back without copying. (Sending a file's blocks from the main thread to a
 * worker instead measured slower than chunking them here: the copies cost more than the hashing.)
 */
export class WorkerChunker implements FileChunker {
  private readonly pool: WorkerPool;
  private readonly local: FileChunker;
  private readonly sessions = new Map<number, Session>();
  private nextSession = 0;

  constructor(pool: WorkerPool, p: Primitives, keys: RepoKeys) {
    this.pool = pool;
    this.local = localChunker(p, keys);
    pool.register("chunks", {
      onReply: (_, m) =>
        this.sessions.get((m as ChunksMessage).session)?.receive(m as ChunksMessage),
      onLost: (w, err) => {
        for (const s of this.sessions.values()) {
          if (s.worker === w) {
            s.fail(new LocketError("failure", `a worker thread stopped: ${err.message}`));
          }
        }
      },
    });
  }

  start(file: Pick<SourceFile, "open" | "localFile">): ChunkJob {
    if (!file.localFile) return this.local.start(file);
    const id = this.nextSession++;
    const session = new Session(id, this.pool, file.localFile(), () => this.sessions.delete(id));
    this.sessions.set(id, session);
    return session;
  }
}

/** One file a worker reads and chunks, seen from the main thread. */
class Session implements ChunkJob {
  readonly worker: PoolWorker;
  private readonly id: number;
  private readonly pool: WorkerPool;
  /** The local file, once `localFile()` resolved: closed when the session ends. */
  private file: LocalFile | undefined;
  private readonly forget: () => void;
  private readonly batches: ChunkBatch[] = [];
  private finished = false;
  private stopped = false;
  private released = false;
  private error: unknown;
  private wake: (() => void) | undefined;

  constructor(id: number, pool: WorkerPool, file: Promise<LocalFile>, forget: () => void) {
    this.id = id;
    this.pool = pool;
    this.forget = forget;
    this.worker = pool.acquire();
    file.then(
      (f) => {
        this.file = f;
        if (this.released) this.closeFile();
        else this.post({ kind: "file", session: id, path: f.path });
      },
      (err) => this.fail(err),
    );
  }

  receive(m: ChunksMessage): void {
    if (this.stopped || this.finished) return;
    if (m.error) {
      this.fail(
        // The worker only reads once the file is known, and the session holds it until it ends.
        m.error.name === "VanishedError"
          ? new VanishedError(this.file!.path)
          : rebuildError(m.error),
      );
      return;
    }
    if (m.lengths && m.lengths.length > 0) {
      this.batches.push({ bytes: m.bytes!.subarray(0, m.length), lengths: m.lengths, ids: m.ids! });
    }
    if (m.done) {
      this.finished = true;
      this.release();
    }
    this.notify();
  }

  /** Ends the session with `err`, which the reader sees after the batches already cut. */
  fail(err: unknown): void {
    if (this.finished || this.stopped) return;
    this.error = err;
    this.finished = true;
    this.release();
    this.notify();
  }

  cancel(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (!this.finished) this.post({ kind: "abort", session: this.id });
    this.batches.length = 0;
    this.release();
    this.notify();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ChunkBatch> {
    for (;;) {
      if (this.stopped) return;
      const batch = this.batches.shift();
      if (batch) {
        yield batch;
        // The engine is done with the batch (it copies what it keeps): its buffer goes back,
        // and the worker may read further ahead.
        const buffer = batch.bytes.buffer as ArrayBuffer;
        const bytes = batch.bytes.length;
        this.post({ kind: "ack", session: this.id, bytes, buffer }, [buffer]);
        continue;
      }
      if (this.finished) {
        if (this.error) throw this.error;
        return;
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  private post(m: ChunkMessage, transfer: ArrayBuffer[] = []): void {
    this.worker.worker.postMessage(m, transfer);
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private release(): void {
    if (this.released) return;
    this.released = true;
    this.pool.release(this.worker);
    this.forget();
    this.closeFile();
  }

  /** Lets the source release the file (a SQLite read transaction, a private copy). */
  private closeFile(): void {
    const f = this.file;
    this.file = undefined;
    // Nothing is lost if this fails: the chunks were cut; at worst a temporary copy stays.
    f?.close().catch(() => {});
  }
}
