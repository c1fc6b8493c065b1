import { ByteWriter, releasable, releaseWhole } from "../bytes.ts";
import type { Primitives } from "../crypto/primitives.ts";
import { StorageError } from "../errors.ts";
import { packName } from "../format/pack.ts";
import type { ObjectKind, ObjectWriter, Storage } from "./storage.ts";

/**
 * Buffers of objects saved by BufferedObjectWriters, kept for the next ones (at most `max`; the
 * rest are released at once). A pack buffered for S3 took a fresh 16-20 MiB buffer whose pages
 * the kernel faulted in and zeroed, every pack: reused, a first backup to S3 took ~0.5 s less
 * CPU of ~5 s and peaked ~20 MiB lower (docs/benchmarks-log.md). A Repository has one.
 */
export class SpareBuffers {
  readonly #buffers: ArrayBuffer[] = [];
  readonly #max: number;

  constructor(max = 2) {
    this.#max = max;
  }

  /** A kept buffer of at least `bytes`, if there is one; it is the caller's now. */
  take(bytes: number): ArrayBuffer | undefined {
    const i = this.#buffers.findIndex((b) => b.byteLength >= bytes);
    return i < 0 ? undefined : this.#buffers.splice(i, 1)[0];
  }

  /** Keeps `buffer` (the giver holds no view of it any more), or releases it when full. */
  give(buffer: ArrayBufferLike): void {
    if (this.#buffers.length < this.#max && releasable(buffer)) this.#buffers.push(buffer);
    else releaseWhole(buffer);
  }
}

/**
 * `Storage.createWriter` for a backend without it: the object is copied into memory as it is written
 * and saved whole at `commit`. The buffer goes to `spare` once saved (or is released).
 */
export class BufferedObjectWriter implements ObjectWriter {
  private readonly storage: Storage;
  private readonly kind: ObjectKind;
  private readonly spare: SpareBuffers | undefined;
  private buffer: ByteWriter | undefined;

  /**
   * `sizeHint`: the size the object will probably reach, so the buffer rarely regrows; `spare`:
   * where its buffer comes from when one is large enough, and goes once the object is saved.
   */
  constructor(storage: Storage, kind: ObjectKind, sizeHint = 64 * 1024, spare?: SpareBuffers) {
    this.storage = storage;
    this.kind = kind;
    this.spare = spare;
    this.buffer = new ByteWriter(spare?.take(sizeHint) ?? sizeHint);
  }

  async write(...parts: Uint8Array[]): Promise<void> {
    const buffer = this.live();
    for (const part of parts) buffer.bytes(part);
  }

  async commit(name: string): Promise<void> {
    const buffer = this.live();
    this.buffer = undefined;
    const bytes = buffer.finish();
    try {
      await this.storage.save(this.kind, name, bytes);
    } catch (err) {
      // Not kept: a request that failed might in principle still read it.
      releaseWhole(bytes.buffer);
      throw err;
    }
    // Storage.save is done with `data` once it settles; only this held the buffer.
    if (this.spare) this.spare.give(bytes.buffer);
    else releaseWhole(bytes.buffer);
  }

  async abort(): Promise<void> {
    this.buffer = undefined;
  }

  private live(): ByteWriter {
    if (!this.buffer) throw new StorageError(`${this.kind} object written after commit or abort`);
    return this.buffer;
  }
}

/**
 * A pack being written segment by segment to `target`. Its name is the SHA-256 of its trailer
 * (SPEC.md "Packs"), the last part written, so it is known at `finish` without hashing the
 * segments.
 */
export class PackWriter {
  private readonly p: Primitives;
  private readonly target: ObjectWriter;
  /** Bytes written so far. */
  size = 0;

  constructor(p: Primitives, target: ObjectWriter) {
    this.p = p;
    this.target = target;
  }

  /** Appends `parts` (see ObjectWriter.write: they must not change until this settles). */
  write(...parts: Uint8Array[]): Promise<void> {
    for (const part of parts) this.size += part.length;
    return this.target.write(...parts);
  }

  /**
   * Appends the pack's trailer (sealed header and its length) and stores the pack under its name
   * once every write is done; see ObjectWriter.commit.
   */
  async finish(trailer: Uint8Array): Promise<{ name: string; size: number }> {
    const name = packName(this.p, trailer);
    await this.write(trailer);
    await this.target.commit(name);
    return { name, size: this.size };
  }

  /** Discards the pack; never throws. */
  abort(): Promise<void> {
    return this.target.abort();
  }
}
