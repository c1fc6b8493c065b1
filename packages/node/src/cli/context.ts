import { readFile } from "node:fs/promises";
import {
  decodeConfig,
  fromHex,
  NotFoundError,
  parseRecoveryKey,
  Repository,
  type Storage,
  UsageError,
  WrongKeyError,
} from "@locket/core";
import { VaultClient } from "@locket/vault/client";
import { Device, locketHome, type RepoState } from "../device.ts";
import { readPassword } from "../password-input.ts";
import { nodePrimitives } from "../primitives.ts";
import { FsStorage } from "../storage/fs.ts";
import { Progress, type ProgressMode } from "./progress.ts";

/** Everything a command needs from its invocation: options, environment, output, device state. */
export class Context {
  readonly values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  readonly positionals: string[];
  readonly env: NodeJS.ProcessEnv;
  readonly json: boolean;
  readonly device: Device;
  readonly progress: Progress;

  constructor(values: Context["values"], positionals: string[], env: NodeJS.ProcessEnv) {
    this.values = values;
    this.positionals = positionals;
    this.env = env;
    this.json = values.json === true;
    this.device = new Device(locketHome(env));
    const mode =
      (values.progress as string | undefined) ??
      (process.stderr.isTTY && !this.json ? "bar" : "none");
    if (!["bar", "json", "none"].includes(mode))
      throw new UsageError(`--progress must be bar, json or none, got ${mode}`);
    this.progress = new Progress(mode as ProgressMode);
  }

  /** Prints a line of human output (silent with --json). */
  say(line = ""): void {
    if (!this.json) process.stdout.write(`${line}\n`);
  }

  /** A warning on stderr (also with --json, where stdout holds only the result). */
  warn(line: string): void {
    process.stderr.write(`locket: ${line}\n`);
  }

  /** A string option, or undefined. */
  str(name: string): string | undefined {
    const v = this.values[name];
    return typeof v === "string" ? v : undefined;
  }

  /** A non-negative integer option. @throws {UsageError} when malformed. */
  int(name: string, fallback: number): number {
    const v = this.str(name);
    if (v === undefined) return fallback;
    if (!/^\d+$/.test(v))
      throw new UsageError(`--${name} takes a whole number, got ${JSON.stringify(v)}`);
    return Number(v);
  }

  /** The repository location from --repo, LOCKET_REPOSITORY or this device's default. */
  async location(): Promise<string> {
    const loc =
      this.str("repo") ?? this.env.LOCKET_REPOSITORY ?? (await this.device.defaults()).repository;
    if (!loc) throw new UsageError("no repository: pass --repo PATH or set LOCKET_REPOSITORY");
    return loc;
  }

  /** Opens the storage of an existing repository. */
  async storage(location: string): Promise<Storage> {
    if (location.startsWith("s3://"))
      throw new UsageError("s3:// repositories are not supported by this build yet");
    return FsStorage.open(location);
  }

  /** The vault URL from --vault, LOCKET_VAULT or the repository's device state. */
  vaultUrl(state?: RepoState | null): string | undefined {
    return this.str("vault") ?? this.env.LOCKET_VAULT ?? state?.vault?.url;
  }

  /**
   * A client for the key vault: URL and account from options, environment or device state; the
   * account token from LOCKET_TOKEN or --token-file (never from the command line, where other
   * users could read it).
   * @throws {UsageError} when the URL, account or token is missing.
   */
  async vaultClient(
    state?: RepoState | null,
  ): Promise<VaultClient & { url: string; account: string }> {
    const url = this.vaultUrl(state);
    if (!url) throw new UsageError("no key vault: pass --vault URL or set LOCKET_VAULT");
    const account = this.str("account") ?? this.env.LOCKET_ACCOUNT ?? state?.vault?.account;
    if (!account) throw new UsageError("no account: pass --account NAME or set LOCKET_ACCOUNT");
    const file = this.str("token-file");
    const token = file ? (await readFile(file, "utf8")).trim() : this.env.LOCKET_TOKEN;
    if (!token)
      throw new UsageError("no account token: set LOCKET_TOKEN or pass --token-file FILE");
    return Object.assign(new VaultClient({ url, token, primitives: nodePrimitives }), {
      url,
      account,
    });
  }

  /** The password, from LOCKET_PASSWORD, --password-stdin or a no-echo prompt. */
  password(prompt: string, confirm = false): Promise<string> {
    return readPassword({
      env: this.env,
      stdin: this.values["password-stdin"] === true,
      prompt,
      confirm,
    });
  }

  /**
   * The repository's ID and this device's state for it, read from the plaintext config without
   * any key (so nothing is charged at the vault).
   * @throws {NotFoundError} when there is no repository.
   */
  async repoState(): Promise<{
    location: string;
    storage: Storage;
    repoId: string;
    state: RepoState | null;
  }> {
    const location = await this.location();
    const storage = await this.storage(location);
    let config: ReturnType<typeof decodeConfig>;
    try {
      config = decodeConfig(await storage.load("config", "config"));
    } catch (err) {
      if (err instanceof NotFoundError) throw new NotFoundError(`no repository at ${location}`);
      throw err;
    }
    return { location, storage, repoId: config.id, state: await this.device.repo(config.id) };
  }

  /**
   * Opens the repository with the recovery key (when given), this device's key, or the password
   * through the key vault (when a vault is named).
   * @throws {UsageError} when this device has no key and none was given.
   * @throws {WrongPasswordError} / {GuessLimitError} from the vault.
   * @throws {WrongKeyError} when the key does not open the repository.
   */
  async openRepo(): Promise<{ repo: Repository; state: RepoState }> {
    const { location, storage, repoId, state: known } = await this.repoState();
    const typed = this.str("recovery-key") ?? this.env.LOCKET_RECOVERY_KEY;
    let rootKey: Uint8Array;
    if (typed) rootKey = parseRecoveryKey(typed);
    else if (known?.rootKey) rootKey = fromHex(known.rootKey);
    else if (this.vaultUrl(known)) {
      const env = await (await this.vaultClient(known)).recover(
        await this.password("Backup password: "),
      );
      if (env.repoId !== repoId) {
        throw new WrongKeyError(
          `the vault holds the key of repository ${env.repoId}, not of ${repoId} at ${location}`,
        );
      }
      rootKey = env.rootKey;
    } else {
      throw new UsageError(
        `this device has no key for the repository at ${location}: pass --recovery-key KEY (or set LOCKET_RECOVERY_KEY), ` +
          "or --vault URL with --account and LOCKET_TOKEN to use your password",
      );
    }
    const repo = await Repository.open(storage, nodePrimitives, rootKey);
    const state = await this.device.updateRepo(repoId, { location });
    return { repo, state };
  }
}
