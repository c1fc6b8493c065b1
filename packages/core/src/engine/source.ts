/**
 * What the backup engine reads: a tree of files and folders, provided by the platform
 * (`@locket/node` walks the file system and copies live SQLite databases consistently; a browser
 * app can provide in-memory files). The engine never touches a file system itself.
 */

export interface SourceFile {
  readonly type: "file";
  readonly name: string;
  readonly mode: number;
  readonly mtimeMs: number;
  /** Expected size, for progress; the stored size is what `open` yields. */
  readonly size: number;
  /**
   * The file's bytes. Called once. Each block may be a view into a buffer the source reuses:
   * it must stay valid only until the next block is requested. Errors abort the backup, except
   * VanishedError: the file was deleted after it was listed, and the backup goes on without it.
   */
  open(): AsyncIterable<Uint8Array>;
  /**
   * Optional: the bytes `open` would yield, as a local file, for a FileChunker that reads files
   * itself (the Node package's worker threads do, sparing the main thread the reads, copies and
   * hashing). Resolves to its path and a `close` to call once the reading is done: a SQLite
   * source holds its read transaction, or a private copy, until then. Throws VanishedError as
   * `open` does; reading the path must too.
   */
  localFile?(): Promise<LocalFile>;
  /** Optional hint: false when the content is known not to compress (media). */
  readonly compressible?: boolean;
  /**
   * Optional: a string that changes whenever the content may have changed (the platform's size,
   * mtime, inode, ctime, ...). When it equals the parent snapshot's, the file is not read.
   */
  readonly cacheKey?: string;
}

/** A local file to read by path, valid until `close` (see SourceFile.localFile). */
export interface LocalFile {
  readonly path: string;
  /**
   * An open descriptor of `path` to read through, when the file must be read that way: a
   * reader must neither close it nor open and close the path itself (closing any descriptor of
   * a file drops every POSIX lock the process holds on it, the SQLite read lock that holds a
   * database still among them). `close` closes it, after what holds the file still has ended.
   */
  readonly fd?: number;
  close(): Promise<void>;
}

export interface SourceDir {
  readonly type: "dir";
  readonly name: string;
  readonly mode: number;
  readonly mtimeMs: number;
  /** The folder's entries. */
  children(): Promise<readonly SourceEntry[]>;
}

export type SourceEntry = SourceFile | SourceDir;

/**
 * Thrown by a source when a file it listed is gone by the time it is read (a chat app deletes a
 * temporary file mid-backup). The engine leaves that file out of the snapshot and reports it
 * through BackupOptions.onSkip; any other error aborts the backup.
 */
export class VanishedError extends Error {
  constructor(path: string, options?: { cause?: unknown }) {
    super(`${path} vanished before it could be read`, options);
    this.name = "VanishedError";
  }
}

const INCOMPRESSIBLE = new Set([
  "jpg",
  "jpeg",
  "png",
  "gif",
  "webp",
  "heic",
  "heif",
  "avif",
  "mp4",
  "m4v",
  "mov",
  "3gp",
  "mkv",
  "webm",
  "avi",
  "opus",
  "ogg",
  "oga",
  "m4a",
  "mp3",
  "aac",
  "amr",
  "flac",
  "zip",
  "gz",
  "tgz",
  "zst",
  "xz",
  "bz2",
  "7z",
  "rar",
  "pdf",
  "docx",
  "xlsx",
  "pptx",
  "apk",
]);

/** Whether a file name's extension says it is already compressed (media, archives). */
export function isLikelyCompressed(name: string): boolean {
  const dot = name.lastIndexOf(".");
  return dot > 0 && INCOMPRESSIBLE.has(name.slice(dot + 1).toLowerCase());
}
