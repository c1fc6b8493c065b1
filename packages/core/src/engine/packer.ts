import { fromHex, toHex } from "../bytes.ts";
import { AAD, seal } from "../crypto/seal.ts";
import { LocketError } from "../errors.ts";
import { type BlobType, MAX_BLOB_BYTES } from "../format/blob.ts";
import type { IndexedPack } from "../format/index-file.ts";
import { type PackEntry, sealPackTrailer } from "../format/pack.ts";
import { encodePayload } from "../format/payload.ts";
import type { Repository } from "../repository.ts";

/** A pack is stored once it holds this many bytes (SPEC.md "Packs"). */
export const PACK_TARGET_BYTES = 16 * 1024 * 1024;
/** A segment is sealed once it holds this many raw bytes. */
export const SEGMENT_TARGET_BYTES = 512 * 1024;

interface PendingBlob {
  readonly type: BlobType;
  readonly id: Uint8Array;
  readonly data: Uint8Array;
}

/**
 * Collects new blobs into segments (compressed and sealed together, so 4 KiB database pages
 * compress well and cost one AES-GCM tag per segment rather than per page) and segments into
 * packs, and stores each pack when it is full. Stored packs enter the repository's in-memory
 * index at once, but no index file names them until the caller writes one: that ordering is
 * what makes an interrupted backup harmless.
 */
export class Packer {
  private readonly repo: Repository;
  private readonly pending = new Set<string>();
  private segment: PendingBlob[] = [];
  private segmentBytes = 0;
  private segmentCompress = true;
  private parts: Uint8Array[] = [];
  private packBytes = 0;
  private entries: PackEntry[] = [];
  /** Packs stored by this packer, for the index file the caller writes. */
  readonly stored: IndexedPack[] = [];
  /** Bytes of packs stored so far. */
  storedBytes = 0;

  constructor(repo: Repository) {
    this.repo = repo;
  }

  /** Whether blob `id` (hex) is stored or queued already. */
  has(id: string): boolean {
    return this.pending.has(id) || this.repo.has(id);
  }

  /** Queues a new blob. `compress` says whether zstd is worth trying on it. */
  async add(type: BlobType, id: Uint8Array, data: Uint8Array, compress: boolean): Promise<void> {
    // Readers refuse larger blobs; storing one would make the whole index unreadable.
    if (data.length > MAX_BLOB_BYTES) {
      throw new LocketError(
        "failure",
        `a blob of ${data.length} bytes exceeds the ${MAX_BLOB_BYTES}-byte limit`,
      );
    }
    this.pending.add(toHex(id));
    if (this.segment.length > 0 && compress !== this.segmentCompress) await this.sealSegment();
    this.segmentCompress = compress;
    this.segment.push({ type, id, data });
    this.segmentBytes += data.length;
    if (this.segmentBytes >= SEGMENT_TARGET_BYTES) await this.sealSegment();
  }

  private async sealSegment(): Promise<void> {
    if (this.segment.length === 0) return;
    const { p, keys } = this.repo;
    const raw = new Uint8Array(this.segmentBytes);
    let offset = 0;
    const segmentOffset = this.packBytes;
    const placed: { b: PendingBlob; offset: number }[] = [];
    for (const b of this.segment) {
      raw.set(b.data, offset);
      placed.push({ b, offset });
      offset += b.data.length;
    }
    const sealed = await seal(
      p,
      keys.data,
      encodePayload(p, raw, this.segmentCompress),
      AAD.segment,
    );
    for (const { b, offset } of placed) {
      this.entries.push({
        type: b.type,
        id: b.id,
        segmentOffset,
        segmentLength: sealed.length,
        offset,
        length: b.data.length,
      });
    }
    this.parts.push(sealed);
    this.packBytes += sealed.length;
    this.segment = [];
    this.segmentBytes = 0;
    if (this.packBytes >= PACK_TARGET_BYTES) await this.storePack();
  }

  private async storePack(): Promise<void> {
    if (this.entries.length === 0) return;
    const { p, keys } = this.repo;
    this.parts.push(await sealPackTrailer(p, keys, this.entries));
    let size = 0;
    for (const part of this.parts) size += part.length;
    const bytes = new Uint8Array(size);
    let o = 0;
    for (const part of this.parts) {
      bytes.set(part, o);
      o += part.length;
    }
    const { name } = await this.repo.saveAddressed("data", bytes);
    this.repo.addPack(name, this.entries);
    this.stored.push({ packId: fromHex(name), entries: this.entries });
    this.storedBytes += size;
    this.parts = [];
    this.packBytes = 0;
    this.entries = [];
  }

  /** Seals and stores everything queued. */
  async flush(): Promise<void> {
    await this.sealSegment();
    await this.storePack();
  }
}
