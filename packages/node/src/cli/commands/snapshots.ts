import type { Command } from "../command.ts";
import { bytes } from "../format.ts";

export const snapshots: Command = {
  name: "snapshots",
  summary: "list snapshots",
  usage: "locket snapshots [--json]",
  help: `Lists the repository's snapshots, oldest first, with their sequence numbers. Fails with
exit status 3 when storage shows fewer snapshots than this device has already seen (rollback).`,
  options: {},
  async run(ctx) {
    const { repo, state } = await ctx.openRepo();
    const all = await repo.checkedSnapshots(state.lastSeq);
    if (all.length) {
      const last = all[all.length - 1];
      await ctx.device.updateRepo(repo.config.id, {
        location: state.location,
        lastSeq: last.snapshot.seq,
      });
    }
    ctx.say(
      "ID            SEQ  TIME                      HOST          FILES       SIZE   ADDED  PATHS",
    );
    for (const { id, snapshot: s } of all) {
      ctx.say(
        `${id.slice(0, 12)}  ${String(s.seq).padStart(3)}  ${s.time.padEnd(24)}  ${s.host.slice(0, 12).padEnd(12)}  ${String(s.summary.files).padStart(5)}  ${bytes(s.summary.bytes).padStart(9)}  ${bytes(s.summary.addedBytes).padStart(9)}  ${s.paths.join(" ")}`,
      );
    }
    ctx.say(`${all.length} snapshot(s)`);
    return { snapshots: all.map(({ id, snapshot }) => ({ id, ...snapshot })) };
  },
};
