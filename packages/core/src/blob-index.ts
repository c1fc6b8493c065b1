import { type BlobType, ID_BYTES } from "./format/blob.ts";
import { PACK_ENTRY_BYTES } from "./format/pack.ts";
import { IdSet } from "./id-set.ts";

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

/**
 * The in-memory map from blob ID to location, in typed arrays: about 60 bytes per blob, where a
 * Map of hex strings to objects took about 200 and gave the garbage collector a million objects
 * to trace in a large repository. The IDs are an IdSet; a blob's location is kept in arrays of
 * its own at the ID's number in that set.
 */
export class BlobIndex {
  private readonly ids: IdSet;
  private packOf: Uint32Array;
  private types: Uint8Array;
  private fields: Uint32Array; // segmentOffset, segmentLength, offset, length per entry
  private readonly packs: string[] = [];
  private readonly packNumbers = new Map<string, number>();

  constructor(capacity = 1024) {
    this.ids = new IdSet(capacity);
    this.packOf = new Uint32Array(capacity);
    this.types = new Uint8Array(capacity);
    this.fields = new Uint32Array(capacity * 4);
  }

  /** Number of blobs. */
  get size(): number {
    return this.ids.size;
  }

  /** Whether blob `id` (hex) is indexed. */
  has(id: string): boolean {
    return this.ids.hasHex(id);
  }

  /** Whether blob `id` (32 bytes) is indexed. */
  hasId(id: Uint8Array): boolean {
    return this.ids.has(id);
  }

  /** `hasId` for the 32 bytes of `bytes` at `at`, without a view of them. */
  hasIdAt(bytes: Uint8Array, at: number): boolean {
    return this.ids.indexOfAt(bytes, at) >= 0;
  }

  /** The type of blob `id` (32 bytes), or undefined: `getId(id)?.type` without building a location. */
  typeOfId(id: Uint8Array): BlobType | undefined {
    return id.length === ID_BYTES ? this.typeOfIdAt(id, 0) : undefined;
  }

  /** `typeOfId` for the 32 bytes of `bytes` at `at`, without a view of them. */
  typeOfIdAt(bytes: Uint8Array, at: number): BlobType | undefined {
    const n = this.ids.indexOfAt(bytes, at);
    return n < 0 ? undefined : (this.types[n] as BlobType);
  }

  /** The length of blob `id` (32 bytes) when it is indexed as a blob of type `type`, else -1. */
  lengthOfId(id: Uint8Array, type: BlobType): number {
    const n = this.ids.indexOf(id);
    return n >= 0 && this.types[n] === type ? this.fields[n * 4 + 3] : -1;
  }

  /** The location of blob `id` (hex), or undefined. */
  get(id: string): BlobLocation | undefined {
    return this.locationOf(this.ids.indexOfHex(id));
  }

  /** `get` for an ID as bytes (32 of them). */
  getId(id: Uint8Array): BlobLocation | undefined {
    return this.locationOf(this.ids.indexOf(id));
  }

  private locationOf(n: number): BlobLocation | undefined {
    if (n < 0) return undefined;
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
    this.reserve(this.size + entries.length);
    for (const e of entries) this.addIn(number, e.id, e);
  }

  /**
   * Adds the blobs of pack `pack` from their encoding in an index file (PACK_ENTRY_BYTES each:
   * type, ID, segment offset and length, offset and length, little-endian), as `addPack` does,
   * without decoding them into objects. The caller has checked them (readEncodedEntries).
   */
  addEncodedPack(pack: string, encoded: Uint8Array): void {
    const number = this.packNumber(pack);
    const count = encoded.length / PACK_ENTRY_BYTES;
    this.reserve(this.size + count);
    const v = new DataView(encoded.buffer, encoded.byteOffset, encoded.byteLength);
    for (let at = 0; at < encoded.length; at += PACK_ENTRY_BYTES) {
      const f = at + 1 + ID_BYTES;
      this.addRaw(
        number,
        encoded,
        at + 1,
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
    this.ids.reserve(total);
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
    if (id.length !== ID_BYTES) {
      throw new RangeError(`blob id: expected ${ID_BYTES} bytes, got ${id.length}`);
    }
    this.addRaw(
      pack,
      id,
      0,
      loc.type,
      loc.segmentOffset,
      loc.segmentLength,
      loc.offset,
      loc.length,
    );
  }

  /** Adds the blob whose ID is the 32 bytes of `bytes` at `at`. */
  private addRaw(
    pack: number,
    bytes: Uint8Array,
    at: number,
    type: BlobType,
    segmentOffset: number,
    segmentLength: number,
    offset: number,
    length: number,
  ): void {
    if (!this.ids.addAt(bytes, at)) return; // the first location wins
    const n = this.ids.size - 1;
    if (n >= this.packOf.length) this.growEntries();
    this.packOf[n] = pack;
    this.types[n] = type;
    const f = n * 4;
    this.fields[f] = segmentOffset;
    this.fields[f + 1] = segmentLength;
    this.fields[f + 2] = offset;
    this.fields[f + 3] = length;
  }

  private growEntries(atLeast = 0): void {
    const cap = Math.max(this.packOf.length * 2, atLeast);
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
}
