import { OutOfRangeError } from "../errors.ts";

/**
 * The storage interface every backend implements (local folder, memory, S3). Modelled on
 * restic's backend: a flat namespace of immutable objects grouped by kind. The doc comments are
 * the contract; `test/storage-conformance.ts` checks it, and every backend must pass it.
 *
 * Backends see only encrypted bytes and opaque names. They never interpret content.
 */

/** Object kinds; each is a folder (or key prefix) of its own. */
export type ObjectKind = "config" | "data" | "index" | "snapshots";

/** All kinds, in the order `check` and tools walk them. */
export const OBJECT_KINDS: readonly ObjectKind[] = ["config", "data", "index", "snapshots"];

/** An object's name and size as listed. */
export interface ObjectInfo {
  readonly name: string;
  readonly size: number;
}

/** Options for `Storage.save`. */
export interface SaveOptions {
  /**
   * Create only: fail with AlreadyExistsError when an object of that name exists. Backends
   * implement it atomically where they can (link(2), S3 `If-None-Match: *`).
   */
  readonly exclusive?: boolean;
}

export interface Storage {
  /** Where the repository lives, for messages (a path, or `s3://bucket/prefix`; never credentials). */
  readonly location: string;

  /**
   * Stores `data` as `kind/name`. Atomic and durable when it resolves: a reader sees the whole
   * object or none of it, and it survives a crash or power loss (local: temp file, fsync,
   * rename, fsync of the folder). Saving a name that exists replaces it, unless `exclusive`.
   * Names are lowercase hex (64 digits), except the single object of kind "config", named "config".
   * `data` is the caller's again once the call settles: a backend that keeps it copies it.
   * @throws {AlreadyExistsError} when `exclusive` is set and the object exists.
   * @throws {StorageError} on any I/O failure; nothing partial is left visible under `name`.
   */
  save(kind: ObjectKind, name: string, data: Uint8Array, options?: SaveOptions): Promise<void>;

  /**
   * Optional: starts writing an object of `kind` whose name is known only once all of it is
   * written (a pack, named by its trailer's hash), so that a writer need not hold it whole in
   * memory. The object is invisible (never listed, never loadable) until `commit`. Backends that
   * cannot write an object before naming it leave this out (S3 has no rename); callers then
   * buffer the object and `save` it (`Repository.createPackWriter` does).
   * @throws {StorageError} on an invalid kind ("config" has a fixed name) or an I/O failure.
   */
  createWriter?(kind: ObjectKind): Promise<ObjectWriter>;

  /**
   * Optional, for a backend that keeps objects being written where they take space (local temp
   * files), which a process killed while writing leaves behind: removes those nothing has
   * touched for `olderThanMs` and returns how many. An object being written is touched by every
   * write, so it is never that old. `prune` calls it.
   * @throws {StorageError} on an I/O failure.
   */
  removeStale?(olderThanMs: number): Promise<number>;

  /**
   * Reads `kind/name`: the whole object, or `length` bytes from `offset` (without `length`: from
   * `offset` to the end; `length` 0 gives an empty array). Idempotent. A range that reaches past
   * the end is an error, never a short read.
   * @throws {NotFoundError} when the object does not exist.
   * @throws {StorageError} on I/O failure; {OutOfRangeError} (a StorageError) for a range
   *   outside the object.
   */
  load(kind: ObjectKind, name: string, offset?: number, length?: number): Promise<Uint8Array>;

  /**
   * Size of `kind/name` in bytes.
   * @throws {NotFoundError} when the object does not exist.
   * @throws {StorageError} on I/O failure.
   */
  stat(kind: ObjectKind, name: string): Promise<ObjectInfo>;

  /**
   * Every object of `kind`, each exactly once, in no particular order. Objects being written
   * (temporary files) are never listed.
   * @throws {StorageError} on I/O failure (raised from the iteration, not the call).
   */
  list(kind: ObjectKind): AsyncIterable<ObjectInfo>;

  /**
   * Deletes `kind/name`. Deleting an object that does not exist succeeds (idempotent).
   * @throws {StorageError} on I/O failure.
   */
  remove(kind: ObjectKind, name: string): Promise<void>;
}

/** An object being written by `Storage.createWriter`. */
export interface ObjectWriter {
  /**
   * Appends `parts`, in order, after everything written before. Several writes may be in flight
   * at once: the object's bytes are those of the calls in call order. The caller must not change
   * the parts' bytes until the returned promise settles.
   * @throws {StorageError} on an I/O failure (the object can then only be aborted), or after
   *   `commit` or `abort`.
   */
  write(...parts: Uint8Array[]): Promise<void>;
  /**
   * Waits for every write, then stores the object as `kind/name` as `save` would (atomic and
   * durable when it resolves; an existing object of that name is replaced). The writer is then
   * done.
   * @throws {StorageError} on an invalid name, a failed write or any I/O failure; nothing is
   *   left visible under `name` and the partial object is removed.
   */
  commit(name: string): Promise<void>;
  /** Discards what was written; the writer is then done. Idempotent, and never throws. */
  abort(): Promise<void>;
}

/**
 * Whether `name` is a valid object name for `kind` (guards backends against path tricks). Every
 * method throws StorageError for an invalid name before touching storage.
 */
export function isValidName(kind: ObjectKind, name: string): boolean {
  return kind === "config" ? name === "config" : /^[0-9a-f]{64}$/.test(name);
}

/** Quotes a caller-supplied string for a message, cut short so a huge argument stays readable. */
export function describeValue(value: unknown): string {
  const s = JSON.stringify(String(value));
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/**
 * Resolves `offset`/`length` against an object of `size` bytes into `[start, end)`.
 * @throws {StorageError} when the range is not whole numbers or reaches outside the object.
 */
export function resolveRange(
  kind: ObjectKind,
  name: string,
  size: number,
  offset = 0,
  length?: number,
): [number, number] {
  const end = length === undefined ? size : offset + length;
  const valid =
    Number.isSafeInteger(offset) &&
    offset >= 0 &&
    (length === undefined || (Number.isSafeInteger(length) && length >= 0)) &&
    offset <= size &&
    end <= size;
  if (!valid) {
    throw new OutOfRangeError(
      `range offset ${offset} length ${length ?? "to end"} is outside ${kind}/${name} (${size} bytes)`,
    );
  }
  return [offset, end];
}
