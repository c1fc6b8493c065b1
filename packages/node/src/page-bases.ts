import { createHash } from "node:crypto";
import {
  closeSync,
  constants,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  rmSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { type FileHandle, mkdir, open, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { DatabaseSync } from "node:sqlite";
import type { PageBaseImage, PageBaseStore } from "@locket/core";
import { BUSY, takeLock } from "./file-lock.ts";
import { DIR_FSYNC_UNSUPPORTED } from "./storage/fs.ts";

/**
 * Image bytes written between two flushes begun in the background. A first backup writes the
 * whole database's image while it is busy compressing (the disk mostly idle); left dirty, the
 * image went to the disk all at once at the end, when the media's reads and packs needed it.
 */
const FLUSH_BYTES = 32 * 1024 * 1024;

/**
 * The base images of a repository's databases on this device (see PageDeltas in
 * @locket/core): one file per database, named by a hash of its path in the snapshot, in a folder
 * of the cache, owner-only. An image holds database pages in plain text, as the database itself
 * does. It is a cache: deleting it costs the next backup whole pages, never data.
 */
export class FsPageBaseStore implements PageBaseStore {
  readonly dir: string;
  readonly #onWarning: (message: string) => void;
  /** Paths already warned about: one warning per database and backup. */
  readonly #warned = new Set<string>();

  /**
   * A database's lock is this object's from its first use in a backup to `release` (or the
   * close of its image): backups that run at the same time need a store each. `onWarning` hears
   * why a database goes without its image when the reason is not another backup holding it (a
   * cache folder that cannot be made, a filesystem without locks): each backup then stores that
   * database's changed pages whole, which the user should know.
   */
  constructor(dir: string, options: { onWarning?: (message: string) => void } = {}) {
    this.dir = dir;
    this.#onWarning = options.onWarning ?? (() => {});
  }

  #warn(path: string, why: string): void {
    if (this.#warned.has(path)) return;
    this.#warned.add(path);
    this.#onWarning(
      `page deltas off for ${path} in this backup: ${why} (changed pages stored whole)`,
    );
  }

  /**
   * The image file of the database at snapshot path `path` (the workers read it too). Named
   * `.image`: builds before certified images wrote `.pages` files, and must not write to an
   * image that a memo of this build certifies.
   */
  imagePath(path: string): string {
    return join(this.dir, `${fileName(path)}.image`);
  }

  /**
   * The delta memo beside the image (see DeltaMemo in @locket/core), for a backup that holds the
   * database's lock (taken here): none while another backup of it runs, since that one may
   * write to the image the memo certifies.
   */
  async readMemo(path: string): Promise<Uint8Array | undefined> {
    if (!this.lock(path)) return undefined;
    try {
      return new Uint8Array(await readFile(this.memoPath(path)));
    } catch {
      return undefined;
    }
  }

  /** Lets go of the database's lock, if this store holds it (`close` of its image does too). */
  release(path: string): void {
    const file = this.lockPath(path);
    const held = holders.get(file);
    if (held?.store !== this) return;
    holders.delete(file);
    try {
      held.db.close();
    } catch {}
  }

  /**
   * Takes the lock of the database at `path` for this store: an exclusive transaction on a small
   * SQLite file (`<name>.lock.db`), which the operating system lets go of when the process ends,
   * however it ends, so no lock outlives its backup and none is ever taken over. False when
   * another backup (here or in another process) holds it: then this one neither trusts nor
   * writes the image, which costs it time and bytes, never data.
   */
  private lock(path: string): boolean {
    const file = this.lockPath(path);
    if (holders.get(file)?.store === this) return true;
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      this.#warn(path, `cannot make ${this.dir}: ${(err as Error).message}`);
      return false;
    }
    const db = takeLock(file);
    if (typeof db === "string") {
      // Another backup of this database holds it: that one uses the image, this one does not.
      if (db !== BUSY) this.#warn(path, `cannot lock ${file}: ${db}`);
      return false;
    }
    holders.set(file, { store: this, db });
    tagAsCache(this.dir);
    // What an earlier build used as the lock (a file with its process ID): never read again.
    try {
      rmSync(join(this.dir, `${fileName(path)}.lock`), { force: true });
    } catch {}
    return true;
  }

  private lockPath(path: string): string {
    return join(this.dir, `${fileName(path)}.lock.db`);
  }

  /** Written to a temporary name and renamed over the old memo: never half a memo. */
  async writeMemo(path: string, bytes: Uint8Array): Promise<void> {
    const memo = this.memoPath(path);
    const tmp = `${memo}.tmp`;
    try {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      await writeFile(tmp, bytes, { mode: 0o600 });
      await rename(tmp, memo);
    } catch {
      // A memo that cannot be written costs the next backup some hashing, never data.
      await rm(tmp, { force: true }).catch(() => {});
    }
  }

  private memoPath(path: string): string {
    return join(this.dir, `${fileName(path)}.memo`);
  }

  async open(path: string): Promise<PageBaseImage> {
    // Another backup of this database holds the image: this one works without it.
    if (!this.lock(path)) return NO_IMAGE;
    let fh: FileHandle;
    try {
      // The folder exists: taking the lock made it.
      fh = await open(this.imagePath(path), constants.O_RDWR | constants.O_CREAT, 0o600);
    } catch {
      // A cache that cannot be opened (read-only, full, not a folder) costs whole pages only.
      this.release(path);
      return NO_IMAGE;
    }
    // What an earlier build kept under the old name: never read again.
    await rm(join(this.dir, `${fileName(path)}.pages`), { force: true }).catch(() => {});
    const release = () => this.release(path);
    // A failed write (a full disk) leaves the image stale where it failed, which the next backup
    // detects page by page; it must not fail this backup, so later writes are skipped instead.
    let writable = true;
    const memo = this.memoPath(path);
    let memoRemoved = false;
    // Reads go to one buffer, grown as needed: a new one per read was a day's backup's garbage.
    let buf = new Uint8Array(0);
    let unflushed = 0;
    let flushing: Promise<void> | undefined;
    return {
      async read(offset, length) {
        if (buf.length < length) buf = new Uint8Array(Math.max(length, 2 * buf.length));
        let got = 0;
        while (got < length) {
          const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
        return buf.subarray(0, got);
      },
      // Synchronous on purpose: the writes go to the page cache and return in microseconds, while
      // an asynchronous write per run of pages queued behind the segments' compression on the
      // threadpool and cost the main thread more than the write itself (3,822 writes, 21 MB, on
      // the benchmark's random-rows day: ~0.27 s of main-thread time and ~0.8 s awaited, against
      // 30-80 ms synchronous; that day's backup 2.57 -> 2.30 s, median of 4 alternating runs).
      async write(offset, bytes) {
        if (!writable) return;
        // The memo may certify the image as it is: it goes first, for good, or nothing is written.
        if (!memoRemoved) {
          memoRemoved = true;
          if (!removeDurably(memo)) {
            writable = false;
            return;
          }
        }
        try {
          for (let done = 0; done < bytes.length; ) {
            done += writeSync(fh.fd, bytes, done, bytes.length - done, offset + done);
          }
        } catch {
          writable = false;
          return;
        }
        unflushed += bytes.length;
        if (unflushed >= FLUSH_BYTES && !flushing) {
          unflushed = 0;
          flushing = fh
            .datasync()
            .catch(() => {
              // The kernel reports a write-back error once per file: the next datasync (sync's)
              // could succeed with these pages lost, so the image must never be certified now.
              writable = false;
            })
            .finally(() => {
              flushing = undefined;
            });
        }
      },
      async sync() {
        if (!writable) return false;
        try {
          await flushing;
          await fh.datasync();
          return writable;
        } catch {
          return false;
        }
      },
      async close() {
        try {
          await flushing;
          await fh.close();
        } finally {
          release();
        }
      },
    };
  }
}

/**
 * Removes file `path` and makes that durable where the filesystem can (an fsync of its folder;
 * see DIR_FSYNC_UNSUPPORTED); true when it is gone, or was not there.
 */
function removeDurably(path: string): boolean {
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") return false;
  }
  if (process.platform === "win32") return true;
  let fd: number | undefined;
  try {
    fd = openSync(dirname(path), "r");
    fsyncSync(fd);
    return true;
  } catch (err) {
    return DIR_FSYNC_UNSUPPORTED.has((err as NodeJS.ErrnoException).code ?? "");
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Marks `dir` as a cache folder (https://bford.info/cachedir/), so backup tools that honour the
 * tag (restic and borg with --exclude-caches, GNU tar with --exclude-caches) leave the images
 * out. Best effort: a tag that cannot be written changes nothing here.
 */
function tagAsCache(dir: string): void {
  const tag = join(dir, "CACHEDIR.TAG");
  if (existsSync(tag)) return;
  try {
    writeFileSync(
      tag,
      "Signature: 8a477f597d28d172789f06886806bc55\n" +
        "# This file is a cache directory tag created by Locket (base images of databases).\n" +
        "# For information about cache directory tags, see https://bford.info/cachedir/\n",
      { mode: 0o600 },
    );
  } catch {}
}

/** The locks the stores of this process hold: lock file → the store and its connection. */
const holders = new Map<string, { store: FsPageBaseStore; db: DatabaseSync }>();

/** The name of a database's files in the store: a hash of its path in the snapshot. */
function fileName(path: string): string {
  return createHash("sha256").update(path).digest("hex").slice(0, 32);
}

/** An image that holds nothing and keeps nothing. */
const NO_IMAGE: PageBaseImage = {
  read: async () => new Uint8Array(0),
  write: async () => {},
  close: async () => {},
};
