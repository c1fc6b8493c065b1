import { resolve } from "node:path";
import { UsageError } from "@locket/core";
import { restoreToDir } from "../../restore.ts";
import { selectionFilter } from "../../source.ts";
import type { Command } from "../command.ts";
import { bytes, seconds } from "../format.ts";

export const restore: Command = {
  name: "restore",
  summary: "restore a snapshot into a folder, verifying every byte",
  usage: "locket restore [SNAPSHOT|latest] --target DIR [--include GLOB] [--exclude GLOB]",
  help: `Restores SNAPSHOT (default: latest) into DIR. Every chunk is checked against its keyed ID
before it is written; files are written inside a hidden staging folder in DIR
and moved into place only when the whole snapshot has been restored, so a failure never leaves a
half-written file under a real name. Running the same restore again resumes: files already
complete in the staging folder are verified and kept.

On a new device, give the repository and the recovery key:
  locket restore latest --repo /mnt/backup/chats --recovery-key '…' --target ~/restored

A part of the snapshot can be restored on its own: the chats first and the media later, or
everything but the videos. Patterns match paths in the snapshot as \`locket ls\` shows them
(a pattern without a slash matches a name at any depth); folders are restored only where they
hold a restored file, and only the top-level entries restored are checked for a clash.
  locket restore latest --target ~/restored --include msgstore.db
  locket restore latest --target ~/restored --exclude-videos

Options:
      --target DIR         where to restore (created if missing)
      --overwrite          replace entries that already exist in DIR
      --include GLOB       restore only files matching GLOB (repeatable; * ? and ** as in .gitignore)
      --exclude GLOB       leave out files matching GLOB (repeatable)
      --exclude-videos     leave out video files (mp4, mov, 3gp, mkv, webm, ...)`,
  options: {
    target: { type: "string", short: "t" },
    overwrite: { type: "boolean" },
    include: { type: "string", multiple: true },
    exclude: { type: "string", multiple: true },
    "exclude-videos": { type: "boolean" },
  },
  async run(ctx) {
    const target = ctx.str("target");
    if (!target) throw new UsageError("restore needs --target DIR");
    if (ctx.positionals.length > 1) throw new UsageError("restore takes at most one SNAPSHOT");
    const started = Date.now();
    const { repo, state } = await ctx.openRepo();
    await repo.loadIndex();
    const snap = await repo.findSnapshot(
      ctx.positionals[0] ?? "latest",
      await repo.checkedSnapshots(state.lastSeq),
    );
    const include = ctx.values.include as string[] | undefined;
    const exclude = ctx.values.exclude as string[] | undefined;
    const excludeVideos = ctx.values["exclude-videos"] === true;
    const selecting = Boolean(include?.length || exclude?.length || excludeVideos);
    const result = await restoreToDir(repo, snap, resolve(target), {
      overwrite: ctx.values.overwrite === true,
      ...(selecting ? { filter: selectionFilter({ include, exclude, excludeVideos }) } : {}),
      onProgress: (p) =>
        ctx.progress.update({
          phase: "restore",
          bytes: p.bytes,
          totalBytes: p.totalBytes,
          files: p.files,
          totalFiles: p.totalFiles,
          current: p.current,
        }),
    });
    ctx.progress.done();
    await ctx.device.updateRepo(repo.config.id, {
      location: state.location,
      lastSeq: snap.snapshot.seq,
    });
    const ms = Date.now() - started;
    ctx.say(`restored snapshot ${snap.id.slice(0, 12)} (#${snap.snapshot.seq}) to ${target}`);
    ctx.say(
      `  ${result.files} files, ${result.dirs} folders, ${bytes(result.bytes)} in ${seconds(ms)}, every byte verified`,
    );
    if (result.resumedFiles)
      ctx.say(`  resumed: ${result.resumedFiles} file(s) were already restored and verified`);
    if (selecting) {
      ctx.say(
        result.files === 0
          ? `  nothing restored: none of the snapshot's ${result.skippedFiles} file(s) matched`
          : `  left out: ${result.skippedFiles} file(s) that did not match`,
      );
    }
    return { snapshot: snap.id, target, ...result, durationMs: ms };
  },
};
