import { ID_BYTES } from "../format/blob.ts";

/**
 * A file's content as a backup finds it (SPEC §8: entries of one ID, or a delta's ID followed by
 * its base's): the IDs back to back in one growing buffer, and a flag per ID that starts a delta
 * entry. The backup of the benchmark's database kept ~126 k views of 32 bytes instead, an object
 * each that outlived every young-generation collection until the file was done.
 */
export class ContentIds {
  // Grown by doubling: most files are a few IDs, a database's are ~100 k.
  private buf = new Uint8Array(64 * ID_BYTES);
  private deltas = new Uint8Array(64);
  /** IDs so far. */
  length = 0;

  /** Appends `id` (32 bytes); `delta`: it is a delta blob's, and its base's comes next. */
  push(id: Uint8Array, delta = false): void {
    if (this.length === this.deltas.length) this.grow();
    this.buf.set(id, this.length * ID_BYTES);
    this.deltas[this.length] = delta ? 1 : 0;
    this.length++;
  }

  /** Appends the ID at `bytes[at..at+32]` (not a delta's), without a view of it. */
  pushFrom(bytes: Uint8Array, at: number): void {
    if (this.length === this.deltas.length) this.grow();
    const to = this.length * ID_BYTES;
    for (let i = 0; i < ID_BYTES; i++) this.buf[to + i] = bytes[at + i];
    this.deltas[this.length] = 0;
    this.length++;
  }

  /** ID `i`, a view (valid until the next push). */
  at(i: number): Uint8Array {
    return this.buf.subarray(i * ID_BYTES, (i + 1) * ID_BYTES);
  }

  /** Whether ID `i` is a delta blob's (its base is ID `i + 1`). */
  isDelta(i: number): boolean {
    return this.deltas[i] === 1;
  }

  /** Every ID, back to back: a view (valid until the next push). */
  get bytes(): Uint8Array {
    return this.buf.subarray(0, this.length * ID_BYTES);
  }

  private grow(): void {
    const buf = new Uint8Array(this.buf.length * 2);
    buf.set(this.buf);
    this.buf = buf;
    const deltas = new Uint8Array(this.deltas.length * 2);
    deltas.set(this.deltas);
    this.deltas = deltas;
  }
}
