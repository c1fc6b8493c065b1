import { equalBytes, fromHex, sameIdAt, toHex } from "../bytes.ts";
import { BLOB_LIST, BLOB_LIST_PATCH, ID_BYTES } from "../format/blob.ts";
import { makeListPatch } from "../format/list-patch.ts";
import type { FileNode } from "../format/tree.ts";
import { LIST_MAX_IDS } from "../format/tree.ts";
import type { Repository } from "../repository.ts";

/** Parent lists read at once while the bases are found. */
const LOAD_BATCH = 128;

/**
 * The list blobs under a file's parent version, as bases for the list patches (SPEC §8) of its
 * new version: each parent list that is a list blob, and the base of each that is a patch. A
 * new list is written as a patch against the base that holds most of its IDs, when the patch is
 * at most half the list's size; otherwise whole, and it becomes a base for later versions.
 */
export class ListBases {
  private readonly ids: Uint8Array[] = [];
  private readonly bodies: Uint8Array[] = [];
  /** An ID's first 4 bytes to (base × LIST_MAX_IDS + its index there); a hint, checked by bytes. */
  private readonly where = new Map<number, number>();

  private constructor() {}

  /**
   * The bases under `parent`'s lists that a live pack holds (a patch must not lean on a blob a
   * prune condemned). Reads the parent's lists and bases, usually from the segment cache (a
   * database's backup has just read them for its page deltas).
   * @throws {IntegrityError} when a list or a base is damaged; what storage throws.
   */
  static async load(repo: Repository, parent: FileNode): Promise<ListBases> {
    const bases = new Set<string>();
    const lists = parent.lists ?? [];
    for (let i = 0; i < lists.length; i += LOAD_BATCH) {
      const batch = lists.slice(i, i + LOAD_BATCH);
      const found = await Promise.all(
        batch.map(async (id) => {
          if (repo.lookup(id)?.type !== BLOB_LIST_PATCH) return id;
          return toHex(repo.listPatchBase(id, await repo.loadBlob(id, BLOB_LIST_PATCH)));
        }),
      );
      for (const id of found) bases.add(id);
    }
    const out = new ListBases();
    const live = [...bases].filter((id) => repo.liveLengthOf(fromHex(id), BLOB_LIST) >= 0);
    for (let i = 0; i < live.length; i += LOAD_BATCH) {
      const batch = live.slice(i, i + LOAD_BATCH);
      const bodies = await Promise.all(
        batch.map(async (id) => repo.checkedList(id, await repo.loadBlob(id, BLOB_LIST))),
      );
      for (const [k, body] of bodies.entries()) out.add(fromHex(batch[k]), body.slice());
    }
    return out;
  }

  private add(id: Uint8Array, body: Uint8Array): void {
    const b = this.ids.length;
    this.ids.push(id);
    this.bodies.push(body);
    for (let j = 0; j < body.length / ID_BYTES; j++) {
      this.where.set(keyAt(body, j * ID_BYTES), b * LIST_MAX_IDS + j);
    }
  }

  /** Bases known. */
  get size(): number {
    return this.ids.length;
  }

  /**
   * The list patch that makes `list` (a list blob's plaintext) from the base holding most of its
   * IDs, or undefined when the list is better stored whole: no base shares an ID with it, it
   * is a base itself, or the patch would be over half its size.
   */
  patchFor(list: Uint8Array): Uint8Array | undefined {
    const n = list.length / ID_BYTES;
    const votes = new Map<number, number>();
    for (let i = 0; i < n; i++) {
      const b = this.baseOf(list, i * ID_BYTES);
      if (b >= 0) votes.set(b, (votes.get(b) ?? 0) + 1);
    }
    let best = -1;
    let most = 0;
    for (const [b, count] of votes) {
      if (count > most || (count === most && b < best)) [best, most] = [b, count];
    }
    if (best < 0) return undefined;
    const base = this.bodies[best];
    if (most === n && base.length === list.length && equalBytes(base, list)) return undefined;
    const patch = makeListPatch(list, this.ids[best], base, (l, at) => {
      const v = this.where.get(keyAt(l, at));
      return v !== undefined && Math.floor(v / LIST_MAX_IDS) === best ? v % LIST_MAX_IDS : -1;
    });
    return patch.length * 2 <= list.length ? patch : undefined;
  }

  /** The base that holds the ID at `list[at..at+32]` (checked by bytes), or -1. */
  private baseOf(list: Uint8Array, at: number): number {
    const v = this.where.get(keyAt(list, at));
    if (v === undefined) return -1;
    const b = Math.floor(v / LIST_MAX_IDS);
    return sameIdAt(list, at, this.bodies[b], (v % LIST_MAX_IDS) * ID_BYTES) ? b : -1;
  }
}

function keyAt(ids: Uint8Array, at: number): number {
  return (ids[at] | (ids[at + 1] << 8) | (ids[at + 2] << 16) | (ids[at + 3] << 24)) >>> 0;
}
