import { createHash, randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { ObjectInfo, ObjectKind, ObjectWriter, SaveOptions, Storage } from "@locket/core";

/** The kinds kept: written once under the SHA-256 of their bytes, never changed (SPEC §3). */
const CACHED: ReadonlySet<ObjectKind> = new Set(["index", "snapshots"]);
const NAME = /^[0-9a-f]{64}$/;
/** A temporary file this old was left by a killed process (a copy is written in milliseconds). */
const ABANDONED_MS = 3_600_000;

/**
 * A remote repository's storage with its index files and snapshots kept in a local folder, as
 * restic keeps its cache: every command of a remote repository (S3) reads every index file and
 * every snapshot, a round trip each, and a year of daily snapshots is hundreds of them. Those
 * objects are named by the SHA-256 of their bytes and never change, so a kept copy is used when
 * its bytes still hash to its name (else read again); what the copy holds is authenticated as
 * everything read from storage is. Listings always come from the storage, so the cache can
 * neither hide nor add an object: a copy of an object the storage no longer lists is deleted
 * once a listing of its kind has run to its end (until then `load` still gives it, as if it had
 * been read a moment before its removal, where the storage would say NotFoundError). Everything
 * else (packs, the config, ranged reads) goes to the storage. A cache that cannot be read or
 * written costs requests, never a failure. `check` and `drill` read the storage itself.
 */
export class CachedStorage implements Storage {
  readonly location: string;
  readonly createWriter?: (kind: ObjectKind) => Promise<ObjectWriter>;
  readonly removeStale?: (olderThanMs: number) => Promise<number>;
  readonly #inner: Storage;
  readonly #dir: string;

  /** `dir`: this repository's cache folder (made when first written to). */
  constructor(inner: Storage, dir: string) {
    this.#inner = inner;
    this.#dir = dir;
    this.location = inner.location;
    if (inner.createWriter) this.createWriter = (kind) => inner.createWriter!(kind);
    if (inner.removeStale) this.removeStale = (ms) => inner.removeStale!(ms);
  }

  async save(kind: ObjectKind, name: string, data: Uint8Array, options?: SaveOptions) {
    await this.#inner.save(kind, name, data, options);
    if (CACHED.has(kind)) await this.#keep(kind, name, data);
  }

  async load(kind: ObjectKind, name: string, offset?: number, length?: number) {
    if (!CACHED.has(kind) || !NAME.test(name) || offset !== undefined || length !== undefined) {
      return this.#inner.load(kind, name, offset, length);
    }
    const kept = await this.#kept(kind, name);
    if (kept) return kept;
    const bytes = await this.#inner.load(kind, name);
    await this.#keep(kind, name, bytes);
    return bytes;
  }

  stat(kind: ObjectKind, name: string): Promise<ObjectInfo> {
    return this.#inner.stat(kind, name);
  }

  async *list(kind: ObjectKind): AsyncIterable<ObjectInfo> {
    const listed = CACHED.has(kind) ? new Set<string>() : undefined;
    for await (const info of this.#inner.list(kind)) {
      listed?.add(info.name);
      yield info;
    }
    // Reached only when the whole listing was read: a copy it does not name is of an object
    // removed since (a prune's old index files, a forgotten snapshot).
    if (listed) await this.#dropAllBut(kind, listed);
  }

  async remove(kind: ObjectKind, name: string) {
    await this.#inner.remove(kind, name);
    if (CACHED.has(kind) && NAME.test(name)) await rm(this.#path(kind, name), { force: true });
  }

  #path(kind: ObjectKind, name: string): string {
    return join(this.#dir, kind, name);
  }

  /** The kept copy of `kind/name`, if there is one whose bytes hash to its name. */
  async #kept(kind: ObjectKind, name: string): Promise<Uint8Array | undefined> {
    let bytes: Buffer;
    try {
      bytes = await readFile(this.#path(kind, name));
    } catch {
      return undefined;
    }
    if (createHash("sha256").update(bytes).digest("hex") === name) {
      return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    }
    await rm(this.#path(kind, name), { force: true }).catch(() => {});
    return undefined;
  }

  /** Keeps a copy of `kind/name` (written whole under a temporary name, then renamed). */
  async #keep(kind: ObjectKind, name: string, bytes: Uint8Array): Promise<void> {
    if (!NAME.test(name)) return;
    const dir = join(this.#dir, kind);
    const tmp = join(dir, `.${name}.${randomBytes(6).toString("hex")}.tmp`);
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await writeFile(tmp, bytes, { mode: 0o600 });
      await rename(tmp, this.#path(kind, name));
    } catch {
      await rm(tmp, { force: true }).catch(() => {});
    }
  }

  /** Deletes every copy of `kind` not in `listed`, and temporary files left by a killed write. */
  async #dropAllBut(kind: ObjectKind, listed: ReadonlySet<string>): Promise<void> {
    let names: string[];
    try {
      names = await readdir(join(this.#dir, kind));
    } catch {
      return;
    }
    for (const name of names) {
      if (listed.has(name)) continue;
      // A temporary file may be another process's write in progress, unless it is old.
      if (!NAME.test(name)) {
        const age = await stat(join(this.#dir, kind, name)).then(
          (st) => Date.now() - st.mtimeMs,
          () => 0,
        );
        if (age < ABANDONED_MS) continue;
      }
      await rm(join(this.#dir, kind, name), { force: true }).catch(() => {});
    }
  }
}
