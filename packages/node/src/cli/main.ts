import { parseArgs } from "node:util";
import { LocketError, UsageError } from "@locket/core";
import { type Command, GLOBAL_HELP, GLOBAL_OPTIONS } from "./command.ts";
import { backup } from "./commands/backup.ts";
import { check } from "./commands/check.ts";
import { demo } from "./commands/demo.ts";
import { demoData } from "./commands/demo-data.ts";
import { diff } from "./commands/diff.ts";
import { drill } from "./commands/drill.ts";
import { forget } from "./commands/forget.ts";
import { init } from "./commands/init.ts";
import { ls } from "./commands/ls.ts";
import { password } from "./commands/password.ts";
import { prune } from "./commands/prune.ts";
import { restore } from "./commands/restore.ts";
import { snapshots } from "./commands/snapshots.ts";
import { stats } from "./commands/stats.ts";
import { vault } from "./commands/vault.ts";
import { Context } from "./context.ts";

/** Every subcommand, in the order `locket --help` lists them. */
export const COMMANDS: readonly Command[] = [
  init,
  backup,
  snapshots,
  ls,
  restore,
  drill,
  check,
  forget,
  prune,
  stats,
  diff,
  password,
  vault,
  demoData,
  demo,
];

const VERSION = "0.1.0";

const TOP_HELP = `locket ${VERSION}: end-to-end encrypted, incremental backups of chat data

Usage: locket COMMAND [options]

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(12)} ${c.summary}`).join("\n")}

Start here:
  locket demo                               see the whole story in a temporary folder
  locket init --repo ~/locket-repo          create a repository; write down the recovery key
  locket backup ~/chat/msgstore.db ~/chat/Media
  locket restore latest --target ~/restored

Environment:
  LOCKET_REPOSITORY    repository, instead of --repo
  LOCKET_RECOVERY_KEY  recovery key, instead of --recovery-key
  LOCKET_VAULT         key vault URL, instead of --vault
  LOCKET_ACCOUNT       vault account, instead of --account
  LOCKET_TOKEN         vault account token (a JWT from your app's backend or 'locket vault token')
  LOCKET_PASSWORD      backup password, instead of the prompt (for scripts)
  LOCKET_HOME          this device's state (default: the platform's config folder)
  LOCKET_THREADS       worker threads for backup, restore, check and prune (default: cores, max 4)

Exit status: 0 ok, 1 failure, 2 usage, 3 integrity failure (damaged, truncated or rolled-back
data), 4 wrong key or password, 5 password guess limit reached (use the recovery key).

Run 'locket COMMAND --help' for a command's options.`;

/**
 * Runs the CLI with `argv` (without node and script) and returns the exit status. Output goes to
 * stdout (results) and stderr (progress, warnings, errors).
 */
export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(`${TOP_HELP}\n`);
    return name ? 0 : 2;
  }
  if (name === "--version" || name === "-V") {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  const json = rest.includes("--json");
  try {
    if (!command)
      throw new UsageError(`unknown command ${JSON.stringify(name)}; run 'locket --help'`);
    let parsed: ReturnType<typeof parseArgs>;
    try {
      parsed = parseArgs({
        args: rest,
        options: { ...GLOBAL_OPTIONS, ...command.options },
        allowPositionals: true,
        strict: true,
      });
    } catch (err) {
      throw new UsageError(
        `${(err as Error).message.replace(/\. To specify.*$/s, "")}; run 'locket ${name} --help'`,
      );
    }
    if (parsed.values.help) {
      process.stdout.write(`Usage: ${command.usage}\n\n${command.help}\n\n${GLOBAL_HELP}\n`);
      return 0;
    }
    const ctx = new Context(parsed.values, parsed.positionals, env);
    const result = await command.run(ctx);
    if (json) process.stdout.write(`${JSON.stringify({ ok: true, command: name, ...result })}\n`);
    return 0;
  } catch (err) {
    const e =
      err instanceof LocketError
        ? err
        : new LocketError(
            "failure",
            `unexpected error: ${(err as Error)?.message ?? String(err)}`,
            { cause: err },
          );
    process.stderr.write(`${process.stderr.isTTY ? "\r\x1b[K" : ""}locket: ${e.message}\n`);
    if (!(err instanceof LocketError) && env.LOCKET_DEBUG)
      process.stderr.write(`${(err as Error)?.stack}\n`);
    if (json) {
      // A command may attach what it found (check: every problem), for scripts.
      const details = (e as { details?: unknown }).details;
      const error = { code: e.code, message: e.message, exitStatus: e.exitStatus, details };
      process.stdout.write(`${JSON.stringify({ ok: false, command: name, error })}\n`);
    }
    return e.exitStatus;
  }
}
