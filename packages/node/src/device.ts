import { mkdir, open, readFile, rename } from "node:fs/promises";
import { homedir, platform } from "node:os";
import { join } from "node:path";

/**
 * Device state under `$LOCKET_HOME`: the default repository and, per repository ID, the root key
 * (only on a device that created or enrolled the repository) and the highest snapshot sequence
 * this device has seen, which is how a rolled-back storage is detected. Files are owner-only.
 */

export interface RepoState {
  readonly repoId: string;
  readonly location: string;
  /** Root key, hex. Present only on enrolled devices. A secret: never print it. */
  readonly rootKey?: string;
  readonly lastSeq: number;
  readonly lastSnapshot?: string;
  /** The key vault holding this repository's password-protected root key, once `password set` ran. */
  readonly vault?: { readonly url: string; readonly account: string };
}

export interface Defaults {
  readonly repository?: string;
  /** For an S3 default repository: the endpoint and region `init` used, so later commands need neither. */
  readonly s3Endpoint?: string;
  readonly s3Region?: string;
}

/** `$LOCKET_HOME`, or the platform's config folder. */
export function locketHome(env: NodeJS.ProcessEnv = process.env): string {
  if (env.LOCKET_HOME) return env.LOCKET_HOME;
  if (platform() === "win32" && env.APPDATA) return join(env.APPDATA, "locket");
  if (platform() === "darwin") return join(homedir(), "Library", "Application Support", "locket");
  return join(env.XDG_CONFIG_HOME || join(homedir(), ".config"), "locket");
}

/**
 * Where this device keeps caches it can rebuild (the databases' page bases): `$LOCKET_CACHE`;
 * else `cache` in `$LOCKET_HOME` when that is set (so one variable isolates a test or a user);
 * else the platform's cache folder.
 */
export function locketCache(env: NodeJS.ProcessEnv = process.env): string {
  if (env.LOCKET_CACHE) return env.LOCKET_CACHE;
  if (env.LOCKET_HOME) return join(env.LOCKET_HOME, "cache");
  if (platform() === "win32" && env.LOCALAPPDATA) return join(env.LOCALAPPDATA, "locket", "cache");
  if (platform() === "darwin") return join(homedir(), "Library", "Caches", "locket");
  return join(env.XDG_CACHE_HOME || join(homedir(), ".cache"), "locket");
}

async function readJson<T>(path: string): Promise<T | null> {
  try {
    return JSON.parse(await readFile(path, "utf8")) as T;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
}

/** Atomic owner-only write: temp file, fsync, rename. */
async function writeJson(path: string, value: unknown): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  const fh = await open(tmp, "w", 0o600);
  try {
    await fh.writeFile(`${JSON.stringify(value, null, 2)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

export class Device {
  readonly home: string;
  constructor(home: string) {
    this.home = home;
  }

  private repoPath(repoId: string): string {
    return join(this.home, "repos", `${repoId}.json`);
  }

  async defaults(): Promise<Defaults> {
    return (await readJson<Defaults>(join(this.home, "config.json"))) ?? {};
  }

  async setDefaults(d: Defaults): Promise<void> {
    await mkdir(this.home, { recursive: true, mode: 0o700 });
    await writeJson(join(this.home, "config.json"), d);
  }

  async repo(repoId: string): Promise<RepoState | null> {
    return readJson<RepoState>(this.repoPath(repoId));
  }

  /** Merges `update` into the repository's state; `lastSeq` only ever grows. */
  async updateRepo(
    repoId: string,
    update: Partial<RepoState> & { location: string },
  ): Promise<RepoState> {
    const prev = await this.repo(repoId);
    const next: RepoState = {
      ...prev,
      ...update,
      repoId,
      lastSeq: Math.max(prev?.lastSeq ?? 0, update.lastSeq ?? 0),
    };
    await mkdir(join(this.home, "repos"), { recursive: true, mode: 0o700 });
    await writeJson(this.repoPath(repoId), next);
    return next;
  }
}
