/**
 * Test helpers for the engine tests: in-memory source trees, deterministic data, fake SQLite
 * databases, and a restore into the same plain-object shape for deep equality.
 */

import { nodePrimitives } from "../../node/src/primitives.ts";
import { concat } from "../src/bytes.ts";
import type { Primitives } from "../src/crypto/primitives.ts";
import { readFile, walk } from "../src/engine/restore.ts";
import type { SourceEntry, SourceFile } from "../src/engine/source.ts";
import { LocketError } from "../src/errors.ts";
import type { Repository, SnapshotRef } from "../src/repository.ts";
import type { ObjectKind, Storage } from "../src/storage/storage.ts";

export const p: Primitives = nodePrimitives;

/** A source tree: a file is its bytes, a folder a nested spec. */
export interface Spec {
  [name: string]: Uint8Array | Spec;
}

export const FILE_MODE = 0o644;
export const DIR_MODE = 0o755;
export const MTIME = 1_700_000_000_000;

export interface SourceOptions {
  /** Size of the blocks a file yields (default 64 KiB). */
  readonly blockSize?: number;
  /** Overrides the compressibility hint for every file. */
  readonly compressible?: boolean;
}

/** One file whose `open` yields `data` in blocks of `blockSize` bytes. */
export function sourceFile(name: string, data: Uint8Array, opts: SourceOptions = {}): SourceFile {
  const blockSize = opts.blockSize ?? 64 * 1024;
  return {
    type: "file",
    name,
    mode: FILE_MODE,
    mtimeMs: MTIME,
    size: data.length,
    compressible: opts.compressible,
    async *open() {
      for (let o = 0; o < data.length; o += blockSize) yield data.subarray(o, o + blockSize);
    },
  };
}

/** The roots of an in-memory source tree built from `spec`. */
export function sourceTree(spec: Spec, opts: SourceOptions = {}): SourceEntry[] {
  return Object.entries(spec).map(([name, v]): SourceEntry => {
    if (v instanceof Uint8Array) return sourceFile(name, v, opts);
    return {
      type: "dir",
      name,
      mode: DIR_MODE,
      mtimeMs: MTIME,
      children: async () => sourceTree(v, opts),
    };
  });
}

/** A seeded PRNG (xorshift128) filling Uint32 words: fast and deterministic. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  constructor(seed: number) {
    // splitmix32 to spread the seed over the state.
    let s = seed >>> 0;
    const next = () => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next() | 1;
  }
  /** A uniformly distributed 32-bit unsigned integer. */
  u32(): number {
    let t = this.d;
    const s = this.a;
    this.d = this.c;
    this.c = this.b;
    this.b = s;
    t ^= t << 11;
    t ^= t >>> 8;
    this.a = t ^ s ^ (s >>> 19);
    return this.a >>> 0;
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return this.u32() % n;
  }
}

/** `n` incompressible (uniformly random) bytes, determined by `seed`. */
export function randomBytes(n: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  const words = new Uint32Array(Math.ceil(n / 4));
  for (let i = 0; i < words.length; i++) words[i] = rng.u32();
  return new Uint8Array(words.buffer, 0, n);
}

const WORDS = (
  "the a to and of you i it in is that for on me we this with my be have are was so what at " +
  "your not can just do but if all ok no yes get will see love know good now how when time " +
  "lol haha tomorrow tonight meeting dinner photo sent message call later thanks great"
).split(" ");

/** `n` bytes of compressible, chat-like ASCII text, determined by `seed`. */
export function textBytes(n: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  const out = new Uint8Array(n);
  let o = 0;
  while (o < n) {
    const line = `[${2020 + rng.int(5)}-0${1 + rng.int(9)}-1${rng.int(10)}] user${rng.int(20)}: `;
    let s = line;
    const count = 3 + rng.int(15);
    for (let i = 0; i < count; i++) s += `${WORDS[rng.int(WORDS.length)]} `;
    s += "\n";
    for (let i = 0; i < s.length && o < n; i++) out[o++] = s.charCodeAt(i);
  }
  return out;
}

export const SQLITE_PAGE = 4096;

/**
 * A fake SQLite database: a 100-byte header ("SQLite format 3\0", page size at offset 16, big
 * endian) at the start of page 1, then `pages` pages. Every page is distinct (it carries its
 * number and random bytes from `seed`), so each page is its own blob.
 */
export function fakeSqlite(pages: number, seed: number, pageSize = SQLITE_PAGE): Uint8Array {
  const db = randomBytes(pages * pageSize, seed);
  const magic = "SQLite format 3\0";
  for (let i = 0; i < magic.length; i++) db[i] = magic.charCodeAt(i);
  db[16] = (pageSize >> 8) & 0xff;
  db[17] = pageSize & 0xff;
  db.fill(0, 18, 100);
  for (let i = 1; i < pages; i++) new DataView(db.buffer).setUint32(i * pageSize, i);
  return db;
}

/** Rewrites page `page` (0-based) of a fake database with new random bytes. */
export function rewritePage(db: Uint8Array, page: number, seed: number, pageSize = SQLITE_PAGE) {
  const fresh = randomBytes(pageSize, seed);
  const start = page === 0 ? 100 : page * pageSize;
  db.set(fresh.subarray(0, (page + 1) * pageSize - start), start);
}

/** Concatenates every chunk `readFile` yields for each file of a snapshot into a Spec. */
export async function restoreToMemory(repo: Repository, ref: SnapshotRef | string): Promise<Spec> {
  const tree = typeof ref === "string" ? ref : ref.snapshot.tree;
  const root: Spec = {};
  const dirs = new Map<string, Spec>([["", root]]);
  for await (const { path, node } of walk(repo, tree)) {
    const parent = dirs.get(path.slice(0, -1).join("/"));
    if (!parent) throw new Error(`walk yielded ${path.join("/")} before its folder`);
    const name = path[path.length - 1];
    if (node.type === "dir") {
      const d: Spec = {};
      parent[name] = d;
      dirs.set(path.join("/"), d);
    } else {
      const chunks: Uint8Array[] = [];
      for await (const c of readFile(repo, node, path.join("/"))) chunks.push(c);
      parent[name] = concat(...chunks);
    }
  }
  return root;
}

/** Walks `spec` and returns each file with its slash-joined path. */
export function flatten(spec: Spec, prefix = ""): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  for (const [name, v] of Object.entries(spec)) {
    const path = prefix ? `${prefix}/${name}` : name;
    if (v instanceof Uint8Array) out.set(path, v);
    else for (const [k, f] of flatten(v, path)) out.set(k, f);
  }
  return out;
}

/**
 * Restores every file of a snapshot, checking that each chunk yielded is exactly the original
 * bytes at its offset (so no unverified byte ever comes out), and returns the error that stopped
 * it, or undefined when everything restored and matched.
 */
export async function restoreChecked(
  repo: Repository,
  ref: SnapshotRef,
  original: Spec,
): Promise<unknown> {
  const files = flatten(original);
  try {
    for await (const { path, node } of walk(repo, ref.snapshot.tree)) {
      if (node.type !== "file") continue;
      const key = path.join("/");
      const want = files.get(key);
      if (!want) throw new Error(`restore yielded unknown file ${key}`);
      let offset = 0;
      for await (const c of readFile(repo, node, key)) {
        const expect = want.subarray(offset, offset + c.length);
        if (expect.length !== c.length || !Buffer.from(expect).equals(Buffer.from(c))) {
          throw new Error(`UNVERIFIED BYTES yielded for ${key} at offset ${offset}`);
        }
        offset += c.length;
      }
      if (offset !== want.length) throw new Error(`short restore of ${key}`);
    }
  } catch (err) {
    if (err instanceof Error && err.message.startsWith("UNVERIFIED")) throw err;
    return err;
  }
  return undefined;
}

/** Names of every stored object of `kind`. */
export async function names(storage: Storage, kind: ObjectKind): Promise<string[]> {
  const out: string[] = [];
  for await (const { name } of storage.list(kind)) out.push(name);
  return out.sort();
}

/** Total stored bytes of every object of `kind`. */
export async function storedBytes(storage: Storage, kind: ObjectKind): Promise<number> {
  let n = 0;
  for await (const { size } of storage.list(kind)) n += size;
  return n;
}

/** Asserts that `err` is a LocketError with `code` (and optionally naming `object`). */
export function isLocketError(err: unknown, code: string, mentions?: string): boolean {
  if (!(err instanceof LocketError)) {
    throw new Error(`expected a LocketError with code ${code}, got ${String(err)}`, {
      cause: err,
    });
  }
  if (err.code !== code) {
    throw new Error(`expected code ${code}, got ${err.code}: ${err.message}`, { cause: err });
  }
  if (mentions !== undefined && !err.message.includes(mentions)) {
    throw new Error(`expected the message to name ${mentions}: ${err.message}`, { cause: err });
  }
  return true;
}
