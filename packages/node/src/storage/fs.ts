/**
 * Local-folder storage, laid out and written like restic's local backend:
 *
 *   ROOT/config
 *   ROOT/data/<first two hex digits>/<name>
 *   ROOT/index/<name>
 *   ROOT/snapshots/<name>
 *   ROOT/tmp/<random>        objects being written; never listed
 */

import { randomBytes } from "node:crypto";
import type { Stats } from "node:fs";
import {
  chmod,
  type FileHandle,
  link,
  mkdir,
  open,
  readdir,
  rename,
  stat,
  unlink,
} from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { getSystemErrorMessage } from "node:util";
import {
  AlreadyExistsError,
  describeValue,
  isValidName,
  LocketError,
  NotFoundError,
  OBJECT_KINDS,
  type ObjectInfo,
  type ObjectKind,
  type ObjectWriter,
  resolveRange,
  type SaveOptions,
  type Storage,
  StorageError,
} from "@locket/core";

/** Mode of stored objects: read-only, so a stray editor or script cannot change them in place. */
const OBJECT_MODE = 0o444;

/** How many `stat` calls `list` keeps in flight per folder. */
const LIST_PARALLELISM = 32;

/** A `Storage` in a local folder. Get one with `FsStorage.create` or `FsStorage.open`. */
export class FsStorage implements Storage {
  /** Absolute path of the repository folder. */
  readonly location: string;

  readonly #root: string;

  private constructor(root: string) {
    this.#root = root;
    this.location = root;
  }

  /**
   * Creates the folder structure of a new repository at `root` (the folder itself may exist and
   * may be empty); the caller writes `config` afterwards.
   * @throws {AlreadyExistsError} when `root` already holds a repository (has a `config`).
   * @throws {StorageError} when a folder cannot be created.
   */
  static async create(root: string): Promise<FsStorage> {
    const abs = resolve(root);
    const storage = new FsStorage(abs);
    const config = join(abs, "config");
    let exists = true;
    try {
      await stat(config);
    } catch (err) {
      if (errnoCode(err) !== "ENOENT") throw storageError("stat", config, err);
      exists = false;
    }
    if (exists) throw new AlreadyExistsError(`a repository already exists at ${abs}`);
    const created = await mkdirOrFail(abs, { recursive: true });
    if (created !== undefined) await fsyncCreated(abs, created);
    for (const dir of ["data", "index", "snapshots", "tmp"]) await storage.#ensureDir(dir);
    return storage;
  }

  /**
   * Opens the repository at `root`. Only checks that `config` exists; it is not read.
   * @throws {NotFoundError} "no repository at PATH" when `root/config` does not exist.
   * @throws {StorageError} when `root/config` cannot be checked or is not a file.
   */
  static async open(root: string): Promise<FsStorage> {
    const abs = resolve(root);
    const config = join(abs, "config");
    let isFile: boolean;
    try {
      isFile = (await stat(config)).isFile();
    } catch (err) {
      const code = errnoCode(err);
      if (code === "ENOENT" || code === "ENOTDIR") {
        throw new NotFoundError(`no repository at ${abs}`);
      }
      throw storageError("stat", config, err);
    }
    if (!isFile) throw new StorageError(`not a regular file: ${config}`);
    return new FsStorage(abs);
  }

  /**
   * Atomically and durably stores `data` as `kind/name`: temp file in ROOT/tmp, fsync, then
   * rename (or link, when `exclusive`) into place, then fsync of the destination folder.
   * @throws {AlreadyExistsError} when `exclusive` is set and the object exists.
   * @throws {StorageError} on an invalid kind or name, or any I/O failure; the temp file is
   *   removed and nothing is visible under `name`.
   */
  async save(
    kind: ObjectKind,
    name: string,
    data: Uint8Array,
    options: SaveOptions = {},
  ): Promise<void> {
    const path = this.#path(kind, name);
    await this.#place(await this.#writeTemp(data), kind, name, path, options);
  }

  /**
   * Starts an object that is written in parts to a temp file in ROOT/tmp; `commit` fsyncs it
   * and renames it into place as `save` does. See `Storage.createWriter`.
   * @throws {StorageError} for kind "config" or when the temp file cannot be created.
   */
  async createWriter(kind: ObjectKind): Promise<ObjectWriter> {
    if (kind === "config" || !OBJECT_KINDS.includes(kind)) {
      throw new StorageError(`cannot create an object of kind ${describeValue(kind)} in parts`);
    }
    const { tmp, handle } = await this.#openTemp();
    return new FsObjectWriter(tmp, handle, async (name) => {
      await this.#place(tmp, kind, name, this.#path(kind, name), {});
    });
  }

  /**
   * Removes files in ROOT/tmp not modified for `olderThanMs`: what a process killed while
   * writing left. See `Storage.removeStale`.
   * @throws {StorageError} when ROOT/tmp cannot be listed.
   */
  async removeStale(olderThanMs: number): Promise<number> {
    const dir = join(this.#root, "tmp");
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return 0;
      throw storageError("list", dir, err);
    }
    let removed = 0;
    const now = Date.now();
    for (const name of names) {
      const path = join(dir, name);
      try {
        const st = await stat(path);
        if (!st.isFile() || now - st.mtimeMs < olderThanMs) continue;
        await unlink(path);
        removed++;
      } catch (err) {
        // Gone meanwhile (committed or aborted by its writer): nothing to do.
        if (errnoCode(err) !== "ENOENT") throw storageError("remove", path, err);
      }
    }
    return removed;
  }

  /**
   * Moves the finished temp file `tmp` into place as `kind/name` (renamed, or linked when
   * `exclusive`), fsyncs the folder, and removes `tmp` whatever happens.
   */
  async #place(
    tmp: string,
    kind: ObjectKind,
    name: string,
    path: string,
    options: SaveOptions,
  ): Promise<void> {
    let tmpLeft = true;
    try {
      const dir = dirname(path);
      if (options.exclusive) {
        // link(2) fails with EEXIST instead of replacing, so two exclusive saves cannot both win.
        await this.#retryAfterMkdir(
          dir,
          () => link(tmp, path),
          "link",
          path,
          (code) => {
            if (code === "EEXIST") {
              throw new AlreadyExistsError(`object already exists: ${kind}/${name}`);
            }
          },
        );
      } else {
        await makeWritableOnWindows(path);
        await this.#retryAfterMkdir(dir, () => rename(tmp, path), "rename", path);
        tmpLeft = false;
      }
      await fsyncDir(dir);
    } finally {
      if (tmpLeft) await unlink(tmp).catch(() => {});
    }
  }

  /**
   * Reads `kind/name`, or `length` bytes from `offset` (to the end when `length` is omitted).
   * @throws {NotFoundError} when the object does not exist.
   * @throws {StorageError} on an invalid kind or name, an I/O failure, an object that is not a
   *   regular file, or a range outside the object.
   */
  async load(
    kind: ObjectKind,
    name: string,
    offset?: number,
    length?: number,
  ): Promise<Uint8Array> {
    const path = this.#path(kind, name);
    let handle: FileHandle;
    try {
      handle = await open(path, "r");
    } catch (err) {
      throw notFoundOr("open", path, kind, name, err);
    }
    try {
      let size: number;
      try {
        const st = await handle.stat();
        if (!st.isFile()) throw new StorageError(`not a regular file: ${path}`);
        size = st.size;
      } catch (err) {
        if (err instanceof LocketError) throw err;
        throw storageError("stat", path, err);
      }
      const [start, end] = resolveRange(kind, name, size, offset, length);
      const out = new Uint8Array(end - start);
      let done = 0;
      while (done < out.length) {
        let n: number;
        try {
          ({ bytesRead: n } = await handle.read(out, done, out.length - done, start + done));
        } catch (err) {
          throw storageError("read", path, err);
        }
        // The file shrank under us (objects are immutable, so something outside Locket did it).
        if (n === 0) {
          throw new StorageError(`short read of ${path}: ${done} of ${out.length} bytes`);
        }
        done += n;
      }
      return out;
    } finally {
      await handle.close().catch(() => {});
    }
  }

  /**
   * Size of `kind/name`.
   * @throws {NotFoundError} when the object does not exist.
   * @throws {StorageError} on an invalid kind or name, an I/O failure, or an object that is not
   *   a regular file.
   */
  async stat(kind: ObjectKind, name: string): Promise<ObjectInfo> {
    const path = this.#path(kind, name);
    let st: Stats;
    try {
      st = await stat(path);
    } catch (err) {
      throw notFoundOr("stat", path, kind, name, err);
    }
    if (!st.isFile()) throw new StorageError(`not a regular file: ${path}`);
    return { name, size: st.size };
  }

  /**
   * Every object of `kind`; for data, walks the data/xx folders. Skips anything that is not a
   * regular file with a valid name (temp files live elsewhere, in ROOT/tmp), and objects removed
   * while listing. A missing kind folder lists as empty.
   * @throws {StorageError} on an invalid kind or an I/O failure.
   */
  async *list(kind: ObjectKind): AsyncIterable<ObjectInfo> {
    if (!OBJECT_KINDS.includes(kind)) {
      throw new StorageError(`invalid object kind: ${describeValue(kind)}`);
    }
    if (kind === "config") {
      const info = await this.#statIfFile(join(this.#root, "config"), "config");
      if (info) yield info;
      return;
    }
    const top = join(this.#root, kind);
    if (kind !== "data") {
      yield* await this.#listDir(top, (n) => isValidName(kind, n));
      return;
    }
    for (const entry of await readdirOrEmpty(top)) {
      if (!entry.isDirectory() || !/^[0-9a-f]{2}$/.test(entry.name)) continue;
      const prefix = entry.name;
      yield* await this.#listDir(
        join(top, prefix),
        (n) => n.startsWith(prefix) && isValidName(kind, n),
      );
    }
  }

  /**
   * Deletes `kind/name`; succeeds when it does not exist. The folder is not fsynced: an object
   * that reappears after a crash is harmless, since names are content hashes.
   * @throws {StorageError} on an invalid kind or name, or an I/O failure.
   */
  async remove(kind: ObjectKind, name: string): Promise<void> {
    const path = this.#path(kind, name);
    await makeWritableOnWindows(path);
    try {
      await unlink(path);
    } catch (err) {
      if (errnoCode(err) !== "ENOENT") throw storageError("unlink", path, err);
    }
  }

  /** Path of `kind/name`, after checking both so no argument can point outside ROOT. */
  #path(kind: ObjectKind, name: string): string {
    if (!OBJECT_KINDS.includes(kind)) {
      throw new StorageError(`invalid object kind: ${describeValue(kind)}`);
    }
    if (!isValidName(kind, name)) {
      throw new StorageError(`invalid object name for kind ${kind}: ${describeValue(name)}`);
    }
    if (kind === "config") return join(this.#root, "config");
    if (kind === "data") return join(this.#root, "data", name.slice(0, 2), name);
    return join(this.#root, kind, name);
  }

  /** Writes `data` to a new fsynced, read-only file in ROOT/tmp and returns its path. */
  async #writeTemp(data: Uint8Array): Promise<string> {
    const { tmp, handle } = await this.#openTemp();
    try {
      await handle.writeFile(data);
    } catch (err) {
      await discardTemp(tmp, handle);
      throw storageError("write", tmp, err);
    }
    await syncAndClose(tmp, handle);
    return tmp;
  }

  /** Creates a new, empty temp file in ROOT/tmp, open for writing. */
  async #openTemp(): Promise<{ tmp: string; handle: FileHandle }> {
    const tmpDir = join(this.#root, "tmp");
    const tmp = join(tmpDir, randomBytes(16).toString("hex"));
    // Created read-only: the open descriptor can still write, later opens cannot.
    const handle = await this.#retryAfterMkdir(
      tmpDir,
      () => open(tmp, "wx", OBJECT_MODE),
      "create",
      tmp,
    );
    return { tmp, handle };
  }

  /**
   * Runs `op`; when it fails with ENOENT (its folder is missing), creates `dir` and runs it once
   * more. `onError` may throw a more specific error for an errno code; otherwise failures become
   * StorageError naming `verb` and `path`.
   */
  async #retryAfterMkdir<T>(
    dir: string,
    op: () => Promise<T>,
    verb: string,
    path: string,
    onError?: (code: string | undefined) => void,
  ): Promise<T> {
    try {
      return await op();
    } catch (err) {
      const code = errnoCode(err);
      onError?.(code);
      if (code !== "ENOENT") throw storageError(verb, path, err);
    }
    await this.#ensureDir(dir.slice(this.#root.length + 1));
    try {
      return await op();
    } catch (err) {
      onError?.(errnoCode(err));
      throw storageError(verb, path, err);
    }
  }

  /**
   * Creates `rel` (relative to ROOT) one level at a time, fsyncing the parent of each folder it
   * creates. Deliberately not recursive from ROOT: a vanished repository must fail, not be
   * silently recreated empty.
   */
  async #ensureDir(rel: string): Promise<void> {
    let dir = this.#root;
    // Empty parts are skipped so that ROOT itself is never created here.
    for (const part of rel.split(/[\\/]/).filter((p) => p !== "")) {
      const parent = dir;
      dir = join(dir, part);
      try {
        await mkdir(dir);
      } catch (err) {
        if (errnoCode(err) === "EEXIST") continue;
        throw storageError("mkdir", dir, err);
      }
      await fsyncDir(parent);
    }
  }

  /** Lists the regular files of `dir` whose names pass `accept`, with sizes. */
  async #listDir(dir: string, accept: (name: string) => boolean): Promise<ObjectInfo[]> {
    const names = (await readdirOrEmpty(dir))
      .filter((e) => (e.isFile() || e.isSymbolicLink()) && accept(e.name))
      .map((e) => e.name);
    const out: ObjectInfo[] = [];
    for (let i = 0; i < names.length; i += LIST_PARALLELISM) {
      const batch = names.slice(i, i + LIST_PARALLELISM);
      const infos = await Promise.all(batch.map((n) => this.#statIfFile(join(dir, n), n)));
      for (const info of infos) if (info) out.push(info);
    }
    return out;
  }

  /** `{ name, size }` of the regular file at `path`, or undefined when it is gone or not a file. */
  async #statIfFile(path: string, name: string): Promise<ObjectInfo | undefined> {
    try {
      const st = await stat(path);
      return st.isFile() ? { name, size: st.size } : undefined;
    } catch (err) {
      // Removed between readdir and stat: it is simply not there any more.
      if (errnoCode(err) === "ENOENT") return undefined;
      throw storageError("stat", path, err);
    }
  }
}

/** The errno code of a Node error (`"ENOENT"`), if it has one. */
function errnoCode(err: unknown): string | undefined {
  if (typeof err === "object" && err !== null && "code" in err && typeof err.code === "string") {
    return err.code;
  }
  return undefined;
}

/** A StorageError naming the failed operation, the errno code and the path; `err` is the cause. */
function storageError(verb: string, path: string, err: unknown): StorageError {
  const code = errnoCode(err);
  const errno = (err as { errno?: unknown } | undefined)?.errno;
  let reason: string;
  if (!code) reason = err instanceof Error ? err.message : String(err);
  // "no space left on device (ENOSPC)": the code alone told users little.
  else if (typeof errno === "number") reason = `${getSystemErrorMessage(errno)} (${code})`;
  else reason = code;
  return new StorageError(`${verb} ${path}: ${reason}`, { cause: err });
}

/** NotFoundError for ENOENT (the object is missing), StorageError for anything else. */
function notFoundOr(
  verb: string,
  path: string,
  kind: ObjectKind,
  name: string,
  err: unknown,
): Error {
  if (errnoCode(err) === "ENOENT") return new NotFoundError(`object not found: ${kind}/${name}`);
  return storageError(verb, path, err);
}

/**
 * mkdir that maps failures to StorageError; returns the first folder created, if any.
 * @throws {StorageError} when the folder cannot be created.
 */
async function mkdirOrFail(dir: string, options: { recursive: true }): Promise<string | undefined> {
  try {
    return await mkdir(dir, options);
  } catch (err) {
    throw storageError("mkdir", dir, err);
  }
}

/** Closes and removes a temp file that will not be placed; never throws. */
async function discardTemp(tmp: string, handle: FileHandle): Promise<void> {
  await handle.close().catch(() => {});
  await unlink(tmp).catch(() => {});
}

/**
 * fsyncs and closes a written temp file; on failure removes it and throws StorageError. close
 * can report deferred write errors (NFS), so it is awaited too.
 */
async function syncAndClose(tmp: string, handle: FileHandle): Promise<void> {
  try {
    await handle.sync();
  } catch (err) {
    await discardTemp(tmp, handle);
    throw storageError("fsync", tmp, err);
  }
  try {
    await handle.close();
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw storageError("close", tmp, err);
  }
}

/**
 * An object written in parts to a temp file (FsStorage.createWriter). Each write goes to its own
 * offset, so writes in flight together land in call order; the first failure is kept, and
 * `commit` reports it after removing the file.
 */
class FsObjectWriter implements ObjectWriter {
  readonly #tmp: string;
  readonly #handle: FileHandle;
  readonly #place: (name: string) => Promise<void>;
  /** Bytes asked for so far: the offset of the next write. */
  #size = 0;
  readonly #inflight = new Set<Promise<void>>();
  #failure: unknown;
  #done = false;

  constructor(tmp: string, handle: FileHandle, place: (name: string) => Promise<void>) {
    this.#tmp = tmp;
    this.#handle = handle;
    this.#place = place;
  }

  write(...parts: Uint8Array[]): Promise<void> {
    if (this.#done) {
      return Promise.reject(new StorageError(`write to ${this.#tmp} after commit or abort`));
    }
    const at = this.#size;
    for (const part of parts) this.#size += part.length;
    const write = writeAllAt(this.#handle, parts, at).catch((err) => {
      const error = storageError("write", this.#tmp, err);
      this.#failure ??= error;
      throw error;
    });
    const tracked = write.then(
      () => {},
      () => {},
    );
    this.#inflight.add(tracked);
    tracked.then(() => this.#inflight.delete(tracked));
    return write;
  }

  async commit(name: string): Promise<void> {
    if (this.#done) throw new StorageError(`commit of ${this.#tmp} after commit or abort`);
    this.#done = true;
    await Promise.all(this.#inflight);
    if (this.#failure) {
      await discardTemp(this.#tmp, this.#handle);
      throw this.#failure;
    }
    await syncAndClose(this.#tmp, this.#handle);
    try {
      await this.#place(name);
    } catch (err) {
      await unlink(this.#tmp).catch(() => {}); // gone already unless the name was refused
      throw err;
    }
  }

  async abort(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    await Promise.all(this.#inflight);
    await discardTemp(this.#tmp, this.#handle);
  }
}

/** Writes all of `parts` at file offset `at`, however many calls that takes. */
async function writeAllAt(handle: FileHandle, parts: Uint8Array[], at: number): Promise<void> {
  let pending = parts.filter((part) => part.length > 0);
  let position = at;
  while (pending.length > 0) {
    let { bytesWritten } = await handle.writev(pending, position);
    if (bytesWritten === 0) throw new Error("the disk accepted no bytes (a zero-length write)");
    position += bytesWritten;
    // A short write: go on from the first byte not written.
    while (pending.length > 0 && bytesWritten >= pending[0].length) {
      bytesWritten -= pending[0].length;
      pending = pending.slice(1);
    }
    if (bytesWritten > 0) pending = [pending[0].subarray(bytesWritten), ...pending.slice(1)];
  }
}

/** Fsyncs the parent of every folder from `created` down to `leaf` (all newly created). */
async function fsyncCreated(leaf: string, created: string): Promise<void> {
  for (let dir = leaf; ; dir = dirname(dir)) {
    await fsyncDir(dirname(dir));
    if (dir === created || dirname(dir) === dir) return;
  }
}

/** The entries of `dir`, or none when it does not exist. */
async function readdirOrEmpty(dir: string) {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return [];
    throw storageError("readdir", dir, err);
  }
}

/**
 * Errors of a folder's fsync that mean the filesystem cannot do it, which restic ignores too
 * (ENOTTY on macOS network mounts). Windows cannot open a folder at all: callers skip it there.
 */
export const DIR_FSYNC_UNSUPPORTED: ReadonlySet<string> = new Set([
  "EINVAL",
  "ENOTSUP",
  "EOPNOTSUPP",
  "ENOTTY",
]);

/**
 * Makes a folder's entries durable, where the filesystem can (DIR_FSYNC_UNSUPPORTED).
 * @throws {StorageError} on any other failure.
 */
async function fsyncDir(dir: string): Promise<void> {
  if (process.platform === "win32") return;
  let handle: FileHandle | undefined;
  try {
    handle = await open(dir, "r");
    await handle.sync();
  } catch (err) {
    if (!DIR_FSYNC_UNSUPPORTED.has(errnoCode(err) ?? "")) {
      throw storageError("fsync", dir, err);
    }
  } finally {
    await handle?.close().catch(() => {});
  }
}

/** Windows refuses to replace or delete a read-only file; elsewhere this does nothing. */
async function makeWritableOnWindows(path: string): Promise<void> {
  if (process.platform !== "win32") return;
  await chmod(path, 0o666).catch(() => {});
}
