import { formatRecoveryKey, generateRootKey, Repository, toHex, UsageError } from "@locket/core";
import { nodePrimitives } from "../../primitives.ts";
import { FsStorage } from "../../storage/fs.ts";
import type { Command } from "../command.ts";
import { isS3Location } from "../context.ts";

export const init: Command = {
  name: "init",
  summary: "create a repository and print its recovery key",
  usage: "locket init --repo PATH|s3://BUCKET/PREFIX",
  help: `Creates an empty repository at PATH (a local folder; it must not hold a repository) or in an
S3 bucket under PREFIX (the bucket must exist; Locket never creates buckets; the prefix must not
hold a repository), generates a random 256-bit root key on this device, keeps it in this device's
state ($LOCKET_HOME), makes the repository this device's default, and prints the recovery key ONCE.

For S3, pass --s3-endpoint URL (or LOCKET_S3_ENDPOINT) for a server other than AWS S3; it is not
remembered, so set LOCKET_S3_ENDPOINT for later commands too. Credentials come from
AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE and ~/.aws.

The recovery key alone restores every backup in the repository on any device. Write it down and
keep it somewhere safe: nobody, including Locket, can recover it for you.

Examples:
  locket init --repo /mnt/backup/chats
  locket init --repo s3://my-bucket/chats                  # AWS S3; credentials from AWS_* or ~/.aws
  locket init --repo s3://backups/alice --s3-endpoint http://127.0.0.1:7480   # Ceph RGW, MinIO, ...`,
  options: {},
  async run(ctx) {
    const location = ctx.str("repo") ?? ctx.env.LOCKET_REPOSITORY;
    if (!location) throw new UsageError("init needs --repo PATH (or LOCKET_REPOSITORY)");
    // For S3, the exclusive save of config in Repository.init is what refuses an existing
    // repository when two inits race; create() only gives the early, friendlier message.
    const s3 = isS3Location(location) ? ctx.s3Options() : undefined;
    const storage = s3
      ? await (await import("../../storage/s3.ts")).S3Storage.create(location, s3)
      : await FsStorage.create(location);
    const rootKey = generateRootKey(nodePrimitives);
    const repo = await Repository.init(storage, nodePrimitives, rootKey);
    await ctx.device.updateRepo(repo.config.id, { location, rootKey: toHex(rootKey), lastSeq: 0 });
    // The new repository becomes this device's default, with the S3 endpoint and region it took.
    await ctx.device.setDefaults({
      repository: location,
      ...(s3 ? { s3Endpoint: s3.endpoint, s3Region: s3.region } : {}),
    });
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
