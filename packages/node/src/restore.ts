import {
  chmod,
  type FileHandle,
  lstat,
  mkdir,
  open,
  rename,
  rm,
  stat,
  utimes,
} from "node:fs/promises";
import { dirname, join } from "node:path";
import {
  AlreadyExistsError,
  blobId,
  type FileNode,
  type Repository,
  readFiles,
  type SnapshotRef,
  toHex,
  walk,
} from "@locket/core";

export interface RestoreOptions {
  /** Replace entries that already exist in the target. */
  readonly overwrite?: boolean;
  readonly onProgress?: (p: { files: number; bytes: number; current: string }) => void;
}

export interface RestoreResult {
  readonly files: number;
  readonly dirs: number;
  readonly bytes: number;
  /** Files found complete in the staging folder of an earlier interrupted run, verified, not downloaded again. */
  readonly resumedFiles: number;
}

const WRITE_BATCH = 1 << 20;
const SYNC_PARALLELISM = 16;

/** Name of the hidden staging folder a restore of `snapshotId` builds in the target. */
export function stagingName(snapshotId: string): string {
  return `.locket-restore-${snapshotId.slice(0, 16)}`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** fsyncs files (and then their folders), several at a time. */
async function syncAll(paths: readonly string[]): Promise<void> {
  const folders = new Set<string>();
  let next = 0;
  const worker = async () => {
    while (next < paths.length) {
      const path = paths[next++];
      folders.add(dirname(path));
      const fh = await open(path, "r");
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
  };
  await Promise.all(Array.from({ length: SYNC_PARALLELISM }, worker));
  for (const folder of folders) await fsyncDir(folder);
}

async function fsyncDir(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Whether `path` already holds exactly the content of `node`: every chunk is re-hashed with the
 * repository's ID key and compared with the snapshot's IDs, so a resumed restore trusts nothing
 * it did not verify.
 */
async function alreadyRestored(repo: Repository, node: FileNode, path: string): Promise<boolean> {
  try {
    if ((await stat(path)).size !== node.size) return false;
  } catch {
    return false;
  }
  const ids = await repo.contentIds(node);
  const fh = await open(path, "r");
  try {
    let pos = 0;
    for (const id of ids) {
      const loc = repo.lookup(id);
      if (!loc) return false;
      const buf = new Uint8Array(loc.length);
      const { bytesRead } = await fh.read(buf, 0, loc.length, pos);
      if (bytesRead !== loc.length) return false;
      if (toHex(blobId(repo.p, repo.keys.id, loc.type, buf)) !== id) return false;
      pos += loc.length;
    }
    return pos === node.size;
  } finally {
    await fh.close();
  }
}

/**
 * Restores a snapshot into `target`. Everything is written first into a hidden staging folder
 * inside the target; each file goes to a `.partial` name, is verified chunk by chunk as it is
 * written, fsynced and only then renamed. When every file is in place, the snapshot's top-level
 * entries are moved into the target. A failure therefore leaves no half-written file under a
 * final name, and running the same restore again resumes from the staging folder.
 * @throws {AlreadyExistsError} when a top-level entry exists in the target and `overwrite` is off
 *   (checked before anything is written).
 * @throws {IntegrityError} when the snapshot's data is damaged.
 */
export async function restoreToDir(
  repo: Repository,
  snap: SnapshotRef,
  target: string,
  opts: RestoreOptions = {},
): Promise<RestoreResult> {
  const root = await repo.loadTree(snap.snapshot.tree);
  if (!opts.overwrite) {
    for (const n of root.nodes) {
      if (await exists(join(target, n.name))) {
        throw new AlreadyExistsError(
          `${join(target, n.name)} already exists; restore elsewhere or pass --overwrite`,
        );
      }
    }
  }
  await mkdir(target, { recursive: true });
  const staging = join(target, stagingName(snap.id));
  await mkdir(staging, { recursive: true });

  const result = { files: 0, dirs: 0, bytes: 0, resumedFiles: 0 };
  const dirTimes: { path: string; mtimeMs: number; mode: number }[] = [];
  const written: string[] = [];
  const todo: { node: FileNode; path: string; dest: string }[] = [];
  const finish = async (node: FileNode, dest: string, display: string) => {
    await chmod(dest, node.mode & 0o7777);
    await utimes(dest, node.mtimeMs / 1000, node.mtimeMs / 1000);
    result.files++;
    result.bytes += node.size;
    opts.onProgress?.({ ...result, current: display });
  };
  for await (const { path, node } of walk(repo, snap.snapshot.tree)) {
    const dest = join(staging, ...path);
    if (node.type === "dir") {
      await mkdir(dest, { recursive: true });
      dirTimes.push({ path: dest, mtimeMs: node.mtimeMs, mode: node.mode });
      result.dirs++;
    } else if (await alreadyRestored(repo, node, dest)) {
      result.resumedFiles++;
      await finish(node, dest, path.join("/"));
    } else {
      todo.push({ node, path: path.join("/"), dest });
    }
  }
  // One read plan for every file, so segments are fetched ahead across file boundaries.
  const writer = new FileWriter();
  try {
    for await (const ev of readFiles(repo, todo)) {
      const t = todo[ev.file];
      if (writer.dest !== t.dest) await writer.open(t.dest);
      if (!ev.done) {
        await writer.write(ev.chunk);
        continue;
      }
      await writer.commit();
      written.push(t.dest);
      await finish(t.node, t.dest, t.path);
    }
  } finally {
    await writer.abandon();
  }
  // Durable before anything appears in the target. Syncing each file as it was written made the
  // restore wait on the disk once per file; syncing them together lets the writes overlap. A
  // crash before this point leaves only the staging folder, whose files a rerun re-verifies.
  await syncAll(written);
  // Deepest folders first, so setting a child's time does not disturb its parent's.
  for (const d of dirTimes.reverse()) {
    await chmod(d.path, (d.mode & 0o7777) | 0o700);
    await utimes(d.path, d.mtimeMs / 1000, d.mtimeMs / 1000);
  }
  for (const n of root.nodes) {
    const final = join(target, n.name);
    if (opts.overwrite && (await exists(final))) await rm(final, { recursive: true, force: true });
    await rename(join(staging, n.name), final);
  }
  await rm(staging, { recursive: true, force: true });
  await fsyncDir(target);
  return result;
}

/**
 * Writes one file at a time to `NAME.partial`, batching small chunks into 1 MiB writes (one
 * write per 4 KiB database page would be 100 000 system calls for a large one), and renames it
 * to NAME only when `commit` is called after its last verified chunk.
 */
class FileWriter {
  dest: string | undefined;
  private fh: FileHandle | undefined;
  private readonly batch = new Uint8Array(WRITE_BATCH);
  private used = 0;

  async open(dest: string): Promise<void> {
    await this.abandon();
    this.fh = await open(`${dest}.partial`, "w", 0o600);
    this.dest = dest;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.used + chunk.length > this.batch.length) await this.flush();
    if (chunk.length >= this.batch.length) await this.fh!.write(chunk);
    else {
      this.batch.set(chunk, this.used);
      this.used += chunk.length;
    }
  }

  private async flush(): Promise<void> {
    if (this.used > 0) await this.fh!.write(this.batch, 0, this.used);
    this.used = 0;
  }

  async commit(): Promise<void> {
    await this.flush();
    await this.fh!.close();
    this.fh = undefined;
    await rename(`${this.dest}.partial`, this.dest!);
    this.dest = undefined;
  }

  /** Closes and deletes a file left unfinished (a failed restore): no half-written file stays. */
  async abandon(): Promise<void> {
    if (this.fh) {
      await this.fh.close().catch(() => {});
      await rm(`${this.dest}.partial`, { force: true });
    }
    this.fh = undefined;
    this.dest = undefined;
    this.used = 0;
  }
}
