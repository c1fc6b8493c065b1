import type { TreeNode } from "../format/tree.ts";
import type { Repository } from "../repository.ts";
import { walk } from "./restore.ts";

/** One difference between two snapshots. */
export interface DiffEntry {
  /** `+` added, `-` removed, `M` content changed, `T` type changed, `m` only metadata changed. */
  readonly change: "+" | "-" | "M" | "T" | "m";
  readonly path: string;
  /** File size in the newer snapshot (or the older one for a removal). */
  readonly size?: number;
}

function sameContent(a: TreeNode, b: TreeNode): boolean {
  if (a.type !== "file" || b.type !== "file") return false;
  const ids = (n: typeof a) => (n.content ?? n.lists ?? []).join(",");
  return a.size === b.size && !!a.content === !!b.content && ids(a) === ids(b);
}

/**
 * The differences between snapshots `a` and `b` (IDs), by path, sorted. Content is compared by
 * blob IDs, so nothing is downloaded but trees (and list blobs are compared by ID, not read).
 */
export async function diffSnapshots(
  repo: Repository,
  treeA: string,
  treeB: string,
): Promise<DiffEntry[]> {
  const before = new Map<string, TreeNode>();
  for await (const { path, node } of walk(repo, treeA)) before.set(path.join("/"), node);
  const out: DiffEntry[] = [];
  for await (const { path, node } of walk(repo, treeB)) {
    const p = path.join("/");
    const old = before.get(p);
    before.delete(p);
    const size = node.type === "file" ? node.size : undefined;
    if (!old) out.push({ change: "+", path: p, size });
    else if (old.type !== node.type) out.push({ change: "T", path: p, size });
    else if (node.type === "file" && !sameContent(old, node))
      out.push({ change: "M", path: p, size });
    else if (old.mode !== node.mode || old.mtimeMs !== node.mtimeMs)
      out.push({ change: "m", path: p, size });
  }
  for (const [p, old] of before)
    out.push({ change: "-", path: p, size: old.type === "file" ? old.size : undefined });
  return out.sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
}
