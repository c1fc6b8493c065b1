import { type FileToRead, readFiles, UsageError, walk } from "@locket/core";
import type { Command } from "../command.ts";
import { bytes, seconds } from "../format.ts";

export const drill: Command = {
  name: "drill",
  summary: "restore drill: restore a snapshot in memory and verify it, writing nothing",
  usage: "locket drill [SNAPSHOT|latest]",
  help: `Does everything a restore does (finds the snapshot, reads and decrypts every chunk, checks
each against its keyed ID and each file against its size) but writes no file. Run it on a new
device with --recovery-key to prove the key and the backup work before you need them. From an
S3 repository it reads everything from the bucket, as a new device would, not this device's
copies of the index files and snapshots.`,
  options: {},
  async run(ctx) {
    if (ctx.positionals.length > 1) throw new UsageError("drill takes at most one SNAPSHOT");
    const started = Date.now();
    // From the storage itself: a drill proves what a new device could restore, so it must not
    // read this device's copies of a remote repository's index files and snapshots.
    const { repo, state } = await ctx.openRepo({ cache: false });
    await repo.loadIndex();
    const snap = await repo.findSnapshot(
      ctx.positionals[0] ?? "latest",
      await repo.checkedSnapshots(state.lastSeq),
    );
    const files: FileToRead[] = [];
    for await (const { path, node } of walk(repo, snap.snapshot.tree)) {
      if (node.type === "file") files.push({ node, path: path.join("/") });
    }
    let done = 0;
    let total = 0;
    for await (const ev of readFiles(repo, files)) {
      if (ev.done) done++;
      else total += ev.chunk.length;
      ctx.progress.update({
        phase: "drill",
        bytes: total,
        totalBytes: snap.snapshot.summary.bytes,
        files: done,
        current: files[ev.file].path,
      });
    }
    ctx.progress.done();
    const ms = Date.now() - started;
    ctx.say(
      `drill passed: snapshot ${snap.id.slice(0, 12)} (#${snap.snapshot.seq}) restores ${done} files, ${bytes(total)}, every byte verified (${seconds(ms)})`,
    );
    return { snapshot: snap.id, files: done, bytes: total, durationMs: ms };
  },
};
