import { equalBytes, fromHex, sameIdAt, toHex } from "../bytes.ts";
import { BLOB_LIST, BLOB_LIST_PATCH, ID_BYTES } from "../format/blob.ts";
import { makeListPatch } from "../format/list-patch.ts";
import { type FileNode, LIST_MAX_IDS } from "../format/tree.ts";
import type { Repository } from "../repository.ts";

/** Parent lists read at once while the bases are found. */
const LOAD_BATCH = 128;
/** A list's base is voted for by every VOTE_STEP-th of its IDs. */
const VOTE_STEP = 8;

/**
 * The list blobs under a file's parent version, as bases for the list patches (SPEC §8) of its
 * new version: each parent list that is a list blob, and the base of each that is a patch. A
 * new list is written as a patch against the base that holds most of a sample of its IDs, when
 * the patch is at most half the list's size; otherwise whole, and it becomes a base for later
 * versions.
 */
export class ListBases {
  private readonly ids: Uint8Array[] = [];
  private readonly bodies: Uint8Array[] = [];
  /** Where each base ID is (base × LIST_MAX_IDS + its index there); a hint, checked by bytes. */
  private where = new IdPlaces(0);
  /** `patchFor`'s scratch: votes per base, and the bases voted for. */
  private votes = new Uint32Array(0);
  private readonly voted: number[] = [];

  private constructor() {}

  /**
   * The bases under `parent`'s lists that a live pack holds (a patch must not lean on a blob a
   * prune condemned). Reads the parent's lists and bases, sharing the segments a database's page
   * deltas read from its parent at the same time.
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
      for (const [k, body] of bodies.entries()) {
        out.ids.push(fromHex(batch[k]));
        out.bodies.push(body.slice());
      }
    }
    out.index();
    return out;
  }

  /** Indexes where every base ID is, in a table sized for the IDs loaded. */
  private index(): void {
    this.where = new IdPlaces(this.bodies.reduce((n, body) => n + body.length / ID_BYTES, 0));
    for (const [b, body] of this.bodies.entries()) {
      for (let j = 0; j < body.length / ID_BYTES; j++) {
        this.where.set(body, j * ID_BYTES, b * LIST_MAX_IDS + j);
      }
    }
    this.votes = new Uint32Array(this.ids.length);
  }

  /**
   * The list patch that makes `list` (a list blob's plaintext) from the base holding most of a
   * sample of its IDs, or undefined when the list is better stored whole: no sampled ID is in a
   * base, it is that base itself, or the patch would be over half its size.
   */
  patchFor(list: Uint8Array): Uint8Array | undefined {
    const n = list.length / ID_BYTES;
    const votes = this.votes;
    const voted = this.voted;
    // Votes from every VOTE_STEP-th ID: a lookup costs a cache miss in a map of ~130 k IDs.
    voted.length = 0;
    for (let i = 0; i < n; i += VOTE_STEP) {
      const b = this.baseOf(list, i * ID_BYTES);
      if (b >= 0 && votes[b]++ === 0) voted.push(b);
    }
    let best = -1;
    let most = 0;
    for (const b of voted) {
      if (votes[b] > most || (votes[b] === most && b < best)) [best, most] = [b, votes[b]];
      votes[b] = 0;
    }
    if (best < 0) return undefined;
    const base = this.bodies[best];
    if (equalBytes(base, list)) return undefined;
    // Looked up only where a run may start: makeListPatch follows a run by comparing bytes.
    const patch = makeListPatch(list, this.ids[best], base, (l, at) => {
      const v = this.where.get(l, at);
      return v >= 0 && Math.floor(v / LIST_MAX_IDS) === best ? v % LIST_MAX_IDS : -1;
    });
    return patch.length * 2 <= list.length ? patch : undefined;
  }

  /** The base that holds the ID at `list[at..at+32]` (checked by bytes), or -1. */
  private baseOf(list: Uint8Array, at: number): number {
    const v = this.where.get(list, at);
    if (v < 0) return -1;
    const b = Math.floor(v / LIST_MAX_IDS);
    return sameIdAt(list, at, this.bodies[b], (v % LIST_MAX_IDS) * ID_BYTES) ? b : -1;
  }
}

/**
 * A map from an ID's first 4 bytes to a non-negative number, in typed arrays with open addressing:
 * ~130 k IDs of a database's bases went into a Map in 26 ms. A later ID with the same first 4
 * bytes replaces the earlier one (the caller checks the ID's bytes, so this costs a copy op).
 */
class IdPlaces {
  private readonly keys: Int32Array;
  private readonly values: Int32Array;
  private readonly mask: number;

  constructor(capacity: number) {
    let size = 16;
    while (size < 2 * capacity) size *= 2;
    this.keys = new Int32Array(size);
    this.values = new Int32Array(size).fill(-1);
    this.mask = size - 1;
  }

  /** The slot of `key`: where it is, or the empty one it would take. */
  private slot(key: number): number {
    let i = (Math.imul(key, 0x9e3779b1) >>> 0) & this.mask;
    while (this.values[i] >= 0 && this.keys[i] !== key) i = (i + 1) & this.mask;
    return i;
  }

  set(ids: Uint8Array, at: number, value: number): void {
    const key = keyAt(ids, at);
    const i = this.slot(key);
    this.keys[i] = key;
    this.values[i] = value;
  }

  /** The value for the ID at `ids[at..]`'s first 4 bytes, or -1. */
  get(ids: Uint8Array, at: number): number {
    return this.values[this.slot(keyAt(ids, at))];
  }
}

function keyAt(ids: Uint8Array, at: number): number {
  return ids[at] | (ids[at + 1] << 8) | (ids[at + 2] << 16) | (ids[at + 3] << 24);
}
