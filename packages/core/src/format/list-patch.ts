import { sameIdAt } from "../bytes.ts";
import { ID_BYTES } from "./blob.ts";
import { checkIdList, LIST_MAX_IDS } from "./tree.ts";

/**
 * List patches (SPEC §8): a list blob's IDs written as changes to an earlier list blob, its
 * base. A day of chat changes pages all over a database, so every one of its ~400 list blobs
 * changed a little, and each was stored again whole (4 MB a day of 32-byte IDs that do not
 * compress); a patch stores the IDs that changed and copies the rest from the base.
 *
 *   patch = base list ID (32) || op × n          (n ≥ 1)
 *   op    = 0x00 || from (u16) || count (u16)     count IDs of the base, from ID index `from`
 *         | 0x01 || count (u16) || ID × count     count new IDs
 *
 * The base is always a list blob, never a patch, so a list takes at most two reads.
 */

export const OP_COPY = 0;
export const OP_IDS = 1;
const COPY_BYTES = 5;
const IDS_HEADER = 3;

/** The largest list patch: its base's ID and LIST_MAX_IDS new IDs, each with its own op. */
export const MAX_LIST_PATCH_BYTES = ID_BYTES + LIST_MAX_IDS * (IDS_HEADER + ID_BYTES);

/**
 * The base list ID a patch names (a view into `patch`).
 * @throws {RangeError} when the patch is shorter than a base ID and an op, or longer than
 *   MAX_LIST_PATCH_BYTES.
 */
export function listPatchBase(patch: Uint8Array): Uint8Array {
  if (patch.length < ID_BYTES + COPY_BYTES || patch.length > MAX_LIST_PATCH_BYTES) {
    throw new RangeError(`list patch of ${patch.length} bytes`);
  }
  return patch.subarray(0, ID_BYTES);
}

/**
 * The IDs a patch stands for, given its base's plaintext (checked as a list blob), as a list
 * blob's plaintext.
 * @throws {RangeError} when the patch is malformed: too short or too long, an unknown op, a count of zero,
 *   an op cut short, a copy past the base's end, or more than LIST_MAX_IDS IDs in all.
 */
export function applyListPatch(patch: Uint8Array, base: Uint8Array): Uint8Array {
  listPatchBase(patch);
  checkIdList(base);
  const baseIds = base.length / ID_BYTES;
  const view = new DataView(patch.buffer, patch.byteOffset, patch.byteLength);
  // Sized for the largest list: a hostile patch cannot make it allocate more.
  const out = new Uint8Array(LIST_MAX_IDS * ID_BYTES);
  let n = 0;
  const take = (count: number) => {
    if (count === 0) throw new RangeError("list patch op with a count of 0");
    if (n + count > LIST_MAX_IDS) throw new RangeError(`list patch makes over ${LIST_MAX_IDS} IDs`);
  };
  let at = ID_BYTES;
  while (at < patch.length) {
    const op = patch[at];
    if (op === OP_COPY) {
      if (at + COPY_BYTES > patch.length) throw new RangeError("list patch copy cut short");
      const from = view.getUint16(at + 1, true);
      const count = view.getUint16(at + 3, true);
      take(count);
      if (from + count > baseIds) {
        throw new RangeError(`list patch copies IDs ${from}..${from + count} of ${baseIds}`);
      }
      out.set(base.subarray(from * ID_BYTES, (from + count) * ID_BYTES), n * ID_BYTES);
      n += count;
      at += COPY_BYTES;
    } else if (op === OP_IDS) {
      if (at + IDS_HEADER > patch.length) throw new RangeError("list patch IDs cut short");
      const count = view.getUint16(at + 1, true);
      take(count);
      const end = at + IDS_HEADER + count * ID_BYTES;
      if (end > patch.length) throw new RangeError("list patch IDs cut short");
      out.set(patch.subarray(at + IDS_HEADER, end), n * ID_BYTES);
      n += count;
      at = end;
    } else {
      throw new RangeError(`list patch op ${op}`);
    }
  }
  return out.slice(0, n * ID_BYTES);
}

/**
 * The patch that makes `list` from `base` (both list plaintexts), copying every run of `list`
 * that `base` holds: `indexOf(id, at)` gives where ID `id` (the 32 bytes of `list` at `at`) is
 * in the base, or -1 (a hint: a wrong answer costs bytes, never a wrong patch). The patch is
 * deterministic, so an unchanged list patched against the same base gets the same blob ID and
 * is stored once.
 */
export function makeListPatch(
  list: Uint8Array,
  baseId: Uint8Array,
  base: Uint8Array,
  indexOf: (list: Uint8Array, at: number) => number,
): Uint8Array {
  const n = list.length / ID_BYTES;
  const baseIds = base.length / ID_BYTES;
  // At most a copy op or a new ID with its op's header per ID: written in place.
  const out = new Uint8Array(ID_BYTES + n * (COPY_BYTES + IDS_HEADER + ID_BYTES));
  out.set(baseId);
  let at = ID_BYTES;
  const u16 = (v: number) => {
    out[at++] = v & 0xff;
    out[at++] = v >>> 8;
  };
  let idsFrom = -1; // the first ID of the pending run of new IDs
  const flushIds = (end: number) => {
    if (idsFrom < 0) return;
    out[at++] = OP_IDS;
    u16(end - idsFrom);
    out.set(list.subarray(idsFrom * ID_BYTES, end * ID_BYTES), at);
    at += (end - idsFrom) * ID_BYTES;
    idsFrom = -1;
  };
  for (let i = 0; i < n; ) {
    const j = indexOf(list, i * ID_BYTES);
    if (j < 0 || j >= baseIds || !sameIdAt(list, i * ID_BYTES, base, j * ID_BYTES)) {
      if (idsFrom < 0) idsFrom = i;
      i++;
      continue;
    }
    flushIds(i);
    let k = 1;
    while (
      i + k < n &&
      j + k < baseIds &&
      sameIdAt(list, (i + k) * ID_BYTES, base, (j + k) * ID_BYTES)
    )
      k++;
    out[at++] = OP_COPY;
    u16(j);
    u16(k);
    i += k;
  }
  flushIds(n);
  return out.slice(0, at);
}
