import { UsageError, walk } from "@locket/core";
import type { Command } from "../command.ts";
import { bytes } from "../format.ts";

export const ls: Command = {
  name: "ls",
  summary: "list the files in a snapshot",
  usage: "locket ls [SNAPSHOT|latest]",
  help: `Lists every file and folder in SNAPSHOT (an ID, a unique ID prefix of 4+ digits, or
"latest"; default latest) with its size and modification time.`,
  options: {},
  async run(ctx) {
    if (ctx.positionals.length > 1) throw new UsageError("ls takes at most one SNAPSHOT");
    const { repo, state } = await ctx.openRepo();
    await repo.loadIndex();
    const snap = await repo.findSnapshot(
      ctx.positionals[0] ?? "latest",
      await repo.checkedSnapshots(state.lastSeq),
    );
    const entries: Record<string, unknown>[] = [];
    for await (const { path, node } of walk(repo, snap.snapshot.tree)) {
      const p = path.join("/");
      const mtime = new Date(node.mtimeMs).toISOString();
      if (node.type === "dir") ctx.say(`d ${"".padStart(10)}  ${mtime}  ${p}/`);
      else ctx.say(`- ${bytes(node.size).padStart(10)}  ${mtime}  ${p}`);
      entries.push({
        path: p,
        type: node.type,
        size: node.type === "file" ? node.size : undefined,
        mode: node.mode,
        mtime,
      });
    }
    return { snapshot: snap.id, entries };
  },
};
