import { fstatSync, readSync } from "node:fs";
import { open } from "node:fs/promises";
import {
  type ChunkBatch,
  type ChunkJob,
  type ChunkOptions,
  type FileChunker,
  type LocalFile,
  LocketError,
  localChunker,
  type PageDeltaHints,
  type Primitives,
  type RepoKeys,
  type SourceFile,
  SQLITE_HEADER_BYTES,
  sqlitePageSize,
  VanishedError,
} from "@locket/core";
import type { PoolWorker, WorkerError, WorkerPool, WorkerReply } from "./pool.ts";
import { rebuildError } from "./segment-opener.ts";

/**
 * What the main thread sends a worker about one file: the path to read; that the engine took
 * `bytes` of its chunks (with their buffer, back for reuse); or a cancel.
 */
export type ChunkMessage =
  | {
      readonly kind: "file";
      readonly session: number;
      readonly path: string;
      /** A stripe of a SQLite database: these bytes only, cut into pages of `pageSize`. */
      readonly start?: number;
      readonly end?: number;
      readonly pageSize?: number;
      /** A whole file's size as listed (Part.size). */
      readonly size?: number;
      /** The descriptor to read through, not to close (Part.fd). */
      readonly fd?: number;
      /** A base image to compute page deltas against (ChunkOptions.baseImage). */
      readonly baseImage?: string;
      /** For the part's pages, in order: the IDs that need no delta (ChunkOptions.knownPages). */
      readonly known?: Uint8Array;
      /** For the part's pages: the IDs of what the certified image holds (ChunkOptions.imagePages). */
      readonly imageIds?: Uint8Array;
    }
  | {
      readonly kind: "ack";
      readonly session: number;
      readonly bytes: number;
      readonly buffer: ArrayBuffer;
      /** The buffer of the batch's page-delta XORs, back for reuse too. */
      readonly xors?: ArrayBuffer;
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
  /** Page deltas against the base image, when one was given and the file is a database. */
  readonly deltas?: PageDeltaHints;
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

  start(
    file: Pick<SourceFile, "open" | "localFile"> & { readonly size?: number },
    opts: ChunkOptions = {},
  ): ChunkJob {
    if (!file.localFile) return this.local.start(file);
    // Only a file listed large enough may be striped: the others are not even opened here.
    const threads =
      (file.size ?? Number.POSITIVE_INFINITY) < 2 * STRIPE_BYTES ? 1 : this.pool.threads;
    const { baseImage, knownPages, imagePages } = opts;
    const withImage = async (p: Part): Promise<Part> => {
      if (!baseImage) return p;
      // A stripe's own pages only, copied: a view would send the whole file's array along.
      const { start, end, pageSize } = p;
      const striped = pageSize !== undefined && start !== undefined && end !== undefined;
      const ours = (all: Uint8Array | undefined) =>
        striped ? all?.slice(32 * (start / pageSize), 32 * Math.ceil(end / pageSize)) : undefined;
      const known = knownPages && ours(await knownPages());
      const imageIds = imagePages && striped ? ours(await imagePages(pageSize)) : undefined;
      return {
        ...p,
        baseImage,
        ...(known?.length ? { known } : {}),
        ...(imageIds?.length ? { imageIds } : {}),
      };
    };
    const { size } = file;
    const withSize = (p: Part): Part =>
      p.start === undefined && size !== undefined ? { ...p, size } : p;
    return new FileJob(file.localFile(), threads, (part) =>
      this.session(part.then(withImage).then(withSize)),
    );
  }

  /** A worker session for (a stripe of) a file. */
  private session(part: Promise<Part>): Session {
    const id = this.nextSession++;
    const session = new Session(id, this.pool, part, () => this.sessions.delete(id));
    this.sessions.set(id, session);
    return session;
  }
}

/** What one worker session reads: a file, or a stripe of a SQLite database cut into pages. */
export interface Part {
  readonly path: string;
  /**
   * A whole file's size as listed: one at most SMALL_FILE_BYTES is read with blocking calls
   * (readSmallFile). Warm, a first backup of the benchmark's media took 6.7-6.9 s instead of
   * 8.0-8.3 s so; cold, the same time (docs/benchmarks-log.md).
   */
  readonly size?: number;
  /**
   * LocalFile.fd: the worker reads through it (descriptors are the process's, shared by its
   * threads) and never closes it; the file is closed only once every session reading it has
   * ended, a cancelled one included (Session.cancel).
   */
  readonly fd?: number;
  readonly start?: number;
  readonly end?: number;
  readonly pageSize?: number;
  readonly baseImage?: string;
  readonly known?: Uint8Array;
  readonly imageIds?: Uint8Array;
}

/**
 * A SQLite database at least twice this large is read in stripes of this size, given to the
 * workers in turn, so that all of them hash its pages (a day's backup re-reads the whole
 * database: on one worker, the other stood idle). Page-aligned chunks do not depend on where
 * reading starts, so the chunks are those of a single pass. A multiple of every page size.
 */
export const STRIPE_BYTES = 4 * 1024 * 1024;

/**
 * The parts of a local file: stripes when it is a large enough SQLite database, else itself.
 * Through `fd` when given (LocalFile.fd), which stays open; else the path is opened and closed.
 */
export async function partsOf(path: string, threads: number, fd?: number): Promise<Part[]> {
  const whole = fd === undefined ? [{ path }] : [{ path, fd }];
  if (threads < 2) return whole;
  const fh =
    fd === undefined
      ? await open(path, "r").catch((err) => {
          throw err?.code === "ENOENT" ? new VanishedError(path, { cause: err }) : err;
        })
      : undefined;
  try {
    const size = fh ? (await fh.stat()).size : fstatSync(fd!).size;
    if (size < 2 * STRIPE_BYTES) return whole;
    const header = new Uint8Array(SQLITE_HEADER_BYTES);
    const bytesRead = fh
      ? (await fh.read(header, 0, SQLITE_HEADER_BYTES, 0)).bytesRead
      : readSync(fd!, header, 0, SQLITE_HEADER_BYTES, 0);
    const pageSize = bytesRead === SQLITE_HEADER_BYTES ? sqlitePageSize(header) : null;
    if (!pageSize) return whole;
    const parts: Part[] = [];
    for (let start = 0; start < size; start += STRIPE_BYTES) {
      const end = Math.min(start + STRIPE_BYTES, size);
      parts.push({ ...whole[0], start, end, pageSize });
    }
    return parts;
  } finally {
    await fh?.close();
  }
}

/**
 * One file's chunking: a worker session for the whole file, or for each of its stripes, at most
 * STRIPES_AHEAD per worker started before the engine takes them. The local file is closed once
 * every session has finished reading (or on cancel).
 */
class FileJob implements ChunkJob {
  private readonly parts: Promise<Part[]>;
  private readonly sessions: Session[] = [];
  private readonly newSession: (part: Promise<Part>) => Session;
  private readonly ahead: number;
  private file: LocalFile | undefined;
  private total = Number.POSITIVE_INFINITY;
  private ended = 0;
  private cancelled = false;
  private settle: () => void = () => {};
  readonly released = new Promise<void>((resolve) => {
    this.settle = resolve;
  });

  constructor(
    file: Promise<LocalFile>,
    threads: number,
    newSession: (p: Promise<Part>) => Session,
  ) {
    this.newSession = newSession;
    this.ahead = STRIPES_AHEAD * threads;
    file.catch(() => this.settle()); // never opened: nothing to let go of
    this.parts = file.then(async (f) => {
      this.file = f;
      const parts = await partsOf(f.path, threads, f.fd).catch((err) => {
        this.closeFile();
        throw err;
      });
      this.total = parts.length;
      if (this.cancelled) this.closeFile();
      else this.fill(parts, 0);
      return parts;
    });
    this.parts.catch(() => {}); // surfaced by the iteration
  }

  /** Starts the sessions up to `ahead` parts past part `k`. */
  private fill(parts: readonly Part[], k: number): void {
    while (!this.cancelled && this.sessions.length < Math.min(parts.length, k + this.ahead)) {
      const session = this.newSession(Promise.resolve(parts[this.sessions.length]));
      session.onEnd = () => {
        this.ended++;
        this.closeWhenDone();
      };
      this.sessions.push(session);
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ChunkBatch> {
    const parts = await this.parts;
    try {
      for (let k = 0; k < parts.length && !this.cancelled; k++) {
        this.fill(parts, k);
        yield* this.sessions[k];
      }
    } catch (err) {
      this.cancel();
      throw err;
    }
  }

  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    for (const s of this.sessions) s.cancel();
    this.closeWhenDone();
  }

  /** Closes the file once no session will read it: all parts done, or all started ones after a cancel. */
  private closeWhenDone(): void {
    if (this.ended === (this.cancelled ? this.sessions.length : this.total)) this.closeFile();
  }

  /** Lets the source release the file (a SQLite read transaction, a private copy). */
  private closeFile(): void {
    const f = this.file;
    if (!f) return; // not open yet (closed when it comes, if cancelled) or closed already
    this.file = undefined;
    // Nothing is lost if this fails: the chunks were cut; at worst a temporary copy stays.
    f.close()
      .catch(() => {})
      .finally(() => this.settle());
  }
}

/** Stripes per worker started before the engine reaches them (each up to STRIPE_BYTES ahead). */
const STRIPES_AHEAD = 2;

/** One file, or stripe of a file, that a worker reads and chunks, seen from the main thread. */
class Session implements ChunkJob {
  readonly worker: PoolWorker;
  private readonly id: number;
  private readonly pool: WorkerPool;
  /** What the worker reads, once known. */
  private part: Part | undefined;
  private readonly forget: () => void;
  /** Called once, when the worker is done with the part (finished, failed or cancelled). */
  onEnd: () => void = () => {};
  private readonly batches: ChunkBatch[] = [];
  private finished = false;
  private stopped = false;
  /** Whether the session has ended (release): the worker no longer reads its part. */
  private over = false;
  /** Whether the worker was told to read the part. */
  private posted = false;
  private error: unknown;
  private wake: (() => void) | undefined;

  constructor(id: number, pool: WorkerPool, part: Promise<Part>, forget: () => void) {
    this.id = id;
    this.pool = pool;
    this.forget = forget;
    this.worker = pool.acquire();
    part.then(
      (p) => {
        this.part = p;
        if (this.over) return;
        this.posted = true;
        this.post({ kind: "file", session: id, ...p });
      },
      (err) => this.fail(err),
    );
  }

  receive(m: ChunksMessage): void {
    if (this.finished) return;
    if (this.stopped) {
      // Cancelled: the worker's last message says it has stopped reading.
      if (m.done || m.error) this.release();
      return;
    }
    if (m.error) {
      this.fail(
        // The worker only reads once the file is known, and the session holds it until it ends.
        m.error.name === "VanishedError"
          ? new VanishedError(this.part!.path)
          : rebuildError(m.error),
      );
      return;
    }
    if (m.lengths && m.lengths.length > 0) {
      this.batches.push({
        bytes: m.bytes!.subarray(0, m.length),
        lengths: m.lengths,
        ids: m.ids!,
        ...(m.deltas ? { deltas: m.deltas } : {}),
      });
    }
    if (m.done) {
      this.finished = true;
      this.release();
    }
    this.notify();
  }

  /** Ends the session with `err`, which the reader sees after the batches already cut. */
  fail(err: unknown): void {
    if (this.finished) return;
    if (this.stopped) {
      this.release(); // cancelled, and its worker is gone: nothing reads the part any more
      return;
    }
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
    // A worker reading through the file's descriptor (Part.fd) may be inside a read: the file,
    // and so the descriptor, may be closed only once the worker says it has stopped (receive).
    if (!(this.posted && !this.finished && this.part?.fd !== undefined)) this.release();
    this.notify();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ChunkBatch> {
    for (;;) {
      if (this.stopped) return;
      const batch = this.batches.shift();
      if (batch) {
        yield batch;
        // The engine is done with the batch (it copies what it keeps): its buffer goes back,
        // and the worker may read further ahead. So does the buffer of its page deltas' XORs
        // (copied where kept, by Packer.add), rather than being left to a full collection: a
        // day's ~115 MB of them made one every ~64 MB. Not the IDs: the packer holds those by
        // reference until their pack is stored.
        const buffer = batch.bytes.buffer as ArrayBuffer;
        const bytes = batch.bytes.length;
        const xors = batch.deltas?.xors.buffer as ArrayBuffer | undefined;
        const transfer = xors && xors.byteLength > 0 ? [buffer, xors] : [buffer];
        this.post(
          { kind: "ack", session: this.id, bytes, buffer, ...(transfer[1] ? { xors } : {}) },
          transfer,
        );
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
    if (this.over) return;
    this.over = true;
    this.pool.release(this.worker);
    this.forget();
    this.onEnd();
  }
}
