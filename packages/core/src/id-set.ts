import { copyIdAt, equalBytes, parseHexId, sameIdAt, toHex } from "./bytes.ts";
import { ID_BYTES } from "./format/blob.ts";

const EMPTY = 0;

/**
 * A set of 32-byte blob IDs in typed arrays: ~40-50 bytes per ID, where a Set of hex strings took
 * ~130 and gave the garbage collector an object per ID (prune marks every blob a snapshot
 * reaches: 1.25 M of them in a grown benchmark repository). Open addressing with linear probing
 * on the ID's first four bytes (blob IDs are HMAC outputs, so those are already a uniform hash),
 * the table at most half full. IDs keep the number of their insertion (`indexOf`), which
 * BlobIndex uses to find a blob's location in arrays of its own.
 */
export class IdSet {
  private ids: Uint8Array;
  private slots: Uint32Array; // ID number + 1, or EMPTY
  private count = 0;
  private readonly scratch = new Uint8Array(ID_BYTES);

  constructor(capacity = 1024) {
    this.ids = new Uint8Array(capacity * ID_BYTES);
    let slots = 16;
    while (slots < capacity * 2) slots *= 2;
    this.slots = new Uint32Array(slots);
  }

  /** Number of IDs. */
  get size(): number {
    return this.count;
  }

  /** Whether `id` (32 bytes) is in the set. */
  has(id: Uint8Array): boolean {
    return this.indexOf(id) >= 0;
  }

  /** `has` for a hex ID; false for anything that is not 64 lowercase hex digits. */
  hasHex(hex: string): boolean {
    return this.indexOfHex(hex) >= 0;
  }

  /** The number of `id` (32 bytes) in insertion order, from 0; -1 when absent or not 32 bytes. */
  indexOf(id: Uint8Array): number {
    return id.length === ID_BYTES ? this.slots[this.find(id)] - 1 : -1;
  }

  /**
   * `indexOf` for the 32 bytes of `bytes` at `at`, without a view of them (a day's backup asks
   * about each of a database's ~95 k pages); -1 when absent or when `bytes` ends before them.
   */
  indexOfAt(bytes: Uint8Array, at: number): number {
    return at >= 0 && at + ID_BYTES <= bytes.length ? this.slots[this.find(bytes, at)] - 1 : -1;
  }

  /** `indexOf` for a hex ID; -1 for anything that is not 64 lowercase hex digits. */
  indexOfHex(hex: string): number {
    return parseHexId(hex, this.scratch) ? this.indexOf(this.scratch) : -1;
  }

  /** Makes room for `total` IDs at once, rather than growing step by step. */
  reserve(total: number): void {
    let slots = this.slots.length;
    while (total * 2 > slots) slots *= 2;
    if (slots > this.slots.length) this.grow(slots);
    if (total * ID_BYTES > this.ids.length) this.growIds(total * ID_BYTES);
  }

  /**
   * Adds `id` (32 bytes; copied); returns whether it was new.
   * @throws {RangeError} for an ID of another length.
   */
  add(id: Uint8Array): boolean {
    if (id.length !== ID_BYTES) {
      throw new RangeError(`blob id: expected ${ID_BYTES} bytes, got ${id.length}`);
    }
    return this.addAt(id, 0);
  }

  /**
   * `add` for the 32 bytes of `bytes` at `at` (copied), without a view of them: an index file's
   * entries are added where they lie in it.
   * @throws {RangeError} when `bytes` ends before them.
   */
  addAt(bytes: Uint8Array, at: number): boolean {
    if (!(at >= 0 && at + ID_BYTES <= bytes.length)) {
      throw new RangeError(`blob id: ${ID_BYTES} bytes at ${at} of ${bytes.length}`);
    }
    if ((this.count + 1) * 2 > this.slots.length) this.grow();
    const s = this.find(bytes, at);
    if (this.slots[s] !== EMPTY) return false;
    const n = this.count++;
    if ((n + 1) * ID_BYTES > this.ids.length) this.growIds(this.ids.length * 2);
    copyIdAt(this.ids, n * ID_BYTES, bytes, at);
    this.slots[s] = n + 1;
    return true;
  }

  /**
   * `add` for a hex ID.
   * @throws {RangeError} for anything that is not 64 lowercase hex digits.
   */
  addHex(hex: string): boolean {
    if (!parseHexId(hex, this.scratch)) {
      throw new RangeError(`not a blob id: ${JSON.stringify(hex)}`);
    }
    return this.add(this.scratch);
  }

  /** Calls `f` with each ID (a view, valid during the call), in the order they were added. */
  forEach(f: (id: Uint8Array) => void): void {
    for (let n = 0; n < this.count; n++) f(this.ids.subarray(n * ID_BYTES, (n + 1) * ID_BYTES));
  }

  /** The first ID, in the order added, for which `f` is true, as hex; undefined if none. */
  findHex(f: (id: Uint8Array) => boolean): string | undefined {
    for (let n = 0; n < this.count; n++) {
      const id = this.ids.subarray(n * ID_BYTES, (n + 1) * ID_BYTES);
      if (f(id)) return toHex(id);
    }
    return undefined;
  }

  /** The slot holding the ID at `from` in `id`, or the empty slot where it would go. */
  private find(id: Uint8Array, from = 0): number {
    const mask = this.slots.length - 1;
    let s = (id[from] | (id[from + 1] << 8) | (id[from + 2] << 16) | (id[from + 3] << 24)) & mask;
    for (;;) {
      const n = this.slots[s];
      if (n === EMPTY) return s;
      const at = (n - 1) * ID_BYTES;
      let k = 0;
      while (k < ID_BYTES && this.ids[at + k] === id[from + k]) k++;
      if (k === ID_BYTES) return s;
      s = (s + 1) & mask;
    }
  }

  private growIds(bytes: number): void {
    const ids = new Uint8Array(Math.max(bytes, ID_BYTES));
    ids.set(this.ids.subarray(0, this.count * ID_BYTES));
    this.ids = ids;
  }

  // Keeps the table at most half full, so probes stay short.
  private grow(slots = this.slots.length * 2): void {
    this.slots = new Uint32Array(slots);
    // By offset, not a view per ID: growing a 1 M-ID set made a million short-lived objects.
    for (let n = 0; n < this.count; n++) this.slots[this.find(this.ids, n * ID_BYTES)] = n + 1;
  }
}

/**
 * A set of 32-byte IDs that can shrink, for the IDs of a few packs at a time (the packer's blobs
 * queued and not yet indexed): a Map keyed by each ID's first 30 bits, a small integer, so no
 * hex string is made per question (a day's backup asks about every changed page several times).
 * IDs are held by reference: the caller must not change their bytes while they are in the set.
 */
export class IdRefSet {
  private readonly byKey = new Map<number, Uint8Array | Uint8Array[]>();
  private count = 0;

  /** Number of IDs held. */
  get size(): number {
    return this.count;
  }

  has(id: Uint8Array): boolean {
    return id.length === ID_BYTES && this.hasAt(id, 0);
  }

  /** `has` for the 32 bytes of `bytes` at `at`, without a view of them. */
  hasAt(bytes: Uint8Array, at: number): boolean {
    if (!(at >= 0 && at + ID_BYTES <= bytes.length)) return false;
    const held = this.byKey.get(keyOf(bytes, at));
    if (held === undefined) return false;
    if (!Array.isArray(held)) return sameAt(held, bytes, at);
    for (const other of held) if (sameAt(other, bytes, at)) return true;
    return false;
  }

  /** Adds `id` (32 bytes). Callers add an ID once; a duplicate is harmless (delete drops both). */
  add(id: Uint8Array): void {
    this.count++;
    const key = keyOf(id);
    const held = this.byKey.get(key);
    if (held === undefined) this.byKey.set(key, id);
    else if (Array.isArray(held)) held.push(id);
    else this.byKey.set(key, [held, id]);
  }

  /** Removes `id` where it is held. */
  delete(id: Uint8Array): void {
    const key = keyOf(id);
    const held = this.byKey.get(key);
    if (held === undefined) return;
    if (!Array.isArray(held)) {
      if (!equalBytes(held, id)) return;
      this.byKey.delete(key);
      this.count--;
      return;
    }
    const rest = held.filter((other) => !equalBytes(other, id));
    this.count -= held.length - rest.length;
    if (rest.length === 0) this.byKey.delete(key);
    else this.byKey.set(key, rest.length === 1 ? rest[0] : rest);
  }
}

/** An ID's first 30 bits: a small integer on every platform V8 runs on. */
function keyOf(id: Uint8Array, at = 0): number {
  return id[at] | (id[at + 1] << 8) | (id[at + 2] << 16) | ((id[at + 3] & 0x3f) << 24);
}

/** Whether `id` (32 bytes) is the 32 bytes of `bytes` at `at`. */
function sameAt(id: Uint8Array, bytes: Uint8Array, at: number): boolean {
  return id.length === ID_BYTES && sameIdAt(bytes, at, id);
}
