import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import {
  formatRecoveryKey,
  generateRootKey,
  IntegrityError,
  parseRecoveryKey,
  Repository,
  readFile,
  backup as runBackup,
  WrongPasswordError,
  walk,
} from "@locket/core";
import type { RunningVault } from "@locket/vault/server";
import { diffTrees } from "../../compare.ts";
import { FsPageBaseStore } from "../../page-bases.ts";
import { nodePrimitives } from "../../primitives.ts";
import { restoreToDir } from "../../restore.ts";
import { fsSource } from "../../source.ts";
import { FsStorage } from "../../storage/fs.ts";
import type { Command } from "../command.ts";
import { bytes, seconds } from "../format.ts";

/** The demo's password: shown on screen, because this whole demo is throwaway. */
const DEMO_PASSWORD = "correct horse battery";

export const demo: Command = {
  name: "demo",
  summary: "run the whole story on a generated chat data set, in a temporary folder",
  usage: "locket demo [--messages N] [--media-mb M] [--keep]",
  help: `Shows what Locket does, end to end, without touching your files:
  1. writes a realistic chat data set (a SQLite database and media),
  2. creates a repository and a root key, and shows the recovery key,
  3. starts a key vault on 127.0.0.1 (SQLite) and protects the root key with a password,
  4. backs up the chat data,
  5. simulates a day of chat (new messages, receipts, new media) and backs up again,
     reporting how little the second backup stores,
  6. on a "new device" that has only the repository and the password, recovers the key from the
     vault (after one wrong guess), restores the latest snapshot, compares every file and checks
     the database with PRAGMA integrity_check,
  7. proves the recovery key alone opens the backup too (a restore drill).
Everything happens in a temporary folder, deleted afterwards unless --keep.

Options:
      --messages N         messages in the data set (default 20000)
      --media-mb M         megabytes of media (default 20)
      --keep               keep the temporary folder and print its path`,
  options: {
    messages: { type: "string" },
    "media-mb": { type: "string" },
    keep: { type: "boolean" },
  },
  async run(ctx) {
    const p = nodePrimitives;
    const dir = await mkdtemp(join(tmpdir(), "locket-demo-"));
    let vault: RunningVault | undefined;
    // Loaded here, not at start-up (see commands/vault.ts).
    const { simulateDay, writeDemoData } = await import("../../demo-data.ts");
    const { VaultClient } = await import("@locket/vault/client");
    const { issueToken, loadTokenSecret, serveVault, silentLogger } = await import(
      "@locket/vault/server"
    );
    const step = (n: number, text: string) => ctx.say(`\n${n}. ${text}`);
    try {
      const data = join(dir, "chat");
      const messages = ctx.int("messages", 20000);
      const mediaMb = ctx.int("media-mb", 20);
      step(1, `Writing a chat data set (${messages} messages, ${mediaMb} MiB of media) to ${data}`);
      const d = writeDemoData(data, { messages, mediaMb });
      ctx.say(`   ${bytes(d.bytes)}: chat.db and ${d.mediaFiles} media files`);

      step(2, "Creating a repository with a fresh random 256-bit root key");
      const storage = await FsStorage.create(join(dir, "repo"));
      const rootKey = generateRootKey(p);
      const repo = await Repository.init(storage, p, rootKey);
      const recoveryKey = formatRecoveryKey(rootKey);
      ctx.say(`   repository ${repo.config.id} at ${storage.location}`);
      ctx.say(`   recovery key (a throwaway one, for this demo): ${recoveryKey}`);

      step(3, "Protecting the root key with a password at a key vault (OPAQUE, 10 guesses)");
      const vaultDir = join(dir, "vault");
      vault = await serveVault({ dataDir: vaultDir, port: 0, log: silentLogger });
      const token = await issueToken(await loadTokenSecret(vaultDir), "demo-user");
      const vaultClient = new VaultClient({ url: vault.url, token, primitives: p });
      await vaultClient.enroll(DEMO_PASSWORD, { rootKey, repoId: repo.config.id });
      ctx.say(
        `   an embedded vault on ${vault.url} (SQLite) now holds the key sealed under "${DEMO_PASSWORD}";`,
      );
      ctx.say(
        "   only OPAQUE messages reach the vault, never the password, and it cannot open what it holds",
      );

      const paths = [join(data, "chat.db"), join(data, "Media")];
      step(4, "First backup");
      // The device's page bases (design.md, "Page deltas") live in the demo's folder, not in the
      // user's cache: the second backup stores changed database pages as deltas against them.
      const pageBases =
        ctx.env.LOCKET_PAGE_DELTAS === "0" ? undefined : new FsPageBaseStore(join(dir, "pages"));
      const first = await runBackup(repo, await fsSource(paths), {
        host: "demo",
        paths,
        pageBases,
      });
      const s1 = first.snapshot.summary;
      ctx.say(
        `   ${s1.files} files, ${bytes(s1.bytes)} read in ${seconds(s1.durationMs)}; ${bytes(s1.addedBytes)} stored (compressed, encrypted)`,
      );

      step(5, "A day of chat: new messages, receipts on 1% of messages, a few new photos");
      const day = simulateDay(data, {
        newMessages: Math.max(50, Math.round(messages / 20)),
        newMedia: 3,
        seed: 2,
      });
      ctx.say(
        `   +${day.newMessages} messages, ${day.updatedRows} rows updated, +${day.newMediaFiles} media files (${bytes(day.newMediaBytes)})`,
      );
      const repo2 = await Repository.open(storage, p, rootKey);
      // chat.db is the first root, so new bytes counted by its end are the database's alone.
      let dbNewBytes = 0;
      const second = await runBackup(repo2, await fsSource(paths), {
        host: "demo",
        paths,
        pageBases,
        onProgress: (pr) => {
          if (pr.current === "chat.db") dbNewBytes = pr.newBytes;
        },
      });
      const s2 = second.snapshot.summary;
      const dbSize = (await stat(join(data, "chat.db"))).size;
      ctx.say(
        `   second backup read ${bytes(s2.bytes)} in ${seconds(s2.durationMs)}; it stored ${bytes(s2.addedBytes)} (compressed): the new media`,
      );
      ctx.say(
        `   and the database's ${Math.round(dbNewBytes / 4096)} changed pages (${bytes(dbNewBytes)} of a ${bytes(dbSize)} database)`,
      );

      step(6, "A new device with only the repository and the password restores everything");
      try {
        await vaultClient.recover("a wrong guess");
      } catch (err) {
        if (!(err instanceof WrongPasswordError)) throw err;
        ctx.say(`   a wrong password first: ${err.message}`);
      }
      const recovered = await vaultClient.recover(DEMO_PASSWORD);
      ctx.say("   the right password: the vault resets the count and hands back the sealed key");
      const repo3 = await Repository.open(
        await FsStorage.open(storage.location),
        p,
        recovered.rootKey,
      );
      await repo3.loadIndex();
      const latest = await repo3.findSnapshot("latest");
      const target = join(dir, "restored");
      const r = await restoreToDir(repo3, latest, target);
      ctx.say(
        `   restored ${r.files} files (${bytes(r.bytes)}), every chunk verified against its keyed ID`,
      );
      const diff = await diffTrees(data, target);
      if (diff.length)
        throw new IntegrityError(
          `restored files differ from the originals: ${diff.slice(0, 5).join(", ")}`,
        );
      const db = new DatabaseSync(join(target, "chat.db"), { readOnly: true });
      const integrity = (db.prepare("PRAGMA integrity_check").get() as { integrity_check: string })
        .integrity_check;
      db.close();
      if (integrity !== "ok")
        throw new IntegrityError(`restored database fails integrity_check: ${integrity}`);
      ctx.say(
        "   every file is identical to the original; the database passes PRAGMA integrity_check",
      );

      step(7, "Without the password, the recovery key (68 hex digits) alone opens the backup too");
      const byRecoveryKey = await Repository.open(
        await FsStorage.open(storage.location),
        p,
        parseRecoveryKey(recoveryKey),
      );
      await byRecoveryKey.loadIndex();
      let verified = 0;
      for await (const { node } of walk(
        byRecoveryKey,
        (await byRecoveryKey.findSnapshot("latest")).snapshot.tree,
      )) {
        if (node.type !== "file") continue;
        for await (const chunk of readFile(byRecoveryKey, node)) verified += chunk.length;
      }
      ctx.say(
        `   restore drill with the recovery key: ${bytes(verified)} read and verified, nothing written`,
      );
      ctx.say(
        `\nDone. The day's backup stored ${bytes(s2.addedBytes)} for a ${bytes(s2.bytes)} data set.`,
      );
      if (ctx.values.keep) ctx.say(`Kept ${dir}`);
      return {
        dir: ctx.values.keep ? dir : undefined,
        dataBytes: d.bytes,
        firstBackup: s1,
        day,
        secondBackup: s2,
        databaseBytes: dbSize,
        databaseNewBytes: dbNewBytes,
        restoredFiles: r.files,
        identical: true,
        integrityCheck: integrity,
      };
    } finally {
      await vault?.close();
      if (!ctx.values.keep) await rm(dir, { recursive: true, force: true });
    }
  },
};
