import { type BlobLocation, segmentKey } from "../blob-index.ts";
import { IntegrityError } from "../errors.ts";
import { BLOB_DATA } from "../format/blob.ts";
import type { FileNode, TreeNode } from "../format/tree.ts";
import type { BlobRef, Repository, SegmentRead } from "../repository.ts";

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

/** How far ahead of the reader segments are requested. */
const READ_AHEAD_BYTES = 32 * 1024 * 1024;
/** Largest single ranged read when neighbouring segments are read together. */
const MAX_REQUEST_BYTES = 16 * 1024 * 1024;

/**
 * The content of several files, in order, as verified chunks, each file ending with a `done`
 * event once its size checked out. Reads are planned for the whole list: segments are requested
 * up to READ_AHEAD_BYTES ahead of the reader, across file boundaries, and neighbouring segments
 * of a pack are fetched with one ranged read of up to MAX_REQUEST_BYTES (S3 charges and waits
 * per request). Each chunk is checked against its keyed ID before it is yielded.
 * @throws {IntegrityError} naming the damaged object, or when a size does not match.
 */
export async function* readFiles(
  repo: Repository,
  files: readonly FileToRead[],
): AsyncGenerator<ReadEvent> {
  // The list blobs of every large file first, fetched together: loading them one by one cost a
  // round trip each before any data moved.
  const lists = new SegmentPlan();
  for (const f of files) for (const id of f.node.lists ?? []) lists.add(repo, id);
  // Never read further ahead, or in larger pieces, than the segment cache can hold: evicting
  // read-ahead before it is used would fetch it twice.
  const readAheadBytes = Math.min(READ_AHEAD_BYTES, repo.segmentCacheBytes / 2);
  const maxRequestBytes = Math.min(MAX_REQUEST_BYTES, repo.segmentCacheBytes / 4);
  for (const run of coalesce(lists.segments, maxRequestBytes)) repo.prefetchRun(run);
  const ids: string[][] = [];
  for (const f of files) ids.push(await repo.contentIds(f.node));

  // The segments in the order they will be read, and runs of neighbours to fetch together.
  const plan = new SegmentPlan();
  for (const list of ids) for (const id of list) plan.add(repo, id);
  const { segments } = plan;
  const before: number[] = []; // bytes of the segments before each one
  let total = 0;
  for (const s of segments) {
    before.push(total);
    total += s.loc.segmentLength;
  }
  const runs = coalesce(segments, maxRequestBytes);
  const runStart: number[] = [];
  for (let k = 0, n = 0; n < runs.length; k += runs[n++].length) runStart.push(k);
  let nextRun = 0;
  const readAhead = (segment: number) => {
    const horizon = (before[segment] ?? total) + readAheadBytes;
    while (nextRun < runs.length && before[runStart[nextRun]] <= horizon) {
      repo.prefetchRun(runs[nextRun++]);
    }
  };

  let segment = -1;
  let previous = "";
  for (let f = 0; f < files.length; f++) {
    const { node, path } = files[f];
    let size = 0;
    for (const id of ids[f]) {
      const loc = repo.lookup(id);
      const key = loc ? segmentKey(loc) : `missing:${id}`;
      if (key !== previous && loc) segment++;
      previous = key;
      readAhead(Math.max(segment, 0));
      const chunk = repo.readyBlob(id, BLOB_DATA) ?? (await repo.loadBlob(id, BLOB_DATA));
      size += chunk.length;
      if (size > node.size) break;
      yield { file: f, chunk };
    }
    if (size !== node.size) {
      throw new IntegrityError(
        `file ${path}: content is ${size} bytes, the snapshot records ${node.size}`,
      );
    }
    yield { file: f, done: true };
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
 * Splits segments (in read order) into runs that one ranged read can fetch: neighbours in the
 * same pack, at most `maxRequestBytes` from the first one's start to the last one's end.
 */
function coalesce(segments: readonly SegmentRead[], maxRequestBytes: number): SegmentRead[][] {
  const runs: SegmentRead[][] = [];
  let run: SegmentRead[] = [];
  for (const segment of segments) {
    const cur = segment.loc;
    const prev = run[run.length - 1]?.loc;
    const adjacent =
      prev &&
      prev.pack === cur.pack &&
      prev.segmentOffset + prev.segmentLength === cur.segmentOffset &&
      cur.segmentOffset + cur.segmentLength - run[0].loc.segmentOffset <= maxRequestBytes;
    if (!adjacent && run.length) {
      runs.push(run);
      run = [];
    }
    run.push(segment);
  }
  if (run.length) runs.push(run);
  return runs;
}

/**
 * Segments in the order a reader will meet them. Consecutive blobs of one segment share an
 * entry; a segment met again later gets another entry (the cache usually still holds it). Every
 * entry of a segment lists all the blobs the reader will take from it, wherever met, once each:
 * the first read of a segment then has them all checked by the segment opener (off the main
 * thread). A database restored from several snapshots' pages meets the same segment many times.
 */
class SegmentPlan {
  readonly segments: { loc: BlobLocation; blobs: BlobRef[] }[] = [];
  private previous = "";
  private readonly bySegment = new Map<string, { blobs: BlobRef[]; ids: Set<string> }>();

  add(repo: Repository, id: string): void {
    const loc = repo.lookup(id);
    if (!loc) {
      this.previous = ""; // loadBlob reports it, in order
      return;
    }
    const key = segmentKey(loc);
    let segment = this.bySegment.get(key);
    if (!segment) {
      segment = { blobs: [], ids: new Set() };
      this.bySegment.set(key, segment);
    }
    if (!segment.ids.has(id)) {
      segment.ids.add(id);
      segment.blobs.push({ id, loc });
    }
    if (key !== this.previous) this.segments.push({ loc, blobs: segment.blobs });
    this.previous = key;
  }
}
