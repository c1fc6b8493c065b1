// A worker thread of WorkerPool (pool.ts). It derives the repository keys from the root key it
// is started with, then serves two kinds of work: opening segments and checking blobs
// (WorkerSegmentOpener), and chunking and hashing files (WorkerChunker). It logs nothing and
// keeps nothing between jobs but the chunking state of the files it is given.
import { closeSync, openSync, readSync } from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import {
  BLOB_DATA,
  BLOB_DELTA,
  blobId,
  type ChunkingMode,
  chunkStream,
  concat,
  deltaPays,
  deriveKeys,
  LocketError,
  openAndCheck,
  type PageDeltaHints,
  releaseBuffer,
  releaseWhole,
  sameIdAt,
  xorInto,
} from "@locket/core";
import { nodePrimitives } from "../primitives.ts";
import { readDescriptor, readSmallFile, readStream, SMALL_FILE_BYTES } from "../source.ts";
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
    releaseWhole(m.bytes.buffer);
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
  /** Page deltas against the base image, when one was given (null: none, or not a database). */
  private deltas: DeltaHints | null = null;

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
    const { start, end, size, fd } = this.stripe;
    const range = start !== undefined && end !== undefined ? { start, end } : undefined;
    const small = !range && size !== undefined && size <= SMALL_FILE_BYTES;
    const blocks =
      fd !== undefined
        ? readDescriptor(fd, range)
        : small
          ? readSmallFile(this.path)
          : readStream(this.path, range);
    for await (const block of blocks) {
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
      const { pageSize, baseImage, start, known, imageIds } = this.stripe;
      const fixed = pageSize ? ({ kind: "pages", pageSize } as const) : undefined;
      const onMode = (mode: ChunkingMode) => {
        if (baseImage && mode.kind === "pages") {
          this.deltas = DeltaHints.open(baseImage, mode.pageSize, start ?? 0, known, imageIds);
        }
      };
      if (fixed) onMode(fixed);
      for await (const chunk of chunkStream(this.read(), keys.gear, onMode, fixed)) {
        if (this.aborted) break;
        if (this.used + chunk.length > this.out.length) {
          this.send(false);
          this.out = outputBuffer(chunk.length);
          this.used = 0;
        }
        this.out.set(chunk, this.used);
        this.used += chunk.length;
        // After any send above: a batch's hints are those of its own chunks.
        const id = this.deltas?.add(chunk) ?? blobId(p, keys.id, BLOB_DATA, chunk);
        this.lengths.push(chunk.length);
        this.ids.push(id);
      }
      if (!this.aborted) this.send(true);
      else {
        // Told to stop: say so once stopped, so the file may be closed (Session.cancel).
        port.postMessage({ kind: "chunks", session: this.id, done: true } satisfies ChunksMessage);
      }
    } catch (err) {
      const reply: ChunksMessage = { kind: "chunks", session: this.id, error: workerError(err) };
      port.postMessage(reply);
    } finally {
      this.deltas?.close();
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
    const deltas = n > 0 ? this.deltas?.take() : undefined;
    const reply: ChunksMessage = {
      kind: "chunks",
      session: this.id,
      bytes: n > 0 ? this.out : undefined,
      length: this.used,
      lengths,
      ids,
      ...(deltas ? { deltas } : {}),
      done,
    };
    const transfer: ArrayBuffer[] = [lengths.buffer, ids.buffer];
    if (deltas) {
      for (const a of [deltas.at, deltas.baseIds, deltas.deltaIds, deltas.xors, deltas.same]) {
        if (a) transfer.push(a.buffer as ArrayBuffer);
      }
    }
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

/**
 * Page deltas of a database's pages against its base image, worked out as the pages are cut
 * (see PageDeltaHints): the XOR with the image's bytes at the page's offset, and when it pays,
 * the keyed IDs of the image's page and of the delta. Pages whose ID is the one `known` gives
 * (ChunkOptions.knownPages) get none: the engine lists the parent's entry for them. Every page
 * is compared with the image's bytes (PageDeltaHints.same); with `imageIds` (a certified image,
 * ChunkOptions.imagePages) a page equal to them takes the ID given for it without being hashed,
 * which on a day's backup is most pages. The image is read here in windows, with synchronous
 * reads (this thread has nothing else to do meanwhile). An image that cannot be read gives no
 * deltas, never an error: the engine then stores whole pages.
 */
class DeltaHints {
  private readonly fd: number;
  private readonly pageSize: number;
  /** File offset of the next page. */
  private pos: number;
  /** The known IDs of this part's pages, 32 bytes each (may be shorter than the part). */
  private readonly known: Uint8Array;
  /** Pages added so far. */
  private pages = 0;
  private window: Buffer | undefined = spareWindows.pop() ?? Buffer.alloc(IMAGE_WINDOW_BYTES);
  private windowStart = 0;
  private windowEnd = 0;
  private at: number[] = [];
  private baseIds: Uint8Array[] = [];
  private deltaIds: Uint8Array[] = [];
  private xors = takeSpareXors();
  private count = 0;
  /** The IDs of what the certified image holds at this part's pages (may be empty). */
  private readonly imageIds: Uint8Array;
  /** Per page added since the last `take`: PageDeltaHints.same. */
  private same: number[] = [];

  private constructor(
    fd: number,
    pageSize: number,
    start: number,
    known: Uint8Array,
    imageIds: Uint8Array,
  ) {
    this.fd = fd;
    this.pageSize = pageSize;
    this.pos = start;
    this.known = known;
    this.imageIds = imageIds;
  }

  static open(
    path: string,
    pageSize: number,
    start: number,
    known: Uint8Array = new Uint8Array(0),
    imageIds: Uint8Array = new Uint8Array(0),
  ): DeltaHints | null {
    try {
      return new DeltaHints(openSync(path, "r"), pageSize, start, known, imageIds);
    } catch {
      return null;
    }
  }

  /**
   * Adds the next chunk of the file, a page (or the last, shorter piece), and returns its ID: the
   * one `imageIds` gives when the certified image holds these very bytes there (then the page is
   * not hashed), else its keyed hash.
   */
  add(page: Uint8Array): Uint8Array {
    // Every page of a database passes here on every backup: no view is made of the image's page,
    // its given ID or its known ID unless the page changed (a day's backup is ~95 k pages).
    const k = this.pages++;
    const at = page.length === this.pageSize ? this.imageAt(this.pos) : -1;
    this.pos += page.length;
    const n = this.pageSize;
    const window = this.window!;
    const same = at >= 0 && window.compare(page, 0, n, at, at + n) === 0;
    // Zeros: no ID known for that page.
    const trusted = same && hasNonZero(this.imageIds, 32 * k);
    const id = trusted
      ? this.imageIds.subarray(32 * k, 32 * k + 32)
      : blobId(p, keys.id, BLOB_DATA, page);
    this.same.push(trusted ? 2 : same ? 1 : 0);
    // A page equal to the image needs no delta (it would be all zeros), nor one the parent had.
    const delta = at >= 0 && !same && !sameIdAt(this.known, 32 * k, id);
    this.at.push(delta ? this.delta(page, window.subarray(at, at + n)) : -1);
    return id;
  }

  /** The delta of `page` against `old`, the image's page there: its index when it pays, else -1. */
  private delta(page: Uint8Array, old: Uint8Array): number {
    const n = this.pageSize;
    if (this.xors.length < (this.count + 1) * n) {
      const grown = new Uint8Array(Math.max(64 * n, 2 * this.xors.length));
      grown.set(this.xors.subarray(0, this.count * n));
      this.xors = grown;
    }
    const xor = this.xors.subarray(this.count * n, (this.count + 1) * n);
    if (!deltaPays(xorInto(xor, page, old), n)) return -1;
    this.baseIds.push(blobId(p, keys.id, BLOB_DATA, old));
    this.deltaIds.push(blobId(p, keys.id, BLOB_DELTA, xor));
    return this.count++;
  }

  /**
   * The hints of the pages added since the last call, to send with their batch. The XORs go in
   * the buffer they were written to (the main thread sends it back with its acknowledgement).
   */
  take(): PageDeltaHints {
    const n = this.pageSize;
    const hints = {
      at: Int32Array.from(this.at),
      baseIds: concat(...this.baseIds),
      deltaIds: concat(...this.deltaIds),
      xors: this.xors.subarray(0, this.count * n),
      same: Uint8Array.from(this.same),
    };
    this.xors = takeSpareXors();
    this.same = [];
    this.at = [];
    this.baseIds = [];
    this.deltaIds = [];
    this.count = 0;
    return hints;
  }

  close(): void {
    try {
      closeSync(this.fd);
    } catch {}
    if (this.window && spareWindows.length < MAX_SPARE_WINDOWS) spareWindows.push(this.window);
    this.window = undefined;
  }

  /**
   * Where the image's page at file offset `at` starts in the window, after reading the window
   * there when needed; -1 past the image's end or on a read error.
   */
  private imageAt(at: number): number {
    const n = this.pageSize;
    if (at < this.windowStart || at + n > this.windowEnd) {
      try {
        this.windowStart = at;
        const window = this.window!; // closed hints are not used
        this.windowEnd = at + readSync(this.fd, window, 0, window.length, at);
      } catch {
        this.windowEnd = at;
      }
      if (at + n > this.windowEnd) return -1;
    }
    return at - this.windowStart;
  }
}

/** Whether `ids` holds 32 bytes at `at` and not all of them are zero. */
function hasNonZero(ids: Uint8Array, at: number): boolean {
  if (at + 32 > ids.length) return false;
  for (let i = at; i < at + 32; i++) if (ids[i] !== 0) return true;
  return false;
}

/** Bytes of the base image read at once by DeltaHints. */
const IMAGE_WINDOW_BYTES = 1024 * 1024;

// Reused across a database's stripes (~100 of them, each a DeltaHints, in a 400 MB database),
// as are the buffers its XORs are sent in, which come back with the main thread's
// acknowledgements: made afresh per stripe and per batch, they were ~170 MB of garbage per
// worker in a day's backup, and a full collection every ~64 MB of it.
const spareWindows: Buffer[] = [];
const MAX_SPARE_WINDOWS = 4;
const spareXors: ArrayBuffer[] = [];
const MAX_SPARE_XORS = 8;

function takeSpareXors(): Uint8Array {
  const spare = spareXors.pop();
  return spare ? new Uint8Array(spare) : new Uint8Array(0);
}

const sessions = new Map<number, FileSession>();

port.on("message", (m: OpenMessage | ChunkMessage) => {
  if (m.kind === "open") open(m);
  else if (m.kind === "file") sessions.set(m.session, new FileSession(m));
  else if (m.kind === "ack") {
    if (spareOut.length < MAX_SPARE_OUT) spareOut.push(m.buffer);
    if (m.xors && spareXors.length < MAX_SPARE_XORS) spareXors.push(m.xors);
    sessions.get(m.session)?.ack(m.bytes);
  } else sessions.get(m.session)?.abort();
});
