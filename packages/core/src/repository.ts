import { BlobIndex, type BlobLocation, segmentKey } from "./blob-index.ts";
import {
  concatAll,
  equalBytes,
  fromHex,
  idsFromHex,
  releasable,
  sameIdAt,
  toHex,
} from "./bytes.ts";
import { deriveKeys, type RepoKeys } from "./crypto/keys.ts";
import type { Primitives } from "./crypto/primitives.ts";
import { checkFreshness } from "./engine/freshness.ts";
import {
  AlreadyExistsError,
  IntegrityError,
  LocketError,
  NotFoundError,
  OutOfRangeError,
  UsageError,
  WrongKeyError,
} from "./errors.ts";
import {
  BLOB_DELTA,
  BLOB_LIST,
  BLOB_LIST_PATCH,
  BLOB_TREE,
  type BlobType,
  blobId,
} from "./format/blob.ts";
import {
  decodeConfig,
  encodeConfig,
  newRepoId,
  REPOSITORY_VERSION,
  type RepoConfig,
} from "./format/config.ts";
import {
  type CondemnedPack,
  type EncodedPack,
  entryCount,
  type IndexedPack,
  type IndexFile,
  openIndex,
  openIndexEncoded,
  type PackListing,
  sealIndex,
} from "./format/index-file.ts";
import { applyListPatch, listPatchBase } from "./format/list-patch.ts";
import {
  checkPackName,
  checkWholePackName,
  openPackHeader,
  openSegment,
  type PackEntry,
  packNameMatches,
  packNameMismatch,
  readTrailerLength,
} from "./format/pack.ts";
import { openSnapshot, type Snapshot, sealSnapshot } from "./format/snapshot.ts";
import {
  checkIdList,
  type DirNode,
  decodeTree,
  type FileNode,
  parseIdList,
  type Tree,
  type TreeNode,
} from "./format/tree.ts";
import { mapConcurrent } from "./map-concurrent.ts";
import {
  checkName,
  localSegmentOpener,
  type SegmentOpener,
  type SegmentToOpen,
} from "./segment-opener.ts";
import { BufferedObjectWriter, PackWriter, SpareBuffers } from "./storage/object-writer.ts";
import type { Storage } from "./storage/storage.ts";

/**
 * Largest pack read whole to check an old-style name (readStoredPackHeader): more than any
 * pack a writer makes (~16 MiB, one more segment, the header).
 */
const MAX_LEFTOVER_LOAD_BYTES = 64 * 1024 * 1024;
/** Index files or snapshots read at once (each a request over S3; they are small). */
const METADATA_READS = 8;

/** A blob a reader will take, by ID (32 bytes), with its location. */
export interface BlobRef {
  readonly id: Uint8Array;
  readonly loc: BlobLocation;
}

/** A segment to read ahead (`loc` is any of its blobs' locations) and the blobs wanted from it. */
export interface SegmentRead {
  readonly loc: BlobLocation;
  readonly blobs: readonly BlobRef[];
}

/** A decoded segment in the cache, with the blobs already checked against their IDs. */
interface OpenSegment {
  readonly payload: Uint8Array;
  readonly checked: CheckedBlobs;
}

/**
 * The blobs of a segment the opener checked: the blobs asked for, their IDs (a copy, 32 bytes
 * each, so nothing the reader does to its own buffers changes what was checked), and by offset in
 * the payload, the number of the one checked there.
 */
interface CheckedBlobs {
  readonly blobs: readonly BlobRef[];
  readonly ids: Uint8Array;
  readonly byOffset: ReadonlyMap<number, number>;
}

/** Whether `loc` is where blob `id` was checked, so a check never vouches for another place. */
function checkedAt(checked: CheckedBlobs, id: Uint8Array, loc: BlobLocation): boolean {
  const k = checked.byOffset.get(loc.offset);
  if (k === undefined) return false;
  const c = checked.blobs[k].loc;
  if (c.type !== loc.type || c.length !== loc.length) return false;
  return id.length === 32 && sameIdAt(checked.ids, 32 * k, id);
}

/** `decode()`, whose failure means that blob `what` ("tree <id>", ...) is damage. */
function decoded<T>(what: string, decode: () => T): T {
  try {
    return decode();
  } catch (err) {
    throw new IntegrityError(`${what} is malformed: ${(err as Error).message}`);
  }
}

const NOTHING_CHECKED: CheckedBlobs = { blobs: [], ids: new Uint8Array(0), byOffset: new Map() };

/** A segment in the cache: its promise, its size, and its value once it has arrived. */
interface CachedSegment {
  readonly promise: Promise<OpenSegment>;
  bytes: number;
  value?: OpenSegment;
}

/** Segment payloads evicted from the cache, for a reader that releases them (trackEvictions). */
export interface EvictionLog {
  /** Set by the reader: its current call; each eviction is stamped with it. */
  now: number;
  /** The evicted payloads' buffers, oldest first, and the call during which each was evicted. */
  readonly buffers: ArrayBuffer[];
  readonly at: number[];
}

/** A snapshot with its ID (the hex SHA-256 of its stored bytes). */
export interface SnapshotRef {
  readonly id: string;
  readonly snapshot: Snapshot;
}

/**
 * Decoded segments kept for reads and read-ahead, by default: a restore reads up to half of it
 * ahead (at most 32 MiB), in requests of up to a quarter (at most 16 MiB). 32 MiB restores a
 * local repository as fast as 80 MiB did, in 100 MiB less memory (the 2 GB benchmark set).
 */
export const SEGMENT_CACHE_BYTES = 32 * 1024 * 1024;
/**
 * The segment cache for a repository behind a network (S3): 16 MiB requests, fewer of them,
 * and 32 MiB of read-ahead hide the round trips.
 */
export const REMOTE_SEGMENT_CACHE_BYTES = 80 * 1024 * 1024;
/**
 * How far a read from a repository behind a network goes on past segments it does not need
 * rather than making two requests: a request costs a round trip, more than a MiB of transfer.
 */
export const REMOTE_READ_GAP_BYTES = 1024 * 1024;
// A pack's header is usually small; read this much of its end first to get it in one request.
const TAIL_GUESS_BYTES = 64 * 1024;

/** One piece of a file's content: a data blob, or a delta blob and its base (SPEC §8). */
export interface ContentEntry {
  /** Data blob ID (hex), or delta blob ID when `base` is set. */
  readonly id: string;
  /** The data blob the delta is XORed with. */
  readonly base?: string;
}

/** List blobs `contentIdBytes` reads at once (1 MiB of IDs at most). */
const LIST_BATCH = 128;

/** openIndex or openIndexEncoded: how index files are parsed, entries as objects or encoded. */
type IndexOpener<P extends PackListing> = (
  p: Primitives,
  keys: RepoKeys,
  sealed: Uint8Array,
  name: string,
) => Promise<IndexFile<P>>;

/**
 * An open repository: storage, keys and the in-memory index of every blob. Reading methods
 * verify everything they return (object names against SHA-256, blobs against their keyed IDs);
 * anything that does not verify throws IntegrityError naming the object.
 */
export class Repository {
  readonly storage: Storage;
  readonly p: Primitives;
  readonly keys: RepoKeys;
  readonly config: RepoConfig;
  private readonly index = new BlobIndex();
  /** Packs that some index file in storage names (not merely known to this object). */
  private readonly indexedPacks = new Set<string>();
  /** Blobs of condemned packs: readable (a restore may still need one), never deduplicated against. */
  private readonly condemnedIndex = new BlobIndex();
  private readonly condemnedPacks = new Map<string, CondemnedPack>();
  /** Forgotten snapshots' IDs and sequence numbers. */
  private readonly forgottenSnapshots = new Map<string, number>();
  private readonly loadedIndexFiles: string[] = [];
  private indexLoad?: Promise<void>;
  private readonly segments = new Map<string, CachedSegment>();
  private opener: SegmentOpener;
  private segmentBytes = 0;
  /** Bytes of decoded segments kept for reads and read-ahead (a setting for tests and tuning). */
  segmentCacheBytes = SEGMENT_CACHE_BYTES;
  /**
   * Bytes of segments not wanted that one ranged read may span between two wanted segments of a
   * pack (REMOTE_READ_GAP_BYTES for S3). 0 on a local disk: there a merged read measured slower
   * (the day-2 database's restore, 7 alternating pairs: medians 2.41 against 2.26 s).
   */
  readGapBytes = 0;
  /** Buffers of packs saved whole (storage without `createWriter`: S3), for the next packs. */
  private readonly spareBuffers = new SpareBuffers();
  /** The logs of the readers that free evicted payloads (see `trackEvictions`). */
  private readonly evictionLogs = new Set<EvictionLog>();

  private constructor(storage: Storage, p: Primitives, keys: RepoKeys, config: RepoConfig) {
    this.storage = storage;
    this.p = p;
    this.keys = keys;
    this.config = config;
    this.opener = localSegmentOpener(p, keys);
  }

  /**
   * Has read-ahead (`prefetchRun`) and `check --read-data` open segments with `opener`, for
   * example on worker threads. A single segment read on demand is still opened here.
   */
  useSegmentOpener(opener: SegmentOpener): void {
    this.opener = opener;
  }

  /** What opens segments for read-ahead (see useSegmentOpener). */
  get segmentOpener(): SegmentOpener {
    return this.opener;
  }

  /**
   * Creates a repository in empty storage, keyed by `rootKey`.
   * @throws {AlreadyExistsError} when storage already holds a repository config.
   */
  static async init(storage: Storage, p: Primitives, rootKey: Uint8Array): Promise<Repository> {
    const keys = await deriveKeys(p, rootKey);
    const config: RepoConfig = {
      version: REPOSITORY_VERSION,
      id: newRepoId((n) => p.randomBytes(n)),
      keyCheck: toHex(keys.keyCheck),
      createdAt: new Date().toISOString(),
    };
    try {
      await storage.save("config", "config", encodeConfig(config), { exclusive: true });
    } catch (err) {
      if (err instanceof AlreadyExistsError) {
        throw new AlreadyExistsError(`a repository already exists at ${storage.location}`);
      }
      throw err;
    }
    return new Repository(storage, p, keys, config);
  }

  /**
   * Opens a repository and checks that `rootKey` is its key. `configBytes`: the config object's bytes
   * when the caller has just read them (from S3, a request fewer).
   * @throws {NotFoundError} when there is no repository config.
   * @throws {WrongKeyError} when the key check does not match.
   * @throws {UnsupportedVersionError} for a newer format.
   */
  static async open(
    storage: Storage,
    p: Primitives,
    rootKey: Uint8Array,
    configBytes?: Uint8Array,
  ): Promise<Repository> {
    let bytes: Uint8Array;
    try {
      bytes = configBytes ?? (await storage.load("config", "config"));
    } catch (err) {
      if (err instanceof NotFoundError)
        throw new NotFoundError(`no repository at ${storage.location}`);
      throw err;
    }
    const config = decodeConfig(bytes);
    const keys = await deriveKeys(p, rootKey);
    if (!p.timingSafeEqual(keys.keyCheck, config.keyCheckBytes)) {
      throw new WrongKeyError(`this key does not open the repository at ${storage.location}`);
    }
    return new Repository(storage, p, keys, config);
  }

  /** Number of blobs in the in-memory index. */
  get blobCount(): number {
    return this.index.size;
  }

  /** Whether the index knows blob `id` (hex) in a live pack: what a backup may reuse. */
  has(id: string): boolean {
    return this.index.has(id);
  }

  /** `has` for an ID as bytes (32 of them). */
  hasId(id: Uint8Array): boolean {
    return this.index.hasId(id);
  }

  /** `hasId` for the 32 bytes of `bytes` at `at`, without a view of them. */
  hasIdAt(bytes: Uint8Array, at: number): boolean {
    return this.index.hasIdAt(bytes, at);
  }

  /**
   * The length of blob `id` (32 bytes) when a live pack holds it as a blob of type `type` (what a
   * backup may reuse), else -1.
   */
  liveLengthOf(id: Uint8Array, type: BlobType): number {
    return this.index.lengthOfId(id, type);
  }

  /** Whether blob `id` (hex) can be read, from a live pack or a condemned one. */
  readable(id: string): boolean {
    return this.index.has(id) || this.condemnedIndex.has(id);
  }

  /** `readable` for the 32 bytes of `bytes` at `at`, without a view of them. */
  readableAt(bytes: Uint8Array, at: number): boolean {
    return this.index.hasIdAt(bytes, at) || this.condemnedIndex.hasIdAt(bytes, at);
  }

  /** Where blob `id` (hex) can be read: a live pack, else a condemned one; undefined if neither. */
  lookup(id: string): BlobLocation | undefined {
    return this.index.get(id) ?? this.condemnedIndex.get(id);
  }

  /** `lookup` for an ID as bytes (32 of them). */
  lookupId(id: Uint8Array): BlobLocation | undefined {
    return this.index.getId(id) ?? this.condemnedIndex.getId(id);
  }

  /** `lookupId(id)?.type`, without building a location (a restore asks once per page). */
  typeOfId(id: Uint8Array): BlobType | undefined {
    return this.index.typeOfId(id) ?? this.condemnedIndex.typeOfId(id);
  }

  /** `typeOfId` for the 32 bytes of `bytes` at `at`, without a view of them. */
  typeOfIdAt(bytes: Uint8Array, at: number): BlobType | undefined {
    return this.index.typeOfIdAt(bytes, at) ?? this.condemnedIndex.typeOfIdAt(bytes, at);
  }

  /** Live packs that an index file in storage names. */
  get packs(): ReadonlySet<string> {
    return this.indexedPacks;
  }

  /** Packs condemned by `prune`, by name: nothing needed them when they were condemned. */
  get condemned(): ReadonlyMap<string, CondemnedPack> {
    return this.condemnedPacks;
  }

  /** Forgotten snapshots: ID to sequence number. */
  get forgotten(): ReadonlyMap<string, number> {
    return this.forgottenSnapshots;
  }

  /** Names of the index files loaded (what a prune replaces). */
  get indexFiles(): readonly string[] {
    return this.loadedIndexFiles;
  }

  /**
   * Adds one pack's entries to the in-memory index. `indexed` says whether an index file in
   * storage names the pack; packs that none names are adopted by the next backup.
   */
  addPack(pack: string, entries: readonly PackEntry[], indexed = false): void {
    if (indexed) this.indexedPacks.add(pack);
    this.index.addPack(pack, entries);
  }

  /**
   * Loads every index file into the in-memory index, once (later calls wait for the first).
   * Nothing of the files is kept but the index itself: their parsed entries (an object and an ID
   * view per blob, 26 MB for 150 k blobs) made every garbage collection of a restore trace them.
   * The files are read with their entries left encoded (`openIndexEncoded`): parsing them into
   * objects first cost ~180 bytes of heap per blob while loading, 230 MB for 1.25 M blobs.
   * @throws {IntegrityError} when an index file is damaged.
   */
  loadIndex(): Promise<void> {
    this.indexLoad ??= this.readIndexFiles(openIndexEncoded).then((files) => {
      this.applyIndexFiles(files);
    });
    return this.indexLoad;
  }

  /**
   * The live packs with their entries, each pack once (what `prune` and `stats` walk). Loads the
   * index when it is not loaded yet; otherwise reads the index files it was loaded from again.
   * @throws {IntegrityError} when an index file is damaged.
   */
  livePacks(): Promise<IndexedPack[]> {
    return this.livePacksAs(openIndex);
  }

  /**
   * `livePacks` with each pack's entries left encoded (EncodedPack), for a caller that decodes
   * one pack at a time: prune of a repository of 1.25 M blobs held an object per blob.
   * @throws {IntegrityError} when an index file is damaged.
   */
  livePacksEncoded(): Promise<EncodedPack[]> {
    return this.livePacksAs(openIndexEncoded);
  }

  private async livePacksAs<P extends PackListing>(opener: IndexOpener<P>): Promise<P[]> {
    if (this.indexLoad) {
      await this.indexLoad;
      const files = await this.readIndexFiles(opener, this.loadedIndexFiles);
      const seen = new Set<string>();
      const live: P[] = [];
      for (const { file } of files) {
        for (const pack of file.packs) {
          const name = toHex(pack.packId);
          if (this.condemnedPacks.has(name) || seen.has(name)) continue;
          seen.add(name);
          live.push(pack);
        }
      }
      return live;
    }
    let live: P[] = [];
    this.indexLoad = this.readIndexFiles(opener).then((files) => {
      live = this.applyIndexFiles(files);
    });
    await this.indexLoad;
    return live;
  }

  /** Index files, verified and opened with `opener`: the ones named, or every one in storage. */
  private async readIndexFiles<P extends PackListing>(
    opener: IndexOpener<P>,
    names?: readonly string[],
  ): Promise<{ name: string; file: IndexFile<P> }[]> {
    const all = names ? [...names] : await this.listNames("index");
    return mapConcurrent(all, METADATA_READS, async (name) => {
      const bytes = await this.loadVerified("index", name);
      return { name, file: await opener(this.p, this.keys, bytes, `index/${name}`) };
    });
  }

  /**
   * Adds opened index files to the in-memory index (for callers that open them one by one, such
   * as `check`). A pack that one file condemns is condemned even if another lists it as live:
   * a prune that stopped before deleting the old index files leaves both. Returns the live packs.
   */
  applyIndexFiles<P extends PackListing>(
    files: readonly { name: string; file: IndexFile<P> }[],
  ): P[] {
    // A condemnation with no entries is prune's record of a pack that no index named and whose
    // header did not read there (SPEC §13a): an index file that lists the pack as live (a
    // backup that read it whole meanwhile and adopted it) outweighs it.
    const listed = new Set<string>(this.indexedPacks);
    for (const { file } of files) for (const pack of file.packs) listed.add(toHex(pack.packId));
    for (const { name, file } of files) {
      this.loadedIndexFiles.push(name);
      for (const c of file.condemned) {
        const pack = toHex(c.packId);
        if (this.condemnedPacks.has(pack)) continue;
        if (c.entries.length === 0 && listed.has(pack)) continue;
        this.condemnedPacks.set(pack, c);
        this.condemnedIndex.addPack(pack, c.entries);
      }
      for (const f of file.forgotten) this.forgottenSnapshots.set(toHex(f.snapshotId), f.seq);
    }
    const live: P[] = [];
    let blobs = this.index.size;
    for (const { file } of files) for (const pack of file.packs) blobs += entryCount(pack);
    this.index.reserve(blobs);
    for (const { file } of files) {
      for (const pack of file.packs) {
        const name = toHex(pack.packId);
        // Listed twice (a prune stopped before removing the old index files, or two backups
        // adopted the same leftover pack): one copy, or prune would take the second for unused.
        if (this.condemnedPacks.has(name) || this.indexedPacks.has(name)) continue;
        this.indexedPacks.add(name);
        if ("encodedEntries" in pack) this.index.addEncodedPack(name, pack.encodedEntries);
        else this.index.addPack(name, pack.entries);
        live.push(pack);
      }
    }
    return live;
  }

  /**
   * Finds packs that no index lists (left by an interrupted backup), reads their headers and
   * adds them to the in-memory index, so their blobs are reused instead of uploaded again.
   * Returns them, for the caller to write an index file that covers them.
   */
  async adoptUnindexedPacks(): Promise<IndexedPack[]> {
    const adopted: IndexedPack[] = [];
    for await (const { name, size } of this.storage.list("data")) {
      if (this.indexedPacks.has(name) || this.condemnedPacks.has(name)) continue;
      try {
        const entries = await this.readStoredPackHeader(name, size);
        this.addPack(name, entries);
        adopted.push({ packId: fromHex(name), entries });
      } catch (err) {
        // A damaged leftover is not fatal for a new backup: its blobs are simply uploaded again.
        if (!(err instanceof IntegrityError)) throw err;
      }
    }
    return adopted;
  }

  /**
   * What stops leftover pack `name` (one no index names) from being adopted: undefined when its
   * header reads as adoption reads it (readStoredPackHeader), else the error that stopped it;
   * `integrity` means damaged or not this repository's, which no backup ever adopts.
   * @throws what is not a LocketError (a bug).
   */
  async leftoverProblem(name: string, size: number): Promise<LocketError | undefined> {
    try {
      await this.readStoredPackHeader(name, size);
      return undefined;
    } catch (err) {
      if (!(err instanceof LocketError)) throw err;
      return err;
    }
  }

  /**
   * readPackHeader for a pack that may have been named as packs were before 2026-12-07 (SPEC §7):
   * one whose trailer does not match its name is read whole, when it is no larger than a pack
   * can be, and accepted when all its bytes hash to the name (the adoption of leftovers).
   * @throws {IntegrityError} as readPackHeader does.
   */
  async readStoredPackHeader(name: string, size: number): Promise<PackEntry[]> {
    const { entries, named } = await this.readPackHeaderNamed(name, size);
    if (named) return entries;
    const objectName = `data/${name}`;
    if (size > MAX_LEFTOVER_LOAD_BYTES) throw packNameMismatch(objectName);
    const bytes = await this.storage.load("data", name);
    checkWholePackName(this.p, bytes, fromHex(name), objectName);
    return openPackHeader(this.keys, bytes, bytes.length, objectName);
  }

  /**
   * Reads a pack's header, checks it against the pack's name and authenticates it.
   * @throws {IntegrityError} when the pack is truncated, swapped, or its header forged.
   */
  async readPackHeader(name: string, size?: number): Promise<PackEntry[]> {
    const packSize = size ?? (await this.storage.stat("data", name)).size;
    const objectName = `data/${name}`;
    const tail = await this.readPackTail(name, packSize);
    checkPackName(this.p, tail, packSize, fromHex(name), objectName);
    return openPackHeader(this.keys, tail, packSize, objectName);
  }

  /**
   * A pack's header, authenticated, and whether the pack's trailer hashes to its name, without
   * failing when it does not (what `check` compares with the index: a pack named as before
   * 2026-12-07 is told apart from a swapped one by the index's entries, not by reading it whole).
   * @throws {IntegrityError} when the pack is truncated or its header forged.
   */
  async readPackHeaderNamed(
    name: string,
    size: number,
  ): Promise<{ entries: PackEntry[]; named: boolean }> {
    const objectName = `data/${name}`;
    const tail = await this.readPackTail(name, size);
    const named = packNameMatches(this.p, tail, size, fromHex(name), objectName);
    return { entries: await openPackHeader(this.keys, tail, size, objectName), named };
  }

  /** The last bytes of pack `name`, holding at least its whole trailer (one read, rarely two). */
  private async readPackTail(name: string, packSize: number): Promise<Uint8Array> {
    const objectName = `data/${name}`;
    const guess = Math.min(packSize, TAIL_GUESS_BYTES);
    const tail = await this.storage.load("data", name, packSize - guess, guess);
    const headerLength = readTrailerLength(tail, packSize, objectName);
    if (headerLength + 4 <= tail.length) return tail;
    const whole = await this.storage.load(
      "data",
      name,
      packSize - headerLength - 4,
      headerLength + 4,
    );
    if (readTrailerLength(whole, packSize, objectName) !== headerLength)
      throw new IntegrityError("pack changed while it was read", objectName);
    return whole;
  }

  /**
   * Reads blob `id` (hex) and verifies it against its keyed ID.
   * @throws {IntegrityError} when the blob is missing from the index, or its pack is missing,
   *   damaged or swapped.
   */
  async loadBlob(id: string, expectType?: BlobType): Promise<Uint8Array> {
    const loc = this.lookup(id);
    if (!loc) throw new IntegrityError(`blob ${id} is referenced but no index lists it`);
    return this.loadBlobAt(fromHex(id), loc, expectType);
  }

  /**
   * `loadBlob` for a blob given by its ID's bytes whose location the caller looked up already
   * (`lookupId(id)`). @throws {IntegrityError} as loadBlob does.
   */
  async loadBlobAt(id: Uint8Array, loc: BlobLocation, expectType?: BlobType): Promise<Uint8Array> {
    if (expectType !== undefined && loc.type !== expectType) {
      throw new IntegrityError(`blob ${toHex(id)} has type ${loc.type}, expected ${expectType}`);
    }
    return this.blobIn(id, loc, await this.loadSegment(loc));
  }

  /**
   * Blob `id`, checked as `loadBlob` checks it, when its segment has arrived in the cache;
   * undefined when it has not (then use `loadBlob`). A restore takes most blobs this way (one
   * await per 4 KiB page was most of its main thread's garbage), with the location it looked
   * up already (`lookupId(id)`, and `segmentKey` of it as `key`) when it planned its reads: no
   * hex string per page. The blob is verified against `id` at `loc` all the same.
   * @throws {IntegrityError} as loadBlob does.
   */
  readyBlobAt(
    id: Uint8Array,
    loc: BlobLocation,
    key: string,
    expectType?: BlobType,
  ): Uint8Array | undefined {
    const opened = this.segments.get(key)?.value;
    if (!opened) return undefined;
    if (expectType !== undefined && loc.type !== expectType) {
      throw new IntegrityError(`blob ${toHex(id)} has type ${loc.type}, expected ${expectType}`);
    }
    return this.blobIn(id, loc, opened);
  }

  /** Blob `id` at `loc` in its opened segment, verified against its keyed ID unless the opener did. */
  private blobIn(id: Uint8Array, loc: BlobLocation, { payload, checked }: OpenSegment): Uint8Array {
    if (loc.offset + loc.length > payload.length) {
      throw new IntegrityError(`blob ${toHex(id)} lies outside its segment`, `data/${loc.pack}`);
    }
    const plain = payload.subarray(loc.offset, loc.offset + loc.length);
    // The opener may have checked this blob already, at this very place, off the main thread.
    if (checkedAt(checked, id, loc)) return plain;
    const actual = blobId(this.p, this.keys.id, loc.type, plain);
    if (!equalBytes(actual, id)) {
      throw new IntegrityError(
        `blob ${toHex(id)} does not match its ID (swapped or forged data)`,
        `data/${loc.pack}`,
      );
    }
    return plain;
  }

  /**
   * Starts loading several segments of one pack with a single ranged read (from the lowest
   * segment's start to the highest one's end), so a restore from S3 makes one request per run of
   * neighbouring segments instead of one per segment. The segment opener (see
   * useSegmentOpener) opens them and checks the blobs listed with each, so `loadBlob` need not
   * hash those again. Segments already cached are kept, and count as requested now. Errors
   * surface in `loadBlob`, not here.
   * @throws {RangeError} when the segments are not all in one pack.
   */
  prefetchRun(run: readonly SegmentRead[]): void {
    const todo = run.filter((s) => {
      const key = segmentKey(s.loc);
      const cached = this.segments.get(key);
      if (!cached) return true;
      // Wanted again: it leaves the cache as if requested now. A reader that goes back to a
      // segment (a database's bases, read between pieces of media) would otherwise find it
      // evicted by the read-ahead that came after its first request, and read it again.
      this.segments.delete(key);
      this.segments.set(key, cached);
      return false;
    });
    if (todo.length === 0) return;
    const pack = todo[0].loc.pack;
    if (todo.some((s) => s.loc.pack !== pack)) {
      throw new RangeError("prefetchRun: segments of several packs");
    }
    let start = todo[0].loc.segmentOffset;
    let end = 0;
    for (const { loc } of todo) {
      start = Math.min(start, loc.segmentOffset);
      end = Math.max(end, loc.segmentOffset + loc.segmentLength);
    }
    // The wanted blobs' IDs copied, one buffer per segment: what the opener checks is what the
    // cache later vouches for, whatever becomes of the reader's buffers.
    const ids = todo.map((s) => {
      const copy = new Uint8Array(32 * s.blobs.length);
      s.blobs.forEach((b, j) => {
        copy.set(b.id, 32 * j);
      });
      return copy;
    });
    const segments: SegmentToOpen[] = todo.map((s, i) => ({
      start: s.loc.segmentOffset - start,
      length: s.loc.segmentLength,
      blobs: s.blobs.map((b, j) => ({
        id: ids[i].subarray(32 * j, 32 * j + 32),
        type: b.loc.type,
        offset: b.loc.offset,
        length: b.loc.length,
      })),
    }));
    const opened = this.readPack(pack, start, end - start).then((bytes) =>
      this.opener.open(bytes, segments, `data/${pack}`, { payloads: true }),
    );
    opened.catch(() => {});
    todo.forEach((s, i) => {
      const one = opened.then(async (all) => {
        const { payload, matches } = await all[i];
        const byOffset = new Map<number, number>();
        s.blobs.forEach((b, j) => {
          if (matches[j]) byOffset.set(b.loc.offset, j);
        });
        const checked: CheckedBlobs = { blobs: s.blobs, ids: ids[i], byOffset };
        return { payload, checked };
      });
      this.cacheSegment(s.loc, one).catch(() => {});
    });
  }

  private loadSegment(loc: BlobLocation): Promise<OpenSegment> {
    const key = segmentKey(loc);
    // First in, first out, not least recently used: reads move forward through the segments,
    // and promoting the one being read would make eviction drop the read-ahead instead.
    const seg = this.segments.get(key);
    if (seg) return seg.promise;
    return this.cacheSegment(loc, this.decodeSegment(loc));
  }

  private async readPack(pack: string, offset: number, length: number): Promise<Uint8Array> {
    try {
      return await this.storage.load("data", pack, offset, length);
    } catch (err) {
      const objectName = `data/${pack}`;
      if (err instanceof NotFoundError) throw new IntegrityError("pack is missing", objectName);
      // The index says the pack holds this range: a pack that does not is truncated. Any other
      // storage failure (network, permission, a CORS refusal) stays a storage error.
      if (err instanceof OutOfRangeError) {
        throw new IntegrityError(
          `pack is shorter than its index says: ${err.message}`,
          objectName,
          {
            cause: err,
          },
        );
      }
      throw err;
    }
  }

  private async decodeSegment(loc: BlobLocation): Promise<OpenSegment> {
    const sealed = await this.readPack(loc.pack, loc.segmentOffset, loc.segmentLength);
    const payload = await openSegment(this.p, this.keys, sealed, `data/${loc.pack}`);
    return { payload, checked: NOTHING_CHECKED };
  }

  /** Caches a segment's promise, bounded by bytes (decoded size once known), oldest out first. */
  private cacheSegment(loc: BlobLocation, promise: Promise<OpenSegment>): Promise<OpenSegment> {
    const key = segmentKey(loc);
    const entry: CachedSegment = { promise, bytes: loc.segmentLength };
    this.segments.set(key, entry);
    this.segmentBytes += entry.bytes;
    promise.then(
      (decoded) => {
        if (this.segments.get(key) !== entry) return;
        entry.value = decoded;
        this.segmentBytes += decoded.payload.length - entry.bytes;
        entry.bytes = decoded.payload.length;
        this.evict();
      },
      () => {
        if (this.segments.get(key) !== entry) return;
        this.segments.delete(key);
        this.segmentBytes -= entry.bytes;
      },
    );
    this.evict();
    return promise;
  }

  private evict(): void {
    while (this.segmentBytes > this.segmentCacheBytes && this.segments.size > 1) {
      const [oldest, entry] = this.segments.entries().next().value!;
      this.segments.delete(oldest);
      this.segmentBytes -= entry.bytes;
      if (this.evictionLogs.size > 0 && entry.value) this.logEviction(entry.value.payload);
    }
  }

  /**
   * Logs, until `untrackEvictions`, every segment payload evicted from the cache whose memory can
   * be released at once (`releasable`), for a reader that promises to hold no blob past a point
   * it knows (BlobReads with `release`). Nothing is released here: that is the reader's call.
   */
  trackEvictions(): EvictionLog {
    const log: EvictionLog = { now: 0, buffers: [], at: [] };
    this.evictionLogs.add(log);
    return log;
  }

  untrackEvictions(log: EvictionLog): void {
    this.evictionLogs.delete(log);
  }

  private logEviction(payload: Uint8Array): void {
    const buffer = payload.buffer;
    if (!releasable(buffer)) return;
    // Another cached segment may share the buffer (an opener in this thread may cut several
    // payloads from one): then it stays.
    for (const other of this.segments.values()) if (other.value?.payload.buffer === buffer) return;
    for (const log of this.evictionLogs) {
      log.buffers.push(buffer);
      log.at.push(log.now);
    }
  }

  /** Loads and decodes tree blob `id` (hex). @throws {IntegrityError} when damaged or hostile. */
  async loadTree(id: string): Promise<Tree> {
    const bytes = await this.loadBlob(id, BLOB_TREE);
    return decoded(`tree ${id}`, () => decodeTree(bytes));
  }

  /**
   * A folder's entries, joining the parts of a split folder and checking that they continue
   * each other in strict name order.
   * @throws {IntegrityError} when a part is missing, damaged or out of order.
   */
  async dirNodes(node: DirNode): Promise<TreeNode[]> {
    if (node.subtree) return [...(await this.loadTree(node.subtree)).nodes];
    const out: TreeNode[] = [];
    for (const part of node.subtrees ?? []) {
      const nodes = (await this.loadTree(part)).nodes;
      if (nodes.length === 0) throw new IntegrityError(`folder ${node.name}: an empty tree part`);
      if (out.length && !(out[out.length - 1].name < nodes[0].name)) {
        throw new IntegrityError(`folder ${node.name}: tree parts overlap or are out of order`);
      }
      out.push(...nodes);
    }
    return out;
  }

  /** A file's data blob IDs in order, expanding list blobs. */
  async contentIds(node: FileNode): Promise<string[]> {
    if (node.content) return [...node.content];
    const out: string[] = [];
    for (const list of node.lists ?? []) out.push(...(await this.listIds(list)));
    return out;
  }

  /**
   * `contentIds` as bytes: the IDs back to back, 32 bytes each, as list blobs hold them. A backup
   * of a database reads its parent's 100 000 page IDs this way, without a string for each.
   * @throws {IntegrityError} when a list blob is missing, damaged or malformed.
   */
  async contentIdBytes(node: FileNode): Promise<Uint8Array> {
    if (node.content) return idsFromHex(node.content);
    // LIST_BATCH at a time: neighbouring lists share segments, which a batch reads once each,
    // while the next segment is read (one at a time: 55-77 ms for a day's 430 lists; 32-50 ms).
    const lists = node.lists ?? [];
    const bodies: Uint8Array[] = [];
    for (let i = 0; i < lists.length; i += LIST_BATCH) {
      const batch = lists.slice(i, i + LIST_BATCH);
      bodies.push(...(await Promise.all(batch.map((l) => this.listBody(l)))));
    }
    return concatAll(bodies);
  }

  /**
   * A file's content as entries, in order: a data blob ID, or a delta blob ID and the ID of its
   * base (SPEC §8), told apart by the index's blob types. An ID the index does not know stays a
   * one-ID entry; reading it reports it.
   * @throws {IntegrityError} when a delta is last, with no base after it.
   */
  async contentEntries(node: FileNode): Promise<ContentEntry[]> {
    const ids = await this.contentIds(node);
    const deltas = this.deltaEntries(idsFromHex(ids), node.name);
    const out: ContentEntry[] = [];
    for (let i = 0; i < ids.length; i++) {
      out.push(deltas[i] ? { id: ids[i], base: ids[++i] } : { id: ids[i] });
    }
    return out;
  }

  /**
   * The rule that tells a file's entries apart (SPEC §8), for its content IDs as bytes (32 each):
   * 1 at each delta blob's ID (its base's ID is next), 0 elsewhere (a data blob's ID, a base's,
   * or an ID the index does not know: reading it reports it). Types come from the index.
   * @throws {IntegrityError} naming `name` when a delta is last, with no base after it.
   */
  deltaEntries(ids: Uint8Array, name: string): Uint8Array {
    const n = ids.length / 32;
    const deltas = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      if (this.typeOfIdAt(ids, 32 * i) !== BLOB_DELTA) continue;
      if (i + 1 === n) {
        const id = toHex(ids.subarray(32 * i, 32 * i + 32));
        throw new IntegrityError(`file ${name}: delta blob ${id} has no base after it`);
      }
      deltas[i++] = 1;
    }
    return deltas;
  }

  /** The data blob IDs (hex) of list blob `id`. @throws {IntegrityError} when damaged. */
  async listIds(id: string): Promise<string[]> {
    return parseIdList(await this.listBody(id)).map(toHex);
  }

  /**
   * `listIds` as bytes: the list blob's checked plaintext, 32-byte IDs back to back.
   * @throws {IntegrityError} when the list is missing, damaged or malformed.
   */
  listIdBytes(id: string): Promise<Uint8Array> {
    return this.listBody(id);
  }

  /**
   * The IDs of list blob `id`, 32 bytes each back to back: its plaintext, or for a list patch
   * (SPEC §8) the IDs it makes from its base, read here. @throws {IntegrityError} when damaged.
   */
  private async listBody(id: string): Promise<Uint8Array> {
    if (this.lookup(id)?.type !== BLOB_LIST_PATCH)
      return this.checkedList(id, await this.loadBlob(id, BLOB_LIST));
    const patch = await this.loadBlob(id, BLOB_LIST_PATCH);
    const base = toHex(this.listPatchBase(id, patch));
    return this.applyListPatch(id, patch, await this.loadBlob(base, BLOB_LIST));
  }

  /** List blob `id`'s plaintext `body`, checked. @throws {IntegrityError} when malformed. */
  checkedList(id: string, body: Uint8Array): Uint8Array {
    decoded(`list ${id}`, () => checkIdList(body));
    return body;
  }

  /** The base list a list patch names. @throws {IntegrityError} when the patch is too short. */
  listPatchBase(id: string, patch: Uint8Array): Uint8Array {
    return decoded(`list patch ${id}`, () => listPatchBase(patch));
  }

  /**
   * The IDs list patch `id` makes from its base's plaintext `base` (a list blob, type checked by
   * the caller). @throws {IntegrityError} when the patch or the base is malformed.
   */
  applyListPatch(id: string, patch: Uint8Array, base: Uint8Array): Uint8Array {
    return decoded(`list patch ${id}`, () => applyListPatch(patch, base));
  }

  /**
   * Loads a content-addressed object and checks that its SHA-256 is its name, which detects
   * swapped, replaced and corrupted objects before any decryption.
   * @throws {IntegrityError} on a mismatch; {NotFoundError} when missing.
   */
  async loadVerified(kind: "index" | "snapshots", name: string): Promise<Uint8Array> {
    const bytes = await this.storage.load(kind, name);
    checkName(this.p, bytes, fromHex(name), `${kind}/${name}`);
    return bytes;
  }

  /**
   * Stores an index file or snapshot under the SHA-256 of its bytes; returns its name and size.
   * (Packs are named by their trailer: createPackWriter.)
   */
  async saveAddressed(
    kind: "index" | "snapshots",
    bytes: Uint8Array,
  ): Promise<{ name: string; size: number }> {
    const name = toHex(this.p.sha256(bytes));
    await this.storage.save(kind, name, bytes);
    return { name, size: bytes.length };
  }

  /**
   * Starts a pack, written in parts and named by its trailer's hash at the end: streamed to
   * storage where the backend can (`Storage.createWriter`), else buffered in memory, `sizeHint`
   * bytes to start with, and saved whole.
   */
  async createPackWriter(sizeHint?: number): Promise<PackWriter> {
    const target = this.storage.createWriter
      ? await this.storage.createWriter("data")
      : new BufferedObjectWriter(this.storage, "data", sizeHint, this.spareBuffers);
    return new PackWriter(this.p, target);
  }

  /** Writes an index file for `packs` (and, from forget and prune, what they record). */
  async saveIndex(
    packs: readonly PackListing[],
    maintenance?: Omit<IndexFile, "packs">,
  ): Promise<{ name: string; size: number }> {
    const sealed = await sealIndex(this.p, this.keys, packs, maintenance);
    const saved = await this.saveAddressed("index", sealed);
    for (const pack of packs) this.indexedPacks.add(toHex(pack.packId));
    return saved;
  }

  /** Writes a snapshot; returns its ID. */
  async saveSnapshot(s: Snapshot): Promise<{ name: string; size: number }> {
    return this.saveAddressed("snapshots", await sealSnapshot(this.p, this.keys, s));
  }

  /**
   * Every snapshot (see `snapshots`), after the history check against `minSeq`, the highest
   * sequence number this device has seen (`checkFreshness`): what every command that trusts the
   * history starts from.
   * @throws {RollbackError} when storage hides a snapshot or is behind `minSeq`.
   */
  async checkedSnapshots(minSeq: number): Promise<SnapshotRef[]> {
    const all = await this.snapshots();
    checkFreshness(all, minSeq, this.forgottenSnapshots);
    return all;
  }

  /**
   * Every snapshot, verified, oldest first (by sequence number). Loads the index first: it says
   * which snapshots were forgotten (one still in storage after an interrupted forget is left out).
   */
  async snapshots(): Promise<SnapshotRef[]> {
    // Read while the index loads, METADATA_READS at a time: over S3 each is a round trip, and a
    // year of daily snapshots read one after the other took seconds. Which were forgotten is
    // known once the index is: those are dropped then, read or not, whatever their reading gave.
    const read = this.listNames("snapshots").then((names) =>
      mapConcurrent(names, METADATA_READS, async (name) => {
        try {
          const bytes = await this.loadVerified("snapshots", name);
          const snapshot = await openSnapshot(this.p, this.keys, bytes, `snapshots/${name}`);
          return { name, snapshot };
        } catch (error) {
          return { name, error };
        }
      }),
    );
    const [results] = await Promise.all([read, this.loadIndex()]);
    const out: SnapshotRef[] = [];
    for (const r of results) {
      if (this.forgottenSnapshots.has(r.name)) continue;
      if ("error" in r) throw r.error;
      out.push({ id: r.name, snapshot: r.snapshot });
    }
    return out.sort((a, b) => a.snapshot.seq - b.snapshot.seq || (a.id < b.id ? -1 : 1));
  }

  /** The names of every object of `kind`, in the order storage lists them. */
  private async listNames(kind: "index" | "snapshots"): Promise<string[]> {
    const names: string[] = [];
    for await (const { name } of this.storage.list(kind)) names.push(name);
    return names;
  }

  /**
   * Finds a snapshot by "latest", a full ID or a unique ID prefix (at least 4 digits), among
   * `snapshots` when the caller has listed them already.
   * @throws {NotFoundError} when none matches; {UsageError} when the prefix is ambiguous.
   */
  async findSnapshot(ref: string, snapshots?: readonly SnapshotRef[]): Promise<SnapshotRef> {
    const all = snapshots ?? (await this.snapshots());
    if (ref === "latest") {
      if (all.length === 0)
        throw new NotFoundError(`the repository at ${this.storage.location} has no snapshots`);
      return all[all.length - 1];
    }
    if (!/^[0-9a-f]{4,64}$/.test(ref))
      throw new UsageError(`snapshot must be "latest" or a hex ID, got ${JSON.stringify(ref)}`);
    const hits = all.filter((s) => s.id.startsWith(ref));
    if (hits.length === 0) throw new NotFoundError(`no snapshot ${ref}`);
    if (hits.length > 1)
      throw new UsageError(`snapshot prefix ${ref} is ambiguous (${hits.length} matches)`);
    return hits[0];
  }
}
