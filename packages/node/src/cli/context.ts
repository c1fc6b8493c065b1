import { readFile } from "node:fs/promises";
import { join } from "node:path";
import {
  decodeConfig,
  type FileChunker,
  fromHex,
  NotFoundError,
  parseRecoveryKey,
  REMOTE_READ_GAP_BYTES,
  REMOTE_SEGMENT_CACHE_BYTES,
  Repository,
  type Storage,
  UsageError,
  WrongKeyError,
} from "@locket/core";
import type { VaultClient } from "@locket/vault/client";
import { type Defaults, Device, locketCache, locketHome, type RepoState } from "../device.ts";
import { FsPageBaseStore } from "../page-bases.ts";
import { readPassword } from "../password-input.ts";
import { nodePrimitives } from "../primitives.ts";
import { CachedStorage } from "../storage/cached.ts";
import { FsStorage } from "../storage/fs.ts";
import type { S3ExclusiveMode, S3StorageOptions } from "../storage/s3.ts";
import { WorkerChunker } from "../workers/chunker.ts";
import { WorkerPool } from "../workers/pool.ts";
import { WorkerSegmentOpener } from "../workers/segment-opener.ts";
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

  /**
   * The storage of an existing repository: a folder, or `s3://BUCKET/PREFIX` (for S3 nothing is
   * asked of the server yet: repoState's read of the config is the first request).
   * @throws {NotFoundError} when there is no repository folder.
   * @throws {StorageError} when a folder cannot be reached.
   * @throws {UsageError} when an S3 setting is malformed.
   */
  async storage(location: string): Promise<Storage> {
    if (!isS3Location(location)) return FsStorage.open(location);
    // Loaded on demand: the AWS SDK costs ~100 ms of start-up that local repositories never need.
    const { S3Storage } = await import("../storage/s3.ts");
    const defaults = await this.device.defaults();
    // Not S3Storage.open: repoState reads the config at once, which reports a missing bucket,
    // denied access or a missing repository as clearly, without open's two round trips.
    return S3Storage.attach(
      location,
      this.s3Options(defaults.repository === location ? defaults : {}),
    );
  }

  /**
   * S3 settings from options and environment: --s3-endpoint or LOCKET_S3_ENDPOINT, --s3-region
   * or AWS_REGION (default us-east-1), LOCKET_S3_CONCURRENCY, LOCKET_S3_EXCLUSIVE,
   * LOCKET_S3_TIMEOUT (seconds per request), LOCKET_S3_MAX_ATTEMPTS. Credentials: explicit when
   * this invocation's environment has AWS_ACCESS_KEY_ID, otherwise the AWS SDK's chain (profiles,
   * SSO, instance roles). `remembered`: the endpoint and region `init` kept for this device's
   * default repository, used when neither an option nor the environment gives one.
   * @throws {UsageError} when a setting is malformed.
   */
  s3Options(remembered: Defaults = {}): S3StorageOptions {
    const env = this.env;
    const endpoint =
      this.str("s3-endpoint") ?? (env.LOCKET_S3_ENDPOINT || undefined) ?? remembered.s3Endpoint;
    if (endpoint !== undefined && !/^https?:\/\/[^/]+/.test(endpoint))
      throw new UsageError(`--s3-endpoint must be an http:// or https:// URL, got ${endpoint}`);
    const exclusive = env.LOCKET_S3_EXCLUSIVE || "conditional";
    if (exclusive !== "conditional" && exclusive !== "head-then-put")
      throw new UsageError(
        `LOCKET_S3_EXCLUSIVE must be conditional or head-then-put, got ${exclusive}`,
      );
    const timeout = envInt(env, "LOCKET_S3_TIMEOUT");
    const key = env.AWS_ACCESS_KEY_ID;
    const secret = env.AWS_SECRET_ACCESS_KEY;
    return {
      endpoint,
      region:
        this.str("s3-region") ??
        (env.AWS_REGION || env.AWS_DEFAULT_REGION || remembered.s3Region || "us-east-1"),
      credentials:
        key && secret
          ? { accessKeyId: key, secretAccessKey: secret, sessionToken: env.AWS_SESSION_TOKEN }
          : undefined,
      concurrency: envInt(env, "LOCKET_S3_CONCURRENCY"),
      maxAttempts: envInt(env, "LOCKET_S3_MAX_ATTEMPTS"),
      requestTimeoutMs: timeout === undefined ? undefined : timeout * 1000,
      exclusiveMode: exclusive as S3ExclusiveMode,
    };
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
    // Loaded on demand: the OPAQUE WebAssembly module costs start-up time every command would pay.
    const { VaultClient } = await import("@locket/vault/client");
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
    /** The config object's bytes, for Repository.open. */
    configBytes: Uint8Array;
  }> {
    const location = await this.location();
    const storage = await this.storage(location);
    let configBytes: Uint8Array;
    try {
      configBytes = await storage.load("config", "config");
    } catch (err) {
      if (err instanceof NotFoundError) throw new NotFoundError(`no repository at ${location}`);
      throw err;
    }
    const config = decodeConfig(configBytes);
    const state = await this.device.repo(config.id);
    return { location, storage, repoId: config.id, state, configBytes };
  }

  /**
   * Opens the repository with the recovery key (when given), this device's key, or the password
   * through the key vault (when a vault is named).
   * @throws {UsageError} when this device has no key and none was given.
   * @throws {WrongPasswordError} / {GuessLimitError} from the vault.
   * @throws {WrongKeyError} when the key does not open the repository.
   */
  async openRepo(
    options: { readonly cache?: boolean } = {},
  ): Promise<{ repo: Repository; state: RepoState; chunker: FileChunker }> {
    const { location, storage: direct, repoId, state: known, configBytes } = await this.repoState();
    // A remote repository's index files and snapshots are kept on this device (CachedStorage),
    // unless LOCKET_OBJECT_CACHE=0; `check` reads them from the storage itself.
    const storage =
      isS3Location(location) && options.cache !== false && this.env.LOCKET_OBJECT_CACHE !== "0"
        ? new CachedStorage(direct, join(locketCache(this.env), "objects", repoId))
        : direct;
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
    const repo = await Repository.open(storage, nodePrimitives, rootKey, configBytes);
    if (isS3Location(location)) {
      repo.segmentCacheBytes = REMOTE_SEGMENT_CACHE_BYTES;
      repo.readGapBytes = REMOTE_READ_GAP_BYTES;
    }
    // Worker threads (one per core, at most 4, or LOCKET_THREADS), started on first use: restore,
    // check --read-data and prune open segments on them, and backup chunks and hashes on them.
    const pool = new WorkerPool(rootKey, { threads: envInt(this.env, "LOCKET_THREADS") });
    repo.useSegmentOpener(new WorkerSegmentOpener(pool));
    const state = await this.device.updateRepo(repoId, { location });
    return { repo, state, chunker: new WorkerChunker(pool, nodePrimitives, repo.keys) };
  }

  /**
   * Where a backup keeps the page bases of this repository's databases (SPEC §5, page deltas),
   * or undefined when LOCKET_PAGE_DELTAS=0 turns them off.
   */
  pageBases(repoId: string): FsPageBaseStore | undefined {
    if (this.env.LOCKET_PAGE_DELTAS === "0") return undefined;
    return new FsPageBaseStore(join(locketCache(this.env), "pages", repoId), {
      onWarning: (message) => this.warn(`warning: ${message}`),
    });
  }
}

/** Whether a repository location is an S3 URL (`s3://BUCKET/PREFIX`). */
export function isS3Location(location: string): boolean {
  return location.startsWith("s3://");
}

/**
 * A positive whole number from the environment, or undefined when unset.
 * @throws {UsageError} when set to anything else.
 */
function envInt(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const v = env[name];
  if (v === undefined || v === "") return undefined;
  if (!/^[1-9]\d*$/.test(v))
    throw new UsageError(`${name} takes a positive whole number, got ${v}`);
  return Number(v);
}
