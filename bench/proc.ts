/**
 * Process plumbing for the benchmark: running a command, timing it and its peak memory, dropping
 * the page cache, and measuring folders.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { lstat, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Where GNU time lives; it reports the peak RSS of the command it runs (`-f %M`). */
export const GNU_TIME = "/usr/bin/time";

/** How long one measured command took and how much memory it held at most. */
export interface Measured {
  /** Wall time from spawn to exit, in milliseconds. */
  wallMs: number;
  /** Peak resident set size in KiB, or null when it could not be observed. */
  peakRssKiB: number | null;
  /** Standard output of the command. */
  stdout: string;
}

/** Options for {@link run} and {@link measure}. */
export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Kill the command after this many milliseconds (default: no limit). */
  timeoutMs?: number;
}

/** A command that failed: its exit status and the end of its standard error. */
export class CommandError extends Error {
  readonly code: number | null;
  readonly stderr: string;

  constructor(command: string, code: number | null, signal: string | null, stderr: string) {
    const how = signal ? `was killed by ${signal}` : `exited with status ${code}`;
    const tail = stderr.trim().split("\n").slice(-6).join("\n  ");
    super(`${command} ${how}${tail ? `:\n  ${tail}` : ""}`);
    this.name = "CommandError";
    this.code = code;
    this.stderr = stderr;
  }
}

const STDERR_KEEP = 16 * 1024;

/** How peak memory is observed: GNU time when installed, else polling /proc/PID/status. */
export type RssMethod = "gnu-time" | "proc-poll";

/** Picks the peak memory method: GNU time when it runs, /proc polling otherwise. */
export function rssMethod(): RssMethod {
  if (!existsSync(GNU_TIME)) return "proc-poll";
  const r = spawnSync(GNU_TIME, ["-f", "%M", "true"], { encoding: "utf8" });
  return r.status === 0 && /^\d+\s*$/m.test(r.stderr) ? "gnu-time" : "proc-poll";
}

/**
 * Runs `cmd args` and measures its wall time and peak RSS.
 *
 * @throws CommandError when it exits with a non-zero status or a signal.
 */
export async function measure(
  method: RssMethod,
  cmd: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<Measured> {
  let rssFile: string | undefined;
  let spawnCmd = cmd;
  let spawnArgs = [...args];
  let scratch: string | undefined;
  if (method === "gnu-time") {
    scratch = await mkdtemp(join(tmpdir(), "locket-bench-time-"));
    rssFile = join(scratch, "rss");
    spawnCmd = GNU_TIME;
    spawnArgs = ["-o", rssFile, "-f", "%M", cmd, ...args];
  }
  try {
    let polled = 0;
    const start = performance.now();
    const result = await execute(spawnCmd, spawnArgs, opts, (pid) => {
      if (method !== "proc-poll") return undefined;
      const poll = () => {
        const hwm = vmHwmKiB(pid);
        if (hwm !== null && hwm > polled) polled = hwm;
      };
      poll();
      return setInterval(poll, 20);
    });
    const wallMs = performance.now() - start;
    if (result.code !== 0) throw new CommandError(cmd, result.code, result.signal, result.stderr);
    let peakRssKiB: number | null = polled > 0 ? polled : null;
    if (rssFile) {
      // GNU time writes "Command exited with non-zero status N" first on failure; the figure is
      // always the last line.
      const lines = (await readFile(rssFile, "utf8")).trim().split("\n");
      const kib = Number(lines[lines.length - 1]);
      peakRssKiB = Number.isFinite(kib) && kib > 0 ? kib : null;
    }
    return { wallMs, peakRssKiB, stdout: result.stdout };
  } finally {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }
}

/** Runs a command without measuring it; resolves with its output, or throws CommandError. */
export async function run(
  cmd: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<{ stdout: string; stderr: string }> {
  const r = await execute(cmd, args, opts, () => undefined);
  if (r.code !== 0) throw new CommandError(cmd, r.code, r.signal, r.stderr);
  return { stdout: r.stdout, stderr: r.stderr };
}

/** Runs a command synchronously and returns its trimmed stdout, or null when it fails. */
export function probe(cmd: string, args: readonly string[]): string | null {
  try {
    const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 30_000 });
    return r.status === 0 ? r.stdout.trim() : null;
  } catch {
    return null;
  }
}

interface Outcome {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

function execute(
  cmd: string,
  args: readonly string[],
  opts: RunOptions,
  watch: (pid: number) => NodeJS.Timeout | undefined,
): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    let err = "";
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => {
      err += b.toString("utf8");
      if (err.length > 2 * STDERR_KEEP) err = err.slice(-STDERR_KEEP);
    });
    const timer = child.pid === undefined ? undefined : watch(child.pid);
    const killer =
      opts.timeoutMs === undefined
        ? undefined
        : setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs);
    child.on("error", (e) => {
      if (timer) clearInterval(timer);
      if (killer) clearTimeout(killer);
      reject(new Error(`cannot run ${cmd}: ${e.message}`));
    });
    child.on("close", (code, signal) => {
      if (timer) clearInterval(timer);
      if (killer) clearTimeout(killer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString("utf8"), stderr: err });
    });
  });
}

function vmHwmKiB(pid: number): number | null {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/**
 * Writes dirty pages back and drops the page cache (`sync; echo 3 > /proc/sys/vm/drop_caches`),
 * so that the next command reads from the disk. Needs root over the (virtual) machine.
 *
 * @returns true when the caches were dropped, false when that is not allowed here.
 */
export function dropCaches(): boolean {
  spawnSync("sync");
  try {
    writeFileSync("/proc/sys/vm/drop_caches", "3\n");
    return true;
  } catch {
    return false;
  }
}

/** Total size (apparent bytes, as `du -sb` counts contents) and count of the files under dir. */
export async function treeSize(dir: string): Promise<{ bytes: number; files: number }> {
  let bytes = 0;
  let files = 0;
  const walk = async (path: string): Promise<void> => {
    const st = await lstat(path);
    if (st.isDirectory()) {
      for (const name of await readdir(path)) await walk(join(path, name));
    } else {
      bytes += st.size;
      files++;
    }
  };
  if (existsSync(dir)) await walk(dir);
  return { bytes, files };
}

/** Median of a non-empty list (the mean of the two middle values for an even count). */
export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}
