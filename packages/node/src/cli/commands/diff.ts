import { diffSnapshots, UsageError } from "@locket/core";
import type { Command } from "../command.ts";
import { bytes } from "../format.ts";

export const diff: Command = {
  name: "diff",
  summary: "show what changed between two snapshots",
  usage: "locket diff SNAPSHOT_A SNAPSHOT_B",
  help: `Lists the paths that differ between two snapshots (IDs, unique prefixes or "latest"):
  +  added       -  removed       M  content changed
  T  type changed (file <-> folder)   m  only mode or modification time changed
Content is compared by chunk IDs: nothing but the snapshots' trees is downloaded.`,
  options: {},
  async run(ctx) {
    if (ctx.positionals.length !== 2) throw new UsageError("diff needs two snapshots");
    const { repo } = await ctx.openRepo();
    await repo.loadIndex();
    const a = await repo.findSnapshot(ctx.positionals[0]);
    const b = await repo.findSnapshot(ctx.positionals[1]);
    const entries = await diffSnapshots(repo, a.snapshot.tree, b.snapshot.tree);
    for (const e of entries)
      ctx.say(`${e.change} ${e.path}${e.size !== undefined ? `  (${bytes(e.size)})` : ""}`);
    const count = (c: string) => entries.filter((e) => e.change === c).length;
    ctx.say(
      `${count("+")} added, ${count("-")} removed, ${count("M")} changed, ${count("m") + count("T")} other`,
    );
    return { from: a.id, to: b.id, entries };
  },
};
