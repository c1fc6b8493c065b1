/**
 * Load benchmark for the key vault server (not a test):
 *
 *   node bench/vault-load.ts [--seconds 10] [--concurrency 64] [--accounts 256]
 *     [--db sqlite|postgres|both] [--runs 1] [--warmup 2] [--json out.json]
 *     [--server-prof DIR]
 *
 * The vault runs in its own process (`bench/vault-server.ts`), so the load generator does not
 * share its event loop. Accounts are registered first with FAST key stretching (Argon2id 1 MiB,
 * 1 pass): Argon2 runs on the client, and this measures the server. Then `--concurrency` client
 * loops each do full logins (recovery start + finish with the right password, so the guess count
 * resets every time), round-robin over the accounts, for a warm-up and then `--seconds`.
 *
 * Reported per store: logins/s end to end, start and finish round-trip latency (p50/p90/p99),
 * the server process's CPU time from /proc/PID/stat (utime + stime, all threads), and from it
 * server CPU ms per login and logins per server-core-second, the figure to compare with
 * opaque-ke's ~1,000 server-side logins/s per core. For PostgreSQL the cluster's own CPU is
 * reported separately. An in-process measurement of the OPAQUE server calls alone comes first.
 *
 * `--server-prof DIR` runs the server under `--cpu-prof` and leaves its .cpuprofile files in DIR.
 */

import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  closeSync,
  fsyncSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { Agent, request } from "node:http";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as opaque from "@serenity-kit/opaque";
import { nodePrimitives } from "../packages/node/src/primitives.ts";
import { VaultClient } from "../packages/vault/src/client.ts";
import { type KeyStretching, parseKeyStretching } from "../packages/vault/src/protocol.ts";
import { issueToken } from "../packages/vault/src/server/auth.ts";
import { loadTokenSecret } from "../packages/vault/src/server/setup.ts";
import { startPostgres } from "../packages/vault/test/pg-cluster.ts";

/** Argon2id 1 MiB × 1 pass: the client's cost stays small, as this measures the server. */
const FAST: KeyStretching = { "argon2id-custom": { memory: 1024, iterations: 1, parallelism: 1 } };
const SERVER_SCRIPT = fileURLToPath(new URL("./vault-server.ts", import.meta.url));
/** Enrolments in flight while registering the accounts. */
const REGISTER_CONCURRENCY = 16;

type DbKind = "sqlite" | "postgres";

interface Options {
  seconds: number;
  warmup: number;
  concurrency: number;
  accounts: number;
  dbs: DbKind[];
  runs: number;
  json?: string;
  serverProf?: string;
}

function usage(msg: string): never {
  process.stderr.write(
    `vault-load: ${msg}\nusage: node bench/vault-load.ts [--seconds 10] [--concurrency 64] ` +
      "[--accounts 256] [--db sqlite|postgres|both] [--runs 1] [--warmup 2] [--json out.json] " +
      "[--server-prof DIR]\n",
  );
  process.exit(2);
}

function positive(name: string, v: string | undefined, dflt: number, integer = true): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n)))
    usage(`--${name} must be a positive ${integer ? "whole " : ""}number, got ${v}`);
  return n;
}

function parseOptions(): Options {
  let values: Record<string, string | undefined>;
  try {
    ({ values } = parseArgs({
      options: {
        seconds: { type: "string" },
        warmup: { type: "string" },
        concurrency: { type: "string" },
        accounts: { type: "string" },
        db: { type: "string" },
        runs: { type: "string" },
        json: { type: "string" },
        "server-prof": { type: "string" },
      },
    }));
  } catch (err) {
    usage((err as Error).message);
  }
  const db = values.db ?? "both";
  if (!["sqlite", "postgres", "both"].includes(db))
    usage(`--db must be sqlite, postgres or both, got ${db}`);
  return {
    seconds: positive("seconds", values.seconds, 10, false),
    warmup: positive("warmup", values.warmup, 2, false),
    concurrency: positive("concurrency", values.concurrency, 64),
    accounts: positive("accounts", values.accounts, 256),
    dbs: db === "both" ? ["sqlite", "postgres"] : [db as DbKind],
    runs: positive("runs", values.runs, 1),
    json: values.json,
    serverProf: values["server-prof"],
  };
}

const progress = (msg: string): void => void process.stderr.write(`vault-load: ${msg}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// --- Clean-up: every child process, cluster and temp dir, also on SIGINT/SIGTERM. -----------

const cleanups = new Set<() => void>();
function runCleanups(): void {
  for (const fn of [...cleanups].reverse()) {
    cleanups.delete(fn);
    try {
      fn();
    } catch {
      // Best effort: keep cleaning up the rest.
    }
  }
}
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    progress(`${signal}: stopping the server and the database`);
    runCleanups();
    process.exit(130);
  });
}
process.on("exit", runCleanups);

// --- Machine and process accounting. ---------------------------------------------------------

interface Machine {
  nproc: number;
  cpuModel: string;
  node: string;
  os: string;
  tmpFilesystem: string;
  /** Median time of a 4 KiB write + fsync in the temp dir (what each SQLite commit waits for). */
  tmpFsyncMs: number;
}

function fsyncProbe(): number {
  const dir = mkdtempSync(join(tmpdir(), "locket-vault-bench-fsync-"));
  try {
    const fd = openSync(join(dir, "probe"), "w");
    const block = randomBytes(4096);
    const times: number[] = [];
    for (let i = 0; i < 50; i++) {
      const t0 = performance.now();
      writeSync(fd, block, 0, block.length, (i % 8) * 4096);
      fsyncSync(fd);
      times.push(performance.now() - t0);
    }
    closeSync(fd);
    return median(times);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function machine(): Machine {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const tryRun = (cmd: string, args: string[]) => {
    try {
      return execFileSync(cmd, args, { encoding: "utf8", stdio: "pipe" }).trim();
    } catch {
      return "unknown";
    }
  };
  return {
    nproc: Number(tryRun("nproc", [])) || availableParallelism(),
    cpuModel: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown",
    node: process.version,
    os: tryRun("uname", ["-sr"]),
    tmpFilesystem: tryRun("df", ["--output=fstype", tmpdir()]).split("\n").pop()!.trim(),
    tmpFsyncMs: fsyncProbe(),
  };
}

let clockTicks = 100;
try {
  clockTicks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" })) || 100;
} catch {
  // Linux's USER_HZ is 100 nearly everywhere.
}

/** Fields of /proc/PID/stat, numbered as in proc(5) (1 = pid, 2 = comm, 3 = state, …). */
function procStat(pid: number): string[] | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // comm may contain spaces and parentheses: split after the last ")".
  const close = text.lastIndexOf(")");
  return [
    String(pid),
    text.slice(text.indexOf("(") + 1, close),
    ...text.slice(close + 2).split(" "),
  ];
}

/** utime + stime of `pid` (all its threads), in ms; with `children`, plus reaped children's. */
function cpuMs(pid: number, children = false): number {
  const t = cpuTimes(pid, children);
  return t.user + t.system;
}

/** utime and stime (field 14 and 15; with `children`, plus 16 and 17) of `pid`, in ms. */
function cpuTimes(pid: number, children = false): { user: number; system: number } {
  const f = procStat(pid);
  if (!f) return { user: 0, system: 0 };
  const ms = (ticks: number) => (ticks * 1000) / clockTicks;
  return {
    user: ms(Number(f[13]) + (children ? Number(f[15]) : 0)),
    system: ms(Number(f[14]) + (children ? Number(f[16]) : 0)),
  };
}

/** Machine-wide busy and stolen CPU ms so far (/proc/stat, all cores). */
function machineCpuMs(): { busy: number; steal: number } {
  const f = /^cpu\s+(.+)$/m.exec(readFileSync("/proc/stat", "utf8"))![1].split(/\s+/).map(Number);
  // user nice system idle iowait irq softirq steal …
  const ms = (ticks: number) => (ticks * 1000) / clockTicks;
  return { busy: ms(f[0] + f[1] + f[2] + f[5] + f[6]), steal: ms(f[7] ?? 0) };
}

/**
 * CPU ms of a PostgreSQL cluster: the postmaster listening on `port` with the backends it
 * reaped, plus its live children (backends, checkpointer, WAL writer, …).
 */
function postgresCpuMs(port: string): number {
  let postmaster = 0;
  const pids = readdirSync("/proc").filter((d) => /^\d+$/.test(d));
  for (const d of pids) {
    try {
      const argv = readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0");
      if (
        /\/postgres$/.test(argv[0]) &&
        argv.includes("-p") &&
        argv[argv.indexOf("-p") + 1] === port
      )
        postmaster = Number(d);
    } catch {
      // Gone, or not ours to read.
    }
  }
  if (!postmaster) return Number.NaN;
  let total = cpuMs(postmaster, true);
  for (const d of pids) {
    const f = procStat(Number(d));
    if (f && Number(f[3]) === postmaster) total += cpuMs(Number(d));
  }
  return total;
}

// --- The server process. ---------------------------------------------------------------------

interface ServerProcess {
  url: string;
  pid: number;
  /** The server's cumulative event-loop active and idle time (ms). */
  loop(): Promise<{ active: number; idle: number }>;
  /** Whether it exited (crashed) before `stop`. */
  exited(): boolean;
  stop(): Promise<void>;
}

async function startServer(dataDir: string, db: string, prof?: string): Promise<ServerProcess> {
  const nodeArgs = prof ? ["--cpu-prof", "--cpu-prof-dir", prof] : [];
  const child = spawn(
    process.execPath,
    [...nodeArgs, SERVER_SCRIPT, "--data-dir", dataDir, "--db", db],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  let exited = false;
  const exit = new Promise<void>((r) =>
    child.once("exit", () => {
      exited = true;
      r();
    }),
  );
  const kill = () => {
    if (!exited) child.kill("SIGKILL");
  };
  cleanups.add(kill);

  const lines = createInterface({ input: child.stdout! });
  const waiting: ((line: string) => void)[] = [];
  lines.on("line", (line) => waiting.shift()?.(line));
  const nextLine = () =>
    new Promise<string>((resolve, reject) => {
      waiting.push(resolve);
      void exit.then(() => reject(new Error("the vault server process exited")));
    });

  const { url } = JSON.parse(await nextLine()) as { url: string };
  return {
    url,
    pid: child.pid!,
    async loop() {
      child.stdin!.write("loop\n");
      return JSON.parse(await nextLine()) as { active: number; idle: number };
    },
    exited: () => exited,
    async stop() {
      cleanups.delete(kill);
      if (!exited) child.kill("SIGTERM");
      const timer = setTimeout(kill, 10_000);
      await exit;
      clearTimeout(timer);
    },
  };
}

// --- HTTP: node:http with keep-alive, lighter on the shared CPU than fetch. -------------------

interface Http {
  post(path: string, token: string, body: unknown): Promise<Record<string, unknown>>;
  close(): void;
}

function http(baseUrl: string, sockets: number): Http {
  const base = new URL(baseUrl);
  const agent = new Agent({ keepAlive: true, maxSockets: sockets });
  return {
    post: (path, token, body) =>
      new Promise((resolve, reject) => {
        const payload = Buffer.from(JSON.stringify(body));
        const req = request(
          {
            agent,
            host: base.hostname,
            port: base.port,
            path,
            method: "POST",
            headers: {
              authorization: `Bearer ${token}`,
              "content-type": "application/json",
              "content-length": payload.length,
            },
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (c: Buffer) => chunks.push(c));
            res.on("error", reject);
            res.on("end", () => {
              const text = Buffer.concat(chunks).toString("utf8");
              if (res.statusCode !== 200) {
                reject(new Error(`${path}: HTTP ${res.statusCode} ${text.slice(0, 200)}`));
                return;
              }
              try {
                resolve(JSON.parse(text) as Record<string, unknown>);
              } catch (err) {
                reject(err as Error);
              }
            });
          },
        );
        req.on("error", reject);
        req.end(payload);
      }),
    close: () => agent.destroy(),
  };
}

// --- Statistics. -----------------------------------------------------------------------------

/** Nearest-rank percentile of ascending `sorted`. */
function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function median(xs: number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

interface Latency {
  p50: number;
  p90: number;
  p99: number;
}

function latency(samples: number[]): Latency {
  const s = samples.sort((a, b) => a - b);
  return { p50: percentile(s, 50), p90: percentile(s, 90), p99: percentile(s, 99) };
}

interface RunResult {
  seconds: number;
  logins: number;
  errors: number;
  firstError?: string;
  loginsPerSecond: number;
  startMs: Latency;
  finishMs: Latency;
  serverCpuMs: number;
  /** Server CPU time / wall time (1 = one core busy). */
  serverCpuUtilization: number;
  /** Share of wall time the server's event loop was not idle (includes blocking I/O). */
  serverEventLoopUtilization: number;
  serverCpuMsPerLogin: number;
  /** The user and kernel parts of `serverCpuMsPerLogin`. */
  serverUserMsPerLogin: number;
  serverSystemMsPerLogin: number;
  loginsPerServerCoreSecond: number;
  /**
   * CPU used meanwhile by processes other than the server, the load generator and PostgreSQL
   * (other jobs on a shared machine), in cores; and time stolen by the hypervisor, in cores.
   */
  otherCores: number;
  stealCores: number;
  /** 1-minute load average at the end of the run. */
  loadAverage: number;
  /** PostgreSQL's own CPU (the cluster's processes); null for SQLite, which runs in the server. */
  dbCpuMsPerLogin: number | null;
  loadGenCpuMsPerLogin: number;
}

// --- In-process: the OPAQUE server calls alone. ----------------------------------------------

interface CryptoOnly {
  iterations: number;
  startLoginUs: number;
  finishLoginUs: number;
  loginsPerCoreSecond: number;
}

/** Times `opaque.server.startLogin` + `finishLogin` in this process (median of `n`). */
async function cryptoOnly(n: number): Promise<CryptoOnly> {
  await opaque.ready;
  const serverSetup = opaque.server.createSetup();
  const userIdentifier = "crypto-only";
  const password = "crypto-only-password";
  const reg = opaque.client.startRegistration({ password });
  const { registrationResponse } = opaque.server.createRegistrationResponse({
    serverSetup,
    userIdentifier,
    registrationRequest: reg.registrationRequest,
  });
  const { registrationRecord } = opaque.client.finishRegistration({
    clientRegistrationState: reg.clientRegistrationState,
    registrationResponse,
    password,
    keyStretching: FAST,
  });
  const starts: number[] = [];
  const finishes: number[] = [];
  const warm = Math.min(50, n);
  for (let i = 0; i < n + warm; i++) {
    const c = opaque.client.startLogin({ password });
    const t0 = performance.now();
    const s = opaque.server.startLogin({
      serverSetup,
      userIdentifier,
      registrationRecord,
      startLoginRequest: c.startLoginRequest,
    });
    const t1 = performance.now();
    const f = opaque.client.finishLogin({
      clientLoginState: c.clientLoginState,
      loginResponse: s.loginResponse,
      password,
      keyStretching: FAST,
    });
    if (!f) throw new Error("crypto-only: the client refused the server's login response");
    const t2 = performance.now();
    opaque.server.finishLogin({
      serverLoginState: s.serverLoginState,
      finishLoginRequest: f.finishLoginRequest,
    });
    const t3 = performance.now();
    if (i >= warm) {
      starts.push(t1 - t0);
      finishes.push(t3 - t2);
    }
  }
  const startLoginUs = median(starts) * 1000;
  const finishLoginUs = median(finishes) * 1000;
  return {
    iterations: n,
    startLoginUs,
    finishLoginUs,
    loginsPerCoreSecond: 1e6 / (startLoginUs + finishLoginUs),
  };
}

// --- One store: server, accounts, runs. ------------------------------------------------------

interface Account {
  name: string;
  password: string;
}

async function register(
  url: string,
  secret: Uint8Array,
  accounts: Account[],
): Promise<Map<string, Uint8Array>> {
  const rootKeys = new Map<string, Uint8Array>();
  let next = 0;
  const worker = async () => {
    while (next < accounts.length) {
      const a = accounts[next++];
      const rootKey = randomBytes(32);
      const client = new VaultClient({
        url,
        token: await issueToken(secret, a.name),
        primitives: nodePrimitives,
        keyStretching: FAST,
      });
      await client.enroll(a.password, { rootKey, repoId: randomBytes(16).toString("hex") });
      rootKeys.set(a.name, rootKey);
    }
  };
  await Promise.all(Array.from({ length: REGISTER_CONCURRENCY }, worker));
  return rootKeys;
}

interface Snapshot {
  t: number;
  server: { user: number; system: number };
  db: number;
  self: number;
  machine: { busy: number; steal: number };
  loop: { active: number; idle: number };
}

async function measure(
  server: ServerProcess,
  secret: Uint8Array,
  accounts: Account[],
  opts: Options,
  pgPort: string | null,
): Promise<RunResult> {
  // Fresh tokens each run, so that a long --runs series never outlives them.
  const tokens = await Promise.all(
    accounts.map((a) => issueToken(secret, a.name, { ttlSeconds: 3600 })),
  );
  const client = http(server.url, opts.concurrency);
  let phase: "warmup" | "measure" | "stop" = "warmup";
  let next = 0;
  let logins = 0;
  let errors = 0;
  let firstError: string | undefined;
  const startMs: number[] = [];
  const finishMs: number[] = [];

  const login = async (i: number) => {
    const { name, password } = accounts[i];
    const token = tokens[i];
    const c = opaque.client.startLogin({ password });
    const t0 = performance.now();
    const start = (await client.post("/v1/recovery/start", token, {
      startLoginRequest: c.startLoginRequest,
    })) as { loginId: string; loginResponse: string; keyStretching: string };
    const t1 = performance.now();
    if (phase === "measure") startMs.push(t1 - t0);
    const f = opaque.client.finishLogin({
      clientLoginState: c.clientLoginState,
      loginResponse: start.loginResponse,
      password,
      keyStretching: parseKeyStretching(start.keyStretching),
    });
    if (!f) throw new Error(`${name}: the client refused the login response`);
    const t2 = performance.now();
    const finish = await client.post("/v1/recovery/finish", token, {
      loginId: start.loginId,
      finishLoginRequest: f.finishLoginRequest,
    });
    const t3 = performance.now();
    if (typeof finish.wrappedKey !== "string") throw new Error(`${name}: no wrappedKey`);
    if (phase === "measure") {
      finishMs.push(t3 - t2);
      logins++;
    }
  };

  const loop = async () => {
    while (phase !== "stop" && !server.exited()) {
      try {
        await login(next++ % accounts.length);
      } catch (err) {
        if (phase === "measure") {
          errors++;
          firstError ??= (err as Error).message;
        }
        await sleep(10);
      }
    }
  };

  const snapshot = async (): Promise<Snapshot> => {
    const loopTimes = await server.loop();
    const u = process.cpuUsage();
    return {
      t: performance.now(),
      server: cpuTimes(server.pid),
      db: pgPort ? postgresCpuMs(pgPort) : 0,
      self: (u.user + u.system) / 1000,
      machine: machineCpuMs(),
      loop: loopTimes,
    };
  };

  const loops = Array.from({ length: opts.concurrency }, loop);
  await sleep(opts.warmup * 1000);
  const a = await snapshot();
  phase = "measure";
  await sleep(opts.seconds * 1000);
  const b = await snapshot();
  phase = "stop";
  await Promise.all(loops);
  client.close();
  if (server.exited()) throw new Error("the vault server process exited during the run");

  const seconds = (b.t - a.t) / 1000;
  const serverUserMs = b.server.user - a.server.user;
  const serverSystemMs = b.server.system - a.server.system;
  const serverCpuMs = serverUserMs + serverSystemMs;
  const activeMs = b.loop.active - a.loop.active;
  const idleMs = b.loop.idle - a.loop.idle;
  return {
    seconds,
    logins,
    errors,
    firstError,
    loginsPerSecond: logins / seconds,
    startMs: latency(startMs),
    finishMs: latency(finishMs),
    serverCpuMs,
    serverCpuUtilization: serverCpuMs / 1000 / seconds,
    serverEventLoopUtilization: activeMs / (activeMs + idleMs),
    serverCpuMsPerLogin: serverCpuMs / logins,
    serverUserMsPerLogin: serverUserMs / logins,
    serverSystemMsPerLogin: serverSystemMs / logins,
    loginsPerServerCoreSecond: logins / (serverCpuMs / 1000),
    otherCores:
      (b.machine.busy - a.machine.busy - serverCpuMs - (b.db - a.db) - (b.self - a.self)) /
      1000 /
      seconds,
    stealCores: (b.machine.steal - a.machine.steal) / 1000 / seconds,
    loadAverage: loadavg()[0],
    dbCpuMsPerLogin: pgPort ? (b.db - a.db) / logins : null,
    loadGenCpuMsPerLogin: (b.self - a.self) / logins,
  };
}

interface DbResult {
  db: DbKind;
  concurrency: number;
  accounts: number;
  runs: RunResult[];
  median: Omit<RunResult, "firstError">;
}

function medianOf(runs: RunResult[]): Omit<RunResult, "firstError"> {
  const m = (f: (r: RunResult) => number) => median(runs.map(f));
  const lat = (f: (r: RunResult) => Latency): Latency => ({
    p50: m((r) => f(r).p50),
    p90: m((r) => f(r).p90),
    p99: m((r) => f(r).p99),
  });
  return {
    seconds: m((r) => r.seconds),
    logins: m((r) => r.logins),
    errors: runs.reduce((s, r) => s + r.errors, 0),
    loginsPerSecond: m((r) => r.loginsPerSecond),
    startMs: lat((r) => r.startMs),
    finishMs: lat((r) => r.finishMs),
    serverCpuMs: m((r) => r.serverCpuMs),
    serverCpuUtilization: m((r) => r.serverCpuUtilization),
    serverEventLoopUtilization: m((r) => r.serverEventLoopUtilization),
    serverCpuMsPerLogin: m((r) => r.serverCpuMsPerLogin),
    serverUserMsPerLogin: m((r) => r.serverUserMsPerLogin),
    serverSystemMsPerLogin: m((r) => r.serverSystemMsPerLogin),
    loginsPerServerCoreSecond: m((r) => r.loginsPerServerCoreSecond),
    otherCores: m((r) => r.otherCores),
    stealCores: m((r) => r.stealCores),
    loadAverage: m((r) => r.loadAverage),
    dbCpuMsPerLogin: runs[0].dbCpuMsPerLogin === null ? null : m((r) => r.dbCpuMsPerLogin!),
    loadGenCpuMsPerLogin: m((r) => r.loadGenCpuMsPerLogin),
  };
}

async function benchDb(db: DbKind, opts: Options): Promise<DbResult> {
  const tmp = mkdtempSync(join(tmpdir(), "locket-vault-bench-"));
  const removeTmp = () => rmSync(tmp, { recursive: true, force: true });
  cleanups.add(removeTmp);
  let pg: Awaited<ReturnType<typeof startPostgres>> | null = null;
  let stopPg: (() => void) | null = null;
  let server: ServerProcess | null = null;
  try {
    const dataDir = join(tmp, "data");
    let dbUrl = `sqlite:${join(dataDir, "vault.db")}`;
    if (db === "postgres") {
      progress("starting a throwaway PostgreSQL cluster");
      pg = await startPostgres();
      // stop() runs synchronously (pg_ctl stop -m immediate, then removes the files).
      stopPg = () => void pg?.stop();
      cleanups.add(stopPg);
      dbUrl = pg.url;
    }
    const secret = await loadTokenSecret(dataDir);
    server = await startServer(dataDir, dbUrl, opts.serverProf);
    progress(`${db}: server pid ${server.pid} at ${server.url}`);

    const accounts: Account[] = Array.from({ length: opts.accounts }, (_, i) => ({
      name: `bench-${i}`,
      password: `bench-password-${i}-${randomBytes(4).toString("hex")}`,
    }));
    const t0 = performance.now();
    const rootKeys = await register(server.url, secret, accounts);
    progress(
      `${db}: registered ${accounts.length} accounts in ${Math.round(performance.now() - t0)} ms`,
    );
    // Sanity check through the real client: the password recovers the root key it sealed.
    for (const a of accounts.slice(0, 4)) {
      const env = await new VaultClient({
        url: server.url,
        token: await issueToken(secret, a.name),
        primitives: nodePrimitives,
      }).recover(a.password);
      if (!Buffer.from(env.rootKey).equals(Buffer.from(rootKeys.get(a.name)!)))
        throw new Error(`${a.name}: recovered a different root key`);
    }

    const pgPort = pg ? new URL(pg.url).port : null;
    const runs: RunResult[] = [];
    for (let i = 0; i < opts.runs; i++) {
      progress(
        `${db}: run ${i + 1}/${opts.runs}: ${opts.warmup} s warm-up, ${opts.seconds} s measured`,
      );
      const r = await measure(server, secret, accounts, opts, pgPort);
      progress(
        `${db}: run ${i + 1}: ${r.loginsPerSecond.toFixed(0)} logins/s, ` +
          `server ${r.serverCpuMsPerLogin.toFixed(3)} CPU ms/login, ` +
          `${r.loginsPerServerCoreSecond.toFixed(0)} logins per server-core-second, ` +
          `other processes ${r.otherCores.toFixed(2)} cores, load average ${r.loadAverage.toFixed(1)}` +
          (r.errors ? `, ${r.errors} errors (first: ${r.firstError})` : ""),
      );
      runs.push(r);
    }
    return {
      db,
      concurrency: opts.concurrency,
      accounts: opts.accounts,
      runs,
      median: medianOf(runs),
    };
  } finally {
    await server?.stop();
    if (stopPg) {
      cleanups.delete(stopPg);
      stopPg();
    }
    cleanups.delete(removeTmp);
    removeTmp();
  }
}

// --- Report. ---------------------------------------------------------------------------------

const fmt = (x: number, digits = 0) => (Number.isNaN(x) ? "–" : x.toFixed(digits));
const lat = (l: Latency) => `${fmt(l.p50, 1)} / ${fmt(l.p90, 1)} / ${fmt(l.p99, 1)}`;

function table(results: DbResult[]): string {
  const rows = [
    "| db | concurrency | logins/s | start ms p50 / p90 / p99 | finish ms p50 / p90 / p99 | server CPU ms/login | logins per server-core-second | server CPU / event loop busy | DB CPU ms/login | load-gen CPU ms/login | other processes (cores) | errors |",
    "|---|---:|---:|---|---|---:|---:|---|---:|---:|---:|---:|",
  ];
  for (const r of results) {
    const m = r.median;
    rows.push(
      `| ${r.db} | ${r.concurrency} | ${fmt(m.loginsPerSecond)} | ${lat(m.startMs)} | ${lat(m.finishMs)} | ` +
        `${fmt(m.serverCpuMsPerLogin, 2)} (${fmt(m.serverUserMsPerLogin, 2)} user + ${fmt(m.serverSystemMsPerLogin, 2)} sys) | ` +
        `${fmt(m.loginsPerServerCoreSecond)} | ` +
        `${fmt(m.serverCpuUtilization * 100)} % / ${fmt(m.serverEventLoopUtilization * 100)} % | ` +
        `${m.dbCpuMsPerLogin === null ? "(in server)" : fmt(m.dbCpuMsPerLogin, 2)} | ` +
        `${fmt(m.loadGenCpuMsPerLogin, 2)} | ${fmt(m.otherCores, 2)} | ${m.errors} |`,
    );
  }
  return rows.join("\n");
}

async function main(): Promise<void> {
  const opts = parseOptions();
  const m = machine();
  progress(`machine: ${m.nproc} cores, ${m.cpuModel}, node ${m.node}`);
  progress("timing the OPAQUE server calls alone, in this process");
  const crypto = await cryptoOnly(500);

  const results: DbResult[] = [];
  for (const db of opts.dbs) results.push(await benchDb(db, opts));

  const out = [
    "## Vault load benchmark",
    "",
    `Machine: ${m.nproc} cores (\`nproc\`), ${m.cpuModel}, Node ${m.node}, ${m.os}; temp dir on ${m.tmpFilesystem} (4 KiB write + fsync: ${fmt(m.tmpFsyncMs, 2)} ms median). ` +
      "The load generator and the server process share these cores.",
    "",
    `Settings: ${opts.concurrency} concurrent client loops, ${opts.accounts} accounts round-robin, ` +
      `${opts.warmup} s warm-up then ${opts.seconds} s measured, ` +
      `${opts.runs === 1 ? "1 run" : `median of ${opts.runs} runs`} per store. ` +
      "A login is recovery start + finish with the right password. " +
      "Accounts use FAST key stretching (Argon2id 1 MiB, 1 pass): Argon2 runs on the client, so this measures the server. " +
      "Latencies are client-observed HTTP round trips. Server CPU is utime + stime of the server process from /proc/PID/stat; " +
      "SQLite runs inside it (WAL, synchronous=FULL), PostgreSQL is a throwaway local cluster with fsync=off whose CPU is the DB column. " +
      "Event loop busy is the server's event-loop utilization: well above its CPU share means it blocks (SQLite's fsync). " +
      "Other processes: CPU the rest of the machine used meanwhile (/proc/stat), in cores; anything above ~0 means a shared, noisier machine.",
    "",
    table(results),
    "",
    `OPAQUE server calls alone (in-process, median of ${crypto.iterations}): startLogin ${fmt(crypto.startLoginUs)} µs, ` +
      `finishLogin ${fmt(crypto.finishLoginUs)} µs → ${fmt(crypto.loginsPerCoreSecond)} logins per core-second ` +
      "(compare ~1,000 for native opaque-ke).",
  ].join("\n");
  process.stdout.write(`${out}\n`);

  if (opts.json) {
    writeFileSync(
      opts.json,
      `${JSON.stringify({ machine: m, options: opts, cryptoOnly: crypto, results }, null, 2)}\n`,
    );
    progress(`wrote ${opts.json}`);
  }
  if (opts.serverProf) {
    const profiles = readdirSync(opts.serverProf).filter(
      (f) => f.endsWith(".cpuprofile") && statSync(join(opts.serverProf!, f)).size > 0,
    );
    progress(`server CPU profiles in ${opts.serverProf}: ${profiles.join(", ")}`);
  }
}

try {
  await main();
} catch (err) {
  progress(`failed: ${(err as Error).stack ?? err}`);
  process.exitCode = 1;
} finally {
  runCleanups();
}
