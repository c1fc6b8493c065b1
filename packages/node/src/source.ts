import {
  type BigIntStats,
  closeSync,
  fstatSync,
  openSync,
  readSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { chmod, lstat, mkdir, mkdtemp, open, readdir, realpath, rm, stat } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { basename, join, resolve, sep } from "node:path";
import { DatabaseSync, backup as sqliteBackup } from "node:sqlite";
import { pathToFileURL } from "node:url";
import {
  isLikelyCompressed,
  type LocalFile,
  mapConcurrent,
  NotFoundError,
  type SourceEntry,
  type SourceFile,
  SQLITE_HEADER_BYTES,
  sqlitePageSize,
  UsageError,
  VanishedError,
} from "@locket/core";
import { takeLock } from "./file-lock.ts";

/** Media selection, like WhatsApp's "include videos". */
export interface MediaPolicy {
  /** Skip video files (by extension). */
  readonly excludeVideos?: boolean;
  /** Glob patterns (`*`, `**`, `?`) matched against paths relative to each backed-up root; matches are skipped. */
  readonly exclude?: readonly string[];
  /** When given, only files matching one of these are kept (folders are always walked). */
  readonly include?: readonly string[];
}

/** What the walk skipped and why, for the CLI to report. */
export interface SkipNote {
  readonly path: string;
  readonly reason: string;
}

const VIDEO = new Set([
  "mp4",
  "m4v",
  "mov",
  "3gp",
  "3gpp",
  "mkv",
  "webm",
  "avi",
  "wmv",
  "mpg",
  "mpeg",
]);
const READ_BLOCK = 1 << 20;
const spareBlocks: Uint8Array[] = [];

/** Converts a glob (`**` any folders, `*` within a component, `?` one character) to a RegExp. */
export function globToRegExp(glob: string): RegExp {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*" && glob[i + 1] === "*") {
      re += ".*";
      i++;
      if (glob[i + 1] === "/") i++;
    } else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  // A pattern without a slash matches a name at any depth, as in .gitignore.
  return glob.includes("/") ? new RegExp(`^${re}$`) : new RegExp(`(^|/)${re}$`);
}

/**
 * A file filter from `policy`, for a backup's walk and a restore's selection: given a file's
 * `/`-separated path (relative to a backed-up root; in a snapshot, from its root) and its name,
 * null to keep it, else why it is left out.
 */
export function selectionFilter(policy: MediaPolicy): (rel: string, name: string) => string | null {
  const exclude = (policy.exclude ?? []).map(globToRegExp);
  const include = (policy.include ?? []).map(globToRegExp);
  return (rel, name) => {
    const dot = name.lastIndexOf(".");
    if (policy.excludeVideos && dot > 0 && VIDEO.has(name.slice(dot + 1).toLowerCase()))
      return "video excluded";
    if (exclude.some((r) => r.test(rel))) return "excluded by pattern";
    if (include.length && !include.some((r) => r.test(rel))) return "not included by pattern";
    return null;
  };
}

/**
 * The file's bytes (or those from `range.start` to `range.end`) in blocks of READ_BLOCK, read
 * ahead into two alternating buffers: while the caller processes one block, the next is being
 * read (see SourceFile.open: a block is valid until the next one is requested).
 */
export async function* readStream(
  path: string,
  range?: { readonly start: number; readonly end: number },
): AsyncGenerator<Uint8Array> {
  const fh = await open(path, "r").catch((err) => {
    throw isGone(err) ? new VanishedError(path, { cause: err }) : err;
  });
  let next: ReturnType<typeof fh.read<Uint8Array>> | undefined;
  // Reused across files: two fresh 1 MiB buffers per photo were gigabytes of garbage per backup.
  const bufs = [
    spareBlocks.pop() ?? new Uint8Array(READ_BLOCK),
    spareBlocks.pop() ?? new Uint8Array(READ_BLOCK),
  ];
  // Reads at the current position, or within `range` when given (then a short read is the end:
  // the next read was asked for as if the block were full).
  let pos = range?.start ?? null;
  let asked = READ_BLOCK;
  const readNext = (buf: Uint8Array) => {
    if (pos === null) return fh.read(buf, 0, READ_BLOCK, null);
    asked = Math.max(0, Math.min(READ_BLOCK, range!.end - pos));
    const at = pos;
    pos += asked;
    return fh.read(buf, 0, asked, at);
  };
  try {
    let turn = 0;
    next = readNext(bufs[turn]);
    for (;;) {
      const wanted = asked;
      const { bytesRead, buffer } = await next;
      if (bytesRead === 0) return;
      turn ^= 1;
      // Safe: the caller has finished with bufs[turn] (the block before this one).
      if (range && bytesRead < wanted) next = undefined;
      else next = readNext(bufs[turn]);
      yield buffer.subarray(0, bytesRead);
      if (!next) return;
    }
  } finally {
    // A caller that stops early leaves one read in flight: let it settle before closing.
    await next?.catch(() => {});
    await fh.close();
    if (spareBlocks.length < 8) spareBlocks.push(...bufs);
  }
}

/** A file listed at most this large is read by `readSmallFile`. */
export const SMALL_FILE_BYTES = READ_BLOCK;

/**
 * A file listed at most SMALL_FILE_BYTES, read with blocking calls (readDescriptor): open, a read
 * of one block and close take microseconds when the page cache holds the file, where each
 * asynchronous call is a trip through libuv's threadpool (four per small file with readStream,
 * whose last read finds the end). For the worker threads, which have nothing else to do
 * meanwhile. A file that grew since it was listed is read on through the same descriptor: one
 * file, whatever is renamed over its path meanwhile.
 */
export async function* readSmallFile(path: string): AsyncGenerator<Uint8Array> {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    throw isGone(err) ? new VanishedError(path, { cause: err }) : err;
  }
  try {
    yield* readDescriptor(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * The bytes of open descriptor `fd` (from `range.start` to `range.end` when given), read with
 * blocking positional reads in blocks of READ_BLOCK into one buffer; the descriptor is left open
 * (LocalFile.fd). Same contract as readStream: a block is valid until the next one is requested.
 */
export async function* readDescriptor(
  fd: number,
  range?: { readonly start: number; readonly end: number },
): AsyncGenerator<Uint8Array> {
  const buf = spareBlocks.pop() ?? new Uint8Array(READ_BLOCK);
  const end = range?.end ?? Number.POSITIVE_INFINITY;
  try {
    for (let pos = range?.start ?? 0; pos < end; ) {
      const want = Math.min(READ_BLOCK, end - pos);
      let n = 0;
      while (n < want) {
        const r = readSync(fd, buf, n, want - n, pos + n);
        if (r === 0) break;
        n += r;
      }
      if (n === 0) return;
      yield buf.subarray(0, n);
      if (n < want) return;
      pos += n;
    }
  } finally {
    if (spareBlocks.length < 8) spareBlocks.push(buf);
  }
}

/** ENOENT: listed a moment ago, deleted since (the app removed a temporary or journal file). */
function isGone(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
}

/** Opens an existing database: through a `mode=` URI, so a file deleted meanwhile is not re-created. */
function openDatabase(path: string, mode: "rw" | "ro"): DatabaseSync {
  const url = pathToFileURL(path);
  url.searchParams.set("mode", mode);
  return new DatabaseSync(url, { timeout: 10_000 });
}

async function isSqlite(path: string, size: number): Promise<boolean> {
  if (size < 512) return false;
  const fh = await open(path, "r");
  try {
    const header = new Uint8Array(SQLITE_HEADER_BYTES);
    const { bytesRead } = await fh.read(header, 0, SQLITE_HEADER_BYTES, 0);
    return bytesRead === SQLITE_HEADER_BYTES && sqlitePageSize(header) !== null;
  } finally {
    await fh.close();
  }
}

/**
 * What the file cache compares: size, mtime and ctime in nanoseconds, inode and device. Any
 * write changes mtime or ctime; a replaced file changes the inode. "none" when missing.
 */
async function fileStamp(path: string): Promise<string> {
  try {
    return stampOf(await lstat(path, { bigint: true }));
  } catch {
    return "none";
  }
}

function stampOf(s: BigIntStats): string {
  return `${s.size}:${s.mtimeNs}:${s.ctimeNs}:${s.ino}:${s.dev}`;
}

/** Entries of a folder looked at concurrently (lstat, and a header read for SQLite detection). */
const ENTRY_CONCURRENCY = 16;

async function walBytes(path: string): Promise<number> {
  try {
    return (await stat(`${path}-wal`)).size;
  } catch {
    return 0;
  }
}

/**
 * A consistent copy of a live SQLite database. It first opens a read transaction, which stops
 * writers from changing the main file (rollback-journal mode holds a SHARED lock; in WAL mode a
 * checkpoint cannot pass an active reader). If the main file alone is then the reader's view (not
 * WAL mode, or an empty `-wal`), the file is streamed as it is: byte-identical to the original.
 * Otherwise the WAL holds committed pages, and SQLite's online backup API copies the database
 * page for page, in one step (so a concurrent writer cannot make it restart forever), into a
 * private temporary file. Never VACUUM INTO: that renumbers pages and would defeat page-level
 * deduplication.
 */
async function* sqliteSnapshot(path: string): AsyncGenerator<Uint8Array> {
  const file = await sqliteLocalFile(path);
  try {
    yield* file.fd === undefined ? readStream(file.path) : readDescriptor(file.fd);
  } finally {
    await file.close();
  }
}

/** The databases this process reads in place now (sqliteLocalFile), by device and inode. */
const readInPlace = new Set<string>();

/** Nothing to release: a plain file is read where it is. */
const close = async () => {};

/**
 * The consistent state of a live SQLite database as a local file (see sqliteSnapshot): the
 * database itself while the returned `close` has not been called (a read transaction holds it
 * still), or a private copy made with the backup API, removed by `close`.
 */
async function sqliteLocalFile(path: string): Promise<LocalFile> {
  // The file the connection below opens, as far as this process can tell (see `stray`).
  let before: BigIntStats;
  try {
    before = await stat(path, { bigint: true });
  } catch (err) {
    if (isGone(err)) throw new VanishedError(path, { cause: err });
    throw err;
  }
  // Read-write when allowed: only then does SQLite, as the last connection to close, remove the
  // -wal and -shm files that opening a WAL database creates, leaving the user's folder as it was.
  let db: DatabaseSync;
  try {
    db = openDatabase(path, "rw");
  } catch {
    try {
      db = openDatabase(path, "ro");
    } catch (err) {
      if ((await fileStamp(path)) === "none") throw new VanishedError(path, { cause: err });
      throw err;
    }
  }
  let dir: string | undefined;
  let lock: DatabaseSync | undefined;
  // A descriptor of a file that replaced the database (renamed over it) as its read began: kept
  // open until the transaction has ended, since closing it would drop the connection's locks if
  // the connection had opened that file.
  let stray: number | undefined;
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    try {
      if (db.isTransaction) db.exec("COMMIT");
      db.close();
    } finally {
      if (stray !== undefined) closeSync(stray);
      try {
        lock?.close();
      } catch {}
      // Best effort: a copy left behind is removed by a later backup (removeStaleCopies).
      if (dir) await rm(dir, { recursive: true, force: true }).catch(() => {});
    }
  };
  try {
    db.exec("BEGIN");
    db.prepare("SELECT count(*) FROM sqlite_schema").get();
    const wal =
      (db.prepare("PRAGMA journal_mode").get() as { journal_mode: string }).journal_mode === "wal";
    // The same file may be read in place already, under another name (a hard link met in the
    // same backup): a descriptor of it opened and closed here would drop that read's lock, so
    // this one reads through the copy below, which opens none.
    const inode = `${before.dev}:${before.ino}`;
    if ((!wal || (await walBytes(path)) === 0) && !readInPlace.has(inode)) {
      // Read in place through one descriptor, closed only once the transaction has ended: a
      // descriptor of the file closed before would drop this process's POSIX locks on it,
      // the transaction's among them (LocalFile.fd).
      const fd = openSync(path, "r");
      const now = fstatSync(fd, { bigint: true });
      if (now.ino === before.ino && now.dev === before.dev) {
        readInPlace.add(inode);
        const close = async () => {
          try {
            await release();
          } finally {
            closeSync(fd);
            readInPlace.delete(inode);
          }
        };
        return { path, fd, close };
      }
      // Another file has the name now (a database replaced by rename: an app restoring one):
      // read as the transaction sees it, through the copy below, never this file unlocked.
      stray = fd;
    }
    db.exec("COMMIT");
    const root = await copyRoot(path);
    await removeStaleCopies(root);
    dir = await mkdtemp(join(root, COPY_PREFIX));
    // Held while the copy is in use, so another backup can tell a copy left by a killed one.
    // Where it cannot be taken (a filesystem without locks), no lock file stays: other backups
    // then leave the folder for a day, not a minute.
    const taken = takeLock(join(dir, COPY_LOCK));
    if (typeof taken === "string") {
      rmSync(join(dir, COPY_LOCK), { force: true });
      writeFileSync(join(dir, COPY_UNLOCKED), "");
    } else {
      lock = taken;
    }
    const copy = join(dir, "copy.db");
    await sqliteBackup(db, copy, { rate: 0x7fffffff });
    return { path: copy, close: release };
  } catch (err) {
    await release();
    throw err;
  }
}

/**
 * The folder for the private copy of live database `db`: the system's temporary folder ($TMPDIR),
 * unless another user may rename entries in it: one every user may write without the sticky bit
 * (a misconfiguration, common in containers; /tmp is 1777), or one another user owns. There the
 * copy's folder could be swapped for theirs between its making and its use, and the plaintext
 * copy handed to them. Then a folder of Locket's own in the user's cache folder
 * ($XDG_CACHE_HOME, else ~/.cache, then locket/tmp), made owner-only.
 * @throws {UsageError} when that folder cannot be made private either.
 */
async function copyRoot(db: string): Promise<string> {
  const root = tmpdir();
  if (process.platform === "win32") return root; // per-user temporary folders, other permissions
  const uid = process.getuid?.();
  const st = await stat(root);
  const everyone = (st.mode & 0o002) !== 0 && (st.mode & 0o1000) === 0;
  const other = uid !== undefined && st.uid !== uid && st.uid !== 0;
  if (!everyone && !other) return root;
  const own = join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "locket", "tmp");
  try {
    await mkdir(own, { recursive: true, mode: 0o700 });
    const mine = await lstat(own);
    if (mine.isDirectory() && (uid === undefined || mine.uid === uid)) {
      if ((mine.mode & 0o077) !== 0) await chmod(own, 0o700);
      return own;
    }
  } catch {
    // Reported below.
  }
  throw new UsageError(
    `the temporary folder ${root} lets other users rename what is in it (${everyone ? "writable by every user without the sticky bit" : "owned by another user"}), so the private copy of ${db} is not safe there, and ${own} could not be made private instead; set TMPDIR to a folder only you can write`,
  );
}

/** The folders, in the system's temporary folder, that hold private copies of live databases. */
const COPY_PREFIX = "locket-sqlite-";
/** A copy folder's name: the prefix and the six characters mkdtemp adds. */
const COPY_NAME = /^locket-sqlite-[A-Za-z0-9]{6}$/;
/** In each copy folder: the lock its backup holds while it uses the copy (see takeLock). */
const COPY_LOCK = "in-use.lock";
/** A backup takes its copy folder's lock right after making the folder: younger ones are left. */
const COPY_LOCK_GRACE_MS = 60_000;
/** Marks a copy folder whose lock could not be taken (a filesystem without locks). */
const COPY_UNLOCKED = "unlocked";
/** Such a folder is left for a day: its copy may be in use. */
const UNLOCKED_COPY_MS = 24 * 3_600_000;

/**
 * Removes the copy folders in `root` that killed backups left behind (a backup removes its own
 * when it is done with the database, or fails): each holds a whole copy of a database, which
 * nothing else would delete until the system clears its temporary folder. A folder over a minute
 * old is stale when its lock can be taken (the operating system released it with the process
 * that held it) or when it has no lock file (its backup was killed before taking it); one marked
 * as unlocked (its backup could not take a lock) only when over a day old. Folders of other
 * users, and any that cannot be looked at, are left. Returns how many were removed; never throws.
 */
export async function removeStaleCopies(root = tmpdir(), now = Date.now()): Promise<number> {
  let names: string[];
  try {
    names = (await readdir(root)).filter((n) => COPY_NAME.test(n));
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of names) {
    const dir = join(root, name);
    try {
      const st = await lstat(dir);
      const uid = process.getuid?.(); // none on Windows, whose temporary folder is per user
      if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) continue;
      const age = now - st.mtimeMs;
      if (age < COPY_LOCK_GRACE_MS) continue;
      const lockFile = join(dir, COPY_LOCK);
      if ((await fileStamp(lockFile)) !== "none") {
        const lock = takeLock(lockFile);
        if (typeof lock === "string") continue; // in use (BUSY), or cannot tell
        lock.close();
      } else if ((await fileStamp(join(dir, COPY_UNLOCKED))) !== "none") {
        if (age < UNLOCKED_COPY_MS) continue;
      }
      await rm(dir, { recursive: true, force: true });
      removed++;
    } catch {
      // Gone meanwhile, or not ours to look at.
    }
  }
  return removed;
}

/**
 * Builds the backup source for the paths a user named. SQLite databases are copied consistently
 * (their `-wal`, `-shm` and `-journal` companions are folded into that copy, never stored
 * beside it); symlinks, sockets and devices are skipped with a note, and so are the folders in
 * `skipFolders` (Locket's own cache: see FsPageBaseStore), wherever they are met.
 * @throws {NotFoundError} when a path does not exist.
 */
export async function fsSource(
  paths: readonly string[],
  policy: MediaPolicy = {},
  onSkip: (n: SkipNote) => void = () => {},
  skipFolders: readonly string[] = [],
): Promise<SourceEntry[]> {
  const filter = selectionFilter(policy);
  const sqliteFiles = new WeakSet<SourceEntry>();
  // The cache holds the databases' base images, which would be read as databases, and the
  // page-base locks, which this process must not open (closing any descriptor of a file ends
  // its POSIX locks).
  const skipped = await folderKeys(skipFolders);

  const fileEntry = async (abs: string, name: string, st: BigIntStats): Promise<SourceFile> => {
    const size = Number(st.size);
    const sqlite = !isLikelyCompressed(name) && (await isSqlite(abs, size));
    const cacheKey = stampOf(st) + (sqlite ? `|wal:${await fileStamp(`${abs}-wal`)}` : "");
    const file: SourceFile = {
      type: "file",
      name,
      mode: Number(st.mode) & 0o7777,
      mtimeMs: Number(st.mtimeMs),
      size,
      open: () => (sqlite ? sqliteSnapshot(abs) : readStream(abs)),
      localFile: () => (sqlite ? sqliteLocalFile(abs) : Promise.resolve({ path: abs, close })),
      compressible: !isLikelyCompressed(name),
      cacheKey,
    };
    if (sqlite) sqliteFiles.add(file);
    return file;
  };

  const entry = async (abs: string, name: string, rel: string): Promise<SourceEntry | null> => {
    const vanished = (err: unknown): null => {
      if (!isGone(err)) throw err;
      onSkip({ path: rel || name, reason: "vanished before it could be read" });
      return null;
    };
    let st: BigIntStats;
    try {
      // One lstat serves the entry and the file cache's stamp (nanosecond times need bigint).
      st = await lstat(abs, { bigint: true });
    } catch (err) {
      return vanished(err);
    }
    if (st.isDirectory()) {
      if (skipped.has(folderKey(st))) {
        onSkip({ path: rel || name, reason: "Locket's own cache" });
        return null;
      }
      return {
        type: "dir",
        name,
        mode: Number(st.mode) & 0o7777,
        mtimeMs: Number(st.mtimeMs),
        children: async () => {
          let names: string[];
          try {
            names = (await readdir(abs)).sort();
          } catch (err) {
            vanished(err);
            return [];
          }
          const look = (child: string) =>
            entry(join(abs, child), child, rel ? `${rel}/${child}` : child);
          // A database's -wal, -shm or -journal companion is decided once the database itself
          // is known; everything else is looked at ENTRY_CONCURRENCY at a time (one lstat after
          // the other cost a threadpool round trip per file, most of a no-change backup).
          const present = new Set(names);
          const companionOf = (child: string) => {
            const m = /^(.*)-(wal|shm|journal)$/.exec(child);
            return m && present.has(m[1]) ? m[1] : undefined;
          };
          const found = await mapConcurrent(names, ENTRY_CONCURRENCY, (child) =>
            companionOf(child) === undefined ? look(child) : Promise.resolve(undefined),
          );
          const sqliteNames = new Set<string>();
          names.forEach((child, i) => {
            const e = found[i];
            if (e && sqliteFiles.has(e)) sqliteNames.add(child);
          });
          const out: SourceEntry[] = [];
          for (let i = 0; i < names.length; i++) {
            const db = companionOf(names[i]);
            const e =
              db === undefined ? found[i] : sqliteNames.has(db) ? null : await look(names[i]);
            if (e) out.push(e);
          }
          return out;
        },
      };
    }
    if (!st.isFile()) {
      onSkip({
        path: rel || name,
        reason: st.isSymbolicLink() ? "symbolic link" : "not a regular file",
      });
      return null;
    }
    const why = rel ? filter(rel, name) : null;
    if (why) {
      onSkip({ path: rel, reason: why });
      return null;
    }
    try {
      return await fileEntry(abs, name, st);
    } catch (err) {
      return vanished(err);
    }
  };

  // Where they really are (through symbolic links), to refuse a path inside another: a file
  // would be read twice, and a database opened twice in this process loses its read lock when
  // either is closed (closing any descriptor of a file ends the process's POSIX locks on it).
  const real: string[] = [];
  for (const p of paths) {
    try {
      real.push(await realpath(resolve(p)));
    } catch {
      throw new NotFoundError(`no such file or folder: ${p}`);
    }
  }
  for (const [i, a] of real.entries()) {
    for (const [j, b] of real.entries()) {
      if (i !== j && b.startsWith(a.endsWith(sep) ? a : a + sep)) {
        throw new UsageError(
          `${paths[j]} is inside ${paths[i]}; back up ${paths[i]} alone (it holds ${paths[j]}), or paths that do not overlap`,
        );
      }
    }
  }
  const roots: SourceEntry[] = [];
  for (const p of paths) {
    const abs = resolve(p);
    const e = await entry(abs, basename(abs), "");
    if (e) roots.push(e);
  }
  return roots;
}

/** Total bytes of regular files under `paths` (for progress and ETA); cheap, metadata only. */
export async function measure(
  paths: readonly string[],
  skipFolders: readonly string[] = [],
): Promise<{ files: number; bytes: number }> {
  const skipped = await folderKeys(skipFolders);
  let files = 0;
  let bytes = 0;
  const visit = async (abs: string): Promise<void> => {
    try {
      const st = await lstat(abs, { bigint: true });
      if (st.isDirectory()) {
        if (skipped.has(folderKey(st))) return;
        for (const c of await readdir(abs)) await visit(join(abs, c));
      } else if (st.isFile()) {
        files++;
        bytes += Number(st.size);
      }
    } catch (err) {
      // Gone since it was listed: the walk in fsSource reports it; the estimate just leaves it out.
      if (!isGone(err)) throw err;
    }
  };
  for (const p of paths) await visit(resolve(p));
  return { files, bytes };
}

/** A folder's identity, whatever path leads to it: its device and inode. */
function folderKey(st: BigIntStats): string {
  return `${st.dev}:${st.ino}`;
}

/** The identities of `folders` (fsSource's `skipFolders`); ones not there are left out. */
async function folderKeys(folders: readonly string[]): Promise<Set<string>> {
  const keys = new Set<string>();
  for (const folder of folders) {
    try {
      keys.add(folderKey(await stat(folder, { bigint: true })));
    } catch {
      // Not there (yet): nothing under it to meet.
    }
  }
  return keys;
}
