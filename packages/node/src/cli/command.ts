import type { ParseArgsConfig } from "node:util";
import type { Context } from "./context.ts";

/** One `locket` subcommand: its help, its options and what it does. */
export interface Command {
  readonly name: string;
  /** One line for `locket --help`. */
  readonly summary: string;
  /** `locket NAME …` synopsis. */
  readonly usage: string;
  /** The text `locket NAME --help` prints after the synopsis: what it does, options, examples. */
  readonly help: string;
  readonly options: NonNullable<ParseArgsConfig["options"]>;
  /** Runs the command; returns the `--json` result object (human output goes through ctx.say). */
  run(ctx: Context): Promise<Record<string, unknown>>;
}

/** Options every command takes. */
export const GLOBAL_OPTIONS: NonNullable<ParseArgsConfig["options"]> = {
  repo: { type: "string", short: "r" },
  "recovery-key": { type: "string" },
  json: { type: "boolean" },
  vault: { type: "string" },
  account: { type: "string" },
  "token-file": { type: "string" },
  "password-stdin": { type: "boolean" },
  progress: { type: "string" },
  "s3-endpoint": { type: "string" },
  "s3-region": { type: "string" },
  help: { type: "boolean", short: "h" },
};

export const GLOBAL_HELP = `Global options:
  -r, --repo PATH          repository (or LOCKET_REPOSITORY; default: the one \`init\` made on this device);
                           a folder, or s3://BUCKET/PREFIX (credentials: AWS_ACCESS_KEY_ID and
                           AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)
      --s3-endpoint URL    S3-compatible server, path-style (or LOCKET_S3_ENDPOINT; default: AWS S3)
      --s3-region REGION   S3 region (or AWS_REGION; default us-east-1)
      --recovery-key KEY   the 68-digit recovery key (or LOCKET_RECOVERY_KEY), for a device without the key
      --vault URL          key vault holding the password-protected key (or LOCKET_VAULT)
      --account NAME       account at the vault (or LOCKET_ACCOUNT); token in LOCKET_TOKEN or --token-file
      --password-stdin     read the password from standard input (or LOCKET_PASSWORD; default: prompt)
      --json               print one JSON result object on stdout
      --progress MODE      bar | json (NDJSON events on stderr) | none  (default: bar on a terminal)
  -h, --help               this help`;
