import { ByteWriter, copyIdAt, equalBytes, sameIdAt, xorInto } from "../bytes.ts";
import { IntegrityError } from "../errors.ts";
import { BLOB_DATA, BLOB_DELTA, blobId } from "../format/blob.ts";
import type { FileNode } from "../format/tree.ts";
import type { Repository } from "../repository.ts";
import type { ChunkBatch, PageDeltaHints } from "./chunker.ts";
import type { ContentIds } from "./content-ids.ts";
import type { Packer } from "./packer.ts";

/**
 * Page deltas (SPEC §5, §8): a changed database page is stored as the XOR of its bytes with the
 * page as it was when last stored whole (its base). An index page that gained one row differs
 * from its base in a few hundred bytes, so its delta compresses to a tenth of the page.
 *
 * The bases come from the device, never from the repository: the platform keeps a **base image**
 * per database (PageBaseStore), a file holding at each page's offset the bytes of that page's
 * last whole version. The image is a cache. Every base read from it is hashed and compared with
 * the base's blob ID before it is used, so a stale, torn or tampered image costs bytes (the page
 * is stored whole and the image rewritten there), never a wrong restore.
 */
export interface PageBaseStore {
  /** The base image of the database at snapshot path `path`; empty when there is none yet. */
  open(path: string): Promise<PageBaseImage>;
  /**
   * Optional: the local file that holds that image (it may not exist yet), for a FileChunker
   * that computes deltas as it reads (ChunkOptions.baseImage).
   */
  imagePath?(path: string): string;
  /**
   * Optional: the delta memo of the database at `path` (see DeltaMemo), as last written; undefined
   * when there is none or it cannot be read.
   */
  readMemo?(path: string): Promise<Uint8Array | undefined>;
  /**
   * Optional: ends this backup's use of the database at `path` where `open` was not reached (a
   * store that locks a database per backup lets go of it; closing the image does too).
   */
  release?(path: string): void;
  /** Optional: replaces that memo, all or nothing. A failure must not fail the backup. */
  writeMemo?(path: string, bytes: Uint8Array): Promise<void>;
}

/** One database's base image (see PageBaseStore). */
export interface PageBaseImage {
  /**
   * `length` bytes at `offset`; fewer at the end of the image, none past it. The bytes may be a
   * buffer the image reuses: valid until the next call.
   */
  read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Stores `bytes` at `offset`. The caller may reuse `bytes` once the promise settles. The first
   * write after `open` first removes the database's delta memo (for good: on a device, durably),
   * since the memo may certify the image as it was (see DeltaMemo).
   */
  write(offset: number, bytes: Uint8Array): Promise<void>;
  /**
   * Optional: makes every write so far durable; true only when every write since `open` was
   * stored and is now durable. A memo certifies the image only after this said true.
   */
  sync?(): Promise<boolean>;
  /** Ends the use of the image. A backup that failed still closes it. */
  close(): Promise<void>;
}

/**
 * A page is stored as a delta only when at most this share of its 4-byte words differ from the
 * base:
 * beyond it (a page rebalanced or rewritten by SQLite) the XOR compresses no better than the
 * page, and a whole page spares the restore a read.
 */
const MAX_CHANGED_SHARE = 0.25;

/** Whether a delta whose XOR has `changedWords` non-zero 4-byte words is worth storing. */
export function deltaPays(changedWords: number, pageSize: number): boolean {
  return changedWords > 0 && changedWords <= (pageSize >> 2) * MAX_CHANGED_SHARE;
}

/** How a page of a batch is stored. */
const Plan = {
  /** Stored whole already (unchanged, or equal to a blob elsewhere). */
  Known: 0,
  /** New, with a base to try. */
  Delta: 1,
  /** New, stored whole. */
  Whole: 2,
  /** Unchanged since the parent listed it as a delta (DeltaMemo): that delta and base again. */
  Again: 3,
} as const;

/** What a batch of pages added: its bytes, and the bytes it queued. */
export interface PageBatchResult {
  /** Bytes of the pages in the batch. */
  readonly bytes: number;
  /** Bytes of new blobs queued (before compression). */
  readonly newBytes: number;
}

/** The parent's version of a database, page by page (see PageDeltas's fields). */
export interface ParentPages {
  readonly ids: Uint8Array;
  readonly bases: Uint8Array;
  readonly hasBase: Uint8Array;
  /**
   * Per page, 32 bytes: the data-blob ID the page had in the parent, where known: a whole page's
   * own ID, or for a delta the page ID its delta memo record gives; zeros where unknown.
   */
  readonly known: Uint8Array;
  readonly count: number;
  /**
   * The page size for which this device's base image is certified to hold exactly this version
   * (DeltaMemo), or 0 when it is not: then `imageIds` is empty.
   */
  readonly imagePageSize: number;
  /**
   * Per page, 32 bytes: the ID of what the certified image holds there (a delta's base, else the
   * page's own ID). A page whose bytes equal the image's has that ID without being hashed.
   */
  readonly imageIds: Uint8Array;
}

const NO_PAGES: ParentPages = {
  ids: new Uint8Array(0),
  bases: new Uint8Array(0),
  hasBase: new Uint8Array(0),
  known: new Uint8Array(0),
  count: 0,
  imagePageSize: 0,
  imageIds: new Uint8Array(0),
};

/**
 * A device's **delta memo** of a database: for each page the last backup listed as a delta, the
 * page's data-blob ID with the delta and base it was listed as. A page is a function of its
 * delta and base, so a record stays true whichever snapshot it came from; the next backup knows
 * from it that a page whose ID is unchanged is the parent's delta and base, and lists them again
 * without reading the base from the image, hashing it, XORing and hashing the delta. Without the
 * memo that work was done every day for every page changed since its base (the benchmark's
 * second day: 20 k of its 31 k deltas, 40 k keyed hashes and 80 MB of XOR for pages unchanged
 * since the day before).
 *
 * The memo also **certifies the base image**: the SHA-256 of the content IDs (SPEC §8) of the
 * version the image holds exactly (each page the version lists whole, and each delta's base),
 * and the page size. A backup whose parent has that content then takes, for a page whose bytes
 * equal the image's, the ID the parent gives the image's page instead of hashing the page: most
 * pages of a day. The backup that writes the memo made it true: it started certified (and
 * wrote every page it stored whole and that the parent did not list there), or compared every
 * page with the image and wrote those that differ; it saw only whole pages; and `sync` said
 * every write is durable. The first write to the image after that removes the memo, so an
 * interrupted backup leaves no certificate for an image it changed. Certified or not, a memo
 * never makes a backup store a byte it did not read.
 *
 * Layout: MEMO_MAGIC, the page size (u32 LE), the image digest (32 bytes; zeros: none), then
 * records of MEMO_RECORD_BYTES (page number u32 LE, page ID, delta ID, base ID), then
 * HMAC-SHA256(ID key, MEMO_DOMAIN || all before it). A memo that does not check out is ignored,
 * which costs only that work: like the image it is a cache, but unlike the image its records are
 * used without rehashing, so it carries a MAC instead.
 */
const MEMO_MAGIC = new TextEncoder().encode("LKTMEMO2");
const MEMO_DOMAIN = new TextEncoder().encode("locket delta memo 2");
const MEMO_HEADER_BYTES = MEMO_MAGIC.length + 4 + 32;
const MEMO_RECORD_BYTES = 4 + 3 * 32;
const NO_DIGEST = new Uint8Array(32);

/** What a memo is sealed and opened with: the primitives and the ID key (a Repository has both). */
export type MemoKeys = Pick<Repository, "p" | "keys">;

/** What a memo that checks out holds (see DeltaMemo). */
export interface DeltaMemo {
  /** The page size the image digest is for. */
  readonly pageSize: number;
  /** SHA-256 of the content IDs of the version the image holds; zeros when it is not certified. */
  readonly image: Uint8Array;
  /** The records, MEMO_RECORD_BYTES each. */
  readonly records: Uint8Array;
}

/** The records of a memo being written, added with `addMemoRecord`. */
function newDeltaMemo(): ByteWriter {
  return new ByteWriter(1024 * MEMO_RECORD_BYTES);
}

/** Appends a record: page `page`, whose ID is `id`, is listed as `delta` and `base`. */
function addMemoRecord(
  memo: ByteWriter,
  page: number,
  id: Uint8Array,
  delta: Uint8Array,
  base: Uint8Array,
): void {
  memo.u32(page);
  memo.bytes(id);
  memo.bytes(delta);
  memo.bytes(base);
}

/** The memo with `records`, certifying the image as `image` for `pageSize`, with its MAC. */
export function sealDeltaMemo(
  repo: MemoKeys,
  pageSize: number,
  image: Uint8Array,
  records: Uint8Array,
): Uint8Array {
  const memo = new ByteWriter(MEMO_HEADER_BYTES + records.length + 32);
  memo.bytes(MEMO_MAGIC);
  memo.u32(pageSize);
  memo.bytes(image);
  memo.bytes(records);
  memo.bytes(repo.p.hmacSha256(repo.keys.id, MEMO_DOMAIN, memo.finish()));
  return memo.finish();
}

/** What a memo that checks out holds, else undefined. */
export function decodeDeltaMemo(repo: MemoKeys, memo: Uint8Array): DeltaMemo | undefined {
  const end = memo.length - 32;
  if (end < MEMO_HEADER_BYTES || (end - MEMO_HEADER_BYTES) % MEMO_RECORD_BYTES !== 0) return;
  if (!equalBytes(memo.subarray(0, MEMO_MAGIC.length), MEMO_MAGIC)) return;
  const mac = repo.p.hmacSha256(repo.keys.id, MEMO_DOMAIN, memo.subarray(0, end));
  if (!repo.p.timingSafeEqual(mac, memo.subarray(end))) return;
  const view = new DataView(memo.buffer, memo.byteOffset, memo.byteLength);
  return {
    pageSize: view.getUint32(MEMO_MAGIC.length, true),
    image: memo.subarray(MEMO_MAGIC.length + 4, MEMO_HEADER_BYTES),
    records: memo.subarray(MEMO_HEADER_BYTES, end),
  };
}

/**
 * Whether `memo` certifies the image for a parent whose content IDs are `contentIds`: its
 * digest is theirs, and not zeros.
 */
function certifies(repo: Repository, memo: DeltaMemo, contentIds: Uint8Array): boolean {
  return (
    memo.pageSize > 0 &&
    !equalBytes(memo.image, NO_DIGEST) &&
    repo.p.timingSafeEqual(memo.image, repo.p.sha256(contentIds))
  );
}

/** Per page of `pages`, the ID of what a certified image holds there (ParentPages.imageIds). */
function imageIdsOf(pages: ParentPages): Uint8Array {
  const out = Uint8Array.from(pages.ids);
  for (let k = 0; k < pages.count; k++) {
    if (pages.hasBase[k]) out.set(pages.bases.subarray(32 * k, 32 * k + 32), 32 * k);
  }
  return out;
}

/** Fills `pages.known`: whole pages' own IDs, and the memo's page IDs for its matching deltas. */
function applyMemo(pages: ParentPages, records: Uint8Array | undefined): void {
  const { ids, bases, hasBase, known, count } = pages;
  for (let k = 0; k < count; k++) {
    if (!hasBase[k]) copyIdAt(known, 32 * k, ids, 32 * k);
  }
  if (!records) return;
  const view = new DataView(records.buffer, records.byteOffset, records.byteLength);
  for (let at = 0; at < records.length; at += MEMO_RECORD_BYTES) {
    const k = view.getUint32(at, true);
    if (k >= count || !hasBase[k]) continue;
    const delta = records.subarray(at + 36, at + 68);
    const base = records.subarray(at + 68, at + 100);
    // Only for the very delta and base the parent lists for this page.
    if (!equalBytes(ids.subarray(32 * k, 32 * k + 32), delta)) continue;
    if (!equalBytes(bases.subarray(32 * k, 32 * k + 32), base)) continue;
    known.set(records.subarray(at + 4, at + 36), 32 * k);
  }
}

/**
 * The pages of a parent's content `ids` (32 bytes each, as `contentIdBytes` gives them), told
 * apart by `Repository.deltaEntries`: a delta blob's ID is followed by its base's. Built from
 * the bytes: the hex strings and objects of `contentEntries` were most of the 185 ms a day's
 * backup spent here before its database's first batch.
 * @throws {IntegrityError} when a delta is last, with no base after it.
 */
function parentPages(repo: Repository, ids: Uint8Array, path: string): ParentPages {
  const n = ids.length / 32;
  const deltas = repo.deltaEntries(ids, path);
  const out = new Uint8Array(ids.length);
  const bases = new Uint8Array(ids.length);
  const hasBase = new Uint8Array(n);
  let count = 0;
  for (let i = 0; i < n; i++, count++) {
    copyIdAt(out, 32 * count, ids, 32 * i);
    if (!deltas[i]) continue;
    copyIdAt(bases, 32 * count, ids, 32 * (i + 1));
    hasBase[count] = 1;
    i++;
  }
  return {
    ids: out.subarray(0, 32 * count),
    bases: bases.subarray(0, 32 * count),
    hasBase: hasBase.subarray(0, count),
    known: new Uint8Array(32 * count),
    count,
    imagePageSize: 0,
    imageIds: new Uint8Array(0),
  };
}

/**
 * Decides, page by page, how a database is stored: an ID already stored, a new delta against the
 * parent snapshot's base for that page, or a new whole page (which becomes the page's base in
 * the image).
 */
export class PageDeltas {
  private readonly repo: Repository;
  private readonly image: PageBaseImage;
  private readonly pageSize: number;
  /** Per page of the parent's version: the ID of its entry (a data or delta blob), 32 bytes each. */
  private readonly parentIds: Uint8Array;
  /** Per page of the parent's version: its base when it was a delta, else zeros. */
  private readonly parentBases: Uint8Array;
  private readonly parentHasBase: Uint8Array;
  /** Per page of the parent's version: its data-blob ID where known (ParentPages.known). */
  private readonly parentKnown: Uint8Array;
  private readonly parentPages: number;
  /** A page's XOR with its base; the packer copies what it keeps. */
  private readonly scratch: Uint8Array;
  private readonly store: PageBaseStore;
  private readonly path: string;
  /** This backup's delta memo records so far (see DeltaMemo). */
  private readonly memo = newDeltaMemo();
  /**
   * Whether the image holds exactly the parent's version (DeltaMemo): then only the pages this
   * backup stores whole, where the parent listed something else, need writing to it. Otherwise
   * every page it lists whole is written unless the chunker found it equal to the image's, and
   * no delta is listed again from the memo without its base checked against the image.
   */
  private readonly certified: boolean;
  /** Whether every page so far was a whole page long (a memo certifies nothing else). */
  private allWhole = true;

  private constructor(
    repo: Repository,
    store: PageBaseStore,
    path: string,
    image: PageBaseImage,
    pageSize: number,
    parent: ParentPages,
  ) {
    this.repo = repo;
    this.store = store;
    this.path = path;
    this.image = image;
    this.pageSize = pageSize;
    this.scratch = new Uint8Array(pageSize);
    this.parentPages = parent.count;
    this.parentIds = parent.ids;
    this.parentBases = parent.bases;
    this.parentHasBase = parent.hasBase;
    this.parentKnown = parent.known;
    this.certified = pageSize > 0 && parent.imagePageSize === pageSize;
  }

  /**
   * The parent snapshot's version `parent` (if any) of the database at snapshot path `path`,
   * with what this device's delta memo knows of it. A parent whose content cannot be listed
   * (pruned, damaged) only means no deltas for this backup; a memo that cannot be read or does
   * not check out, only that pages are compared with the image again.
   * @throws what storage throws while the parent's list blobs are read.
   */
  static async loadParent(
    repo: Repository,
    store: PageBaseStore,
    path: string,
    parent: FileNode | undefined,
  ): Promise<ParentPages> {
    if (!parent) return NO_PAGES;
    let pages: ParentPages;
    let contentIds: Uint8Array;
    try {
      contentIds = await repo.contentIdBytes(parent);
      pages = parentPages(repo, contentIds, path);
    } catch (err) {
      if (!(err instanceof IntegrityError)) throw err;
      return NO_PAGES;
    }
    const bytes = await store.readMemo?.(path).catch(() => undefined);
    const memo = bytes && decodeDeltaMemo(repo, bytes);
    if (!memo || !certifies(repo, memo, contentIds)) {
      // An image not certified may not hold the bases the memo's records need to be listed
      // again; a backup without them checks every delta's base against the image, and compares
      // every page with it, which certifies the image for the next one.
      applyMemo(pages, undefined);
      return pages;
    }
    applyMemo(pages, memo.records);
    return { ...pages, imagePageSize: memo.pageSize, imageIds: imageIdsOf(pages) };
  }

  /**
   * Starts the pages of the database at snapshot path `path`, whose parent snapshot's version
   * is `parent` (from `loadParent`; none for a first backup).
   */
  static async open(
    repo: Repository,
    store: PageBaseStore,
    path: string,
    parent: ParentPages | undefined,
    pageSize: number,
  ): Promise<PageDeltas> {
    return new PageDeltas(repo, store, path, await store.open(path), pageSize, parent ?? NO_PAGES);
  }

  /**
   * Stores the pages of `batch`, the first of which is page `first` of the file (0-based): each
   * new page as a delta where its base checks out and little changed, else whole. Appends the
   * pages' content entries to `ids`: a data blob's ID, or a delta blob's followed by its base's.
   */
  async batch(
    first: number,
    batch: ChunkBatch,
    packer: Packer,
    compress: boolean,
    ids: ContentIds,
  ): Promise<PageBatchResult> {
    const n = batch.lengths.length;
    const plans = new Uint8Array(n);
    const starts = new Array<number>(n + 1);
    starts[0] = 0;
    let lo = -1;
    let hi = -1;
    const same = batch.deltas?.same;
    for (let k = 0; k < n; k++) {
      const len = batch.lengths[k];
      starts[k + 1] = starts[k] + len;
      if (len !== this.pageSize) this.allWhole = false;
      // An ID the chunker took from the certified image without hashing is trusted only to name
      // a blob stored already: a page to store is hashed here, whatever the image said. Most
      // pages of a day are known: no view of their ID is made.
      let known = packer.hasIdAt(batch.ids, 32 * k);
      if (!known && same?.[k] === 2) {
        const { p, keys } = this.repo;
        const hashed = blobId(
          p,
          keys.id,
          BLOB_DATA,
          batch.bytes.subarray(starts[k], starts[k + 1]),
        );
        batch.ids.set(hashed, 32 * k);
        known = packer.hasIdAt(batch.ids, 32 * k);
      }
      if (known) {
        plans[k] = Plan.Known;
        continue;
      }
      const id = batch.ids.subarray(32 * k, 32 * k + 32);
      if (this.unchangedDelta(first + k, id)) {
        plans[k] = Plan.Again;
        continue;
      }
      if (len !== this.pageSize || this.baseOf(first + k) === undefined) {
        plans[k] = Plan.Whole;
        continue;
      }
      plans[k] = Plan.Delta;
      if (lo < 0) lo = k;
      hi = k;
    }
    // The bases of the changed pages, in one read of the image, unless the chunker computed the
    // deltas as it read the page (ChunkBatch.deltas).
    const hints = batch.deltas;
    const at = (first + lo) * this.pageSize;
    const bases =
      lo < 0 || hints ? new Uint8Array(0) : await this.image.read(at, starts[hi + 1] - starts[lo]);

    let newBytes = 0;
    // Runs of pages to write to the image: [first index, end index) in the batch.
    const writes: [number, number][] = [];
    const toImage = (k: number) => {
      const last = writes[writes.length - 1];
      if (last && last[1] === k) last[1] = k + 1;
      else writes.push([k, k + 1]);
    };
    for (let k = 0; k < n; k++) {
      const page = first + k;
      if (plans[k] === Plan.Known) {
        // Most pages of a day: no view of their bytes or ID is made (views that lived across
        // an await below were a third of what the main thread's collections kept).
        ids.pushFrom(batch.ids, 32 * k);
        // A page whose content is not what the parent listed here becomes this page's base; an
        // image not certified gets every page that is not in it already.
        if (this.certified ? !this.parentListed(page, batch.ids, 32 * k) : !same?.[k]) toImage(k);
        continue;
      }
      const id = batch.ids.subarray(32 * k, 32 * k + 32);
      const chunk = batch.bytes.subarray(starts[k], starts[k + 1]);
      if (plans[k] === Plan.Again) {
        const delta = this.parentIds.subarray(32 * page, 32 * page + 32);
        const base = this.parentBases.subarray(32 * page, 32 * page + 32);
        addMemoRecord(this.memo, page, id, delta, base);
        ids.push(delta, true);
        ids.push(base);
        continue;
      }
      if (plans[k] === Plan.Delta) {
        const base = this.baseIdOf(page);
        const found = hints
          ? this.hinted(hints, k, base)
          : this.computed(chunk, bases.subarray(page * this.pageSize - at), base);
        if (found) {
          if (!packer.hasId(found.id)) {
            await packer.add(BLOB_DELTA, found.id, found.xor, compress);
            newBytes += found.xor.length;
          }
          addMemoRecord(this.memo, page, id, found.id, base);
          ids.push(found.id, true);
          ids.push(base);
          continue;
        }
      }
      // Whole: a new page, or one whose base is gone, stale, or too different.
      if (!packer.hasId(id)) {
        await packer.add(BLOB_DATA, id, chunk, compress);
        newBytes += chunk.length;
      }
      ids.push(id);
      if (this.certified || !same?.[k]) toImage(k);
    }
    for (const [a, b] of writes) {
      await this.image.write(
        (first + a) * this.pageSize,
        batch.bytes.subarray(starts[a], starts[b]),
      );
    }
    return { bytes: starts[n], newBytes };
  }

  /**
   * The delta of `page` against `old` (the image's bytes from that page's offset on), when
   * those bytes are the base `base` and the delta pays; its XOR is in the scratch buffer.
   */
  private computed(
    page: Uint8Array,
    old: Uint8Array,
    base: Uint8Array,
  ): { id: Uint8Array; xor: Uint8Array } | undefined {
    const { p, keys } = this.repo;
    if (old.length < page.length) return undefined;
    old = old.subarray(0, page.length);
    if (!equalBytes(blobId(p, keys.id, BLOB_DATA, old), base)) return undefined;
    const xor = this.scratch;
    if (!deltaPays(xorInto(xor, page, old), page.length)) return undefined;
    return { id: blobId(p, keys.id, BLOB_DELTA, xor), xor };
  }

  /** The chunker's delta for chunk `k` of the batch, when it was computed against `base`. */
  private hinted(
    hints: PageDeltaHints,
    k: number,
    base: Uint8Array,
  ): { id: Uint8Array; xor: Uint8Array } | undefined {
    const i = hints.at[k];
    if (i < 0 || !equalBytes(hints.baseIds.subarray(32 * i, 32 * i + 32), base)) return undefined;
    const n = this.pageSize;
    return {
      id: hints.deltaIds.subarray(32 * i, 32 * i + 32),
      xor: hints.xors.subarray(n * i, n * i + n),
    };
  }

  /** Ends the use of the image. */
  close(): Promise<void> {
    return this.image.close();
  }

  /**
   * Writes this backup's delta memo, once every page went through `batch` and `ids` are the
   * file's content IDs, in order (SPEC §8). The memo certifies the image for this version when
   * every page was whole and the image says its writes are durable (see DeltaMemo). Best
   * effort: the memo is a cache.
   */
  async finish(ids: ContentIds): Promise<void> {
    if (!this.store.writeMemo) return;
    let digest: Uint8Array = NO_DIGEST;
    if (this.allWhole && (await this.image.sync?.().catch(() => false))) {
      digest = this.repo.p.sha256(ids.bytes);
    }
    const memo = sealDeltaMemo(this.repo, this.pageSize, digest, this.memo.finish());
    await this.store.writeMemo(this.path, memo).catch(() => {});
  }

  /**
   * Whether page `page`, whose ID is `id`, is the very page the parent listed as a delta: the
   * delta memo gave its ID, and its delta and base are still live (the base a page-long data
   * blob, as for any delta this backup stores).
   */
  private unchangedDelta(page: number, id: Uint8Array): boolean {
    if (!this.certified || page >= this.parentPages || !this.parentHasBase[page]) return false;
    if (!equalBytes(this.parentKnown.subarray(32 * page, 32 * page + 32), id)) return false;
    return (
      this.repo.hasId(this.parentIds.subarray(32 * page, 32 * page + 32)) &&
      this.baseOf(page) !== undefined
    );
  }

  /**
   * The base to try for page `page`: the parent's base for it when it was a delta, else the
   * parent's data blob for it, provided that blob is live, whole data and a page long.
   */
  private baseOf(page: number): Uint8Array | undefined {
    if (page >= this.parentPages) return undefined;
    const base = this.baseIdOf(page);
    return this.repo.liveLengthOf(base, BLOB_DATA) === this.pageSize ? base : undefined;
  }

  /** The ID `baseOf` checks for page `page` (below the parent's page count), unchecked. */
  private baseIdOf(page: number): Uint8Array {
    const ids = this.parentHasBase[page] ? this.parentBases : this.parentIds;
    return ids.subarray(32 * page, 32 * page + 32);
  }

  /** Whether the parent listed the ID at `ids[at..at+32]` itself (not a delta) for page `page`. */
  private parentListed(page: number, ids: Uint8Array, at: number): boolean {
    if (page >= this.parentPages || this.parentHasBase[page]) return false;
    return sameIdAt(this.parentIds, 32 * page, ids, at);
  }
}

/** A PageBaseStore in memory: for tests, and for a platform with nowhere to keep files. */
export class MemoryPageBaseStore implements PageBaseStore {
  /** The images, by snapshot path. */
  readonly images = new Map<string, Uint8Array>();
  /** The delta memos, by snapshot path. */
  readonly memos = new Map<string, Uint8Array>();

  async readMemo(path: string): Promise<Uint8Array | undefined> {
    return this.memos.get(path)?.slice();
  }

  async writeMemo(path: string, bytes: Uint8Array): Promise<void> {
    this.memos.set(path, bytes.slice());
  }

  async open(path: string): Promise<PageBaseImage> {
    const { images, memos } = this;
    return {
      async read(offset, length) {
        const image = images.get(path) ?? new Uint8Array(0);
        return image.slice(Math.min(offset, image.length), Math.min(offset + length, image.length));
      },
      async write(offset, bytes) {
        memos.delete(path); // it may certify the image as it was
        let image = images.get(path) ?? new Uint8Array(0);
        if (offset + bytes.length > image.length) {
          const grown = new Uint8Array(offset + bytes.length);
          grown.set(image);
          image = grown;
          images.set(path, image);
        }
        image.set(bytes, offset);
      },
      async sync() {
        return true;
      },
      async close() {},
    };
  }
}
