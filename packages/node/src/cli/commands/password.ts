import { fromHex, UsageError } from "@locket/core";
import type { Command } from "../command.ts";

export const password: Command = {
  name: "password",
  summary: "protect the root key with a password at a key vault (set, change, disable, status)",
  usage: "locket password set|change|disable|status [--vault URL] [--account NAME]",
  help: `Lets a password (that never leaves this device) unlock this repository's root key on a new
device. The key vault stores the key sealed under a key only your password can produce (OPAQUE,
RFC 9807, with Argon2id on this device) and allows 10 wrong guesses; after that it destroys the
record and only the recovery key can restore. Nobody, including the vault's operator, can recover
a forgotten password.

  set       enrol: register the password and store the sealed key (needs this device's key)
  change    replace the password from this device; no backup is uploaded again
  disable   delete the vault's record (the recovery key still restores)
  status    show whether a record exists and how many guesses are left

The vault and account are remembered after 'set'. The account token (issued by your app's
backend, or by 'locket vault token' for a self-hosted vault) comes from LOCKET_TOKEN or
--token-file. The password comes from a no-echo prompt, LOCKET_PASSWORD or --password-stdin.

Options:
      --guess-limit N      guesses allowed (default and maximum: the vault's, usually 10)

Example:
  export LOCKET_TOKEN=$(locket vault token --account alice --data-dir ~/vault)
  locket password set --vault http://127.0.0.1:7411 --account alice`,
  options: { "guess-limit": { type: "string" } },
  async run(ctx) {
    const action = ctx.positionals[0];
    if (
      !["set", "change", "disable", "status"].includes(action ?? "") ||
      ctx.positionals.length > 1
    ) {
      throw new UsageError("password needs one of: set, change, disable, status");
    }
    const { location, repoId, state: known } = await ctx.repoState();
    const client = await ctx.vaultClient(known);
    if (action === "status") {
      const s = await client.status();
      if (s.exists)
        ctx.say(
          `password set at ${client.url} for ${client.account}: ${s.guessesRemaining} of ${s.guessLimit} guesses left`,
        );
      else if (s.destroyed)
        ctx.say(
          `every guess was used: the vault destroyed the record; use the recovery key, then 'password set' again`,
        );
      else ctx.say(`no password is set at ${client.url} for ${client.account}`);
      return { vault: client.url, account: client.account, ...s };
    }
    if (action === "disable") {
      const deleted = await client.disable();
      await ctx.device.updateRepo(repoId, { location, vault: undefined });
      ctx.say(
        deleted
          ? "password disabled: the vault's record is deleted; the recovery key still restores"
          : "no password was set",
      );
      return { vault: client.url, account: client.account, deleted };
    }
    if (!known?.rootKey) {
      throw new UsageError(
        "this device has no key for this repository; only a device that holds it can set the password",
      );
    }
    // Opens with this device's key (never the vault), which also proves the key is right.
    const { repo, state } = await ctx.openRepo();
    if (action === "change" && !(await client.status()).exists) {
      throw new UsageError("no password is set yet; use 'locket password set'");
    }
    const pw = await ctx.password(
      action === "set" ? "New backup password: " : "New password: ",
      true,
    );
    if (pw.length < 4) throw new UsageError("the password must have at least 4 characters");
    let limit = ctx.str("guess-limit") === undefined ? undefined : ctx.int("guess-limit", 10);
    if (limit !== undefined && limit < 1) throw new UsageError("--guess-limit must be at least 1");
    // A change keeps a lowered limit rather than quietly resetting it to the vault's default.
    if (limit === undefined && action === "change") limit = (await client.status()).guessLimit;
    const { guessLimit } = await client.enroll(
      pw,
      { rootKey: fromHex(state.rootKey!), repoId: repo.config.id },
      limit,
    );
    await ctx.device.updateRepo(repo.config.id, {
      location,
      vault: { url: client.url, account: client.account },
    });
    ctx.say(
      `password ${action === "set" ? "set" : "changed"} at ${client.url} for ${client.account}; ${guessLimit} wrong guesses destroy the record`,
    );
    return { vault: client.url, account: client.account, guessLimit };
  },
};
