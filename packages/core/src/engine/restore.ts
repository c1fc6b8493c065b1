import { IntegrityError } from "../errors.ts";
import { BLOB_DATA } from "../format/blob.ts";
import type { FileNode, TreeNode } from "../format/tree.ts";
import type { Repository } from "../repository.ts";

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
  let total = 0;
  for (const id of await repo.contentIds(node)) {
    const chunk = await repo.loadBlob(id, BLOB_DATA);
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
