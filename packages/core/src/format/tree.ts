import { fromUtf8, utf8 } from "../bytes.ts";

/**
 * Trees (SPEC.md "Trees"): one directory's entries as UTF-8 JSON, stored as a blob of type tree.
 * A file's content is its list of data blob IDs in order; long lists are split into list blobs
 * (`lists`) so that a database's 100 000 page IDs are not stored again in every snapshot's tree.
 */

/** Content IDs inline in a tree up to this count; above it they move to list blobs. */
export const INLINE_CONTENT_MAX = 64;
/** Most IDs in one list blob. */
export const LIST_MAX_IDS = 1024;

export interface FileNode {
  readonly type: "file";
  readonly name: string;
  readonly mode: number;
  readonly mtimeMs: number;
  readonly size: number;
  /** Data blob IDs (hex), when at most INLINE_CONTENT_MAX. */
  readonly content?: readonly string[];
  /** List blob IDs (hex), each holding a run of data blob IDs, otherwise. */
  readonly lists?: readonly string[];
  /** The platform's cache key when the file was read (opaque; compared for equality only). */
  readonly cacheKey?: string;
}

export interface DirNode {
  readonly type: "dir";
  readonly name: string;
  readonly mode: number;
  readonly mtimeMs: number;
  /** Tree blob ID (hex) of the directory's entries, when they fit one tree blob. */
  readonly subtree?: string;
  /**
   * Tree blob IDs (hex) of a large directory's entries, otherwise: each holds a run of the
   * entries, and the runs concatenate in name order.
   */
  readonly subtrees?: readonly string[];
}

export type TreeNode = FileNode | DirNode;

export interface Tree {
  readonly nodes: readonly TreeNode[];
}

/** Encodes a tree; nodes are sorted by name (UTF-16 code units) so equal trees dedup. */
export function encodeTree(nodes: readonly TreeNode[]): Uint8Array {
  const sorted = [...nodes].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return utf8(JSON.stringify({ nodes: sorted }));
}

const HEX64 = /^[0-9a-f]{64}$/;

/** Whether `name` is a safe single path component (no separators, no dot names, no NUL). */
export function isSafeName(name: unknown): name is string {
  return (
    typeof name === "string" &&
    name.length > 0 &&
    utf8(name).length <= 4096 &&
    name !== "." &&
    name !== ".." &&
    !/[/\\\0]/.test(name)
  );
}

function isIdList(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === "string" && HEX64.test(x));
}

/**
 * Decodes and validates a tree. Hostile trees (path traversal names, wrong types, duplicate
 * names) are rejected, so restore never writes outside its target.
 * @throws {RangeError} describing the first problem; callers wrap it into an IntegrityError.
 */
export function decodeTree(bytes: Uint8Array): Tree {
  const raw = JSON.parse(fromUtf8(bytes)) as { nodes?: unknown };
  if (!raw || !Array.isArray(raw.nodes)) throw new RangeError("tree has no node list");
  let previous: string | undefined;
  for (const n of raw.nodes as Record<string, unknown>[]) {
    if (!n || typeof n !== "object") throw new RangeError("tree node is not an object");
    if (!isSafeName(n.name)) throw new RangeError(`unsafe name ${JSON.stringify(n.name)}`);
    // Strictly ascending: sorted as written, and no name twice.
    if (previous !== undefined && !(previous < n.name)) {
      throw new RangeError(`names out of order or duplicated at ${JSON.stringify(n.name)}`);
    }
    previous = n.name;
    const mode = n.mode as number;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777 || !Number.isFinite(n.mtimeMs)) {
      throw new RangeError("bad mode or mtime");
    }
    if (n.type === "dir") {
      const single = n.subtree !== undefined;
      if (single === (n.subtrees !== undefined)) {
        throw new RangeError("folder needs subtree or subtrees");
      }
      const ok = single
        ? typeof n.subtree === "string" && HEX64.test(n.subtree)
        : isIdList(n.subtrees) && n.subtrees.length > 0;
      if (!ok) throw new RangeError("bad subtree id");
    } else if (n.type === "file") {
      if (!Number.isSafeInteger(n.size) || (n.size as number) < 0)
        throw new RangeError("bad file size");
      const hasContent = n.content !== undefined;
      if (hasContent === (n.lists !== undefined))
        throw new RangeError("file needs content or lists");
      if (!isIdList(hasContent ? n.content : n.lists)) throw new RangeError("bad content ids");
      if (hasContent && (n.content as string[]).length > INLINE_CONTENT_MAX) {
        throw new RangeError(`more than ${INLINE_CONTENT_MAX} inline content ids`);
      }
      if (!hasContent && (n.lists as string[]).length === 0) throw new RangeError("empty lists");
      if (n.cacheKey !== undefined && (typeof n.cacheKey !== "string" || n.cacheKey.length > 256)) {
        throw new RangeError("bad cache key");
      }
    } else {
      throw new RangeError(`unknown node type ${JSON.stringify(n.type)}`);
    }
  }
  return raw as Tree;
}

/** A folder's entries are split over several tree blobs once its tree exceeds this size. */
export const TREE_SPLIT_BYTES = 1024 * 1024;
/** Largest run of entries in one part of a split folder (encoded bytes, approximately). */
export const TREE_PART_MAX_BYTES = 4 * 1024 * 1024;

/**
 * Splits a large folder's sorted entries into runs, each encoded as its own tree blob: a run ends
 * after an entry whose name's keyed hash starts with 10 zero bits (1 in 1024), or when it
 * reaches TREE_PART_MAX_BYTES. The cut points depend only on the names, so adding a photo to a
 * folder of 60 000 changes one part, not the whole listing.
 */
export function splitTreeNodes(
  nodes: readonly TreeNode[],
  nameHash: (name: string) => Uint8Array,
): TreeNode[][] {
  const sorted = [...nodes].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const parts: TreeNode[][] = [];
  let part: TreeNode[] = [];
  let bytes = 0;
  for (const node of sorted) {
    part.push(node);
    bytes += JSON.stringify(node).length + 1;
    const h = nameHash(node.name);
    if ((h[0] === 0 && h[1] < 64) || bytes >= TREE_PART_MAX_BYTES) {
      parts.push(part);
      part = [];
      bytes = 0;
    }
  }
  if (part.length) parts.push(part);
  return parts;
}

/**
 * Splits a file's content IDs (32 bytes each, back to back) into list blob bodies: a list ends
 * after an ID whose first byte is zero (1 in 256, so about 8 KiB per list) or at LIST_MAX_IDS. The boundaries depend only on the
 * IDs, so an unchanged run of pages yields the same list blob every day.
 *
 * `paired(i)` says that ID `i` is a delta blob and ID `i + 1` its base: the two stay in one
 * list, and only the delta's ID decides a cut (SPEC §8).
 */
export function splitIdLists(
  ids: Uint8Array,
  paired: (i: number) => boolean = () => false,
): Uint8Array[] {
  const n = ids.length / 32;
  const lists: Uint8Array[] = [];
  let start = 0;
  const cut = (end: number) => {
    lists.push(ids.slice(start * 32, end * 32));
    start = end;
  };
  for (let i = 0; i < n; i++) {
    const width = paired(i) ? 2 : 1;
    // An entry that would not fit in this list starts the next one.
    if (i + width - start > LIST_MAX_IDS) cut(i);
    const end = i + width;
    if (ids[32 * i] === 0 || end - start === LIST_MAX_IDS || end >= n) cut(end);
    i = end - 1;
  }
  return lists;
}

/**
 * Checks a list blob's plaintext: one or more 32-byte IDs, at most LIST_MAX_IDS.
 * @throws {RangeError} otherwise.
 */
export function checkIdList(body: Uint8Array): void {
  if (body.length === 0 || body.length % 32 !== 0 || body.length > LIST_MAX_IDS * 32) {
    throw new RangeError(`list blob of ${body.length} bytes`);
  }
}

/**
 * Parses a list blob body into IDs.
 * @throws {RangeError} when the length is not a positive multiple of 32.
 */
export function parseIdList(body: Uint8Array): Uint8Array[] {
  checkIdList(body);
  const out: Uint8Array[] = [];
  for (let i = 0; i < body.length; i += 32) out.push(body.subarray(i, i + 32));
  return out;
}
