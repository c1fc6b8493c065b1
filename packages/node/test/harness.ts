/**
 * The harness shared by the end-to-end tests of the `locket` CLI: runs the real command
 * (bin/locket.js) in child processes with a clean environment, checks its `--json` output, gives
 * each test its own temporary folders, and starts `locket vault serve` servers.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import type { TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import type { FileChunker } from "@locket/core";

/** The `locket` command (packages/node/bin/locket.js). */
export const LOCKET_JS = fileURLToPath(new URL("../bin/locket.js", import.meta.url));
/** The repository's node_modules/.bin, which holds Node 24. */
export const BIN_DIR = fileURLToPath(new URL("../../../node_modules/.bin", import.meta.url));
/** How long a CLI run may take before it is killed, unless told otherwise. */
export const CLI_TIMEOUT_MS = 60_000;

/** What one CLI run did. */
export interface CliResult {
  readonly args: readonly string[];
  readonly status: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Wall-clock time from the spawn to the end of its output. */
  readonly ms: number;
}

/** The `error` object of a failed `--json` run. */
export interface ErrorJson {
  readonly code: string;
  readonly message: string;
  readonly exitStatus: number;
  /** What the command found, where it has more to say (check: its report). */
  readonly details?: unknown;
}

/** What {@link cliEnv} adds to or leaves out of the environment. */
export interface CliEnvOptions {
  /** V8's on-disk compile cache folder for the runs (NODE_COMPILE_CACHE). */
  readonly compileCache?: string;
  /** Further name prefixes of variables from outside to leave out, as LOCKET_* is. */
  readonly dropPrefixes?: readonly string[];
}

/**
 * The environment for one CLI run: no LOCKET_* from outside, the given home, Node 24 first on
 * PATH, then `extra`.
 */
export function cliEnv(
  home: string,
  extra: Record<string, string> = {},
  options: CliEnvOptions = {},
): NodeJS.ProcessEnv {
  const drop = ["LOCKET_", ...(options.dropPrefixes ?? [])];
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!drop.some((p) => k.startsWith(p)) && k !== "NODE_TEST_CONTEXT") env[k] = v;
  }
  return {
    ...env,
    PATH: `${BIN_DIR}${delimiter}${process.env.PATH ?? ""}`,
    LOCKET_HOME: home,
    ...(options.compileCache === undefined ? {} : { NODE_COMPILE_CACHE: options.compileCache }),
    ...extra,
  };
}

/** How to run one CLI command. */
export interface LocketOptions {
  /** Written to its stdin (which is closed otherwise). */
  readonly input?: string;
  /** Killed with SIGKILL after this long; {@link CLI_TIMEOUT_MS} by default. */
  readonly timeoutMs?: number;
}

/** Starts `locket ARGS…` in a child process; `done` resolves with its exit status and output. */
export function start(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  options: LocketOptions = {},
): { child: ChildProcess; done: Promise<CliResult> } {
  const { input, timeoutMs = CLI_TIMEOUT_MS } = options;
  const t0 = Date.now();
  const child = spawn(process.execPath, [LOCKET_JS, ...args], {
    env,
    stdio: [input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (d: string) => {
    stdout += d;
  });
  child.stderr?.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  if (input !== undefined) child.stdin?.end(input);
  const done = new Promise<CliResult>((resolve, reject) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (status, signal) => {
      clearTimeout(timer);
      resolve({ args, status, signal, stdout, stderr, ms: Date.now() - t0 });
    });
  });
  return { child, done };
}

/** Runs `locket ARGS…` in a child process and collects its exit status and output. */
export function locket(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  options: LocketOptions = {},
): Promise<CliResult> {
  return start(args, env, options).done;
}

/** A run, for assertion messages: the command, its exit, its output. */
export function show(r: CliResult): string {
  return `locket ${r.args.join(" ")}\n  exit ${r.status}${r.signal ? ` ${r.signal}` : ""} after ${r.ms} ms\n  stdout: ${r.stdout}\n  stderr: ${r.stderr}`;
}

/** The one JSON object a `--json` run prints on stdout. */
export function parseJson(r: CliResult): Record<string, unknown> {
  const lines = r.stdout.split("\n").filter((l) => l !== "");
  assert.equal(lines.length, 1, `expected exactly one JSON line on stdout\n${show(r)}`);
  const value: unknown = JSON.parse(lines[0]);
  assert.ok(typeof value === "object" && value !== null && !Array.isArray(value), show(r));
  return value as Record<string, unknown>;
}

/** Runs a command with --json that must succeed; returns its result object and the output. */
export async function ok<T>(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  options: LocketOptions = {},
): Promise<T & CliResult> {
  const r = await locket([...args, "--json"], env, options);
  assert.equal(r.status, 0, show(r));
  const json = parseJson(r);
  assert.equal(json.ok, true, show(r));
  return { ...(json as T), ...r };
}

/** How to run a command that must fail. */
export interface FailsOptions extends LocketOptions {
  /**
   * Also asserts that the failure was an expected one: no stack trace on stderr and no
   * "unexpected error".
   */
  readonly clean?: boolean;
}

/** Runs a command with --json that must fail with `status`; returns the error and the output. */
export async function fails(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  status: number,
  options: FailsOptions = {},
): Promise<CliResult & { error: ErrorJson }> {
  const r = await locket([...args, "--json"], env, options);
  assert.equal(r.status, status, show(r));
  const json = parseJson(r);
  assert.equal(json.ok, false, show(r));
  const error = json.error as ErrorJson;
  assert.equal(error.exitStatus, status, show(r));
  assert.equal(typeof error.code, "string");
  assert.ok(r.stderr.includes(error.message), `stderr repeats the message\n${show(r)}`);
  if (options.clean) {
    assert.doesNotMatch(r.stderr, /\n\s+at /, `no stack trace\n${show(r)}`);
    assert.doesNotMatch(r.stderr, /unexpected error/, `an expected failure\n${show(r)}`);
  }
  return { ...r, error };
}

/** A fresh temporary folder, removed when the test ends. */
export async function scratch(t: TestContext, label: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `locket-test-${label}-`));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

// ---------------------------------------------------------------------------------------------
// The vault server, as a child process

/** A running `locket vault serve`. */
export interface VaultProcess {
  readonly url: string;
  /** Everything the server wrote on stderr so far (JSON log lines and `locket:` lines). */
  stderr(): string;
  /** Stops it (SIGTERM, then SIGKILL after 5 s). Idempotent. */
  stop(): Promise<void>;
}

/** How to start a vault server. */
export interface StartVaultOptions {
  /** How long it may take to print its URL; 20 s by default. */
  readonly startTimeoutMs?: number;
}

const running = new Set<ChildProcess>();
// Never leave a server behind, even when the test process dies on an uncaught error.
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** Starts `locket vault serve --port 0 --json ARGS…` and waits for its `{"ok":true,…,"url"}` line. */
export function startVault(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  options: StartVaultOptions = {},
): Promise<VaultProcess> {
  const startTimeoutMs = options.startTimeoutMs ?? 20_000;
  const child = spawn(
    process.execPath,
    [LOCKET_JS, "vault", "serve", "--port", "0", "--json", ...args],
    { env, stdio: ["ignore", "pipe", "pipe"] },
  );
  running.add(child);
  let stdout = "";
  let stderr = "";
  const closed = new Promise<void>((resolve) => child.on("close", () => resolve()));
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await closed;
      clearTimeout(timer);
    }
    running.delete(child);
  };
  return new Promise((resolve, reject) => {
    let started = false;
    const fail = (why: string) => {
      clearTimeout(timer);
      void stop().then(() =>
        reject(new Error(`vault serve ${why}\nstdout: ${stdout}\nstderr: ${stderr}`)),
      );
    };
    const timer = setTimeout(
      () => fail(`did not start within ${startTimeoutMs / 1000} s`),
      startTimeoutMs,
    );
    child.on("exit", (code, signal) => {
      running.delete(child);
      if (!started) fail(`exited early (${code ?? signal})`);
    });
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
      const nl = stdout.indexOf("\n");
      if (started || nl < 0) return;
      started = true;
      clearTimeout(timer);
      try {
        const line = JSON.parse(stdout.slice(0, nl)) as {
          ok: boolean;
          command: string;
          url: string;
        };
        assert.equal(line.ok, true);
        assert.equal(line.command, "vault");
        assert.match(line.url, /^http:\/\/127\.0\.0\.1:\d+$/);
        resolve({ url: line.url, stderr: () => stderr, stop });
      } catch (err) {
        void stop().then(() => reject(err));
      }
    });
  });
}

/**
 * `inner`, but every job throws `new Error(message)` when asked for more than `batches()`
 * batches (read at each batch, so a test may change it between backups): a backup that stops
 * mid-file, as a kill or a storage error would. The job's `released` is passed on.
 */
export function stoppingChunker(
  inner: FileChunker,
  batches: () => number,
  message: string,
): FileChunker {
  return {
    start(file, opts) {
      const job = inner.start(file, opts);
      return {
        cancel: () => job.cancel(),
        released: job.released,
        async *[Symbol.asyncIterator]() {
          let n = 0;
          for await (const b of job) {
            if (n++ >= batches()) throw new Error(message);
            yield b;
          }
        },
      };
    },
  };
}
