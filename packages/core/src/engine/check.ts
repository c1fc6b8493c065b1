import { ByteWriter, fromHex, idsFromHex, toHex } from "../bytes.ts";
import { LocketError } from "../errors.ts";
import { BLOB_DATA, BLOB_DELTA } from "../format/blob.ts";
import { type EncodedPack, type IndexFile, openIndexEncoded } from "../format/index-file.ts";
import {
  checkWholePackName,
  openPackHeader,
  PACK_ENTRY_BYTES,
  type PackEntry,
  packNameMismatch,
  writeEntries,
} from "../format/pack.ts";
import { openSnapshot } from "../format/snapshot.ts";
import type { Repository, SnapshotRef } from "../repository.ts";
import { packSegments } from "../segment-opener.ts";
import { checkFreshness } from "./freshness.ts";
import { walk } from "./restore.ts";

/** One problem `check` found, naming the object (or snapshot path) it concerns. */
export interface CheckProblem {
  readonly object: string;
  readonly message: string;
}

export interface CheckReport {
  readonly snapshots: number;
  readonly indexFiles: number;
  readonly packs: number;
  readonly blobs: number;
  /** Packs downloaded and fully verified (with `readData`). */
  readonly packsRead: number;
  /** Packs whose header alone was read and checked (without `readData`). */
  readonly headersRead: number;
  readonly bytesRead: number;
  /** Damage: any entry here means the check failed. */
  readonly errors: readonly CheckProblem[];
  /**
   * Objects that could not be read for a reason that says nothing about their bytes (a storage
   * failure, an object gone since it was listed): their state is unknown, so the check did not
   * pass, but nothing is known to be damaged.
   */
  readonly unreadable: readonly CheckProblem[];
  /** Harmless findings, such as packs left by an interrupted backup. */
  readonly warnings: readonly CheckProblem[];
}

export interface CheckOptions {
  /** Download every pack and verify every blob, not only the structure. */
  readonly readData?: boolean;
  /** Highest snapshot sequence this device has seen (a lower history is reported as rollback). */
  readonly minSeq?: number;
  readonly onProgress?: (p: { phase: string; done: number; total: number; bytes: number }) => void;
}

/**
 * Packs read at once by `check --read-data` (each ~16 MiB): two were too few to keep both worker
 * threads busy while the next packs are read. On the benchmark's 1.8 GB repository (2 cores),
 * when each pack was also hashed whole on the workers (before packs were named by their
 * trailer), the whole check took 4.05-4.45 s with 2, 3.77-4.09 s with 3 and 3.69-3.80 s with 4.
 */
const READ_DATA_PARALLEL = 4;

/**
 * Reads and verifies every pack of `packs` (name and size), READ_DATA_PARALLEL at a time; the
 * findings are per pack, in the order of `packs`, whatever order the reads finish in.
 */
async function readAllPacks(
  repo: Repository,
  packs: readonly [string, number][],
  indexed: ReadonlyMap<string, Uint8Array>,
  onProgress: CheckOptions["onProgress"],
): Promise<PacksRead> {
  let packsRead = 0;
  let bytesRead = 0;
  const perPack = await eachPack(packs, READ_DATA_PARALLEL, async (name, size, found) => {
    // Not `bytesRead += await …`: that reads bytesRead before the await, and the lanes' reads
    // overlap, so each would overwrite the others' counts.
    const read = await readPack(repo, name, size, indexed.get(name), found);
    bytesRead += read;
    packsRead++;
    onProgress?.({ phase: "read-data", done: packsRead, total: packs.length, bytes: bytesRead });
  });
  return { perPack, packsRead, headersRead: 0, bytesRead };
}

/** `visit` for every pack of `packs`, `parallel` at a time; the findings per pack, in order. */
async function eachPack(
  packs: readonly [string, number][],
  parallel: number,
  visit: (name: string, size: number, found: Findings) => Promise<void>,
): Promise<Findings[]> {
  const perPack = packs.map(() => new Findings());
  let next = 0;
  const lane = async () => {
    while (next < packs.length) {
      const k = next++;
      await visit(packs[k][0], packs[k][1], perPack[k]);
    }
  };
  await Promise.all(Array.from({ length: parallel }, lane));
  return perPack;
}

/**
 * Reads pack `name` whole and verifies it: its trailer against its name, its header, every
 * segment, and every blob against its keyed ID. What it finds goes to `found`; returns bytes read.
 */
async function readPack(
  repo: Repository,
  name: string,
  size: number,
  indexed: Uint8Array | undefined,
  found: Findings,
): Promise<number> {
  const object = `data/${name}`;
  let bytes: Uint8Array;
  let entries: PackEntry[];
  try {
    bytes = await repo.storage.load("data", name);
  } catch (err) {
    found.add(err, object);
    return 0;
  }
  try {
    checkWholePackName(repo.p, bytes, fromHex(name), object);
    entries = await openPackHeader(repo.keys, bytes, size, object);
  } catch (err) {
    found.add(err, object);
    return 0;
  }
  checkAgainstIndex(repo, entries, indexed, object, found);
  const length = bytes.length;
  const segments = packSegments(entries);
  const opened = repo.segmentOpener.open(bytes, segments, object, { payloads: false });
  for (const o of opened) o.catch(() => {}); // each is awaited below, or left after a failure
  for (let i = 0; i < segments.length; i++) {
    try {
      const { matches } = await opened[i];
      segments[i].blobs.forEach((e, j) => {
        if (!matches[j])
          found.errors.push({ object, message: `blob ${toHex(e.id)} does not match its ID` });
      });
    } catch (err) {
      // A segment that does not open: the pack is damaged; one problem names it.
      found.add(err, object);
      break;
    }
  }
  return length;
}

/** What reading the packs (whole, or their headers) found, per pack in the order given. */
interface PacksRead {
  readonly perPack: Findings[];
  readonly packsRead: number;
  readonly headersRead: number;
  readonly bytesRead: number;
}

/** Pack headers read at once by a `check` without `--read-data` (one small ranged read each). */
const HEADERS_PARALLEL = 8;

/**
 * Reads the header of every pack, checking it against the pack's name and against what the
 * index files say the pack holds: a pack swapped, replaced or cut short, or an index that does
 * not match its pack, found without reading the data (one ranged read of ~50 bytes per blob).
 */
async function readAllHeaders(
  repo: Repository,
  packs: readonly [string, number][],
  indexed: ReadonlyMap<string, Uint8Array>,
  onProgress: CheckOptions["onProgress"],
): Promise<PacksRead> {
  let done = 0;
  let read = 0;
  const perPack = await eachPack(packs, HEADERS_PARALLEL, async (name, size, found) => {
    const object = `data/${name}`;
    try {
      const { entries, named } = await repo.readPackHeaderNamed(name, size);
      read++;
      // A trailer that does not hash to the name: a pack written before 2026-12-07 (named by all
      // its bytes) when its header lists what the index gives for it, else not this pack.
      if (named) checkAgainstIndex(repo, entries, indexed.get(name), object, found);
      else if (!sameAsIndex(repo, entries, indexed.get(name)))
        found.add(packNameMismatch(object), object);
    } catch (err) {
      found.add(err, object);
    }
    done++;
    onProgress?.({ phase: "headers", done, total: packs.length, bytes: 0 });
  });
  return { perPack, packsRead: 0, headersRead: read, bytesRead: 0 };
}

/**
 * A pack's header, against the entries the index files give for it (none for a pack no index
 * lists: those are reported apart). Every writer indexes a pack with its header's entries, in
 * order, so their encodings are equal.
 */
function checkAgainstIndex(
  repo: Repository,
  entries: readonly PackEntry[],
  indexed: Uint8Array | undefined,
  object: string,
  found: Findings,
): void {
  if (indexed && !sameAsIndex(repo, entries, indexed)) {
    found.errors.push({
      object,
      message: `pack header's ${entries.length} entries are not what the index gives for the pack`,
    });
  }
}

/** Whether `entries` encode to what hashes to `indexed` (true when no index lists the pack). */
function sameAsIndex(
  repo: Repository,
  entries: readonly PackEntry[],
  indexed: Uint8Array | undefined,
): boolean {
  if (!indexed) return true;
  const w = new ByteWriter(entries.length * PACK_ENTRY_BYTES);
  writeEntries(w, entries);
  return repo.p.timingSafeEqual(repo.p.sha256(w.finish()), indexed);
}

/**
 * What to say of a pack no index names: left by an interrupted backup, which the next backup
 * adopts when its header reads as adoption reads it (Repository.leftoverProblem); else
 * (`damaged`) no backup will, nothing refers to it, and the next prune condemns it. Never
 * throws for a read that fails: it says so.
 */
async function leftoverNote(
  repo: Repository,
  pack: string,
  size: number,
): Promise<{ message: string; damaged: boolean }> {
  const not = "pack is not indexed (left by an interrupted backup";
  const err = await repo.leftoverProblem(pack, size);
  if (!err) return { message: `${not}; the next backup adopts it)`, damaged: false };
  if (err.code !== "integrity") {
    return { message: `${not}; its header could not be read: ${err.message})`, damaged: false };
  }
  const why = withoutObject(err.message, `data/${pack}`);
  return {
    message: `${not}, or not this repository's) and damaged (${why}): no backup will adopt it and nothing refers to it; the next prune condemns it, and a prune deletes it after the keep-delete delay`,
    damaged: true,
  };
}

/** `message` without a leading "`object`: " (the report names the object already). */
function withoutObject(message: string, object: string): string {
  return message.startsWith(`${object}: `) ? message.slice(object.length + 2) : message;
}

/** What `check` found: damage, and objects it could not read. */
class Findings {
  readonly errors: CheckProblem[] = [];
  readonly unreadable: CheckProblem[] = [];

  /**
   * Records `err` about `object`: damage (integrity, rollback) as an error; any other failure
   * (storage, an object gone since it was listed, a worker thread lost) as unreadable, since it
   * says nothing about the bytes. Rethrows what is not a LocketError (a bug).
   */
  add(err: unknown, object: string): void {
    if (!(err instanceof LocketError)) throw err;
    const damage = err.code === "integrity" || err.code === "rollback";
    (damage ? this.errors : this.unreadable).push({
      object,
      message: withoutObject(err.message, object),
    });
  }
}

/**
 * Verifies a repository: every index file, snapshot and tree authenticates; every blob a snapshot
 * needs is indexed in a pack that exists; every live pack's header matches its name and what the
 * index gives for the pack (one small read each); with `readData`, every pack is read whole, and
 * every segment must authenticate and every blob match its keyed ID. Problems are collected, not
 * thrown, so one run reports all damage.
 * @throws only for storage failures that prevent listing or reading an index file.
 */
export async function check(repo: Repository, opts: CheckOptions = {}): Promise<CheckReport> {
  const found = new Findings();
  const { errors } = found;
  const warnings: CheckProblem[] = [];
  const { p, keys, storage } = repo;

  const { count: indexFiles, digests: indexed } = await loadIndexFiles(repo, found);

  const stored = new Map<string, number>();
  for await (const { name, size } of storage.list("data")) stored.set(name, size);
  for (const pack of repo.packs) {
    if (!stored.has(pack))
      errors.push({ object: `data/${pack}`, message: "pack is missing (an index lists it)" });
  }
  // Packs with nothing to verify: damaged leftovers, and those a prune condemned as such (with
  // no entries). Reading them whole would only find the damage again.
  const nothingToVerify = new Set<string>();
  for (const [pack, size] of stored) {
    // A condemned pack waits for the next prune to delete it; one already gone is not missed.
    const condemned = repo.condemned.get(pack);
    if (condemned?.entries.length === 0) {
      nothingToVerify.add(pack);
      warnings.push({
        object: `data/${pack}`,
        message:
          "pack was in no index and damaged: a prune condemned it, and a prune deletes it after the keep-delete delay",
      });
    } else if (!repo.packs.has(pack) && !condemned) {
      const note = await leftoverNote(repo, pack, size);
      if (note.damaged) nothingToVerify.add(pack);
      warnings.push({ object: `data/${pack}`, message: note.message });
    }
  }

  // The packs are read and verified on the segment opener's threads while this thread walks the
  // snapshots: walked first, with those threads idle, the walk was 0.6 s of the benchmark's
  // 3.8 s `check --read-data`. Their findings are reported after the walk's, as before.
  const reading = opts.readData
    ? readAllPacks(
        repo,
        [...stored].filter(([name]) => !nothingToVerify.has(name)),
        indexed,
        opts.onProgress,
      )
    : readAllHeaders(
        repo,
        [...stored].filter(([name]) => indexed.has(name)),
        indexed,
        opts.onProgress,
      );
  reading.catch(() => {}); // awaited below

  let snapshots = 0;
  const gone = new Set([...repo.condemned.keys()].filter((pack) => !stored.has(pack)));
  const seen: Seen = { trees: new Set(), lists: new Set(), gone };
  const history: SnapshotRef[] = [];
  for await (const { name } of storage.list("snapshots")) {
    if (repo.forgotten.has(name)) {
      warnings.push({
        object: `snapshots/${name}`,
        message: "snapshot was forgotten but not yet removed (an interrupted forget; run it again)",
      });
      continue;
    }
    snapshots++;
    try {
      const snap = await openSnapshot(
        p,
        keys,
        await repo.loadVerified("snapshots", name),
        `snapshots/${name}`,
      );
      history.push({ id: name, snapshot: snap });
      await checkTree(repo, snap.tree, name, seen, found);
    } catch (err) {
      found.add(err, `snapshots/${name}`);
    }
    opts.onProgress?.({ phase: "snapshots", done: snapshots, total: 0, bytes: 0 });
  }

  // A history with a snapshot that could not be read would look rolled back.
  if (errors.length === 0 && found.unreadable.length === 0) {
    try {
      checkFreshness(
        history.sort((a, b) => a.snapshot.seq - b.snapshot.seq),
        opts.minSeq ?? 0,
        repo.forgotten,
      );
    } catch (err) {
      found.add(err, "snapshots");
    }
  }

  const read = await reading;
  for (const f of read.perPack) {
    errors.push(...f.errors);
    found.unreadable.push(...f.unreadable);
  }

  return {
    snapshots,
    indexFiles,
    packs: stored.size,
    blobs: repo.blobCount,
    packsRead: read.packsRead,
    headersRead: read.headersRead,
    bytesRead: read.bytesRead,
    errors,
    unreadable: found.unreadable,
    warnings,
  };
}

/**
 * What is wrong with the page deltas among `ids` (32 bytes each, back to back: a file's inline
 * content, or one list blob, which holds whole entries: SPEC §8), or undefined: each delta blob
 * must be followed by its base, a data blob of the same length.
 */
function badDelta(repo: Repository, ids: Uint8Array): string | undefined {
  const n = ids.length / 32;
  const id = (i: number) => ids.subarray(32 * i, 32 * i + 32);
  for (let i = 0; i < n; i++) {
    if (repo.typeOfIdAt(ids, 32 * i) !== BLOB_DELTA) continue;
    const delta = repo.lookupId(id(i));
    const base = i + 1 < n ? repo.lookupId(id(i + 1)) : undefined;
    if (base?.type !== BLOB_DATA || base.length !== delta?.length) {
      return `delta blob ${toHex(id(i))} is not followed by a data blob of its length`;
    }
    i++;
  }
  return undefined;
}

/**
 * The first of `ids` (32 bytes each, back to back) that cannot be read, as hex: indexed in no
 * pack, or only in a condemned pack that a prune has deleted (`gone`); undefined if none.
 */
function firstUnreadable(
  repo: Repository,
  ids: Uint8Array,
  gone: ReadonlySet<string>,
): string | undefined {
  for (let at = 0; at < ids.length; at += 32) {
    const readable =
      repo.readableAt(ids, at) &&
      (gone.size === 0 || !gone.has(repo.lookupId(ids.subarray(at, at + 32))?.pack ?? ""));
    if (!readable) return toHex(ids.subarray(at, at + 32));
  }
  return undefined;
}

/** Trees and list blobs found whole already, in an earlier snapshot: not walked again. */
interface Seen {
  readonly trees: Set<string>;
  readonly lists: Set<string>;
  /** Condemned packs no longer in storage (a prune deleted them): their blobs cannot be read. */
  readonly gone: ReadonlySet<string>;
}

async function checkTree(
  repo: Repository,
  treeId: string,
  snapshot: string,
  seen: Seen,
  found: Findings,
): Promise<void> {
  const { errors } = found;
  if (seen.trees.has(treeId)) return;
  seen.trees.add(treeId);
  // The IDs are checked as bytes: as hex strings, the walk of the benchmark's 110 k page IDs
  // took ~0.5 s of the main thread while the workers waited for packs to verify.
  for await (const { path, node } of walk(repo, treeId)) {
    if (node.type !== "file") continue;
    const inline = node.content && idsFromHex(node.content);
    let missing = inline && firstUnreadable(repo, inline, seen.gone);
    let broken = inline && badDelta(repo, inline);
    try {
      for (const list of node.lists ?? []) {
        if (missing !== undefined || broken) break;
        if (seen.lists.has(list)) continue;
        const ids = await repo.listIdBytes(list);
        missing = firstUnreadable(repo, ids, seen.gone);
        broken = badDelta(repo, ids);
        if (missing === undefined && !broken) seen.lists.add(list);
      }
    } catch (err) {
      found.add(err, `snapshots/${snapshot}:${path.join("/")}`);
      continue;
    }
    if (broken) {
      errors.push({ object: `snapshots/${snapshot}:${path.join("/")}`, message: broken });
      continue;
    }
    if (missing !== undefined) {
      errors.push({
        object: `snapshots/${snapshot}:${path.join("/")}`,
        message: repo.readable(missing)
          ? `blob ${missing} is only in pack ${repo.lookup(missing)?.pack}, which a prune condemned and deleted`
          : `data blob ${missing} is not indexed`,
      });
    }
  }
}

/**
 * Opens every index file into the repository's in-memory index, recording each damaged one in
 * `found`; returns how many there are, and for each live pack the SHA-256 of the entries the
 * index gives for it. A function of its own so that the opened files are not kept alive (and
 * traced by every garbage collection) through the rest of a long check.
 * @throws a failure to read an index file that is not damage (storage): without the whole
 *   index, every blob it lists would be reported missing.
 */
async function loadIndexFiles(
  repo: Repository,
  found: Findings,
): Promise<{ count: number; digests: Map<string, Uint8Array> }> {
  let count = 0;
  // Entries left encoded: the in-memory index is all that is built from them.
  const opened: { name: string; file: IndexFile<EncodedPack> }[] = [];
  for await (const { name } of repo.storage.list("index")) {
    count++;
    try {
      const bytes = await repo.loadVerified("index", name);
      opened.push({
        name,
        file: await openIndexEncoded(repo.p, repo.keys, bytes, `index/${name}`),
      });
    } catch (err) {
      if (err instanceof LocketError && err.code !== "integrity") throw err;
      found.add(err, `index/${name}`);
    }
  }
  repo.applyIndexFiles(opened);
  // What each live pack holds, as the SHA-256 of its encoded entries (32 bytes a pack, not 49 a
  // blob): the first listing of a pack, as the in-memory index takes it.
  const digests = new Map<string, Uint8Array>();
  for (const { file } of opened) {
    for (const pack of file.packs) {
      const name = toHex(pack.packId);
      if (repo.condemned.has(name) || digests.has(name)) continue;
      digests.set(name, repo.p.sha256(pack.encodedEntries));
    }
  }
  return { count, digests };
}
