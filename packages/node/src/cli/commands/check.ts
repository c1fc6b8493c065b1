import { IntegrityError, check as runCheck, StorageError } from "@locket/core";
import type { Command } from "../command.ts";
import { bytes } from "../format.ts";

export const check: Command = {
  name: "check",
  summary: "verify the repository's structure (and with --read-data, every byte)",
  usage: "locket check [--read-data]",
  help: `Verifies that every index file and snapshot authenticates, every tree decodes, every blob
a snapshot needs is indexed in a pack that exists, and every pack's header matches its name
(SHA-256) and what the index says the pack holds (one small read per pack). With --read-data it
also downloads every pack and checks every segment's authentication and every blob against its
keyed ID.
Exit status 3 when anything is damaged; each problem names the object. Exit status 1 when
nothing damaged was found but some objects could not be read (a storage or network failure):
their state is unknown, so run the check again.

Options:
      --read-data          read and verify all data, not only the structure`,
  options: { "read-data": { type: "boolean" } },
  async run(ctx) {
    // From the storage itself, not this device's copies of a remote repository's index files
    // and snapshots: a check verifies what the repository holds.
    const { repo, state } = await ctx.openRepo({ cache: false });
    const report = await runCheck(repo, {
      readData: ctx.values["read-data"] === true,
      minSeq: state.lastSeq,
      onProgress: (p) =>
        (p.phase === "read-data" || p.phase === "headers") &&
        ctx.progress.update({
          phase: p.phase,
          bytes: p.bytes,
          files: p.done,
          totalFiles: p.total,
          unit: "packs",
        }),
    });
    ctx.progress.done();
    for (const w of report.warnings) ctx.warn(`warning: ${w.object}: ${w.message}`);
    for (const e of report.errors) process.stderr.write(`error: ${e.object}: ${e.message}\n`);
    for (const e of report.unreadable) {
      process.stderr.write(`error: ${e.object}: could not be read: ${e.message}\n`);
    }
    ctx.say(
      `${report.snapshots} snapshots, ${report.indexFiles} index files, ${report.packs} packs, ${report.blobs} blobs` +
        (ctx.values["read-data"]
          ? `; read ${report.packsRead} packs (${bytes(report.bytesRead)})`
          : `; read ${report.headersRead} pack headers`),
    );
    if (report.errors.length) {
      const err = new IntegrityError(
        `check found ${report.errors.length} problem(s); the first: ${report.errors[0].object}: ${report.errors[0].message}`,
      );
      Object.assign(err, { details: report });
      throw err;
    }
    if (report.unreadable.length) {
      const first = report.unreadable[0];
      const err = new StorageError(
        `check could not read ${report.unreadable.length} object(s), so their state is unknown (nothing damaged found); the first: ${first.object}: ${first.message}`,
      );
      Object.assign(err, { details: report });
      throw err;
    }
    ctx.say("no errors found");
    return { ...report };
  },
};
