import { concatAll, fromHex, toHex } from "../bytes.ts";
import { IntegrityError, UsageError } from "../errors.ts";
import {
  type CondemnedPack,
  entriesOf,
  entryCount,
  type ForgottenSnapshot,
  type IndexedPack,
  type PackListing,
} from "../format/index-file.ts";
import type { PackEntry } from "../format/pack.ts";
import { IdSet } from "../id-set.ts";
import { mapConcurrent } from "../map-concurrent.ts";
import type { Repository, SnapshotRef } from "../repository.ts";
import { Packer } from "./packer.ts";
import { BlobReads, readLists } from "./restore.ts";

/**
 * Age after which a prune removes what interrupted writes left in storage (a local repository's
 * tmp/ files; Storage.removeStale), whatever --keep-delete says: a file being written is touched
 * by every write, so a day-old one is abandoned.
 */
export const STALE_WRITE_MS = 24 * 3_600_000;

/** How long a condemned pack waits before a prune deletes it (see `PruneOptions.keepDeleteMs`). */
export const DEFAULT_KEEP_DELETE_MS = 24 * 60 * 60 * 1000;
/**
 * Unused bytes left in partly used packs may reach this fraction of the used bytes (restic's
 * `--max-unused 5%`); past it, the packs with the highest unused share are repacked first.
 */
export const DEFAULT_MAX_UNUSED = 0.05;
/** Most pack entries per index file a prune writes (49 bytes each: ~49 MB, far below the limit). */
const ENTRIES_PER_INDEX_FILE = 1_000_000;

export interface PruneOptions {
  /**
   * How long a pack stays condemned before it is deleted, in milliseconds (default 24 h). A
   * backup that started before the pack was condemned may still refer to its blobs; a prune
   * after this delay sees that backup's snapshot and keeps the pack. 0 deletes at once: safe
   * only when no backup runs at the same time.
   */
  readonly keepDeleteMs?: number;
  /**
   * How much unused data partly used packs may keep, as a fraction of the used data (0 to 1;
   * default 0.05). Packs with no used blob are always condemned.
   */
  readonly maxUnused?: number;
  /** Decide and report, change nothing. */
  readonly dryRun?: boolean;
  /** Highest snapshot sequence this device has seen (a rolled-back history is refused). */
  readonly minSeq?: number;
  readonly now?: () => Date;
  readonly onProgress?: (p: {
    readonly phase: "mark" | "repack" | "delete";
    readonly done: number;
    readonly total: number;
  }) => void;
}

/** Counts and bytes (stored pack sizes) of what a prune did or, with `dryRun`, would do. */
export interface PruneReport {
  readonly snapshots: number;
  readonly usedBlobs: number;
  /** Live packs left as they are. */
  readonly keptPacks: number;
  /** Packs whose used blobs were copied into new packs; the old ones are condemned. */
  readonly repackedPacks: number;
  readonly newPacks: number;
  /** Packs condemned by this run (nothing needs them, or they were repacked, or damaged leftovers). */
  readonly condemnedPacks: number;
  readonly condemnedBytes: number;
  /**
   * Of `condemnedPacks`: packs no index names whose header does not read (damaged, or not this
   * repository's), which no backup adopts; condemned with no entries.
   */
  readonly damagedPacks: number;
  /** Condemned packs that a newer snapshot needs again: live once more. */
  readonly recoveredPacks: number;
  /** Condemned packs deleted by this run, and their bytes: the space reclaimed now. */
  readonly deletedPacks: number;
  readonly deletedBytes: number;
  /** Condemned packs still waiting for the delay, and their bytes: reclaimed by a later prune. */
  readonly waitingPacks: number;
  readonly waitingBytes: number;
  /** Bytes of blobs copied into new packs (before compression). */
  readonly repackedBytes: number;
  readonly indexFilesReplaced: number;
  readonly indexFilesWritten: number;
  /** Objects that interrupted writes left and that were removed (STALE_WRITE_MS). */
  readonly staleRemoved: number;
  readonly durationMs: number;
}

/**
 * Reclaims space no snapshot needs, in two phases and without a lock that stops backups
 * (rustic and kopia do the same). One run:
 *
 * 1. marks every blob the remaining snapshots reach (trees, lists, data);
 * 2. decides per live pack: keep; condemn when nothing in it is used; or, while the unused bytes
 *    in partly used packs exceed `maxUnused` of all used bytes, repack the packs with the highest
 *    unused share (their used blobs go into new packs) and condemn them; and per
 *    condemned pack: recover it when a snapshot needs it again (a backup that ran alongside the
 *    prune that condemned it), delete it once condemned longer than `keepDeleteMs`, else wait;
 * 3. writes in an order that is safe to stop at any point and to run again: new packs; deletion
 *    of expired condemned packs (the current index already condemns them) and of leftover
 *    forgotten snapshots; new index files (live packs, condemned packs with their time, the
 *    forgotten records still needed); only then removal of the index files it read.
 *
 * Index files that appear while it runs (a concurrent backup's or prune's) are left alone, so
 * two prunes may run at once: they lose nothing, only repeat work (docs/design.md).
 * @throws {RollbackError} when storage hides snapshots: pruning then would delete their data.
 * @throws {IntegrityError} when a snapshot needs a blob no pack holds (run `check`); nothing is
 *   changed then.
 */
export async function prune(repo: Repository, opts: PruneOptions = {}): Promise<PruneReport> {
  const now = (opts.now ?? (() => new Date()))().getTime();
  const keepDeleteMs = opts.keepDeleteMs ?? DEFAULT_KEEP_DELETE_MS;
  const maxUnused = opts.maxUnused ?? DEFAULT_MAX_UNUSED;
  if (!(keepDeleteMs >= 0)) throw new UsageError("keepDeleteMs must be ≥ 0");
  if (!(maxUnused >= 0 && maxUnused <= 1)) throw new UsageError("maxUnused must be from 0 to 1");
  const started = Date.now();

  // Encoded, each pack's entries decoded only while it is looked at: an object per blob of the
  // repository was most of prune's memory.
  const live = await repo.livePacksEncoded();
  const indexFiles = [...repo.indexFiles];
  const snapshots = await repo.checkedSnapshots(opts.minSeq ?? 0);
  const stored = new Map<string, number>();
  for await (const { name, size } of repo.storage.list("data")) stored.set(name, size);

  // 1. Mark.
  const used = await markUsed(repo, snapshots, opts.onProgress).catch((err) => {
    if (!(err instanceof IntegrityError)) throw err;
    throw new IntegrityError(`${err.message}; nothing was pruned (run check)`, undefined, {
      cause: err,
    });
  });

  // 2. Decide. A used blob is claimed by the first live pack that holds it; other copies count
  // as unused (duplicates left by concurrent backups or by an earlier interrupted prune).
  const claimed = new IdSet(used.size);
  const keep: PackListing[] = [];
  const repack: { name: string; entries: PackEntry[] }[] = [];
  const condemn: CondemnedPack[] = [];
  const claim = (entries: readonly PackEntry[]): PackEntry[] => {
    const mine: PackEntry[] = [];
    for (const e of entries) if (used.has(e.id) && claimed.add(e.id)) mine.push(e);
    return mine;
  };
  const blobBytes = (entries: readonly PackEntry[]) => entries.reduce((n, e) => n + e.length, 0);
  let condemnedBytes = 0;
  const condemnPack = (pack: IndexedPack, name: string) => {
    condemn.push({ ...pack, condemnedAt: now });
    condemnedBytes += stored.get(name) ?? 0;
  };
  const partly: { pack: IndexedPack; name: string; mine: PackEntry[]; unused: number }[] = [];
  let usedBytes = 0;
  let partlyUnused = 0;
  // livePacks lists each live pack once, even when several index files name it.
  for (const encoded of live) {
    const name = toHex(encoded.packId);
    if (!stored.has(name)) continue; // missing: any blob a snapshot needs from it is caught below
    const pack = { packId: encoded.packId, entries: entriesOf(encoded) };
    const mine = claim(pack.entries);
    usedBytes += blobBytes(mine);
    if (mine.length === pack.entries.length) keep.push(encoded);
    else if (mine.length === 0) condemnPack(pack, name);
    else {
      const unused = blobBytes(pack.entries) - blobBytes(mine);
      partly.push({ pack, name, mine, unused });
      partlyUnused += unused;
    }
  }
  // The packs with the highest unused share first, until what stays unused is within the limit.
  partly.sort(
    (a, b) => b.unused / blobBytes(b.pack.entries) - a.unused / blobBytes(a.pack.entries),
  );
  for (const x of partly) {
    if (partlyUnused <= maxUnused * usedBytes) {
      keep.push(x.pack);
      continue;
    }
    repack.push({ name: x.name, entries: x.mine });
    condemnPack(x.pack, x.name);
    partlyUnused -= x.unused;
  }
  // A pack no index names (live or condemned) is left by an interrupted backup or prune, and the
  // next backup adopts it, unless its header does not read as adoption reads it: damaged, or
  // not this repository's. No backup adopts that one and nothing can refer to it: it is
  // condemned with no entries, and goes as every condemned pack goes (after `keepDeleteMs`).
  // (Should a backup read it whole meanwhile and adopt it, its index's live listing of the pack
  // outweighs this record: Repository.applyIndexFiles.)
  const unindexed = [...stored].filter(
    ([name]) => !repo.packs.has(name) && !repo.condemned.has(name),
  );
  // A pack that could not be read at all (gone meanwhile, storage failing) is not judged.
  const unreadable = await mapConcurrent(
    unindexed,
    8,
    async ([name, size]) => (await repo.leftoverProblem(name, size))?.code === "integrity",
  );
  let damagedPacks = 0;
  unindexed.forEach(([name], i) => {
    if (!unreadable[i]) return;
    condemnPack({ packId: fromHex(name), entries: [] }, name);
    damagedPacks++;
  });
  let recoveredPacks = 0;
  const waiting: CondemnedPack[] = [];
  const expired: string[] = [];
  let waitingBytes = 0;
  let deletedBytes = 0;
  for (const [name, c] of repo.condemned) {
    if (!stored.has(name)) continue; // deleted by an earlier run that stopped before its index
    if (claim(c.entries).length > 0) {
      keep.push({ packId: c.packId, entries: c.entries });
      recoveredPacks++;
    } else if (now - c.condemnedAt >= keepDeleteMs) {
      expired.push(name);
      deletedBytes += stored.get(name) ?? 0;
    } else {
      waiting.push(c);
      waitingBytes += stored.get(name) ?? 0;
    }
  }
  const unheld = used.findHex((id) => !claimed.has(id));
  if (unheld) {
    throw new IntegrityError(
      `blob ${unheld} is needed by a snapshot but no pack in storage holds it; ` +
        "nothing was pruned (run check)",
    );
  }
  // Newly condemned packs wait too, unless there is no delay.
  const deleteNow = keepDeleteMs === 0 ? condemn.map((c) => toHex(c.packId)) : [];
  if (keepDeleteMs === 0) deletedBytes += condemnedBytes;
  else {
    waiting.push(...condemn);
    waitingBytes += condemnedBytes;
  }
  // Snapshot objects an interrupted forget left behind (snapshots() no longer lists them).
  const leftovers: string[] = [];
  for await (const { name } of repo.storage.list("snapshots")) {
    if (repo.forgotten.has(name)) leftovers.push(name);
  }
  const forgotten = neededForgotten(snapshots, repo.forgotten);

  let staleRemoved = 0;
  const report = (extra: { newPacks: number; repackedBytes: number; written: number }) => ({
    snapshots: snapshots.length,
    usedBlobs: used.size,
    keptPacks: keep.length - recoveredPacks,
    repackedPacks: repack.length,
    newPacks: extra.newPacks,
    condemnedPacks: condemn.length,
    condemnedBytes,
    damagedPacks,
    recoveredPacks,
    deletedPacks: expired.length + deleteNow.length,
    deletedBytes,
    waitingPacks: waiting.length,
    waitingBytes,
    repackedBytes: extra.repackedBytes,
    indexFilesReplaced: extra.written > 0 ? indexFiles.length : 0,
    indexFilesWritten: extra.written,
    staleRemoved,
    durationMs: Date.now() - started,
  });
  const nothingToDo =
    repack.length === 0 &&
    condemn.length === 0 &&
    recoveredPacks === 0 &&
    expired.length === 0 &&
    leftovers.length === 0 &&
    forgotten.length === repo.forgotten.size &&
    indexFiles.length <= 1;
  const repackTotal = repack.reduce((n, r) => n + blobBytes(r.entries), 0);
  if (!opts.dryRun) staleRemoved = (await repo.storage.removeStale?.(STALE_WRITE_MS)) ?? 0;
  if (opts.dryRun || nothingToDo)
    return report({ newPacks: 0, repackedBytes: repackTotal, written: 0 });

  // 3. Write. New packs first: until the index below names them they are merely unindexed.
  const packer = new Packer(repo);
  let repackedBytes = 0;
  // Read ahead as a restore does, within the segment cache (reading a whole pack ahead made a
  // small cache drop segments before they were used, and read them twice), the segments opened
  // by the segment opener (worker threads in Node) while earlier blobs are repacked.
  const reads = new BlobReads(repo, concatAll(repack.flatMap((r) => r.entries.map((e) => e.id))));
  let taken = 0;
  try {
    for (const r of repack) {
      for (const e of r.entries) {
        const next = reads.next(taken++, e.type);
        const plain = next instanceof Uint8Array ? next : await next;
        await packer.add(e.type, e.id, plain, true);
        repackedBytes += e.length;
        opts.onProgress?.({ phase: "repack", done: repackedBytes, total: repackTotal });
      }
    }
    await packer.flush();
  } catch (err) {
    await packer.abort();
    throw err;
  }
  keep.push(...packer.storedEncoded);

  let deleted = 0;
  const toDelete = expired.length + deleteNow.length;
  for (const name of expired) {
    await repo.storage.remove("data", name);
    opts.onProgress?.({ phase: "delete", done: ++deleted, total: toDelete });
  }
  for (const id of leftovers) await repo.storage.remove("snapshots", id);

  const condemnedRecords = keepDeleteMs === 0 ? [...waiting, ...condemn] : waiting;
  const batches: PackListing[][] = [[]];
  let entries = 0;
  for (const pack of keep) {
    const n = entryCount(pack);
    if (entries + n > ENTRIES_PER_INDEX_FILE && batches.at(-1)!.length > 0) {
      batches.push([]);
      entries = 0;
    }
    batches.at(-1)!.push(pack);
    entries += n;
  }
  let written = 0;
  for (const [i, batch] of batches.entries()) {
    const records = i === 0 ? { condemned: condemnedRecords, forgotten } : undefined;
    if (batch.length === 0 && !records?.condemned.length && !records?.forgotten.length) continue;
    await repo.saveIndex(batch, records);
    written++;
  }
  for (const name of indexFiles) await repo.storage.remove("index", name);
  // No delay: the new index already condemns these, so a reader never takes them for live.
  for (const name of deleteNow) {
    await repo.storage.remove("data", name);
    opts.onProgress?.({ phase: "delete", done: ++deleted, total: toDelete });
  }
  return report({ newPacks: packer.storedEncoded.length, repackedBytes, written });
}

/**
 * Every blob the snapshots reach. Shared subtrees and lists are read once. IDs are kept as bytes
 * (IdSet): a Set of hex strings took ~130 bytes per blob, 1.25 M of them in a grown repository.
 */
async function markUsed(
  repo: Repository,
  snapshots: readonly SnapshotRef[],
  onProgress: PruneOptions["onProgress"],
): Promise<IdSet> {
  const used = new IdSet();
  // Lists whose IDs are marked. Not `used`: a list patch's base is used (kept) without its IDs,
  // and a file elsewhere that lists that base itself needs them all.
  const expanded = new IdSet();
  const markTree = async (id: string): Promise<void> => {
    if (!used.addHex(id)) return;
    const { nodes } = await repo.loadTree(id);
    // The tree's new list blobs first, read ahead together and opened off the main thread.
    const lists = new Set<string>();
    for (const n of nodes) if (n.type === "file") for (const l of n.lists ?? []) lists.add(l);
    const fresh = [...lists].filter((l) => !expanded.hasHex(l));
    // A list patch needs its base list kept, not the IDs of the base it does not copy.
    const bodies = await readLists(repo, fresh, (base) => used.addHex(base));
    for (const [i, list] of fresh.entries()) {
      used.addHex(list);
      expanded.addHex(list);
      const ids = bodies[i];
      for (let at = 0; at < ids.length; at += 32) used.add(ids.subarray(at, at + 32));
    }
    for (const node of nodes) {
      if (node.type === "dir") {
        for (const sub of node.subtree ? [node.subtree] : (node.subtrees ?? [])) {
          await markTree(sub);
        }
        continue;
      }
      for (const data of node.content ?? []) used.addHex(data);
    }
  };
  let done = 0;
  for (const s of snapshots) {
    await markTree(s.snapshot.tree);
    onProgress?.({ phase: "mark", done: ++done, total: snapshots.length });
  }
  return used;
}

/**
 * The forgotten records still needed: those a remaining snapshot names as parent, and the
 * highest `seq` (so the next backup never reuses a sequence number).
 */
function neededForgotten(
  snapshots: readonly SnapshotRef[],
  forgotten: ReadonlyMap<string, number>,
): ForgottenSnapshot[] {
  const parents = new Set(snapshots.map((s) => s.snapshot.parent));
  let top: string | undefined;
  for (const [id, seq] of forgotten) if (top === undefined || seq > forgotten.get(top)!) top = id;
  const liveTop = Math.max(0, ...snapshots.map((s) => s.snapshot.seq));
  return [...forgotten]
    .filter(([id, seq]) => parents.has(id) || (id === top && seq > liveTop))
    .map(([id, seq]) => ({ snapshotId: fromHex(id), seq }));
}
