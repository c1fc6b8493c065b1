/**
 * An in-memory storage backend, for tests and for trying Locket in a browser without a server.
 * It also carries hooks that let adversarial tests damage stored objects and inject faults.
 */

import { AlreadyExistsError, NotFoundError, StorageError } from "../errors.ts";
import {
  describeValue,
  isValidName,
  OBJECT_KINDS,
  type ObjectInfo,
  type ObjectKind,
  resolveRange,
  type SaveOptions,
  type Storage,
} from "./storage.ts";

/** Options for `new MemoryStorage()`. */
export interface MemoryStorageOptions {
  /** Initial value of `MemoryStorage.failAfter`. */
  readonly failAfter?: number;
}

/**
 * A `Storage` held in a Map. Bytes are copied on the way in and out, so neither the caller of
 * `save` nor the caller of `load` can change what is stored by mutating their array; only
 * `corrupt` can.
 */
export class MemoryStorage implements Storage {
  /** Always `"memory:"`. */
  readonly location = "memory:";

  /**
   * Fault injector: once `saveCount` has reached this number, every `save` throws
   * StorageError("injected fault") and stores nothing. Undefined (the default) never fails. To
   * fail after N more saves, set it to `saveCount + N`.
   */
  failAfter: number | undefined;

  readonly #objects = new Map<ObjectKind, Map<string, Uint8Array>>();
  #saveCount = 0;

  /** Creates an empty store. Does not throw. */
  constructor(options: MemoryStorageOptions = {}) {
    this.failAfter = options.failAfter;
    for (const kind of OBJECT_KINDS) this.#objects.set(kind, new Map());
  }

  /** Number of saves that have succeeded since construction. */
  get saveCount(): number {
    return this.#saveCount;
  }

  /**
   * Stores a copy of `data` as `kind/name`; see `Storage.save`.
   * @throws {AlreadyExistsError} when `exclusive` is set and the object exists.
   * @throws {StorageError} on an invalid kind or name, or when `failAfter` is reached.
   */
  async save(
    kind: ObjectKind,
    name: string,
    data: Uint8Array,
    options: SaveOptions = {},
  ): Promise<void> {
    const objects = this.#kind(kind, name);
    if (this.failAfter !== undefined && this.#saveCount >= this.failAfter) {
      throw new StorageError("injected fault");
    }
    // Check and insert happen with no await in between, so concurrent exclusive saves of one
    // name cannot both win.
    if (options.exclusive && objects.has(name)) {
      throw new AlreadyExistsError(`object already exists: ${kind}/${name}`);
    }
    objects.set(name, new Uint8Array(data));
    this.#saveCount++;
  }

  /**
   * Returns a copy of `kind/name`, or of `length` bytes from `offset` (to the end when `length`
   * is omitted); see `Storage.load`.
   * @throws {NotFoundError} when the object does not exist.
   * @throws {StorageError} on an invalid kind or name, or a range outside the object.
   */
  async load(
    kind: ObjectKind,
    name: string,
    offset?: number,
    length?: number,
  ): Promise<Uint8Array> {
    const stored = this.#get(kind, name);
    const [start, end] = resolveRange(kind, name, stored.length, offset, length);
    return stored.slice(start, end);
  }

  /**
   * Size of `kind/name`; see `Storage.stat`.
   * @throws {NotFoundError} when the object does not exist.
   * @throws {StorageError} on an invalid kind or name.
   */
  async stat(kind: ObjectKind, name: string): Promise<ObjectInfo> {
    return { name, size: this.#get(kind, name).length };
  }

  /**
   * Every object of `kind` as of the first iteration step; see `Storage.list`.
   * @throws {StorageError} on an invalid kind.
   */
  async *list(kind: ObjectKind): AsyncIterable<ObjectInfo> {
    const objects = this.#objects.get(kind);
    if (!objects) throw new StorageError(`invalid object kind: ${describeValue(kind)}`);
    // Snapshot first: a save or remove during iteration must not make the loop skip or repeat.
    const infos = Array.from(objects, ([name, data]) => ({ name, size: data.length }));
    yield* infos;
  }

  /**
   * Deletes `kind/name`; succeeds when it does not exist. See `Storage.remove`.
   * @throws {StorageError} on an invalid kind or name.
   */
  async remove(kind: ObjectKind, name: string): Promise<void> {
    this.#kind(kind, name).delete(name);
  }

  /**
   * Test hook: replaces the stored bytes of `kind/name` with `mutate(copy of the stored bytes)`.
   * Counts as neither a save nor a fault.
   * @throws {NotFoundError} when the object does not exist.
   * @throws {StorageError} on an invalid kind or name.
   */
  corrupt(kind: ObjectKind, name: string, mutate: (b: Uint8Array) => Uint8Array): void {
    const stored = this.#get(kind, name);
    this.#kind(kind, name).set(name, new Uint8Array(mutate(stored.slice())));
  }

  #kind(kind: ObjectKind, name: string): Map<string, Uint8Array> {
    const objects = this.#objects.get(kind);
    if (!objects) throw new StorageError(`invalid object kind: ${describeValue(kind)}`);
    if (!isValidName(kind, name)) {
      throw new StorageError(`invalid object name for kind ${kind}: ${describeValue(name)}`);
    }
    return objects;
  }

  #get(kind: ObjectKind, name: string): Uint8Array {
    const stored = this.#kind(kind, name).get(name);
    if (!stored) throw new NotFoundError(`object not found: ${kind}/${name}`);
    return stored;
  }
}
