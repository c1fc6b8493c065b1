import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { utf8 } from "../src/bytes.ts";
import { backup } from "../src/engine/backup.ts";
import type { SourceEntry, SourceFile } from "../src/engine/source.ts";
import { Repository } from "../src/repository.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { p, randomBytes, restoreToMemory, type Spec } from "./helpers.ts";

const KEY = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);

/** A file that counts how often it is opened, with a chosen cache key. */
function file(
  name: string,
  data: Uint8Array,
  cacheKey: string | undefined,
  opens: Map<string, number>,
  size = data.length,
): SourceFile {
  return {
    type: "file",
    name,
    mode: 0o644,
    mtimeMs: 1,
    size,
    cacheKey,
    async *open() {
      opens.set(name, (opens.get(name) ?? 0) + 1);
      yield data;
    },
  };
}

function dir(name: string, children: SourceEntry[]): SourceEntry {
  return { type: "dir", name, mode: 0o755, mtimeMs: 1, children: async () => children };
}

async function run(repo: Repository, roots: SourceEntry[], parent?: string | null) {
  return backup(repo, roots, {
    host: "h",
    paths: ["/data"],
    ...(parent !== undefined ? { parent } : {}),
  });
}

describe("file cache", () => {
  const big = randomBytes(3 * 1024 * 1024, 7); // several chunks, so lists/contents are exercised
  const small = utf8("hello");

  it("skips files whose cache key matches the parent snapshot, and still restores them", async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, p, KEY);
    const opens = new Map<string, number>();
    const tree = () => [
      dir("data", [file("a.bin", big, "k1", opens), file("b.txt", small, "k2", opens)]),
    ];
    await run(repo, tree());
    const second = await run(repo, tree());
    assert.deepEqual(
      Object.fromEntries(opens),
      { "a.bin": 1, "b.txt": 1 },
      "second backup opened nothing",
    );
    assert.equal(second.snapshot.summary.unchangedFiles, 2);
    assert.equal(second.snapshot.summary.newBlobs, 0);
    const reader = await Repository.open(storage, p, KEY);
    await reader.loadIndex();
    const expected: Spec = { data: { "a.bin": big, "b.txt": small } };
    assert.deepEqual(await restoreToMemory(reader, await reader.findSnapshot("latest")), expected);
  });

  it("reads a file again when its cache key changes, or when it has none", async () => {
    const repo = await Repository.init(new MemoryStorage(), p, KEY);
    const opens = new Map<string, number>();
    await run(repo, [
      dir("data", [file("a", small, "k1", opens), file("b", small, undefined, opens)]),
    ]);
    await run(repo, [
      dir("data", [file("a", small, "k1-changed", opens), file("b", small, undefined, opens)]),
    ]);
    assert.deepEqual(Object.fromEntries(opens), { a: 2, b: 2 });
  });

  it("does not store a cache key for a file that changed size while it was read", async () => {
    const repo = await Repository.init(new MemoryStorage(), p, KEY);
    const opens = new Map<string, number>();
    // The platform said 10 bytes, the read gave 5: next time it must be read again.
    await run(repo, [dir("data", [file("grew", small, "k", opens, 10)])]);
    await run(repo, [dir("data", [file("grew", small, "k", opens, 10)])]);
    assert.equal(opens.get("grew"), 2);
  });

  it("reads again when the parent's blobs are no longer indexed", async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, p, KEY);
    const opens = new Map<string, number>();
    await run(repo, [dir("data", [file("a", big, "k", opens)])]);
    // Drop every pack and index (as a prune of that data would): a new repository object sees
    // the snapshot but none of its blobs.
    for await (const { name } of storage.list("data")) await storage.remove("data", name);
    for await (const { name } of storage.list("index")) await storage.remove("index", name);
    const again = await Repository.open(storage, p, KEY);
    const result = await run(again, [dir("data", [file("a", big, "k", opens)])]);
    assert.equal(opens.get("a"), 2);
    assert.equal(result.snapshot.summary.unchangedFiles, 0);
  });

  it("parent null reads everything; the default parent needs the same host and paths", async () => {
    const repo = await Repository.init(new MemoryStorage(), p, KEY);
    const opens = new Map<string, number>();
    const tree = () => [dir("data", [file("a", small, "k", opens)])];
    await run(repo, tree());
    await run(repo, tree(), null);
    assert.equal(opens.get("a"), 2);
    await backup(repo, tree(), { host: "other-host", paths: ["/data"] });
    assert.equal(opens.get("a"), 3, "another host's snapshot is not a parent");
    await run(repo, tree());
    assert.equal(opens.get("a"), 3, "the same host and paths reuse");
  });
});
