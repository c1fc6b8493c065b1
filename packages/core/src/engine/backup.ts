import { toHex, utf8 } from "../bytes.ts";
import { sqlitePageSize } from "../chunker/sqlite.ts";
import { IntegrityError, UsageError } from "../errors.ts";
import {
  BLOB_DATA,
  BLOB_LIST,
  BLOB_LIST_PATCH,
  BLOB_TREE,
  type BlobType,
  blobId,
} from "../format/blob.ts";
import type { Snapshot } from "../format/snapshot.ts";
import {
  encodeTree,
  type FileNode,
  INLINE_CONTENT_MAX,
  splitIdLists,
  splitTreeNodes,
  TREE_SPLIT_BYTES,
  type TreeNode,
} from "../format/tree.ts";
import type { Repository, SnapshotRef } from "../repository.ts";
import { type ChunkJob, type FileChunker, localChunker } from "./chunker.ts";
import { ContentIds } from "./content-ids.ts";
import { nextSeq } from "./freshness.ts";
import { ListBases } from "./list-bases.ts";
import { Packer } from "./packer.ts";
import { type PageBaseStore, PageDeltas, type ParentPages } from "./page-deltas.ts";
import {
  isLikelyCompressed,
  type SourceDir,
  type SourceEntry,
  type SourceFile,
  VanishedError,
} from "./source.ts";

/** Counters reported while a backup runs. */
export interface BackupProgress {
  files: number;
  dirs: number;
  /** Bytes of file content read so far. */
  bytes: number;
  /** Bytes of new blobs (before compression) queued for storage. */
  newBytes: number;
  /** Bytes of packs stored so far. */
  storedBytes: number;
  /** Files skipped because the parent snapshot has them unchanged (same cache key). */
  unchangedFiles: number;
  /** Path of the file being read, relative to the snapshot root. */
  current: string;
}

export interface BackupOptions {
  readonly host: string;
  /** The paths as the user named them, recorded in the snapshot. */
  readonly paths: readonly string[];
  readonly tags?: readonly string[];
  /** Highest snapshot sequence this device has seen; storage behind it is a rollback. */
  readonly minSeq?: number;
  readonly now?: () => Date;
  readonly onProgress?: (p: Readonly<BackupProgress>) => void;
  /** Called for each file left out because the source says it vanished (VanishedError). */
  readonly onSkip?: (path: string, reason: string) => void;
  /**
   * The snapshot whose unchanged files are reused without reading them: its ID, or null for
   * none. Default: the newest snapshot with the same host and paths.
   */
  readonly parent?: string | null;
  /** Chunks and hashes file content; default: on the calling thread (`localChunker`). */
  readonly chunker?: FileChunker;
  /**
   * Where this device keeps its databases' page bases (see PageDeltas). Without it every
   * changed page is stored whole.
   */
  readonly pageBases?: PageBaseStore;
}

/** How a file is backed up: its parent snapshot's node reused (file cache), or read and chunked. */
type FilePlan =
  | { readonly reuse: FileNode }
  | {
      readonly job: ChunkJob;
      /** The parent's version, when the file turns out to be a database (loaded on first call). */
      readonly parentPages?: () => Promise<ParentPages>;
      /** The lists of the file's parent version, as bases for its list patches (loading). */
      readonly listBases?: Promise<ListBases | undefined>;
    };

/**
 * Files whose chunking starts before the engine reaches them, so a FileChunker that works in
 * parallel (worker threads) has the next files in hand while the current one is packed.
 */
const LOOKAHEAD_FILES = 4;

export interface BackupResult {
  readonly id: string;
  readonly snapshot: Snapshot;
  /** Packs left by an interrupted backup that this run indexed and reused. */
  readonly adoptedPacks: number;
}

/**
 * Backs up `roots` (each becomes a top-level entry of the snapshot) into `repo`.
 *
 * Write ordering (docs/design.md): packs first, then one index file naming them, then the
 * snapshot. If anything fails before the snapshot is stored, no snapshot refers to partial data,
 * and the next run adopts the packs already stored instead of uploading them again.
 * @throws {UsageError} when two roots share a name.
 * @throws {RollbackError} when storage is behind `minSeq`.
 * @throws whatever the sources or storage throw; the repository stays consistent.
 */
export async function backup(
  repo: Repository,
  roots: readonly SourceEntry[],
  opts: BackupOptions,
): Promise<BackupResult> {
  const names = new Set<string>();
  for (const r of roots) {
    if (names.has(r.name))
      throw new UsageError(
        `two paths share the name ${JSON.stringify(r.name)}; back them up separately`,
      );
    names.add(r.name);
  }
  const started = (opts.now ?? (() => new Date()))();
  // The packs an interrupted backup left are listed while the snapshots are read (over S3 each
  // step is a round trip or more).
  const [adopted, history] = await Promise.all([
    repo.loadIndex().then(() => repo.adoptUnindexedPacks()),
    repo.checkedSnapshots(opts.minSeq ?? 0),
  ]);

  const packer = new Packer(repo);
  /** Databases' page-base work still finishing (memo and image): awaited before returning. */
  const closing: Promise<void>[] = [];
  const progress: BackupProgress = {
    files: 0,
    dirs: 0,
    bytes: 0,
    newBytes: 0,
    storedBytes: 0,
    unchangedFiles: 0,
    current: "",
  };
  const report = () => {
    progress.storedBytes = packer.storedBytes;
    opts.onProgress?.(progress);
  };

  const chunker = opts.chunker ?? localChunker(repo.p, repo.keys);
  /** Stores a list or tree blob unless it is stored already; its ID as hex. */
  const storeBlob = async (type: BlobType, data: Uint8Array, compress: boolean) => {
    const id = blobId(repo.p, repo.keys.id, type, data);
    if (!packer.hasId(id)) {
      await packer.add(type, id, data, compress);
      progress.newBytes += data.length;
    }
    return toHex(id);
  };

  // A parent whose lists cannot be read (damaged, pruned) only means whole lists.
  const listBases = (parent: FileNode) =>
    ListBases.load(repo, parent).catch((err: unknown) => {
      if (err instanceof IntegrityError) return undefined;
      throw err;
    });

  // The file cache: a file whose platform cache key (size, mtime, inode, ...) equals the parent
  // snapshot's node is not read again; its content IDs are reused if every blob is still indexed.
  const cacheParent = opts.parent === null ? undefined : pickParent(history, opts);
  const reusable = (f: SourceFile, prev: TreeNode | undefined): FileNode | undefined => {
    if (
      !f.cacheKey ||
      prev?.type !== "file" ||
      prev.cacheKey !== f.cacheKey ||
      prev.size !== f.size
    ) {
      return undefined;
    }
    return (prev.content ?? prev.lists ?? []).every((id) => repo.has(id)) ? prev : undefined;
  };
  const childrenOf = async (
    prev: TreeNode | undefined,
  ): Promise<Map<string, TreeNode> | undefined> => {
    if (prev?.type !== "dir") return undefined;
    try {
      return new Map((await repo.dirNodes(prev)).map((n) => [n.name, n]));
    } catch (err) {
      // A damaged or pruned parent must not block a new backup: read this folder in full.
      if (err instanceof IntegrityError) return undefined;
      throw err;
    }
  };

  const fileNode = async (
    f: SourceFile,
    path: string,
    plan: FilePlan,
  ): Promise<TreeNode | null> => {
    progress.current = path;
    if ("reuse" in plan) {
      const prev = plan.reuse;
      progress.files++;
      progress.bytes += prev.size;
      progress.unchangedFiles++;
      const { content, lists } = prev;
      return {
        type: "file",
        name: f.name,
        mode: f.mode,
        mtimeMs: f.mtimeMs,
        size: prev.size,
        cacheKey: f.cacheKey,
        ...(content ? { content } : { lists: lists! }),
      };
    }
    const compress = f.compressible ?? !isLikelyCompressed(f.name);
    const ids = new ContentIds();
    // Set once the file's first page says it is a SQLite database (and the platform keeps bases).
    let pages: PageDeltas | undefined;
    let complete = false;
    let pageSize = 0;
    let size = 0;
    let lastReport = 0;
    const { job } = plan;
    try {
      for await (const batch of job) {
        if (size === 0 && opts.pageBases && batch.lengths.length > 0) {
          const declared = sqlitePageSize(batch.bytes.subarray(0, batch.lengths[0]));
          if (declared !== null && batch.lengths[0] === declared) {
            pageSize = declared;
            const parent = await plan.parentPages?.();
            pages = await PageDeltas.open(repo, opts.pageBases, path, parent, pageSize);
          }
        }
        if (pages) {
          // Every chunk before this batch was a whole page (SPEC §6), so this is its number.
          const r = await pages.batch(size / pageSize, batch, packer, compress, ids);
          progress.newBytes += r.newBytes;
          size += r.bytes;
          progress.bytes += r.bytes;
        } else {
          let offset = 0;
          const same = batch.deltas?.same;
          for (let k = 0; k < batch.lengths.length; k++) {
            const n = batch.lengths[k];
            const chunk = batch.bytes.subarray(offset, offset + n);
            const id = batch.ids.subarray(32 * k, 32 * k + 32);
            offset += n;
            // An ID taken from a certified image is for page deltas only (PageDeltas.batch).
            if (same?.[k] === 2) id.set(blobId(repo.p, repo.keys.id, BLOB_DATA, chunk));
            // A page or chunk stored already costs a lookup by its bytes: no hex, no await.
            if (!packer.hasId(id)) {
              await packer.add(BLOB_DATA, id, chunk, compress);
              progress.newBytes += n;
            }
            ids.push(id);
            size += n;
            progress.bytes += n;
          }
        }
        if (progress.bytes - lastReport >= 4 << 20) {
          lastReport = progress.bytes;
          report();
        }
      }
      complete = true;
    } catch (err) {
      if (!(err instanceof VanishedError)) throw err;
      // Blobs already queued stay unreferenced in their packs until a prune; nothing points at them.
      progress.bytes -= size;
      opts.onSkip?.(path, "vanished before it could be read");
      return null;
    } finally {
      job.cancel();
      if (job.released) closing.push(job.released);
      if (!pages) opts.pageBases?.release?.(path);
      else {
        const done = pages;
        // The memo waits for the image's writes to be durable: meanwhile the backup goes on.
        const closed = (complete ? done.finish(ids) : Promise.resolve()).finally(() =>
          done.close(),
        );
        closed.catch(() => {}); // rethrown where awaited, at the end of the backup
        closing.push(closed);
      }
    }
    progress.files++;
    report();
    const base = {
      type: "file" as const,
      name: f.name,
      mode: f.mode,
      mtimeMs: f.mtimeMs,
      size,
      // Only a file read exactly as sized may be skipped next time: one that changed while it was
      // read (size differs) gets no key, so the next backup reads it again.
      ...(f.cacheKey && size === f.size ? { cacheKey: f.cacheKey } : {}),
    };
    if (ids.length <= INLINE_CONTENT_MAX) {
      return { ...base, content: Array.from({ length: ids.length }, (_, i) => toHex(ids.at(i))) };
    }
    const bases = await plan.listBases;
    const lists: string[] = [];
    for (const list of splitIdLists(ids.bytes, (i) => ids.isDelta(i))) {
      const patch = bases?.patchFor(list);
      lists.push(await storeBlob(patch ? BLOB_LIST_PATCH : BLOB_LIST, patch ?? list, false));
    }
    return { ...base, lists };
  };

  /**
   * The nodes of `entries` (a folder's children, or the roots), in order. Chunking of the next
   * LOOKAHEAD_FILES files that must be read starts early, but not past a folder that is not
   * backed up yet: starting a file may begin a database's read transaction (SourceFile.localFile),
   * which would otherwise last while the whole folder before it is backed up (a chat folder's
   * `Media` sorts before its database) and, in rollback-journal mode, keep the app from writing
   * all that time. Whatever is left unused on an error is cancelled.
   */
  const nodesOf = async (
    entries: readonly SourceEntry[],
    pathOf: (e: SourceEntry) => string,
    previous: Map<string, TreeNode> | undefined,
  ): Promise<TreeNode[]> => {
    // Each file's plan is made once, up to LOOKAHEAD_FILES entries before it is reached.
    const plans = new Map<number, FilePlan>();
    let next = 0;
    const nodes: TreeNode[] = [];
    try {
      for (let i = 0; i < entries.length; i++) {
        for (; next < entries.length && next <= i + LOOKAHEAD_FILES; next++) {
          const e = entries[next];
          if (e.type !== "file") {
            // Never past a folder not yet backed up (see above).
            if (next >= i) break;
            continue;
          }
          const prev = previous?.get(e.name);
          const reuse = reusable(e, prev);
          if (reuse) {
            plans.set(next, { reuse });
            continue;
          }
          const parent = prev?.type === "file" ? prev : undefined;
          const store = opts.pageBases;
          let loaded: Promise<ParentPages> | undefined;
          const parentPages =
            parent && store
              ? () => (loaded ??= PageDeltas.loadParent(repo, store, pathOf(e), parent))
              : undefined;
          // A database with a parent may get page deltas: the chunker can work them out as it
          // reads, when it reads the base image itself, and skip the pages the parent's
          // version already had.
          const baseImage = parentPages && store?.imagePath?.(pathOf(e));
          const knownPages = async () => (await parentPages!()).known;
          const imagePages = async (pageSize: number) => {
            const parent = await parentPages!();
            return parent.imagePageSize === pageSize ? parent.imageIds : undefined;
          };
          const job = chunker.start(e, baseImage ? { baseImage, knownPages, imagePages } : {});
          // Loaded while the file is read (it shares the segments the page deltas read).
          const bases = parent?.lists ? listBases(parent) : undefined;
          bases?.catch(() => {}); // rethrown where awaited
          plans.set(next, { job, parentPages, listBases: bases });
        }
        const e = entries[i];
        const node =
          e.type === "file"
            ? await fileNode(e, pathOf(e), plans.get(i)!)
            : await dirNode(e, pathOf(e), previous?.get(e.name));
        plans.delete(i);
        if (node) nodes.push(node);
      }
    } finally {
      for (const [k, plan] of plans) {
        if (!("job" in plan)) continue;
        plan.job.cancel();
        if (plan.job.released) closing.push(plan.job.released);
        opts.pageBases?.release?.(pathOf(entries[k]));
      }
    }
    return nodes;
  };

  const dirNode = async (d: SourceDir, path: string, prev?: TreeNode): Promise<TreeNode> => {
    const nodes = await nodesOf(
      await d.children(),
      (child) => `${path}/${child.name}`,
      await childrenOf(prev),
    );
    progress.dirs++;
    const base = { type: "dir" as const, name: d.name, mode: d.mode, mtimeMs: d.mtimeMs };
    const encoded = encodeTree(nodes);
    if (encoded.length <= TREE_SPLIT_BYTES) {
      return { ...base, subtree: await storeBlob(BLOB_TREE, encoded, true) };
    }
    const nameHash = (name: string) => repo.p.hmacSha256(repo.keys.id, utf8(name));
    const subtrees: string[] = [];
    for (const part of splitTreeNodes(nodes, nameHash)) {
      subtrees.push(await storeBlob(BLOB_TREE, encodeTree(part), true));
    }
    return { ...base, subtrees };
  };

  let tree: string;
  try {
    const parentRoots = cacheParent
      ? await childrenOf({
          type: "dir",
          name: "",
          mode: 0,
          mtimeMs: 0,
          subtree: cacheParent.snapshot.tree,
        })
      : undefined;
    const rootNodes = await nodesOf(roots, (r) => r.name, parentRoots);
    tree = await storeBlob(BLOB_TREE, encodeTree(rootNodes), true);
    await packer.flush();
    await Promise.all(closing);
  } catch (err) {
    await packer.abort(); // the pack being written goes; stored ones are adopted next time
    await Promise.allSettled(closing);
    throw err;
  }
  report();

  // Ordering: the index file must name every pack before a snapshot may refer to its blobs.
  let addedBytes = packer.storedBytes;
  const toIndex = [...adopted, ...packer.storedEncoded];
  if (toIndex.length > 0) addedBytes += (await repo.saveIndex(toIndex)).size;

  const parent = history.length ? history[history.length - 1].id : null;
  const durationMs = Date.now() - started.getTime();
  const snapshot: Snapshot = {
    version: 1,
    seq: nextSeq(history, opts.minSeq ?? 0, repo.forgotten),
    parent,
    time: started.toISOString(),
    host: opts.host,
    paths: [...opts.paths],
    tags: [...(opts.tags ?? [])],
    tree,
    summary: {
      files: progress.files,
      dirs: progress.dirs,
      bytes: progress.bytes,
      addedBytes,
      newBlobs: packer.storedBlobs,
      unchangedFiles: progress.unchangedFiles,
      durationMs,
    },
  };
  const { name } = await repo.saveSnapshot(snapshot);
  return { id: name, snapshot, adoptedPacks: adopted.length };
}

/** The snapshot a backup compares against: the given ID, or the newest with the same host and paths. */
function pickParent(history: readonly SnapshotRef[], opts: BackupOptions): SnapshotRef | undefined {
  if (opts.parent) return history.find((s) => s.id === opts.parent);
  const paths = JSON.stringify([...opts.paths].sort());
  for (let i = history.length - 1; i >= 0; i--) {
    const s = history[i].snapshot;
    if (s.host === opts.host && JSON.stringify([...s.paths].sort()) === paths) return history[i];
  }
  return undefined;
}
