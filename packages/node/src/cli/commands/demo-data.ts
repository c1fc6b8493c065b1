import { UsageError } from "@locket/core";
import type { Command } from "../command.ts";
import { bytes } from "../format.ts";

export const demoData: Command = {
  name: "demo-data",
  summary: "write a realistic, deterministic chat data set",
  usage: "locket demo-data DIR [--messages N] [--media-mb M] [--seed S]",
  help: `Writes DIR/chat.db, a SQLite database shaped like a real messenger's (contacts, chats,
messages with varied text, receipts, media rows, indexes), and DIR/Media with photos (JPEG),
videos (MP4) and voice notes (Ogg Opus): real headers over incompressible bodies. The same
options always give the same bytes.

Options:
      --messages N         number of messages (default 20000)
      --media-mb M         megabytes of media (default 20)
      --seed S             generator seed (default 1)`,
  options: {
    messages: { type: "string" },
    "media-mb": { type: "string" },
    seed: { type: "string" },
  },
  async run(ctx) {
    // The generator is large; only this command and the demo load it.
    const { writeDemoData } = await import("../../demo-data.ts");
    if (ctx.positionals.length !== 1) throw new UsageError("demo-data needs exactly one DIR");
    const dir = ctx.positionals[0];
    const r = writeDemoData(dir, {
      messages: ctx.int("messages", 20000),
      mediaMb: ctx.int("media-mb", 20),
      seed: ctx.int("seed", 1),
      onProgress: (done, total) =>
        ctx.progress.update({ phase: "demo-data", bytes: 0, files: done, totalFiles: total }),
    });
    ctx.progress.done();
    ctx.say(
      `wrote ${dir}: ${r.messages} messages in ${r.dbPath}, ${r.mediaFiles} media files; ${bytes(r.bytes)} in all`,
    );
    return { ...r };
  },
};
