import {
  close,
  closeSync,
  fchmodSync,
  fsync,
  futimesSync,
  open as openCb,
  rmSync,
  writeSync,
} from "node:fs";
import { chmod, lstat, mkdir, open, readdir, rename, rm, stat, utimes } from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import {
  AlreadyExistsError,
  BLOB_DELTA,
  blobId,
  type FileNode,
  type Repository,
  readFiles,
  type SnapshotRef,
  type TreeNode,
  toHex,
  walk,
} from "@locket/core";

export interface RestoreOptions {
  /** Replace entries that already exist in the target. */
  readonly overwrite?: boolean;
  /**
   * Which files to restore: given a file's path in the snapshot (`/`-separated) and its name,
   * null to restore it, else why not (see `selectionFilter`). Folders are restored only where
   * they hold a restored file.
   */
  readonly filter?: (path: string, name: string) => string | null;
  /** After each file; `totalFiles` and `totalBytes` are what this restore will write in all. */
  readonly onProgress?: (p: RestoreProgress) => void;
  /** Files fsynced at once (default: defaultFsyncsAtOnce()). */
  readonly fsyncsAtOnce?: number;
}

export interface RestoreProgress {
  readonly files: number;
  readonly bytes: number;
  readonly totalFiles: number;
  readonly totalBytes: number;
  readonly current: string;
}

export interface RestoreResult {
  readonly files: number;
  readonly dirs: number;
  readonly bytes: number;
  /** Files found complete in the staging folder of an earlier interrupted run, verified, not downloaded again. */
  readonly resumedFiles: number;
  /** Files the filter left out. */
  readonly skippedFiles: number;
}

const WRITE_BATCH = 1 << 20;
/**
 * Files fsynced at once by default: all of libuv's threadpool but two threads, which stay free
 * for pack reads. ext4 commits its journal once for all the fsyncs waiting on it, so more at once
 * cost less each: a 586 MiB restore from a local repository took 3.05 s with 2 (the default pool
 * of 4 threads) and 2.68 s with 6, and the benchmark's 1.8 GiB 12.91 s with 6 and 11.44 s with
 * 30 (the CLI makes the pool 32 threads for `restore`; bin/locket.js).
 */
export function defaultFsyncsAtOnce(): number {
  return Math.max(1, threadpoolSize() - 2);
}

/** libuv's threadpool size: UV_THREADPOOL_SIZE, else 4. */
function threadpoolSize(): number {
  const n = Number(process.env.UV_THREADPOOL_SIZE);
  return Number.isInteger(n) && n > 0 ? Math.min(n, 1024) : 4;
}

/** Name of the hidden staging folder a restore of `snapshotId` builds in the target. */
export function stagingName(snapshotId: string): string {
  return `.locket-restore-${snapshotId.slice(0, 16)}`;
}

/** @throws {AlreadyExistsError} when one of `names` exists in `target`. */
async function refuseExisting(target: string, names: readonly string[]): Promise<void> {
  for (const name of names) {
    if (await exists(join(target, name))) {
      throw new AlreadyExistsError(
        `${join(target, name)} already exists; restore elsewhere or pass --overwrite`,
      );
    }
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Descriptors of written files a Syncer keeps open while they wait for their fsync. */
const HELD_DESCRIPTORS = 256;

/**
 * fsyncs files in the background, a few at a time, as they are added; `done` waits for them and
 * then fsyncs their folders. A file is added with its descriptor, which the Syncer closes once
 * synced (reopening each by path cost an `open` and a `close` more per file, each a trip
 * through the threadpool), or by path alone: beyond HELD_DESCRIPTORS waiting, a descriptor is
 * closed and the file reopened when its turn comes.
 */
class Syncer {
  private readonly parallelism: number;
  private readonly queue: { path: string; fd?: number }[] = [];
  private held = 0;
  private readonly folders = new Set<string>();
  private readonly running = new Set<Promise<void>>();
  private failure: unknown;

  constructor(parallelism: number) {
    this.parallelism = Math.max(1, parallelism);
  }

  /** Queues `path` for an fsync, through `fd` if given: the Syncer owns and closes it. */
  add(path: string, fd?: number): void {
    this.folders.add(dirname(path));
    if (fd !== undefined && this.held >= HELD_DESCRIPTORS) {
      closeSync(fd);
      fd = undefined;
    }
    if (fd !== undefined) this.held++;
    this.queue.push({ path, fd });
    this.pump();
  }

  private pump(): void {
    while (this.running.size < this.parallelism && this.queue.length > 0) {
      const { path, fd } = this.queue.shift()!;
      if (fd !== undefined) this.held--;
      const job = (fd === undefined ? fsyncPath(path) : fsyncAndClose(fd)).then(
        () => {},
        (err) => {
          this.failure ??= err;
        },
      );
      this.running.add(job);
      job.finally(() => {
        this.running.delete(job);
        this.pump();
      });
    }
  }

  /** Waits for every queued file, then syncs their folders. @throws the first fsync failure. */
  async done(): Promise<void> {
    await this.settle();
    if (this.failure) throw this.failure;
    for (const folder of this.folders) await fsyncPath(folder);
  }

  /** Waits until nothing runs or is queued, whatever the outcome. */
  async settle(): Promise<void> {
    while (this.running.size > 0) await Promise.all(this.running);
  }
}

/** fsyncs `fd` and closes it, whatever the fsync gave. */
function fsyncAndClose(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fsync(fd, (syncErr) => {
      close(fd, (closeErr) => {
        const err = syncErr ?? closeErr;
        if (err) reject(err);
        else resolve();
      });
    });
  });
}

async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Files a restore creates ahead of the writer, and at most how many of them at once. */
const OPENS_AHEAD = 16;
const OPENS_AT_ONCE = 2;

/**
 * Creates the files to write ahead of the writer, on libuv's threadpool, a few at a time. On
 * ext4 a file's creation waits for the journal, which the restore's fsyncs keep committing: the
 * writer creating each file itself spent 2.5 s of a 9.8 s restore of the benchmark's 4,418 media
 * files blocked in `open`, with nothing else done meanwhile.
 */
class FileOpener {
  private readonly paths: readonly string[];
  private readonly opening = new Map<number, Promise<number>>();
  private started = 0;
  private wanted = 0;
  private running = 0;
  private readonly settled = new Set<Promise<unknown>>();

  constructor(paths: readonly string[]) {
    this.paths = paths;
    this.pump();
  }

  private pump(): void {
    const limit = Math.min(this.paths.length, this.wanted + OPENS_AHEAD);
    while (this.running < OPENS_AT_ONCE && this.started < limit) this.start();
  }

  private start(): void {
    const path = this.paths[this.started];
    this.running++;
    const fd = new Promise<number>((resolve, reject) => {
      openCb(path, "w", 0o600, (err, fd) => {
        this.running--;
        this.pump();
        if (err) reject(err);
        else resolve(fd);
      });
    });
    const settled = fd.then(
      () => {},
      () => {},
    );
    this.settled.add(settled);
    settled.finally(() => this.settled.delete(settled));
    this.opening.set(this.started++, fd);
  }

  /** The descriptor of the next file of `paths`, created for writing. */
  take(): Promise<number> {
    const index = this.wanted++;
    if (index >= this.paths.length) throw new RangeError(`FileOpener: only ${index} files`);
    while (this.started <= index) this.start();
    this.pump();
    const fd = this.opening.get(index)!;
    this.opening.delete(index);
    return fd;
  }

  /** Closes and deletes the files created and not taken (a failed restore). */
  async abandon(): Promise<void> {
    while (this.settled.size > 0) await Promise.all(this.settled);
    for (const [index, fd] of this.opening) {
      try {
        closeSync(await fd);
        rmSync(this.paths[index], { force: true });
      } catch {}
    }
    this.opening.clear();
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
      // A page stored as a delta could only be checked with its base read from the repository:
      // such a file (a database) is restored again instead.
      if (!loc || loc.type === BLOB_DELTA) return false;
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
 * inside the target, each file verified chunk by chunk as it is written, and fsynced. When every
 * file is in place and durable, the snapshot's top-level entries are moved into the target. A
 * failure therefore leaves nothing in the target but the staging folder, and running the same
 * restore again resumes from it: a file found there is kept only when its size and every chunk's
 * keyed ID check out (a file cut short by a crash, or never synced, is written again).
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
  const filter = opts.filter;
  const result = { files: 0, dirs: 0, bytes: 0, resumedFiles: 0, skippedFiles: 0 };
  const totals = { totalFiles: 0, totalBytes: 0 };
  // What to restore, before anything is written: the walk verifies every tree as it loads it.
  const folders: { path: string[]; node: TreeNode }[] = [];
  const files: { node: FileNode; path: string[] }[] = [];
  for await (const { path, node } of walk(repo, snap.snapshot.tree)) {
    if (node.type === "dir") folders.push({ path: [...path], node });
    else if (filter?.(path.join("/"), node.name)) result.skippedFiles++;
    else {
      files.push({ node, path: [...path] });
      totals.totalFiles++;
      totals.totalBytes += node.size;
    }
  }
  // The top-level entries this restore puts in place, and the folders it makes: with a filter,
  // only those that hold a restored file.
  let placed = new Set(root.nodes.map((n) => n.name));
  let needed: Set<string> | undefined;
  if (filter) {
    placed = new Set(files.map((f) => f.path[0]));
    needed = new Set();
    for (const { path } of files) {
      for (let depth = 1; depth < path.length; depth++) needed.add(path.slice(0, depth).join("/"));
    }
  }
  if (!opts.overwrite) await refuseExisting(target, [...placed]);
  await mkdir(target, { recursive: true });
  const staging = join(target, stagingName(snap.id));
  const rerun = await exists(staging);
  await mkdir(staging, { recursive: true });

  /** The folders restored: where (`path`), and their path in the snapshot (`name`, `/`-separated). */
  const dirTimes: { path: string; name: string; mtimeMs: number; mode: number }[] = [];
  for (const { path, node } of folders) {
    const name = path.join("/");
    if (needed && !needed.has(name)) continue;
    const dest = join(staging, ...path);
    await mkdir(dest, { recursive: true });
    dirTimes.push({ path: dest, name, mtimeMs: node.mtimeMs, mode: node.mode });
    result.dirs++;
  }
  // Durable before anything appears in the target: each file is fsynced in the background as
  // soon as it is complete, so the disk flushes while later files are decoded and written
  // (syncing all at the end left the CPU idle for a third of the restore). A crash before
  // `syncer.done()` leaves only the staging folder, whose files a rerun re-verifies.
  const syncer = new Syncer(opts.fsyncsAtOnce ?? defaultFsyncsAtOnce());
  const todo: { node: FileNode; path: string; dest: string }[] = [];
  const count = (node: FileNode, display: string) => {
    result.files++;
    result.bytes += node.size;
    opts.onProgress?.({ ...result, ...totals, current: display });
  };
  for (const { node, path } of files) {
    const dest = join(staging, ...path);
    if (await alreadyRestored(repo, node, dest)) {
      result.resumedFiles++;
      await chmod(dest, node.mode & 0o7777);
      await utimes(dest, node.mtimeMs / 1000, node.mtimeMs / 1000);
      syncer.add(dest);
      count(node, path.join("/"));
    } else {
      todo.push({ node, path: path.join("/"), dest });
    }
  }
  // One read plan for every file, so segments are fetched ahead across file boundaries, and
  // the database read alongside the media (readFiles' `interleave`): two files are written at
  // once, each with its own writer.
  const writers = new Map<number, FileWriter>();
  const idle: FileWriter[] = [];
  let opener: FileOpener | undefined;
  try {
    const events = readFiles(repo, todo, {
      release: true,
      interleave: true,
      onOrder: (order) => {
        opener = new FileOpener(order.map((f) => todo[f].dest));
      },
    });
    // Each chunk is written (or copied into the write batch) before the next is asked for, so
    // the segments' memory can go back as the restore moves on.
    for await (const ev of events) {
      const t = todo[ev.file];
      let writer = writers.get(ev.file);
      if (!writer) {
        writer = idle.pop() ?? new FileWriter();
        writer.open(t.dest, await opener!.take());
        writers.set(ev.file, writer);
      }
      if (!ev.done) {
        writer.write(ev.chunk);
        continue;
      }
      const fd = writer.commit(t.node);
      writers.delete(ev.file);
      idle.push(writer);
      syncer.add(t.dest, fd);
      count(t.node, t.path);
    }
  } finally {
    for (const writer of writers.values()) writer.abandon();
    await opener?.abandon();
    await syncer.settle();
  }
  // An earlier run may have left what this one does not restore (another filter, or a file it
  // was writing when killed): it must not move into the target with the rest.
  if (rerun) {
    const wanted = new Set([...files.map((f) => f.path.join("/")), ...dirTimes.map((d) => d.name)]);
    await removeUnwanted(staging, wanted);
  }
  await syncer.done();
  // Deepest folders first, so setting a child's time does not disturb its parent's.
  for (const d of dirTimes.reverse()) {
    await chmod(d.path, (d.mode & 0o7777) | 0o700);
    await utimes(d.path, d.mtimeMs / 1000, d.mtimeMs / 1000);
  }
  for (const name of placed) {
    const final = join(target, name);
    if (opts.overwrite && (await exists(final))) await rm(final, { recursive: true, force: true });
    await rename(join(staging, name), final);
  }
  await rm(staging, { recursive: true, force: true });
  await fsyncPath(target);
  return result;
}

/** Removes every entry under `root` whose path from it (`/`-separated) is not in `wanted`. */
async function removeUnwanted(root: string, wanted: ReadonlySet<string>): Promise<void> {
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    if (!wanted.has(relative(root, path).split(sep).join("/"))) {
      await rm(path, { recursive: true, force: true });
    }
  }
}

/**
 * Writes one file in the staging folder, created by a FileOpener, batching small chunks into
 * 1 MiB writes (one write per 4 KiB database page would be 100 000 system calls for a large
 * one), and gives it its mode and time when `commit` is called after its last verified chunk
 * (a restore has two at once: a database and a medium). Under its own name from the start: a
 * `.partial` name and a rename added a journal operation per file and protected nothing, since
 * a rerun checks every file it finds against the snapshot (alreadyRestored).
 *
 * Synchronous calls on purpose: writes go to the page cache and return in microseconds, while an
 * asynchronous call per write, chmod and utimes cost a trip through the libuv threadpool each,
 * queued behind pack reads. Creating a file is the exception (it waits for ext4's journal:
 * FileOpener). Decoding runs on worker threads (WorkerSegmentOpener), and durability comes from
 * the Syncer.
 */
class FileWriter {
  dest: string | undefined;
  private fd: number | undefined;
  private readonly batch = new Uint8Array(WRITE_BATCH);
  private used = 0;

  /** Starts file `dest`, created for writing as `fd` (see FileOpener). */
  open(dest: string, fd: number): void {
    this.abandon();
    this.fd = fd;
    this.dest = dest;
  }

  write(chunk: Uint8Array): void {
    if (this.used + chunk.length > this.batch.length) this.flush();
    if (chunk.length >= this.batch.length) writeAll(this.fd!, chunk);
    else {
      this.batch.set(chunk, this.used);
      this.used += chunk.length;
    }
  }

  private flush(): void {
    if (this.used > 0) writeAll(this.fd!, this.batch.subarray(0, this.used));
    this.used = 0;
  }

  /** Ends the file: its last bytes written, its mode and time set. Returns its descriptor, open. */
  commit(node: FileNode): number {
    this.flush();
    const fd = this.fd!;
    this.fd = undefined;
    this.dest = undefined;
    try {
      fchmodSync(fd, node.mode & 0o7777);
      futimesSync(fd, node.mtimeMs / 1000, node.mtimeMs / 1000);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    return fd;
  }

  /** Closes and deletes a file left unfinished (a failed restore): no half-written file stays. */
  abandon(): void {
    if (this.fd !== undefined) {
      try {
        closeSync(this.fd);
      } catch {}
      rmSync(this.dest!, { force: true });
    }
    this.fd = undefined;
    this.dest = undefined;
    this.used = 0;
  }
}

/** writeSync until every byte is written (it may write fewer than asked). */
function writeAll(fd: number, data: Uint8Array): void {
  for (let done = 0; done < data.length; ) done += writeSync(fd, data, done, data.length - done);
}
