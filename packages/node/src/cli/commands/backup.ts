import { hostname } from "node:os";
import { backup as runBackup, UsageError } from "@locket/core";
import { locketCache } from "../../device.ts";
import { fsSource, measure, type SkipNote } from "../../source.ts";
import type { Command } from "../command.ts";
import { bytes, seconds } from "../format.ts";

export const backup: Command = {
  name: "backup",
  summary: "back up files and folders (incremental, deduplicated)",
  usage: "locket backup [options] PATH...",
  help: `Backs up each PATH (a chat database, a media folder, ...) as one new snapshot. Only data the
repository does not hold yet is stored: a day of chat costs the database pages that changed plus
the new media. SQLite databases are read consistently even while the app writes to them: in
place under a read transaction, or through SQLite's online backup API when the write-ahead log
holds pages; their -wal/-shm/-journal files are folded in. The PATHs must not lie inside one
another (exit status 2). Symbolic links, sockets and devices are skipped, and so are files deleted while the backup runs;
each gets a warning ("skipped PATH: REASON"; "skipped" in --json) and the backup still succeeds.

Options:
      --exclude-videos     skip video files (mp4, mov, 3gp, mkv, webm, ...)
      --exclude GLOB       skip files matching GLOB (repeatable; * ? and ** as in .gitignore)
      --include GLOB       keep only files matching GLOB (repeatable)
      --tag TAG            label the snapshot (repeatable)
      --host NAME          host name recorded in the snapshot (default: this machine's)

Examples:
  locket backup ~/chat/msgstore.db ~/chat/Media
  locket backup --exclude-videos --exclude '*.tmp' ~/chat`,
  options: {
    "exclude-videos": { type: "boolean" },
    exclude: { type: "string", multiple: true },
    include: { type: "string", multiple: true },
    tag: { type: "string", multiple: true },
    host: { type: "string" },
  },
  async run(ctx) {
    if (ctx.positionals.length === 0) throw new UsageError("backup needs at least one PATH");
    const { repo, state, chunker } = await ctx.openRepo();
    const skipped: SkipNote[] = [];
    // Never Locket's own cache, wherever the paths reach it (source.ts).
    const skipFolders = [locketCache(ctx.env)];
    const roots = await fsSource(
      ctx.positionals,
      {
        excludeVideos: ctx.values["exclude-videos"] === true,
        exclude: ctx.values.exclude as string[] | undefined,
        include: ctx.values.include as string[] | undefined,
      },
      (n) => skipped.push(n),
      skipFolders,
    );
    // The totals only feed the bar's percentage and ETA, so they are measured beside the backup
    // rather than before it (another lstat of every file first), and not at all when nothing
    // is shown; until they are known the bar shows bytes and files so far.
    let total: { files: number; bytes: number } | undefined;
    if (ctx.progress.shown) {
      measure(ctx.positionals, skipFolders).then(
        (t) => {
          total = t;
        },
        () => {},
      );
    }
    const result = await runBackup(repo, roots, {
      host: ctx.str("host") ?? hostname(),
      paths: ctx.positionals,
      tags: ctx.values.tag as string[] | undefined,
      minSeq: state.lastSeq,
      chunker,
      pageBases: ctx.pageBases(repo.config.id),
      onSkip: (path, reason) => skipped.push({ path, reason }),
      onProgress: (p) =>
        ctx.progress.update({
          phase: "backup",
          bytes: p.bytes,
          totalBytes: total?.bytes,
          files: p.files,
          totalFiles: total?.files,
          current: p.current,
        }),
    });
    ctx.progress.done();
    await ctx.device.updateRepo(repo.config.id, {
      location: state.location,
      lastSeq: result.snapshot.seq,
      lastSnapshot: result.id,
    });
    const s = result.snapshot.summary;
    for (const n of skipped) ctx.warn(`skipped ${n.path}: ${n.reason}`);
    if (result.adoptedPacks)
      ctx.say(`resumed: reused ${result.adoptedPacks} pack(s) left by an interrupted backup`);
    ctx.say(`snapshot ${result.id.slice(0, 12)} (#${result.snapshot.seq}) saved`);
    const unchanged = s.unchangedFiles ?? 0;
    ctx.say(
      `  ${s.files} files, ${s.dirs} folders, ${bytes(s.bytes)} in ${seconds(s.durationMs)}` +
        (unchanged ? `; ${unchanged} unchanged file(s) not read again` : ""),
    );
    ctx.say(`  ${s.newBlobs} new blobs, ${bytes(s.addedBytes)} added to the repository`);
    return {
      snapshot: result.id,
      seq: result.snapshot.seq,
      summary: s,
      adoptedPacks: result.adoptedPacks,
      skipped,
    };
  },
};
