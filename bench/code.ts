/**
 * Which Locket code the benchmark runs, and which commit that is.
 *
 * Other work may change the working tree while a long benchmark runs, so `--code head` measures
 * exactly the checked-out commit: `git archive HEAD packages` is unpacked into the benchmark's
 * temporary folder next to a `node_modules` of symbolic links (the workspace's dependencies, with
 * `@locket/*` pointing at the unpacked packages). `--code worktree` runs the working tree as is.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { probe } from "./proc.ts";

export type CodeMode = "head" | "worktree";

/** The Locket CLI to run and what it is. */
export interface LocketCode {
  mode: CodeMode;
  /** Entry script: `packages/node/bin/locket.js` of the chosen tree. */
  cli: string;
  /** `git rev-parse HEAD`, or null outside a git checkout. */
  commit: string | null;
  /** Files under packages/ that differ from HEAD (what `--code worktree` measures on top of it). */
  dirty: string[];
  /** Version from packages/node/package.json. */
  version: string;
}

const PACKAGES = ["core", "node", "vault"];

/**
 * Resolves the code to benchmark.
 *
 * @param repoRoot The monorepo root.
 * @param scratch An empty folder for the unpacked commit (`--code head`).
 * @throws Error when `--code head` is asked for outside a git checkout.
 */
export function locketCode(repoRoot: string, mode: CodeMode, scratch: string): LocketCode {
  const commit = probe("git", ["-C", repoRoot, "rev-parse", "HEAD"]);
  // Not through probe(): it trims, and the porcelain format's first column may be a space.
  const status = spawnSync("git", ["-C", repoRoot, "status", "--porcelain", "--", "packages"], {
    encoding: "utf8",
  });
  const dirty =
    status.status !== 0
      ? []
      : status.stdout
          .split("\n")
          .filter((l) => l.trim() !== "")
          .map((l) => l.slice(3));
  let root = repoRoot;
  if (mode === "head") {
    if (commit === null) throw new Error("--code head needs a git checkout; use --code worktree");
    root = scratch;
    mkdirSync(root, { recursive: true });
    // git archive only reads the repository; tar unpacks into the benchmark's own folder.
    const archive = spawnSync(
      "git",
      ["-C", repoRoot, "archive", "--format=tar", "HEAD", "packages"],
      {
        maxBuffer: 1 << 30,
      },
    );
    if (archive.status !== 0) throw new Error(`git archive failed: ${archive.stderr.toString()}`);
    const untar = spawnSync("tar", ["-x", "-C", root], { input: archive.stdout });
    if (untar.status !== 0) throw new Error(`tar failed: ${untar.stderr.toString()}`);
    linkNodeModules(join(repoRoot, "node_modules"), join(root, "node_modules"), root);
  }
  const pkg = JSON.parse(readFileSync(join(root, "packages/node/package.json"), "utf8")) as {
    version: string;
  };
  return {
    mode,
    cli: join(root, "packages/node/bin/locket.js"),
    commit,
    dirty: mode === "head" ? [] : dirty,
    version: pkg.version,
  };
}

/** A node_modules of links to the workspace's, with `@locket/*` pointing at `root`'s packages. */
function linkNodeModules(from: string, to: string, root: string): void {
  mkdirSync(to);
  for (const name of readdirSync(from)) {
    if (name === ".bin" || name.startsWith(".")) continue;
    if (name === "@locket") {
      mkdirSync(join(to, name));
      for (const p of PACKAGES) symlinkSync(join(root, "packages", p), join(to, name, p));
    } else {
      symlinkSync(join(from, name), join(to, name));
    }
  }
}
