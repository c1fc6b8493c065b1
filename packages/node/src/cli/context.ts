import {
  decodeConfig,
  fromHex,
  NotFoundError,
  parseRecoveryKey,
  Repository,
  type Storage,
  UsageError,
} from "@locket/core";
import { Device, locketHome, type RepoState } from "../device.ts";
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

  /**
   * Opens the repository with the recovery key (when given) or this device's key.
   * @throws {UsageError} when this device has no key and none was given.
   * @throws {WrongKeyError} when the key does not open the repository.
   */
  async openRepo(): Promise<{ repo: Repository; state: RepoState }> {
    const location = await this.location();
    const storage = await this.storage(location);
    let config: ReturnType<typeof decodeConfig>;
    try {
      config = decodeConfig(await storage.load("config", "config"));
    } catch (err) {
      if (err instanceof NotFoundError) throw new NotFoundError(`no repository at ${location}`);
      throw err;
    }
    const typed = this.str("recovery-key") ?? this.env.LOCKET_RECOVERY_KEY;
    const known = await this.device.repo(config.id);
    let rootKey: Uint8Array;
    if (typed) rootKey = parseRecoveryKey(typed);
    else if (known?.rootKey) rootKey = fromHex(known.rootKey);
    else {
      throw new UsageError(
        `this device has no key for the repository at ${location}: pass --recovery-key KEY or set LOCKET_RECOVERY_KEY`,
      );
    }
    const repo = await Repository.open(storage, nodePrimitives, rootKey);
    const state = await this.device.updateRepo(config.id, { location });
    return { repo, state };
  }
}
