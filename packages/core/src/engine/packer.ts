import { ByteReader, ByteWriter, fromHex, releaseBuffer } from "../bytes.ts";
import { AAD, NONCE_BYTES } from "../crypto/seal.ts";
import { LocketError } from "../errors.ts";
import { type BlobType, MAX_BLOB_BYTES } from "../format/blob.ts";
import type { EncodedPack, IndexedPack } from "../format/index-file.ts";
import {
  PACK_ENTRY_BYTES,
  type PackEntry,
  readEntries,
  sealPackTrailer,
  writeEntries,
} from "../format/pack.ts";
import { encodePayloadInPlaceAsync, PAYLOAD_HEADER_BYTES } from "../format/payload.ts";
import { IdRefSet } from "../id-set.ts";
import type { Repository } from "../repository.ts";
import type { PackWriter } from "../storage/object-writer.ts";

/** A pack is stored once it holds this many bytes (SPEC.md "Packs"). */
export const PACK_TARGET_BYTES = 16 * 1024 * 1024;
/** A segment is sealed once it holds this many raw bytes. */
export const SEGMENT_TARGET_BYTES = 512 * 1024;

interface PendingEntry {
  readonly type: BlobType;
  readonly id: Uint8Array;
  /** Offset of the blob in the segment's raw bytes. */
  readonly offset: number;
  readonly length: number;
}

/** Segments compressed and sealed concurrently (each up to about SEGMENT_TARGET_BYTES). */
const MAX_INFLIGHT_SEGMENTS = 4;

// A pack is stored once it reaches PACK_TARGET_BYTES, so it holds at most that plus one segment
// (at most a largest blob beyond SEGMENT_TARGET_BYTES) and its trailer: the buffer a storage that
// cannot write a pack in parts gets. Pages never written are never touched, so the slack is free.
const PACK_CAPACITY = PACK_TARGET_BYTES + SEGMENT_TARGET_BYTES + MAX_BLOB_BYTES + 1024 * 1024;

/** Packs being committed (fsync, rename; or a whole upload) while the next one is written. */
const MAX_INFLIGHT_PACKS = 2;

/**
 * Bytes of sealed segments handed to storage and not yet written: the packer waits for the
 * oldest writes beyond this, so a slow disk holds back the backup instead of filling memory.
 */
const MAX_WRITE_AHEAD = 4 * 1024 * 1024;

/**
 * A segment's byte buffer, which grows and is reused. It grows by a quarter, or to what is
 * needed, not by doubling (a media chunk of several MiB makes a segment of its own).
 */
class Growable {
  buf: Uint8Array;
  length = 0;
  constructor(initial: number) {
    this.buf = new Uint8Array(initial);
  }
  ensure(extra: number): void {
    if (this.length + extra <= this.buf.length) return;
    const cap = Math.max(this.length + extra, Math.ceil(this.buf.length * 1.25));
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.length));
    releaseBuffer(this.buf); // nothing else holds a growing buffer
    this.buf = next;
  }
  append(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
}

/**
 * Collects new blobs into segments (compressed and sealed together, so 4 KiB database pages
 * compress well and cost one AES-GCM tag per segment rather than per page) and segments into
 * packs, and stores each pack when it is full. Stored packs enter the repository's in-memory
 * index at once, but no index file names them until the caller writes one: that ordering is
 * what makes an interrupted backup harmless.
 *
 * Bytes are copied once, into a reused segment buffer, when a blob is added: callers may reuse
 * their data buffers afterwards (not the ID's: see `add`). Sealed segments go to storage as they
 * come (`createPackWriter`): a pack is never whole in memory where the storage can write it in
 * parts (local folders), and it is named by the hash of its trailer, its last part. Where an
 * operation fails, `abort` removes the pack being written.
 */
export class Packer {
  private readonly repo: Repository;
  /** Blobs queued and not yet in the repository's index. */
  private readonly pending = new IdRefSet();
  // Reused buffers: allocating a fresh half-megabyte buffer per segment made V8 run a full
  // collection every few megabytes (external memory pressure).
  private readonly segmentPool: Growable[] = [];
  // The segment's raw bytes, after PAYLOAD_HEADER_BYTES of room for the payload header.
  private segment: Growable;
  private segmentEntries: PendingEntry[] = [];
  private segmentCompress = true;
  // Segments being compressed and sealed off the main thread, oldest first.
  private readonly inflight: {
    job: Promise<{ nonce: Uint8Array; body: Uint8Array[] }>;
    buffer: Growable;
    entries: PendingEntry[];
  }[] = [];
  /** The pack being written, from its first segment on. */
  private pack: PackWriter | undefined;
  private entries: PackEntry[] = [];
  /** Segment writes not yet known to be done, oldest first, and their bytes in all. */
  private readonly writes: { done: Promise<void>; bytes: number }[] = [];
  private writesAhead = 0;
  // Packs being committed; at most MAX_INFLIGHT_PACKS.
  private readonly storing: Promise<void>[] = [];
  /**
   * Packs stored by this packer, their entries encoded as an index file holds them: a backup of
   * 100 000 database pages kept as many entry objects, each with an ID view, until its index
   * file was written, and every garbage collection traced them.
   */
  private readonly storedPacks: EncodedPack[] = [];
  /** Bytes of packs stored so far. */
  storedBytes = 0;
  /** Blobs in the packs stored so far. */
  storedBlobs = 0;

  constructor(repo: Repository) {
    this.repo = repo;
    this.segment = this.takeSegmentBuffer();
  }

  private takeSegmentBuffer(): Growable {
    const g =
      this.segmentPool.pop() ??
      new Growable(PAYLOAD_HEADER_BYTES + SEGMENT_TARGET_BYTES + 64 * 1024);
    g.length = PAYLOAD_HEADER_BYTES;
    return g;
  }

  /** Packs stored by this packer, for the index file the caller writes. */
  get stored(): IndexedPack[] {
    return this.storedPacks.map(({ packId, encodedEntries: e }) => ({
      packId,
      entries: readEntries(new ByteReader(e), e.length / PACK_ENTRY_BYTES),
    }));
  }

  /** `stored` as encoded entries, for an index file (nothing decoded). */
  get storedEncoded(): readonly EncodedPack[] {
    return this.storedPacks;
  }

  /** Whether blob `id` (32 bytes) is stored or queued already. */
  hasId(id: Uint8Array): boolean {
    return this.repo.hasId(id) || this.pending.has(id);
  }

  /** `hasId` for the 32 bytes of `bytes` at `at`, without a view of them. */
  hasIdAt(bytes: Uint8Array, at: number): boolean {
    return this.repo.hasIdAt(bytes, at) || this.pending.hasAt(bytes, at);
  }

  /**
   * Queues a new blob (copying `data`). `compress` says whether zstd is worth trying on it. `id`
   * is kept by reference until the blob's pack is stored: its bytes must not change until then.
   */
  async add(type: BlobType, id: Uint8Array, data: Uint8Array, compress: boolean): Promise<void> {
    // Readers refuse larger blobs; storing one would make the whole index unreadable.
    if (data.length > MAX_BLOB_BYTES) {
      throw new LocketError(
        "failure",
        `a blob of ${data.length} bytes exceeds the ${MAX_BLOB_BYTES}-byte limit`,
      );
    }
    this.pending.add(id);
    if (this.segmentEntries.length > 0 && compress !== this.segmentCompress) {
      await this.sealSegment();
    }
    this.segmentCompress = compress;
    const offset = this.segment.length - PAYLOAD_HEADER_BYTES;
    this.segment.append(data);
    this.segmentEntries.push({ type, id, offset, length: data.length });
    if (offset + data.length >= SEGMENT_TARGET_BYTES) await this.sealSegment();
  }

  private async sealSegment(): Promise<void> {
    if (this.segmentEntries.length === 0) return;
    const { p, keys } = this.repo;
    const buffer = this.segment;
    const rawLength = buffer.length - PAYLOAD_HEADER_BYTES;
    const compress = this.segmentCompress;
    const entries = this.segmentEntries;
    // The buffer belongs to the job until it settles (compression may read it on another thread).
    this.segment = this.takeSegmentBuffer();
    this.segmentEntries = [];
    const job = (async () => {
      const payload = await encodePayloadInPlaceAsync(p, buffer.buf, rawLength, compress);
      const nonce = p.randomBytes(NONCE_BYTES);
      const body = keys.data.sealParts
        ? await keys.data.sealParts(nonce, payload, AAD.segment)
        : [await keys.data.seal(nonce, payload, AAD.segment)];
      return { nonce, body };
    })();
    job.catch(() => {}); // Rethrown when the job is awaited in order; never unhandled.
    this.inflight.push({ job, buffer, entries });
    while (this.inflight.length > MAX_INFLIGHT_SEGMENTS) await this.appendOldest();
  }

  /** Writes the oldest sealed segment to the pack (in order), storing the pack when full. */
  private async appendOldest(): Promise<void> {
    const { job, buffer, entries } = this.inflight.shift()!;
    const { nonce, body } = await job;
    this.segmentPool.push(buffer);
    this.pack ??= await this.repo.createPackWriter(PACK_CAPACITY);
    const segmentOffset = this.pack.size;
    const segmentLength = body.reduce((n, part) => n + part.length, nonce.length);
    // The sealed body is this packer's alone: freed as soon as it is written.
    const done = this.pack.write(nonce, ...body).finally(() => body.forEach(releaseBuffer));
    done.catch(() => {}); // Rethrown when awaited in order (and by the pack's commit).
    this.writes.push({ done, bytes: segmentLength });
    this.writesAhead += segmentLength;
    while (this.writesAhead > MAX_WRITE_AHEAD) await this.settleOldestWrite();
    for (const e of entries) this.entries.push({ ...e, segmentOffset, segmentLength });
    if (this.pack.size >= PACK_TARGET_BYTES) await this.storePack();
  }

  private async settleOldestWrite(): Promise<void> {
    const { done, bytes } = this.writes.shift()!;
    this.writesAhead -= bytes;
    await done;
  }

  /** Seals the current pack and starts committing it, waiting while too many are in flight. */
  private async storePack(): Promise<void> {
    const pack = this.pack;
    if (!pack || this.entries.length === 0) return;
    const { p, keys } = this.repo;
    const entries = this.entries;
    const trailer = await sealPackTrailer(p, keys, entries);
    this.pack = undefined;
    this.entries = [];
    const write = (async () => {
      const { name, size } = await pack.finish(trailer);
      // Only a pack that is durable enters the index (and so the dedup set of later backups).
      this.repo.addPack(name, entries);
      for (const e of entries) this.pending.delete(e.id);
      const encoded = new ByteWriter(entries.length * PACK_ENTRY_BYTES);
      writeEntries(encoded, entries);
      this.storedPacks.push({ packId: fromHex(name), encodedEntries: encoded.finish() });
      this.storedBytes += size;
      this.storedBlobs += entries.length;
    })();
    write.catch(() => {});
    this.storing.push(write);
    while (this.storing.length >= MAX_INFLIGHT_PACKS) await this.storing.shift();
  }

  /** Seals and stores everything queued; resolves when every pack is durable. */
  async flush(): Promise<void> {
    await this.sealSegment();
    while (this.inflight.length) await this.appendOldest();
    await this.storePack();
    while (this.storing.length) await this.storing.shift();
    while (this.writes.length) await this.settleOldestWrite();
  }

  /**
   * After a failure: waits for the work in flight to settle and removes the pack being written
   * (packs already committed stay: unindexed, a later backup adopts them). Never throws.
   */
  async abort(): Promise<void> {
    const pack = this.pack;
    this.pack = undefined;
    this.entries = [];
    await Promise.allSettled(this.inflight.splice(0).map((s) => s.job));
    await Promise.allSettled(this.writes.splice(0).map((w) => w.done));
    this.writesAhead = 0;
    await pack?.abort();
    await Promise.allSettled(this.storing.splice(0));
  }
}
