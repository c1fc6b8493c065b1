import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { AlreadyExistsError, NotFoundError, StorageError } from "../../core/src/errors.ts";
import { OBJECT_KINDS } from "../../core/src/storage/storage.ts";
import {
  assertBytes,
  listAll,
  randomData,
  randomName,
  storageConformance,
} from "../../core/test/storage-conformance.ts";
import { FsStorage } from "../src/storage/fs.ts";

/** A fresh temp folder; removed by `rm` (root may delete read-only files, and so may owners). */
async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), "locket-fs-"));
}

storageConformance(
  "FsStorage",
  async () => {
    const dir = await tempDir();
    return {
      storage: await FsStorage.create(join(dir, "repo")),
      cleanup: () => rm(dir, { recursive: true, force: true }),
    };
  },
  { writesInParts: true },
);

describe("FsStorage", () => {
  let base: string;
  let n = 0;
  /** A new repository folder path under `base` (not yet created). */
  const repoPath = () => join(base, `repo${n++}`);

  before(async () => {
    base = await tempDir();
  });

  after(async () => {
    await rm(base, { recursive: true, force: true });
  });

  it("create makes the folder structure and location is the absolute path", async () => {
    const root = repoPath();
    const s = await FsStorage.create(root);
    assert.equal(s.location, root);
    assert.deepEqual((await readdir(root)).sort(), ["data", "index", "snapshots", "tmp"]);
  });

  it("create accepts an existing empty folder and creates missing parents", async () => {
    const existing = repoPath();
    await mkdir(existing);
    await FsStorage.create(existing);
    const nested = join(repoPath(), "a", "b");
    await FsStorage.create(nested);
    assert.ok((await stat(join(nested, "data"))).isDirectory());
  });

  it("create refuses a folder that already holds a repository", async () => {
    const root = repoPath();
    const s = await FsStorage.create(root);
    await s.save("config", "config", randomData(10));
    await assert.rejects(FsStorage.create(root), AlreadyExistsError);
  });

  it("open of a folder without config throws NotFoundError naming the path", async () => {
    const root = repoPath();
    await FsStorage.create(root);
    await assert.rejects(FsStorage.open(root), (err: unknown) => {
      assert.ok(err instanceof NotFoundError);
      assert.equal(err.message, `no repository at ${root}`);
      return true;
    });
    await assert.rejects(FsStorage.open(repoPath()), NotFoundError);
  });

  it("open finds a repository once config is saved", async () => {
    const root = repoPath();
    const created = await FsStorage.create(root);
    const config = randomData(30);
    await created.save("config", "config", config, { exclusive: true });
    const opened = await FsStorage.open(root);
    assertBytes(await opened.load("config", "config"), config);
  });

  it("lays objects out like restic", async () => {
    const root = repoPath();
    const s = await FsStorage.create(root);
    const d = randomName();
    const i = randomName();
    const sn = randomName();
    await s.save("config", "config", randomData(1));
    await s.save("data", d, randomData(2));
    await s.save("index", i, randomData(3));
    await s.save("snapshots", sn, randomData(4));
    assert.equal((await stat(join(root, "config"))).size, 1);
    assert.equal((await stat(join(root, "data", d.slice(0, 2), d))).size, 2);
    assert.equal((await stat(join(root, "index", i))).size, 3);
    assert.equal((await stat(join(root, "snapshots", sn))).size, 4);
  });

  it("writes objects read-only", async () => {
    const root = repoPath();
    const s = await FsStorage.create(root);
    const d = randomName();
    await s.save("data", d, randomData(2));
    await s.save("config", "config", randomData(2));
    await s.save("index", d, randomData(2), { exclusive: true });
    for (const path of [
      join(root, "data", d.slice(0, 2), d),
      join(root, "config"),
      join(root, "index", d),
    ]) {
      assert.equal((await stat(path)).mode & 0o222, 0, `${path} is not writable`);
    }
    // Read-only files can still be replaced and removed: that goes through the folder.
    await s.save("data", d, randomData(3));
    assert.equal((await s.stat("data", d)).size, 3);
    await s.remove("data", d);
    await assert.rejects(s.stat("data", d), NotFoundError);
  });

  it("leaves nothing in tmp after saves, exclusive conflicts and failures", async () => {
    const root = repoPath();
    const s = await FsStorage.create(root);
    const d = randomName();
    await Promise.all(
      Array.from({ length: 10 }, () => s.save("data", randomName(), randomData(100))),
    );
    await s.save("index", d, randomData(10), { exclusive: true });
    await assert.rejects(
      s.save("index", d, randomData(10), { exclusive: true }),
      AlreadyExistsError,
    );
    await Promise.allSettled(
      Array.from({ length: 5 }, () => s.save("snapshots", d, randomData(10), { exclusive: true })),
    );
    // A failing rename (the destination is a folder) must clean up its temp file too.
    const blocked = randomName();
    await mkdir(join(root, "data", blocked.slice(0, 2), blocked), { recursive: true });
    await assert.rejects(s.save("data", blocked, randomData(10)), StorageError);
    assert.deepEqual(await readdir(join(root, "tmp")), []);
  });

  it("writes an object in parts to tmp and leaves nothing there once committed, refused or aborted", async () => {
    const root = repoPath();
    const s = await FsStorage.create(root);
    const w = await s.createWriter("data");
    await w.write(randomData(1000));
    assert.equal((await readdir(join(root, "tmp"))).length, 1, "the part-written object");
    const n = randomName();
    await w.commit(n);
    assert.equal((await stat(join(root, "data", n.slice(0, 2), n))).mode & 0o777, 0o444);
    const refused = await s.createWriter("data");
    await refused.write(randomData(10));
    await assert.rejects(refused.commit("not-a-name"), StorageError);
    const aborted = await s.createWriter("index");
    await aborted.write(randomData(10));
    await aborted.abort();
    // A failing rename (the destination is a folder) cleans up as well.
    const blocked = randomName();
    await mkdir(join(root, "data", blocked.slice(0, 2), blocked), { recursive: true });
    const failing = await s.createWriter("data");
    await failing.write(randomData(10));
    await assert.rejects(failing.commit(blocked), StorageError);
    assert.deepEqual(await readdir(join(root, "tmp")), []);
  });

  it("removeStale removes only the tmp files untouched for the given time", async () => {
    const root = repoPath();
    const s = await FsStorage.create(root);
    const old = join(root, "tmp", "old");
    await writeFile(old, "x");
    const longAgo = new Date(Date.now() - 3_600_000);
    await utimes(old, longAgo, longAgo);
    await writeFile(join(root, "tmp", "recent"), "y");
    const w = await s.createWriter("data");
    await w.write(randomData(10));
    assert.equal(await s.removeStale(60_000), 1);
    assert.deepEqual(
      (await readdir(join(root, "tmp"))).filter((n) => n === "old"),
      [],
    );
    assert.equal((await readdir(join(root, "tmp"))).length, 2, "the recent file and the writer's");
    const n = randomName();
    await w.commit(n);
    assert.equal((await s.stat("data", n)).size, 10);
    await rm(join(root, "tmp"), { recursive: true });
    assert.equal(await s.removeStale(0), 0, "no tmp folder: nothing to remove");
  });

  it("never lists files in tmp, stray files, or folders", async () => {
    const root = repoPath();
    const s = await FsStorage.create(root);
    const planted = randomName();
    await writeFile(join(root, "tmp", planted), "partial");
    await writeFile(join(root, "tmp", "config"), "partial");
    await writeFile(join(root, "index", "README"), "not an object");
    await writeFile(join(root, "index", `${planted}.tmp`), "not an object");
    await mkdir(join(root, "data", "zz"));
    await writeFile(join(root, "data", "zz", planted), "wrong folder");
    const other = `${planted.slice(0, 2) === "00" ? "11" : "00"}`;
    await mkdir(join(root, "data", other));
    await writeFile(join(root, "data", other, planted), "wrong prefix");
    await mkdir(join(root, "snapshots", planted));
    for (const kind of OBJECT_KINDS) assert.deepEqual(await listAll(s, kind), [], kind);
    const real = randomName();
    await s.save("data", real, randomData(7));
    assert.deepEqual(await listAll(s, "data"), [{ name: real, size: 7 }]);
  });

  it("recreates a deleted kind folder on save", async () => {
    const root = repoPath();
    const s = await FsStorage.create(root);
    await rm(join(root, "index"), { recursive: true });
    await rm(join(root, "tmp"), { recursive: true });
    assert.deepEqual(await listAll(s, "index"), []);
    const i = randomName();
    await s.save("index", i, randomData(5));
    assert.equal((await s.stat("index", i)).size, 5);
  });

  it("does not recreate a deleted repository on save", async () => {
    const root = repoPath();
    const s = await FsStorage.create(root);
    await rm(root, { recursive: true });
    await assert.rejects(s.save("data", randomName(), randomData(5)), StorageError);
    await assert.rejects(s.save("config", "config", randomData(5)), StorageError);
    await assert.rejects(stat(root), { code: "ENOENT" });
  });

  it("reports an object replaced by a folder as StorageError with errno and path", async () => {
    const root = repoPath();
    const s = await FsStorage.create(root);
    const d = randomName();
    await s.save("data", d, randomData(5));
    const path = join(root, "data", d.slice(0, 2), d);
    await rm(path);
    await mkdir(path);
    await assert.rejects(s.load("data", d), (err: unknown) => {
      assert.ok(err instanceof StorageError, String(err));
      assert.ok(err.message.includes(path), err.message);
      return true;
    });
    await assert.rejects(s.load("data", d, 0, 1), StorageError);
    await assert.rejects(s.stat("data", d), StorageError);
    await assert.rejects(s.remove("data", d), (err: unknown) => {
      assert.ok(err instanceof StorageError, String(err));
      // The system's words and the code: "... is a directory (EISDIR)" or the like.
      assert.match(err.message, /: [a-z][^()]+ \(E[A-Z]+\)$/);
      assert.ok(err.message.includes(path), err.message);
      assert.ok(err.cause instanceof Error);
      return true;
    });
    await assert.rejects(s.save("data", d, randomData(5)), /EISDIR|EEXIST|ENOTEMPTY|EPERM/);
  });

  it("reports a folder that cannot be read as StorageError", async () => {
    const root = repoPath();
    const s = await FsStorage.create(root);
    // A file where the index folder should be gives ENOTDIR, which running as root cannot bypass.
    await rm(join(root, "index"), { recursive: true });
    await writeFile(join(root, "index"), "");
    await assert.rejects(listAll(s, "index"), StorageError);
    await assert.rejects(s.load("index", randomName()), StorageError);
    await assert.rejects(s.save("index", randomName(), randomData(1)), StorageError);
  });

  it("rejects an unknown kind before touching the disk", async () => {
    const s = await FsStorage.create(repoPath());
    const bogus = ".." as "data";
    await assert.rejects(s.load(bogus, randomName()), StorageError);
    await assert.rejects(listAll(s, bogus), StorageError);
  });
});
