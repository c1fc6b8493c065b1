import { ByteWriter, releaseBuffer } from "../bytes.ts";
import type { Primitives } from "../crypto/primitives.ts";
import { StorageError } from "../errors.ts";
import { packName } from "../format/pack.ts";
import type { ObjectKind, ObjectWriter, Storage } from "./storage.ts";

/**
 * `Storage.createWriter` for a backend without it: the object is copied into memory as it is written
 * and saved whole at `commit`. The buffer is released once saved.
 */
export class BufferedObjectWriter implements ObjectWriter {
  private readonly storage: Storage;
  private readonly kind: ObjectKind;
  private buffer: ByteWriter | undefined;

  /** `sizeHint`: the size the object will probably reach, so the buffer rarely regrows. */
  constructor(storage: Storage, kind: ObjectKind, sizeHint = 64 * 1024) {
    this.storage = storage;
    this.kind = kind;
    this.buffer = new ByteWriter(sizeHint);
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
    } finally {
      releaseBuffer(new Uint8Array(bytes.buffer)); // the whole buffer, which only this held
    }
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
