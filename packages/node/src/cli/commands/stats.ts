import { stats as repoStats } from "@locket/core";
import type { Command } from "../command.ts";
import { bytes } from "../format.ts";

export const stats: Command = {
  name: "stats",
  summary: "show sizes: what the snapshots hold against what storage holds",
  usage: "locket stats",
  help: `Shows how much data the snapshots describe and how much storage holds for them:
  logical    the files of every snapshot added up (what full copies would take)
  unique     the distinct chunks, before compression and encryption
  stored     every object in the repository
and the ratios between them (deduplication across files and snapshots, and compression).
Reads only the index and the snapshots.`,
  options: {},
  async run(ctx) {
    const { repo } = await ctx.openRepo();
    const s = await repoStats(repo);
    ctx.say(`snapshots        ${s.snapshots}`);
    ctx.say(`latest snapshot  ${bytes(s.latestBytes)}`);
    ctx.say(`logical          ${bytes(s.logicalBytes)}  (all snapshots, in full)`);
    ctx.say(`unique           ${bytes(s.uniqueBytes)}  in ${s.blobs} blobs`);
    ctx.say(`stored           ${bytes(s.storedBytes)}  in ${s.packs} packs and metadata`);
    ctx.say(`dedup ratio      ${s.dedupRatio.toFixed(2)}x  (logical / stored)`);
    ctx.say(`compression      ${s.compressionRatio.toFixed(2)}x  (unique / pack bytes)`);
    return { ...s };
  },
};
