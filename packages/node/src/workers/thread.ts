// A worker thread of WorkerPool (pool.ts). It derives the repository keys from the root key it
// is started with, then serves two kinds of work: opening segments and checking blobs
// (WorkerSegmentOpener), and chunking and hashing files (WorkerChunker). It logs nothing and
// keeps nothing between jobs but the chunking state of the files it is given.
import { parentPort, workerData } from "node:worker_threads";
import {
  BLOB_DATA,
  blobId,
  chunkStream,
  deriveKeys,
  LocketError,
  openAndCheck,
  releaseBuffer,
} from "@locket/core";
import { nodePrimitives } from "../primitives.ts";
import { readStream } from "../source.ts";
import { type ChunkMessage, type ChunksMessage, MAX_OUTPUT_AHEAD } from "./chunker.ts";
import type { WorkerError } from "./pool.ts";
import { type OpenedMessage, type OpenMessage, owns, unpackBlobs } from "./segment-opener.ts";

const port = parentPort!;
const p = nodePrimitives;
const keys = await deriveKeys(p, workerData.rootKey as Uint8Array);

function workerError(err: unknown): WorkerError {
  const e = err as LocketError;
  return {
    code: e instanceof LocketError ? e.code : "failure",
    name: (e as Error)?.name,
    message: String(e?.message ?? e),
    object: (e as { object?: string })?.object,
  };
}

/**
 * `b` itself when its buffer may move to the main thread: not the read's bytes (freed after the
 * job), not a small pooled buffer, and mostly `b` (an uncompressed payload is the decrypted
 * buffer after a 5-byte header); otherwise a copy.
 */
function movable(b: Uint8Array, exclude: ArrayBufferLike): Uint8Array {
  const whole = b.buffer.byteLength;
  if (b.buffer === exclude) return new Uint8Array(b);
  return owns(b) || (whole >= 64 * 1024 && b.byteLength * 2 >= whole) ? b : new Uint8Array(b);
}

async function open(m: OpenMessage): Promise<void> {
  try {
    await openAll(m);
  } finally {
    // Free the read's bytes now: a worker's collector is slow to notice buffers moved in from
    // another thread, and a restore moves hundreds of them.
    const read = m.bytes.buffer as ArrayBuffer;
    if (!read.detached) read.transfer(0);
  }
}

async function openAll(m: OpenMessage): Promise<void> {
  for (let i = 0; i < m.segments.length; i++) {
    const s = m.segments[i];
    let reply: OpenedMessage;
    try {
      const { payload, matches } = await openAndCheck(
        p,
        keys,
        m.bytes.subarray(s.start, s.start + s.length),
        unpackBlobs(s.blobs),
        m.objectName,
      );
      const out = m.payloads ? movable(payload, m.bytes.buffer) : undefined;
      // Not sent, or sent as a copy: the decrypted buffer it lies in is this thread's alone.
      if (out !== payload && payload.buffer !== m.bytes.buffer) {
        releaseBuffer(new Uint8Array(payload.buffer));
      }
      reply = { kind: "opened", job: m.job, index: i, payload: out, matches };
    } catch (err) {
      reply = { kind: "opened", job: m.job, index: i, error: workerError(err) };
    }
    port.postMessage(reply, reply.payload ? [reply.payload.buffer as ArrayBuffer] : []);
  }
}

/** Smallest output buffer of a batch; a batch is sent whenever its input block is used up. */
const MIN_BATCH_BYTES = 2 * 1024 * 1024;
/** Output buffers the main thread gave back, for the next batches of any file. */
const spareOut: ArrayBuffer[] = [];
const MAX_SPARE_OUT = 16;

function outputBuffer(size: number): Uint8Array {
  const spare = spareOut.pop();
  if (spare && spare.byteLength >= size) return new Uint8Array(spare);
  return new Uint8Array(Math.max(MIN_BATCH_BYTES, size));
}

/** One file read and chunked here: batches of chunks with their IDs go out as it is read. */
class FileSession {
  private readonly id: number;
  private readonly path: string;
  private readonly stripe: ChunkMessage & { kind: "file" };
  /** Chunk bytes sent and not yet taken by the engine (acknowledged). */
  private ahead = 0;
  private aborted = false;
  private wake: (() => void) | undefined;
  private out: Uint8Array = new Uint8Array(0);
  private used = 0;
  private lengths: number[] = [];
  private ids: Uint8Array[] = [];

  constructor(m: ChunkMessage & { kind: "file" }) {
    this.id = m.session;
    this.path = m.path;
    this.stripe = m;
    this.run();
  }

  /** The engine took `bytes` of chunks: reading may go on. */
  ack(bytes: number): void {
    this.ahead -= bytes;
    this.poke();
  }

  abort(): void {
    this.aborted = true;
    this.poke();
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** The file, block by block, pausing while the engine is MAX_OUTPUT_AHEAD behind. */
  private async *read(): AsyncGenerator<Uint8Array> {
    const { start, end } = this.stripe;
    const range = start !== undefined && end !== undefined ? { start, end } : undefined;
    for await (const block of readStream(this.path, range)) {
      this.send(false);
      while (this.ahead > MAX_OUTPUT_AHEAD && !this.aborted) {
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
      }
      if (this.aborted) return;
      yield block;
    }
  }

  private async run(): Promise<void> {
    try {
      const { pageSize } = this.stripe;
      const fixed = pageSize ? ({ kind: "pages", pageSize } as const) : undefined;
      for await (const chunk of chunkStream(this.read(), keys.gear, undefined, fixed)) {
        if (this.aborted) break;
        if (this.used + chunk.length > this.out.length) {
          this.send(false);
          this.out = outputBuffer(chunk.length);
          this.used = 0;
        }
        this.out.set(chunk, this.used);
        this.used += chunk.length;
        this.lengths.push(chunk.length);
        this.ids.push(blobId(p, keys.id, BLOB_DATA, chunk));
      }
      if (!this.aborted) this.send(true);
    } catch (err) {
      const reply: ChunksMessage = { kind: "chunks", session: this.id, error: workerError(err) };
      port.postMessage(reply);
    } finally {
      sessions.delete(this.id);
    }
  }

  /** Sends the chunks cut so far (and the end, when `done`); nothing when there is nothing new. */
  private send(done: boolean): void {
    const n = this.lengths.length;
    if ((!done && n === 0) || this.aborted) return;
    const ids = new Uint8Array(32 * n);
    for (let k = 0; k < n; k++) ids.set(this.ids[k], 32 * k);
    const lengths = Uint32Array.from(this.lengths);
    const reply: ChunksMessage = {
      kind: "chunks",
      session: this.id,
      bytes: n > 0 ? this.out : undefined,
      length: this.used,
      lengths,
      ids,
      done,
    };
    const transfer: ArrayBuffer[] = [lengths.buffer, ids.buffer];
    if (n > 0) transfer.push(this.out.buffer as ArrayBuffer);
    port.postMessage(reply, transfer);
    if (n > 0) {
      this.ahead += this.used;
      this.out = new Uint8Array(0);
      this.used = 0;
    }
    this.lengths = [];
    this.ids = [];
  }
}

const sessions = new Map<number, FileSession>();

port.on("message", (m: OpenMessage | ChunkMessage) => {
  if (m.kind === "open") open(m);
  else if (m.kind === "file") sessions.set(m.session, new FileSession(m));
  else if (m.kind === "ack") {
    if (spareOut.length < MAX_SPARE_OUT) spareOut.push(m.buffer);
    sessions.get(m.session)?.ack(m.bytes);
  } else sessions.get(m.session)?.abort();
});
