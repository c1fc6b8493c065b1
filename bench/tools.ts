/**
 * The three backup tools behind one interface. Each adapter keeps its repository, its secrets and
 * its local state (Locket's device state, restic's cache, borg's cache and security folders)
 * inside the benchmark's temporary folder, and uses the tool's defaults otherwise.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import type { LocketCode } from "./code.ts";
import { type Measured, measure, probe, type RssMethod, run, treeSize } from "./proc.ts";

export type ToolName = "locket" | "restic" | "borg";

/** All tools, in the order the tables show them. */
export const TOOL_NAMES: readonly ToolName[] = ["locket", "restic", "borg"];

/** One backup tool with one repository in the benchmark's folder. */
export interface Tool {
  readonly name: ToolName;
  /** For tables: "Locket", "restic", "borg". */
  readonly label: string;
  /** e.g. `restic 0.14.0`. */
  readonly version: string;
  /** How the repository is set up, for the report. */
  readonly settings: string;
  /** Creates an empty repository (after {@link reset}). */
  init(): Promise<void>;
  /** Backs up `paths` as one new snapshot. */
  backup(paths: readonly string[]): Promise<Measured>;
  /** Restores the latest snapshot into `target` (an empty folder). */
  restore(target: string): Promise<Measured>;
  /** Reads and verifies all data in the repository. */
  verify(): Promise<Measured>;
  /** Forgets all but the `keepLast` newest snapshots (not timed: cheap for every tool). */
  forget(keepLast: number): Promise<void>;
  /** Reclaims the space the forgotten snapshots held, as soon as the tool allows. */
  prune(): Promise<Measured>;
  /** Bytes of the files in the repository folder. */
  repoBytes(): Promise<number>;
  /** Deletes the repository and the tool's local state and cache. */
  reset(): Promise<void>;
}

/** What every adapter needs. */
export interface ToolContext {
  /** A folder of the tool's own (repository, state, cache). */
  dir: string;
  rss: RssMethod;
}

const PASSWORD = "locket-bench-password";

/** A clean environment: no settings of the user's leak into a tool through its variables. */
function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^(LOCKET_|RESTIC_|BORG_|AWS_|B2_|AZURE_|GOOGLE_)/.test(k)) env[k] = v;
  }
  return env;
}

/** Locket through its CLI, run by this Node (24+), with `LOCKET_HOME` in the tool's folder. */
export function locketTool(ctx: ToolContext, code: LocketCode): Tool {
  const repo = join(ctx.dir, "repo");
  const home = join(ctx.dir, "home");
  const env = { ...baseEnv(), LOCKET_HOME: home };
  const cli = (args: readonly string[]) => [
    code.cli,
    ...args,
    "--repo",
    repo,
    "--progress",
    "none",
  ];
  const commit = code.commit ? ` ${code.commit.slice(0, 7)}` : "";
  const dirty = code.mode === "worktree" && code.dirty.length ? " (+ uncommitted changes)" : "";
  return {
    name: "locket",
    label: "Locket",
    version: `locket ${code.version}${commit}${dirty}`,
    settings: "defaults (zstd where it helps, page-aligned chunks for SQLite, file cache on)",
    async init() {
      mkdirSync(home, { recursive: true });
      await run(process.execPath, cli(["init"]), { env });
    },
    backup: (paths) => measure(ctx.rss, process.execPath, cli(["backup", ...paths]), { env }),
    restore: (target) =>
      measure(ctx.rss, process.execPath, cli(["restore", "latest", "--target", target]), { env }),
    verify: () => measure(ctx.rss, process.execPath, cli(["check", "--read-data"]), { env }),
    async forget(keepLast) {
      await run(process.execPath, cli(["forget", "--keep-last", String(keepLast)]), { env });
    },
    // One phase, as restic and borg do it: nothing else runs against the repository here.
    prune: () => measure(ctx.rss, process.execPath, cli(["prune", "--keep-delete", "0"]), { env }),
    repoBytes: async () => (await treeSize(repo)).bytes,
    async reset() {
      await rm(ctx.dir, { recursive: true, force: true });
      mkdirSync(ctx.dir, { recursive: true });
    },
  };
}

/** restic with a version 2 repository (so it compresses: `auto`, zstd) and its cache on. */
export function resticTool(ctx: ToolContext, version: string): Tool {
  const repo = join(ctx.dir, "repo");
  const env = {
    ...baseEnv(),
    RESTIC_REPOSITORY: repo,
    RESTIC_PASSWORD: PASSWORD,
    RESTIC_CACHE_DIR: join(ctx.dir, "cache"),
  };
  return {
    name: "restic",
    label: "restic",
    version,
    settings: "`init --repository-version 2` (compression `auto`: zstd), default cache on",
    async init() {
      await run("restic", ["init", "--repository-version", "2"], { env });
    },
    backup: (paths) => measure(ctx.rss, "restic", ["backup", "--quiet", ...paths], { env }),
    restore: (target) =>
      measure(ctx.rss, "restic", ["restore", "latest", "--quiet", "--target", target], { env }),
    verify: () => measure(ctx.rss, "restic", ["check", "--read-data"], { env }),
    async forget(keepLast) {
      await run("restic", ["forget", "--quiet", "--keep-last", String(keepLast)], { env });
    },
    prune: () => measure(ctx.rss, "restic", ["prune", "--quiet"], { env }),
    repoBytes: async () => (await treeSize(repo)).bytes,
    async reset() {
      await rm(ctx.dir, { recursive: true, force: true });
      mkdirSync(ctx.dir, { recursive: true });
    },
  };
}

/**
 * borg with `repokey-blake2`, or `repokey` (HMAC-SHA256) on a CPU with SHA instructions, as
 * borg's documentation advises, and `--compression zstd,3` (borg 1.2's default is lz4).
 */
export function borgTool(ctx: ToolContext, version: string): Tool {
  const repo = join(ctx.dir, "repo");
  const env = {
    ...baseEnv(),
    BORG_REPO: repo,
    BORG_PASSPHRASE: PASSWORD,
    BORG_BASE_DIR: join(ctx.dir, "base"),
  };
  const encryption = cpuHasSha() ? "repokey" : "repokey-blake2";
  let archives = 0;
  return {
    name: "borg",
    label: "borg",
    version,
    settings: `\`init -e ${encryption}\`, \`create --compression zstd,3\`, default files cache on`,
    async init() {
      archives = 0;
      await run("borg", ["init", "-e", encryption], { env });
    },
    backup(paths) {
      archives++;
      return measure(
        ctx.rss,
        "borg",
        ["create", "--compression", "zstd,3", `::a${archives}`, ...paths],
        { env },
      );
    },
    restore: (target) =>
      measure(ctx.rss, "borg", ["extract", `::a${archives}`], { env, cwd: target }),
    verify: () => measure(ctx.rss, "borg", ["check", "--verify-data"], { env }),
    // borg 1.2: `prune` deletes archives (the forget), `compact` frees the space.
    async forget(keepLast) {
      await run("borg", ["prune", "--keep-last", String(keepLast)], { env });
    },
    prune: () => measure(ctx.rss, "borg", ["compact"], { env }),
    repoBytes: async () => (await treeSize(repo)).bytes,
    async reset() {
      await rm(ctx.dir, { recursive: true, force: true });
      mkdirSync(ctx.dir, { recursive: true });
    },
  };
}

function cpuHasSha(): boolean {
  try {
    return /^flags\s*:.*\bsha_ni\b/m.test(readFileSync("/proc/cpuinfo", "utf8"));
  } catch {
    return false;
  }
}

/** Version line of restic (`restic 0.14.0`), or null when it is not installed. */
export function resticVersion(): string | null {
  const v = probe("restic", ["version"]);
  return v === null ? null : (/^restic [^ ]+/.exec(v)?.[0] ?? v);
}

/** Version line of borg (`borg 1.2.4`), or null when it is not installed. */
export function borgVersion(): string | null {
  return probe("borg", ["--version"]);
}

/**
 * Installs Debian packages with apt-get when running as root and apt-get exists.
 *
 * @returns null on success, else why nothing was installed.
 */
export function aptInstall(
  packages: readonly string[],
  log: (line: string) => void,
): string | null {
  if (process.getuid?.() !== 0) return "not running as root";
  if (probe("sh", ["-c", "command -v apt-get"]) === null) return "apt-get not found";
  log(`installing ${packages.join(" ")} with apt-get ...`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const opts = { env, encoding: "utf8" as const, timeout: 600_000 };
  let r = spawnSync("apt-get", ["install", "-y", "-qq", ...packages], opts);
  if (r.status !== 0) {
    spawnSync("apt-get", ["update", "-qq"], opts);
    r = spawnSync("apt-get", ["install", "-y", "-qq", ...packages], opts);
  }
  if (r.status !== 0) {
    const tail = `${r.stderr ?? ""}`.trim().split("\n").slice(-3).join(" / ");
    return `apt-get install failed: ${tail || `status ${r.status}`}`;
  }
  return null;
}
