import { IntegrityError } from "../errors.ts";
import { BLOB_DATA } from "../format/blob.ts";
import type { FileNode, TreeNode } from "../format/tree.ts";
import type { Repository } from "../repository.ts";

/** Segments requested ahead of the one being read (the repository caches 8). */
const PREFETCH_SEGMENTS = 3;

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

/**
 * A file's content as verified chunks, in order. Each chunk is checked against its keyed ID
 * before it is yielded, and the total against the recorded size at the end, so a consumer that
 * writes chunks to a temporary file and renames it only after the last one never exposes
 * unverified bytes under a final name.
 * @throws {IntegrityError} naming the damaged object, or when the size does not match.
 */
export async function* readFile(
  repo: Repository,
  node: FileNode,
  path = node.name,
): AsyncGenerator<Uint8Array> {
  const ids = await repo.contentIds(node);
  // Where each run of chunks from one segment starts, so the next segments can be requested
  // while this one is verified and written.
  const starts: number[] = [];
  let previous = "";
  for (let i = 0; i < ids.length; i++) {
    const loc = repo.lookup(ids[i]);
    const key = loc ? `${loc.pack}:${loc.segmentOffset}` : ids[i];
    if (key !== previous) starts.push(i);
    previous = key;
  }
  let segment = 0;
  let requested = 0;
  let total = 0;
  for (let i = 0; i < ids.length; i++) {
    while (segment + 1 < starts.length && starts[segment + 1] <= i) segment++;
    while (requested < starts.length && requested <= segment + PREFETCH_SEGMENTS) {
      repo.prefetch(ids[starts[requested++]]);
    }
    const chunk = await repo.loadBlob(ids[i], BLOB_DATA);
    total += chunk.length;
    if (total > node.size) break;
    yield chunk;
  }
  if (total !== node.size) {
    throw new IntegrityError(
      `file ${path}: content is ${total} bytes, the snapshot records ${node.size}`,
    );
  }
}
