import { type BlobLocation, segmentKey } from "../blob-index.ts";
import { concatAll, idsFromHex, releaseWhole, toHex, xorInto } from "../bytes.ts";
import { IntegrityError } from "../errors.ts";
import {
  BLOB_DATA,
  BLOB_DELTA,
  BLOB_LIST,
  BLOB_LIST_PATCH,
  type BlobType,
} from "../format/blob.ts";
import type { FileNode, TreeNode } from "../format/tree.ts";
import type { BlobRef, EvictionLog, Repository, SegmentRead } from "../repository.ts";
import { SEGMENT_TARGET_BYTES } from "./packer.ts";

/** One entry of a snapshot, with its path from the snapshot root. */
export interface WalkEntry {
  /** Path components from the root; every component passed `isSafeName`. */
  readonly path: readonly string[];
  readonly node: TreeNode;
}

/**
 * Every entry under tree `treeId`, depth first, a folder before its contents. Trees are verified
 * and validated as they load, so a hostile tree fails here before anything is written.
 * @throws {IntegrityError} when a tree is missing or damaged.
 */
export async function* walk(
  repo: Repository,
  treeId: string,
  prefix: readonly string[] = [],
): AsyncGenerator<WalkEntry> {
  yield* walkNodes(repo, (await repo.loadTree(treeId)).nodes, prefix);
}

async function* walkNodes(
  repo: Repository,
  nodes: readonly TreeNode[],
  prefix: readonly string[],
): AsyncGenerator<WalkEntry> {
  for (const node of nodes) {
    const path = [...prefix, node.name];
    yield { path, node };
    if (node.type === "dir") yield* walkNodes(repo, await repo.dirNodes(node), path);
  }
}

/** A file to read, with its path for messages. */
export interface FileToRead {
  readonly node: FileNode;
  readonly path: string;
}

/** What `readFiles` yields: a verified chunk of file `file`, or the end of that file. */
export type ReadEvent =
  | { readonly file: number; readonly chunk: Uint8Array; readonly done?: undefined }
  | { readonly file: number; readonly done: true };

/** Options of `readFiles`. */
export interface ReadFilesOptions {
  /**
   * Give the memory of the segments read back as the reading moves on (see BlobReads): a chunk
   * is then valid only until the generator is resumed, so the caller must use or copy it first
   * (a restore writes it out at once). Without it, chunks stay valid as long as they are held.
   */
  readonly release?: boolean;
  /**
   * Read the files of small chunks (databases: a page each) alongside the others, in pieces
   * about a quarter of a ranged read long, each side keeping pace with the other by bytes
   * (see `readOrder`), instead of one file after the other, where the repository suits it
   * (see `pieceBytes`: a local one). A database's pages keep the worker
   * threads busy (decompression and a keyed hash per page) while the disk is nearly idle, and
   * media the other way round: together, each hides the other's wait. Events of two files then
   * interleave, each file's own in order; `onOrder` tells in which order the files start.
   */
  readonly interleave?: boolean;
  /** Hears, before the first event, the files' indexes in the order their first events come. */
  readonly onOrder?: (order: readonly number[]) => void;
}

/** How far ahead of the reader segments are requested. */
const READ_AHEAD_BYTES = 32 * 1024 * 1024;
/** Largest single ranged read when neighbouring segments are read together. */
const MAX_REQUEST_BYTES = 16 * 1024 * 1024;

/**
 * The least segment cache that `interleave` needs: a piece of media is at least a chunk (often
 * 1 MiB), and a database's segments must stay cached across it. With 4 MiB, 46 % more pack
 * bytes were read in the test; with 8 MiB, none more.
 */
const INTERLEAVE_CACHE_BYTES = 8 * 1024 * 1024;

/**
 * How much of a stream `interleave` reads before turning to the other (a quarter of a request),
 * or undefined where the files are better read one after the other: with a cache under
 * INTERLEAVE_CACHE_BYTES, and where requests cost (S3: `readGapBytes` set), since each piece
 * of a database becomes a ranged read of its own. From S3 (the S3 benchmark, 2 alternating
 * rounds of 2 runs) interleaving took 4.75 / 5.16 s against 4.54 / 4.39 s, with 36 requests
 * instead of 32 (pieces of a whole request; quarters made 47): the restore there is bound by
 * the main thread, not by the workers and the disk in turn.
 */
function pieceBytes(repo: Repository): number | undefined {
  if (repo.segmentCacheBytes < INTERLEAVE_CACHE_BYTES || repo.readGapBytes > 0) return undefined;
  return readSizes(repo).maxRequestBytes / 4;
}

/** A run of a file's content entries `[from, to)`, read one after the other. */
interface Piece {
  readonly file: number;
  readonly from: number;
  readonly to: number;
}

/** A file of at least this many chunks, averaging less than SMALL_CHUNK_BYTES, is read in pieces. */
const MANY_CHUNKS = 256;
const SMALL_CHUNK_BYTES = 64 * 1024;

/**
 * The order in which `readFiles` reads the files' content entries: each file whole, one after
 * the other; or with `pieceBytes`, the files of many small chunks (see MANY_CHUNKS) and the
 * others as two streams, cut into pieces of about `pieceBytes` (by the files' average chunk
 * size) and taken from whichever stream is behind the other in the share of its bytes read, so
 * both end together. A piece never separates a delta (`deltas[f][i]`, see
 * Repository.deltaEntries) from its base. Exported for tests.
 */
export function readOrder(
  sizes: readonly number[],
  counts: readonly number[],
  deltas: readonly Uint8Array[],
  pieceBytes?: number,
): Piece[] {
  const whole = () => counts.map((n, file) => ({ file, from: 0, to: n }));
  if (!pieceBytes) return whole();
  const small = counts.map((n, f) => n >= MANY_CHUNKS && sizes[f] / n < SMALL_CHUNK_BYTES);
  const streams = [0, 1].map((s) => {
    const files = counts.map((_, f) => f).filter((f) => small[f] === (s === 0));
    return { files, at: 0, entry: 0, read: 0, total: files.reduce((t, f) => t + sizes[f], 0) };
  });
  if (streams.some((s) => s.total === 0)) return whole();
  const pieces: Piece[] = [];
  const [a, b] = streams;
  while (a.at < a.files.length || b.at < b.files.length) {
    // Whichever has read the smaller share of its bytes goes next.
    const s =
      b.at >= b.files.length || (a.at < a.files.length && a.read * b.total <= b.read * a.total)
        ? a
        : b;
    const file = s.files[s.at];
    const n = counts[file];
    const per = n > 0 ? sizes[file] / n : 0;
    let to = Math.min(n, s.entry + Math.max(1, Math.ceil(pieceBytes / Math.max(per, 1))));
    if (to < n && deltas[file][to - 1]) to++; // its base comes with it
    pieces.push({ file, from: s.entry, to });
    s.read += (to - s.entry) * per;
    s.entry = to;
    if (to === n) {
      s.at++;
      s.entry = 0;
    }
  }
  return pieces;
}

/**
 * The content of several files as verified chunks, each file's in order and ending with a
 * `done` event once its size checked out: file after file, or with `interleave` the databases
 * alongside the media. Reads are planned for the whole list (see BlobReads): segments are
 * requested ahead of the reader, across file boundaries, and neighbouring segments of a pack
 * are fetched with one ranged read (S3 charges and waits per request). Each chunk is checked
 * against its keyed ID before it is yielded.
 * @throws {IntegrityError} naming the damaged object, or when a size does not match.
 */
export async function* readFiles(
  repo: Repository,
  files: readonly FileToRead[],
  options: ReadFilesOptions = {},
): AsyncGenerator<ReadEvent> {
  // The list blobs of every large file first, read ahead in order: loading them one by one cost
  // a round trip each before any data moved.
  const lists = await readLists(
    repo,
    files.flatMap((f) => f.node.lists ?? []),
  );
  // Every file's content IDs, back to back (32 bytes each): a database's 126 k pages as hex
  // strings, and the objects planned from them, were most of the main thread's work.
  const parts: Uint8Array[] = [];
  const starts = [0];
  let end = 0;
  let listsTaken = 0;
  const add = (part: Uint8Array) => {
    parts.push(part);
    end += part.length;
  };
  for (const f of files) {
    if (f.node.content) add(idsFromHex(f.node.content));
    for (let k = f.node.lists?.length ?? 0; k > 0; k--) add(lists[listsTaken++]);
    starts.push(end);
  }
  lists.length = 0;
  const all = concatAll(parts);
  parts.length = 0;
  const counts = files.map((_, f) => (starts[f + 1] - starts[f]) / 32);
  const deltas = files.map((f, k) =>
    repo.deltaEntries(all.subarray(starts[k], starts[k + 1]), f.path),
  );
  const pieces = readOrder(
    files.map((f) => f.node.size),
    counts,
    deltas,
    options.interleave ? pieceBytes(repo) : undefined,
  );
  // The IDs in reading order: a delta's base follows it, so the plan reads both in that order.
  const inPlace = pieces.every((p, k) => p.file === k && p.from === 0 && p.to === counts[k]);
  const ordered = inPlace
    ? all
    : concatAll(
        pieces.map((p) => all.subarray(starts[p.file] + 32 * p.from, starts[p.file] + 32 * p.to)),
      );
  if (options.onOrder) {
    const order: number[] = [];
    for (const p of pieces) if (p.from === 0) order.push(p.file);
    options.onOrder(order);
  }
  const reads = new BlobReads(repo, ordered, options);
  const pages = new Slabs();
  const sizes = new Float64Array(files.length);
  let call = 0;
  try {
    for (const { file: f, from, to } of pieces) {
      const { node, path } = files[f];
      const isDelta = deltas[f];
      for (let i = from; i < to; i++) {
        const next = reads.next(call++, isDelta[i] ? BLOB_DELTA : BLOB_DATA);
        let chunk = next instanceof Uint8Array ? next : await next;
        if (isDelta[i]) {
          const id = ordered.subarray(32 * (call - 1), 32 * call);
          i++; // its base
          chunk = applyDelta(chunk, await reads.next(call++, BLOB_DATA), id, path, pages);
        }
        sizes[f] += chunk.length;
        if (sizes[f] > node.size) throw sizeMismatch(path, sizes[f], node.size);
        yield { file: f, chunk };
      }
      if (to < counts[f]) continue;
      if (sizes[f] !== node.size) throw sizeMismatch(path, sizes[f], node.size);
      yield { file: f, done: true };
    }
  } finally {
    reads.close();
  }
}

function sizeMismatch(path: string, size: number, recorded: number): IntegrityError {
  return new IntegrityError(
    `file ${path}: content is ${size} bytes, the snapshot records ${recorded}`,
  );
}

/**
 * The IDs of list blobs `lists` (hex), in order, as `Repository.listIdBytes` gives them (new
 * memory, 32 bytes per ID), read ahead: first the lists, then the bases their list patches name
 * (SPEC §8), so a database's ~400 lists cost a few ranged reads rather than a round trip each.
 * `onBase` hears the ID of each patch's base (hex), once per patch.
 * @throws {IntegrityError} when a list, a patch or a base is missing, damaged or malformed.
 */
export async function readLists(
  repo: Repository,
  lists: readonly string[],
  onBase?: (id: string) => void,
): Promise<Uint8Array[]> {
  const ids = idsFromHex(lists);
  const out: Uint8Array[] = [];
  /** For each list patch: its place in `out`, and its base's ID. */
  const patches: { at: number; base: string }[] = [];
  const reads = new BlobReads(repo, ids);
  try {
    for (let i = 0; i < lists.length; i++) {
      const patch = repo.typeOfId(ids.subarray(32 * i, 32 * i + 32)) === BLOB_LIST_PATCH;
      const next = reads.next(i, patch ? BLOB_LIST_PATCH : BLOB_LIST);
      const view = next instanceof Uint8Array ? next : await next;
      // Checked for size, then copied: the cache may let go of the segment, and a view would
      // hold all of it.
      if (patch) patches.push({ at: i, base: toHex(repo.listPatchBase(lists[i], view)) });
      else repo.checkedList(lists[i], view);
      out.push(view.slice());
    }
  } finally {
    reads.close();
  }
  if (patches.length === 0) return out;
  const bases = [...new Set(patches.map((p) => p.base))];
  const baseReads = new BlobReads(repo, idsFromHex(bases));
  const bodies = new Map<string, Uint8Array>();
  try {
    for (const [k, base] of bases.entries()) {
      const next = baseReads.next(k, BLOB_LIST);
      bodies.set(base, repo.checkedList(base, next instanceof Uint8Array ? next : await next));
    }
  } finally {
    baseReads.close();
  }
  for (const { at, base } of patches) {
    onBase?.(base);
    out[at] = repo.applyListPatch(lists[at], out[at], bodies.get(base)!);
  }
  return out;
}

/**
 * A page from its delta blob and its base (SPEC §5): their XOR, in new memory from `slabs` (both
 * are views into cached segments).
 * @throws {IntegrityError} when their lengths differ.
 */
function applyDelta(
  delta: Uint8Array,
  base: Uint8Array,
  id: Uint8Array,
  path: string,
  slabs: Slabs,
): Uint8Array {
  if (delta.length !== base.length) {
    throw new IntegrityError(
      `file ${path}: delta blob ${toHex(id)} is ${delta.length} bytes, its base ${base.length}`,
    );
  }
  const out = slabs.take(delta.length);
  xorInto(out, delta, base);
  return out;
}

/** Bytes of each slab that pages rebuilt from deltas are carved from. */
const SLAB_BYTES = 256 * 1024;

/**
 * Memory for pages rebuilt from deltas, carved one after another from 256 KiB slabs: a buffer
 * per 4 KiB page was 15 000 allocations for a day's database, each one external memory that
 * brought V8's next full collection closer. A slab is never written again once carved, so a
 * reader may keep what it was given (keeping one page keeps its slab).
 */
class Slabs {
  private slab = new Uint8Array(0);
  private used = 0;

  take(length: number): Uint8Array {
    if (this.used + length > this.slab.length) {
      this.slab = new Uint8Array(Math.max(SLAB_BYTES, length));
      this.used = 0;
    }
    const out = this.slab.subarray(this.used, this.used + length);
    this.used += length;
    return out;
  }
}

/** IDs a BlobReads plans at a time (about 32 MiB of database pages). */
const PLAN_PIECE_IDS = 8192;

/** Read-ahead and request sizes within what the repository's segment cache can hold. */
function readSizes(repo: Repository) {
  // Never read further ahead, or in larger pieces, than the segment cache can hold: evicting
  // read-ahead before it is used would fetch it twice.
  return {
    readAheadBytes: Math.min(READ_AHEAD_BYTES, repo.segmentCacheBytes / 2),
    maxRequestBytes: Math.min(MAX_REQUEST_BYTES, repo.segmentCacheBytes / 4),
    maxGapBytes: Math.min(repo.readGapBytes, MAX_REQUEST_BYTES / 4),
  };
}

/**
 * About what a segment will take in the cache: its decoded size, from the blobs the reader
 * takes from it. Compressed database pages decode to twice their stored size or more, so the
 * stored size is too little; a writer seals a segment once it holds SEGMENT_TARGET_BYTES
 * (SPEC §8), so a segment of small blobs decodes to about that, and a large blob alone to
 * itself. A wrong guess costs a segment read twice, never a wrong byte.
 */
function decodedBound(s: SegmentRead): number {
  let end = 0;
  let largest = 0;
  for (const b of s.blobs) {
    end = Math.max(end, b.loc.offset + b.loc.length);
    largest = Math.max(largest, b.loc.length);
  }
  const single =
    s.blobs.length === 1 && s.blobs[0].loc.offset === 0 && largest >= SEGMENT_TARGET_BYTES;
  return Math.max(s.loc.segmentLength, end, single ? largest : SEGMENT_TARGET_BYTES + largest);
}

/**
 * Blobs read in an order known in advance (a restore's files, a prune's repacked packs): the
 * segments are requested up to READ_AHEAD_BYTES ahead of the reader (at most half the segment
 * cache, counted in decoded bytes where the blobs tell them), neighbouring segments of a pack
 * in one ranged read of about MAX_REQUEST_BYTES (at most a quarter of the cache), and the
 * segment opener checks every blob the reader will take (see SegmentPlan). `next` is called
 * once per planned ID, in order, with its number in the plan and the type it must have.
 *
 * With `release`, the memory of the segments evicted from the cache is given back as the reader
 * moves on instead of waiting for the garbage collector: a blob that `next` returned then stays
 * valid only until the second call after the one that returned it. Decoded segments arrive from
 * the worker threads as new buffers, and V8 started a full collection of the main thread's heap
 * for every ~25 MB of them: 79 in a restore of the benchmark's 1.83 GiB, with 2.2 s of CPU
 * marking a heap that barely changed.
 */
export class BlobReads {
  private readonly repo: Repository;
  /** The IDs to read, in order, 32 bytes each. */
  private readonly source: Uint8Array;
  private readonly plan = new SegmentPlan();
  /** Runs of segments to fetch, in order; each is dropped once requested. */
  private readonly runs: PlannedSegment[][] = [];
  /** For each run, the bytes of the segments planned before its first one. */
  private readonly runBefore: number[] = [];
  /** For each segment of the plan, the bytes of the segments before it. */
  private readonly before: number[] = [];
  /** Bytes of the segments planned so far. */
  private total = 0;
  /** Keys of the segments counted in `total`. */
  private readonly counted = new Set<string>();
  private readonly readAheadBytes: number;
  private readonly maxRequestBytes: number;
  private readonly maxGapBytes: number;
  private segment = -1;
  /** For each segment of the plan, its key in the repository's segment cache. */
  private readonly keys: string[] = [];
  private nextRun = 0;
  private call = 0;
  /** With `release`: the payloads evicted from the repository's cache, not released yet. */
  private readonly evictions?: EvictionLog;

  /**
   * `ids`: the blobs to read, in order, 32 bytes each. The reader keeps the buffer until its last
   * `next`: its bytes must not change before then.
   */
  constructor(repo: Repository, ids: Uint8Array, options: { release?: boolean } = {}) {
    this.repo = repo;
    this.source = ids;
    const { readAheadBytes, maxRequestBytes, maxGapBytes } = readSizes(repo);
    this.readAheadBytes = readAheadBytes;
    this.maxRequestBytes = maxRequestBytes;
    this.maxGapBytes = maxGapBytes;
    if (options.release) this.evictions = repo.trackEvictions();
    this.planAhead();
  }

  /**
   * Releases what was evicted before the call before last: a blob returned by call c lies in a
   * segment evicted during call c or later, and must stay valid until call c + 2 starts.
   */
  private release(): void {
    const log = this.evictions;
    if (!log) return;
    log.now = this.call;
    const { buffers, at } = log;
    let k = 0;
    while (k < at.length && at[k] <= this.call - 3) releaseWhole(buffers[k++]);
    if (k > 0) {
      buffers.splice(0, k);
      at.splice(0, k);
    }
  }

  /** Stops logging evictions; what is left is the garbage collector's. */
  close(): void {
    if (this.evictions) this.repo.untrackEvictions(this.evictions);
  }

  /** IDs planned so far. */
  private get plannedIds(): number {
    return this.plan.entryOf.length;
  }

  /**
   * Plans the reads in pieces of PLAN_PIECE_IDS, far enough ahead of the reader for the next call
   * and for every run that starts within the read-ahead (and its window): planning a database's
   * 126 k blobs at once held back its first read by a quarter of a second.
   */
  private planAhead(): void {
    const at = this.before[Math.max(this.segment, 0)] ?? this.total;
    const window = this.readAheadBytes / 2;
    while (
      this.plannedIds < this.source.length / 32 &&
      (this.call >= this.plannedIds - PLAN_PIECE_IDS / 2 ||
        this.total - at < this.readAheadBytes + window)
    ) {
      this.planPiece(window);
    }
  }

  private planPiece(window: number): void {
    const from = this.plannedIds;
    const to = Math.min(this.source.length / 32, from + PLAN_PIECE_IDS);
    const first = this.plan.segments.length;
    for (let k = from; k < to; k++)
      this.plan.add(this.repo, this.source.subarray(32 * k, 32 * k + 32));
    const segments = this.plan.segments.slice(first) as PlannedSegment[];
    this.plan.segments.fill(undefined, first);
    for (const s of segments) {
      this.keys.push(s.key);
      this.before.push(this.total);
      // A segment planned again (the reader comes back to it) is counted once: it is in the
      // cache, and counting it again made the read-ahead and the runs' window shorter.
      if (this.counted.has(s.key)) continue;
      this.counted.add(s.key);
      this.total += decodedBound(s);
    }
    // Runs do not reach across pieces: a piece holds far more than a window.
    const runs = coalesce(
      segments,
      this.before.slice(first),
      this.maxRequestBytes,
      window,
      this.maxGapBytes,
    );
    for (const r of runs) {
      this.runs.push(r.segments);
      this.runBefore.push(this.before[first + r.first]);
    }
  }

  /**
   * Blob number `index` of the plan (from 0), which must be the next one, verified, and of type
   * `type`: at once when its segment has arrived, else a promise of it. The index keeps caller
   * and plan in step: a blob out of step would pass its own ID's check and be another blob.
   * @throws {IntegrityError} when it is missing or damaged.
   * @throws {RangeError} when `index` is not the next blob of the plan.
   */
  next(index: number, type: BlobType): Uint8Array | Promise<Uint8Array> {
    if (index !== this.call || index >= this.source.length / 32) {
      throw new RangeError(`BlobReads.next: asked for blob ${index}, the plan is at ${this.call}`);
    }
    this.release();
    this.planAhead();
    const call = this.call++;
    const id = this.source.subarray(32 * call, 32 * call + 32);
    const { entryOf, locs } = this.plan;
    // The segment the plan has for this call (-1: not indexed; loadBlob reports it).
    const planned = entryOf[call];
    if (planned >= 0) this.segment = planned;
    // Let go of the location taken: every collection during the restore traces what is kept.
    const loc = locs[call];
    locs[call] = undefined;
    const horizon = (this.before[Math.max(this.segment, 0)] ?? this.total) + this.readAheadBytes;
    while (this.nextRun < this.runs.length && this.runBefore[this.nextRun] <= horizon) {
      const run = this.runs[this.nextRun];
      this.runs[this.nextRun++] = [];
      for (const s of run) this.plan.forget(s.key);
      this.repo.prefetchRun(run);
    }
    if (!loc) return this.repo.loadBlob(toHex(id), type);
    return (
      this.repo.readyBlobAt(id, loc, this.keys[planned], type) ??
      this.repo.loadBlobAt(id, loc, type)
    );
  }
}

/**
 * A file's content as verified chunks, in order (see `readFiles`, which it uses for one file).
 * @throws {IntegrityError} naming the damaged object, or when the size does not match.
 */
export async function* readFile(
  repo: Repository,
  node: FileNode,
  path = node.name,
): AsyncGenerator<Uint8Array> {
  for await (const ev of readFiles(repo, [{ node, path }])) if (!ev.done) yield ev.chunk;
}

/**
 * Splits segments (in read order; `before[i]` is the decoded bytes planned before segment i)
 * into runs that one ranged read can fetch: neighbouring segments of one pack (with gaps of at
 * most `maxGap` bytes between them, read and dropped: Repository.readGapBytes), about
 * `maxRequestBytes` from the first one's start to the last one's end (see splitNeighbours).
 * Segments that are neighbours both in their pack and in read order go together, however many.
 * A group also takes along the later groups of its pack that continue it and start within
 * `window` decoded bytes of its own start, even when segments of other packs come between: a
 * database restored from several days' packs alternates between them page by page, and reading
 * only what is consecutive in read order made about one request per segment (the benchmark's
 * day-2 database: 1,076 reads, now 425). A group met again within the window (the plan lists a
 * segment again when the reader returns to it) is dropped when the earlier group has all of it.
 * Returns the runs in the order of their first segment, with its index.
 */
function coalesce<S extends SegmentRead>(
  segments: readonly S[],
  before: readonly number[],
  maxRequestBytes: number,
  window: number,
  maxGap: number,
): { first: number; segments: S[] }[] {
  interface Group {
    readonly first: number;
    readonly pack: string;
    readonly start: number;
    end: number;
    readonly members: { segment: S; index: number }[];
  }
  // A segment that follows another of its pack after a gap of at most `maxGap` bytes (segments
  // the reader does not need, such as the trees and lists read before) is read with it: over S3
  // a request costs more than reading past a tree or a list (the benchmark's restore made a pack
  // three requests, split around the trees or lists read before).
  const follows = (end: number, start: number) => start >= end && start - end <= maxGap;
  // Neighbours in the pack that are also consecutive in read order.
  const groups: Group[] = [];
  segments.forEach((segment, index) => {
    const loc = segment.loc;
    const last = groups[groups.length - 1];
    if (last?.pack === loc.pack && follows(last.end, loc.segmentOffset)) {
      last.members.push({ segment, index });
      last.end = loc.segmentOffset + loc.segmentLength;
    } else {
      groups.push({
        first: index,
        pack: loc.pack,
        start: loc.segmentOffset,
        end: loc.segmentOffset + loc.segmentLength,
        members: [{ segment, index }],
      });
    }
  });
  // Later groups that continue one of the same pack soon after it.
  const absorbed = new Uint8Array(groups.length);
  const runs: { first: number; segments: S[] }[] = [];
  for (let a = 0; a < groups.length; a++) {
    if (absorbed[a]) continue;
    const g = groups[a];
    for (
      let b = a + 1;
      b < groups.length && before[groups[b].first] - before[g.first] <= window;
      b++
    ) {
      const h = groups[b];
      if (absorbed[b] || h.pack !== g.pack) continue;
      if (h.start >= g.start && h.end <= g.end && h.members.every((m) => covered(g, m.segment))) {
        absorbed[b] = 1; // read again soon: still in the cache
      } else if (follows(g.end, h.start)) {
        absorbed[b] = 1;
        g.members.push(...h.members);
        g.end = h.end;
      }
    }
    const index = new Map(g.members.map((m) => [m.segment, m.index]));
    // Each piece starts where its first segment is planned, so it is requested in time.
    for (const piece of splitNeighbours(
      g.members.map((m) => m.segment),
      maxRequestBytes,
    )) {
      runs.push({ first: index.get(piece[0])!, segments: piece });
    }
  }
  return runs.sort((x, y) => x.first - y.first);
}

/** Whether group `g` holds the segment at `s`'s place. */
function covered(g: { members: readonly { segment: SegmentRead }[] }, s: SegmentRead): boolean {
  return g.members.some((m) => m.segment.loc.segmentOffset === s.loc.segmentOffset);
}

/**
 * Neighbouring segments of one pack, split into as few reads of about equal size as keep each
 * within 1.25 × `maxRequestBytes` (give or take a segment): a pack holds PACK_TARGET_BYTES and
 * one more segment, and reading it as 16 MiB and then a last small piece cost a request per
 * pack more than needed. Each segment goes to the piece its middle falls in.
 */
function splitNeighbours<S extends SegmentRead>(group: S[], maxRequestBytes: number): S[][] {
  const first = group[0].loc.segmentOffset;
  const last = group[group.length - 1].loc;
  const span = last.segmentOffset + last.segmentLength - first;
  const pieces = Math.ceil(span / (1.25 * maxRequestBytes));
  if (pieces <= 1) return [group];
  const size = span / pieces;
  const runs: S[][] = [];
  let piece = -1;
  for (const segment of group) {
    const middle = segment.loc.segmentOffset + segment.loc.segmentLength / 2 - first;
    const k = Math.min(pieces - 1, Math.floor(middle / size));
    if (k !== piece) runs.push([]);
    piece = k;
    runs[runs.length - 1].push(segment);
  }
  return runs;
}

/** An entry of a SegmentPlan, with its key in the repository's segment cache. */
interface PlannedSegment extends SegmentRead {
  readonly key: string;
}

/**
 * Segments in the order a reader will meet them. Consecutive blobs of one segment share an
 * entry; a segment met again later gets another entry (the cache usually still holds it). Every
 * entry of a segment lists all the blobs the reader will take from it, wherever met, once each:
 * the first read of a segment then has them all checked by the segment opener (off the main
 * thread). A database restored from several snapshots' pages meets the same segment many times.
 */
class SegmentPlan {
  /** The entries, in order; BlobReads lets go of each once it has made runs of it. */
  readonly segments: (PlannedSegment | undefined)[] = [];
  /** For each ID added, the index in `segments` of the entry that holds it (-1: not indexed). */
  readonly entryOf: number[] = [];
  /** For each ID added, its location (undefined: not indexed). */
  readonly locs: (BlobLocation | undefined)[] = [];
  /** Keys of the last RECENT_SEGMENTS entries, and their entry indexes. */
  private readonly recent = new Map<string, number>();
  /** Per segment, the blobs wanted from it, and their offsets in it (one blob per offset). */
  private readonly bySegment = new Map<string, { blobs: BlobRef[]; offsets: Set<number> }>();
  /** The last blob's segment and its key: consecutive pages share a segment, and one string. */
  private lastLoc: BlobLocation | undefined;
  private lastKey = "";

  /** Adds blob `id` (32 bytes, held by reference until its segment is requested). */
  add(repo: Repository, id: Uint8Array): void {
    const loc = repo.lookupId(id);
    this.locs.push(loc);
    if (!loc) {
      this.entryOf.push(-1); // loadBlob reports it, in order
      return;
    }
    const last = this.lastLoc;
    const key =
      last?.pack === loc.pack && last.segmentOffset === loc.segmentOffset
        ? this.lastKey
        : segmentKey(loc);
    this.lastLoc = loc;
    this.lastKey = key;
    let segment = this.bySegment.get(key);
    if (!segment) {
      segment = { blobs: [], offsets: new Set() };
      this.bySegment.set(key, segment);
    }
    // The index gives an ID one location: the same offset is the same blob, met again.
    if (!segment.offsets.has(loc.offset)) {
      segment.offsets.add(loc.offset);
      segment.blobs.push({ id, loc });
    }
    // A segment of one of the last few entries is still in the cache: reading alternately from
    // two (a database's page deltas and their bases) takes no new entry per switch.
    let entry = this.recent.get(key);
    if (entry === undefined) {
      entry = this.segments.length;
      this.segments.push({ loc, blobs: segment.blobs, key });
      this.recent.set(key, entry);
      if (this.recent.size > RECENT_SEGMENTS) {
        this.recent.delete(this.recent.keys().next().value!);
      }
    }
    this.entryOf.push(entry);
  }

  /**
   * Forgets the blobs wanted from segment `key`, once it has been requested: a later entry of it
   * starts a list of its own (its blobs are then checked by the reader, not the opener).
   */
  forget(key: string): void {
    this.bySegment.delete(key);
  }
}

/**
 * Entries of a SegmentPlan whose segments a reader may come back to without a new entry: enough
 * for a few interleaved streams, few enough to be in any segment cache.
 */
const RECENT_SEGMENTS = 4;
