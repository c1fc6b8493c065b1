import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { segmentKey } from "../src/blob-index.ts";
import { backup } from "../src/engine/backup.ts";
import { type FileToRead, readFiles, walk } from "../src/engine/restore.ts";
import { Repository } from "../src/repository.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import type { ObjectKind } from "../src/storage/storage.ts";
import { fakeSqlite, p, randomBytes, type Spec, sourceTree } from "./helpers.ts";

const KEY = Uint8Array.from({ length: 32 }, (_, i) => (i * 11) & 255);

/** MemoryStorage that counts the data it serves. */
class CountingStorage extends MemoryStorage {
  dataLoads = 0;
  dataBytes = 0;
  override async load(kind: ObjectKind, name: string, offset?: number, length?: number) {
    const b = await super.load(kind, name, offset, length);
    if (kind === "data") {
      this.dataLoads++;
      this.dataBytes += b.length;
    }
    return b;
  }
}

describe("restore reads", () => {
  it("read each pack byte once, in few requests, even with a cache far smaller than the data", async () => {
    const storage = new CountingStorage();
    const repo = await Repository.init(storage, p, KEY);
    // ~40 MiB in 3 packs: 30 media files and a paged database, read across file boundaries.
    const media: Spec = {};
    for (let i = 0; i < 30; i++)
      media[`IMG-${String(i).padStart(3, "0")}.jpg`] = randomBytes(1 << 20, i + 1);
    const spec: Spec = { "chat.db": fakeSqlite(2500, 7), Media: media };
    await backup(repo, sourceTree(spec), { host: "h", paths: ["chat.db", "Media"] });

    let packBytes = 0;
    let packs = 0;
    for await (const { size } of storage.list("data")) {
      packBytes += size;
      packs++;
    }
    const reader = await Repository.open(storage, p, KEY);
    reader.segmentCacheBytes = 16 * 1024 * 1024;
    await reader.loadIndex();
    const snap = await reader.findSnapshot("latest");
    const files: FileToRead[] = [];
    for await (const { path, node } of walk(reader, snap.snapshot.tree)) {
      if (node.type === "file") files.push({ node, path: path.join("/") });
    }
    // Neighbouring segments coalesced (up to a quarter of the cache, 4 MiB, per request): far
    // fewer requests than one per segment, as reads were before.
    const segments = new Set<string>();
    for (const f of files) {
      for (const id of await reader.contentIds(f.node)) {
        const loc = reader.lookup(id)!;
        segments.add(segmentKey(loc));
      }
    }
    storage.dataLoads = 0;
    storage.dataBytes = 0;
    let restored = 0;
    for await (const ev of readFiles(reader, files)) if (!ev.done) restored += ev.chunk.length;

    assert.equal(restored, 30 * (1 << 20) + 2500 * 4096);
    // Every pack byte read at most once (the trees' segments were read by walk, before counting).
    assert.ok(
      storage.dataBytes <= packBytes,
      `read ${storage.dataBytes} bytes of ${packBytes} in packs`,
    );
    assert.ok(
      storage.dataLoads * 3 <= segments.size,
      `${storage.dataLoads} requests for ${segments.size} segments in ${packs} packs`,
    );
  });
});
