import { formatRecoveryKey, generateRootKey, Repository, toHex, UsageError } from "@locket/core";
import { nodePrimitives } from "../../primitives.ts";
import { FsStorage } from "../../storage/fs.ts";
import type { Command } from "../command.ts";

export const init: Command = {
  name: "init",
  summary: "create a repository and print its recovery key",
  usage: "locket init --repo PATH",
  help: `Creates an empty repository at PATH (a local folder; it must not hold a repository),
generates a random 256-bit root key on this device, keeps it in this device's state
($LOCKET_HOME), makes PATH the default repository, and prints the recovery key ONCE.

The recovery key alone restores every backup in the repository on any device. Write it down and
keep it somewhere safe: nobody, including Locket, can recover it for you.

Example:
  locket init --repo /mnt/backup/chats`,
  options: {},
  async run(ctx) {
    const location = ctx.str("repo") ?? ctx.env.LOCKET_REPOSITORY;
    if (!location) throw new UsageError("init needs --repo PATH (or LOCKET_REPOSITORY)");
    if (location.startsWith("s3://"))
      throw new UsageError("s3:// repositories are not supported by this build yet");
    const storage = await FsStorage.create(location);
    const rootKey = generateRootKey(nodePrimitives);
    const repo = await Repository.init(storage, nodePrimitives, rootKey);
    await ctx.device.updateRepo(repo.config.id, { location, rootKey: toHex(rootKey), lastSeq: 0 });
    await ctx.device.setDefaults({ ...(await ctx.device.defaults()), repository: location });
    const recoveryKey = formatRecoveryKey(rootKey);
    ctx.say(`created repository ${repo.config.id} at ${location}`);
    ctx.say("");
    ctx.say("Your recovery key (shown once; it alone restores your backups):");
    ctx.say("");
    ctx.say(`  ${recoveryKey}`);
    ctx.say("");
    ctx.say("Write it down and keep it safe. This device keeps the key for backups; a new device");
    ctx.say("needs the recovery key (locket restore --recovery-key '…').");
    return { repository: location, repositoryId: repo.config.id, recoveryKey };
  },
};
