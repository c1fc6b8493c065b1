import { parseHexId } from "./bytes.ts";
import type { BlobType } from "./format/blob.ts";

/** Where a blob lives: its pack and its place in that pack. */
export interface BlobLocation {
  readonly pack: string;
  readonly type: BlobType;
  readonly segmentOffset: number;
  readonly segmentLength: number;
  readonly offset: number;
  readonly length: number;
}

/** Names the sealed segment a blob lives in: blobs with equal keys are read together. */
export function segmentKey(loc: BlobLocation): string {
  return `${loc.pack}:${loc.segmentOffset}`;
}

const ID_BYTES = 32;
/** An entry as index files encode it (SPEC §9): type, ID, four little-endian u32 fields. */
const ENTRY_BYTES = 1 + ID_BYTES + 16;
const EMPTY = 0;

/**
 * The in-memory map from blob ID to location, in typed arrays: about 60 bytes per blob, where a
 * Map of hex strings to objects took about 200 and gave the garbage collector a million objects
 * to trace in a large repository. Open addressing with linear probing; blob IDs are HMAC outputs,
 * so their first four bytes are already a uniform hash.
 */
export class BlobIndex {
  private ids: Uint8Array;
  private packOf: Uint32Array;
  private types: Uint8Array;
  private fields: Uint32Array; // segmentOffset, segmentLength, offset, length per entry
  private slots: Uint32Array; // entry number + 1, or EMPTY
  private count = 0;
  private readonly packs: string[] = [];
  private readonly packNumbers = new Map<string, number>();
  private readonly scratch = new Uint8Array(ID_BYTES);

  constructor(capacity = 1024) {
    this.ids = new Uint8Array(capacity * ID_BYTES);
    this.packOf = new Uint32Array(capacity);
    this.types = new Uint8Array(capacity);
    this.fields = new Uint32Array(capacity * 4);
    this.slots = new Uint32Array(capacity * 2);
  }

  /** Number of blobs. */
  get size(): number {
    return this.count;
  }

  /** Parses a hex ID into the scratch buffer; false when it is not 64 lowercase hex digits. */
  private parse(hex: string): boolean {
    return parseHexId(hex, this.scratch);
  }

  /** Slot of `id` (in the scratch buffer or given), or of the empty slot where it would go. */
  private find(id: Uint8Array): number {
    const mask = this.slots.length - 1;
    let s = ((id[0] << 24) | (id[1] << 16) | (id[2] << 8) | id[3]) & mask;
    for (;;) {
      const e = this.slots[s];
      if (e === EMPTY) return s;
      const base = (e - 1) * ID_BYTES;
      let same = true;
      for (let i = 0; i < ID_BYTES; i++) {
        if (this.ids[base + i] !== id[i]) {
          same = false;
          break;
        }
      }
      if (same) return s;
      s = (s + 1) & mask;
    }
  }

  /** Whether blob `id` (hex) is indexed. */
  has(id: string): boolean {
    return this.parse(id) && this.slots[this.find(this.scratch)] !== EMPTY;
  }

  /** Whether blob `id` (32 bytes) is indexed. */
  hasId(id: Uint8Array): boolean {
    return id.length === ID_BYTES && this.slots[this.find(id)] !== EMPTY;
  }

  /** The type of blob `id` (hex), or undefined: `get(id)?.type` without building a location. */
  typeOf(id: string): BlobType | undefined {
    if (!this.parse(id)) return undefined;
    const e = this.slots[this.find(this.scratch)];
    return e === EMPTY ? undefined : (this.types[e - 1] as BlobType);
  }

  /** `typeOf` for an ID as bytes (32 of them). */
  typeOfId(id: Uint8Array): BlobType | undefined {
    if (id.length !== ID_BYTES) return undefined;
    const e = this.slots[this.find(id)];
    return e === EMPTY ? undefined : (this.types[e - 1] as BlobType);
  }

  /** The location of blob `id` (hex), or undefined. */
  get(id: string): BlobLocation | undefined {
    if (!this.parse(id)) return undefined;
    const e = this.slots[this.find(this.scratch)];
    if (e === EMPTY) return undefined;
    const n = e - 1;
    const f = n * 4;
    return {
      pack: this.packs[this.packOf[n]],
      type: this.types[n] as BlobType,
      segmentOffset: this.fields[f],
      segmentLength: this.fields[f + 1],
      offset: this.fields[f + 2],
      length: this.fields[f + 3],
    };
  }

  /** Adds blob `id` (32 bytes) unless already indexed (the first location wins). */
  add(id: Uint8Array, loc: BlobLocation): void {
    this.addIn(this.packNumber(loc.pack), id, loc);
  }

  /** Adds the blobs of pack `pack`, as `add` does each (without an object per blob). */
  addPack(
    pack: string,
    entries: readonly (Omit<BlobLocation, "pack"> & { id: Uint8Array })[],
  ): void {
    const number = this.packNumber(pack);
    this.reserve(this.count + entries.length);
    for (const e of entries) this.addIn(number, e.id, e);
  }

  /**
   * Adds the blobs of pack `pack` from their encoding in an index file (PACK_ENTRY_BYTES each:
   * type, ID, segment offset and length, offset and length, little-endian), as `addPack` does,
   * without decoding them into objects. The caller has checked them (readEncodedEntries).
   */
  addEncodedPack(pack: string, encoded: Uint8Array): void {
    const number = this.packNumber(pack);
    const count = encoded.length / ENTRY_BYTES;
    this.reserve(this.count + count);
    const v = new DataView(encoded.buffer, encoded.byteOffset, encoded.byteLength);
    for (let at = 0; at < encoded.length; at += ENTRY_BYTES) {
      const f = at + 1 + ID_BYTES;
      this.addRaw(
        number,
        encoded.subarray(at + 1, f),
        encoded[at] as BlobType,
        v.getUint32(f, true),
        v.getUint32(f + 4, true),
        v.getUint32(f + 8, true),
        v.getUint32(f + 12, true),
      );
    }
  }

  /** Makes room for `total` blobs at once, rather than growing step by step. */
  reserve(total: number): void {
    let slots = this.slots.length;
    while (total * 2 > slots) slots *= 2;
    if (slots > this.slots.length) this.grow(slots);
    if (total > this.packOf.length) this.growEntries(total);
  }

  private packNumber(name: string): number {
    let pack = this.packNumbers.get(name);
    if (pack === undefined) {
      pack = this.packs.length;
      this.packs.push(name);
      this.packNumbers.set(name, pack);
    }
    return pack;
  }

  private addIn(pack: number, id: Uint8Array, loc: Omit<BlobLocation, "pack">): void {
    this.addRaw(pack, id, loc.type, loc.segmentOffset, loc.segmentLength, loc.offset, loc.length);
  }

  private addRaw(
    pack: number,
    id: Uint8Array,
    type: BlobType,
    segmentOffset: number,
    segmentLength: number,
    offset: number,
    length: number,
  ): void {
    if (id.length !== ID_BYTES)
      throw new RangeError(`blob id: expected ${ID_BYTES} bytes, got ${id.length}`);
    if ((this.count + 1) * 2 > this.slots.length) this.grow();
    const s = this.find(id);
    if (this.slots[s] !== EMPTY) return;
    const n = this.count++;
    if (n >= this.packOf.length) this.growEntries();
    this.ids.set(id, n * ID_BYTES);
    this.packOf[n] = pack;
    this.types[n] = type;
    const f = n * 4;
    this.fields[f] = segmentOffset;
    this.fields[f + 1] = segmentLength;
    this.fields[f + 2] = offset;
    this.fields[f + 3] = length;
    this.slots[s] = n + 1;
  }

  private growEntries(atLeast = 0): void {
    const cap = Math.max(this.packOf.length * 2, atLeast);
    const ids = new Uint8Array(cap * ID_BYTES);
    ids.set(this.ids);
    this.ids = ids;
    const packOf = new Uint32Array(cap);
    packOf.set(this.packOf);
    this.packOf = packOf;
    const types = new Uint8Array(cap);
    types.set(this.types);
    this.types = types;
    const fields = new Uint32Array(cap * 4);
    fields.set(this.fields);
    this.fields = fields;
  }

  // Keeps the table at most half full, so probes stay short.
  private grow(slots = this.slots.length * 2): void {
    this.slots = new Uint32Array(slots);
    const id = new Uint8Array(ID_BYTES);
    for (let n = 0; n < this.count; n++) {
      id.set(this.ids.subarray(n * ID_BYTES, (n + 1) * ID_BYTES));
      this.slots[this.find(id)] = n + 1;
    }
  }
}
