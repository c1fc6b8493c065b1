/**
 * A throwaway PostgreSQL cluster for tests: initdb into a temp dir, start on a free port on
 * 127.0.0.1 with fsync off, and one database `locket` owned by the trusted superuser `locket`.
 */

import { execFile, execFileSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";

const run = promisify(execFile);

const PG_ROOT = "/usr/lib/postgresql";

/** System user that runs the cluster when we are root (initdb refuses to run as root). */
const PG_USER = "postgres";
/** Created when `PG_USER` is missing (PostgreSQL installed without the Debian package). */
const FALLBACK_USER = "locket-pg";

function debug(msg: string): void {
  if (process.env["LOCKET_DEBUG"]) process.stderr.write(`pg-cluster: ${msg}\n`);
}

async function timed<T>(what: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const out = await fn();
  debug(`${what} ${Math.round(performance.now() - t0)} ms`);
  return out;
}

function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** The `bin` directory of the highest installed major version, or null. */
function findBinDir(): string | null {
  if (!existsSync(PG_ROOT)) return null;
  const versions = readdirSync(PG_ROOT)
    .filter((v) => /^\d+(\.\d+)?$/.test(v) && existsSync(join(PG_ROOT, v, "bin", "initdb")))
    .sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a));
  return versions.length > 0 ? join(PG_ROOT, versions[0], "bin") : null;
}

/**
 * Finds the binaries, installing the `postgresql` package when there are none.
 * @throws Error when none are installed and we are not root, or the install fails.
 */
async function ensureBinaries(): Promise<string> {
  const found = findBinDir();
  if (found) return found;
  if (!isRoot()) {
    throw new Error(
      `pg-cluster: no PostgreSQL under ${PG_ROOT}/*/bin and not root, so cannot install it: ` +
        "run `apt-get install -y postgresql` (or set up a server another way)",
    );
  }
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const install = () => run("apt-get", ["install", "-y", "postgresql"], { env });
  await timed("apt-get install postgresql", async () => {
    try {
      await install();
    } catch {
      // Usually stale or missing package lists (a fresh container): refresh once and retry.
      await run("apt-get", ["update"], { env });
      await install();
    }
  });
  const installed = findBinDir();
  if (!installed) throw new Error(`pg-cluster: installed postgresql but found no ${PG_ROOT}/*/bin`);
  return installed;
}

/** Uid and gid of `user`, or null when it does not exist. */
function userIds(user: string): { uid: number; gid: number } | null {
  try {
    const uid = Number(execFileSync("id", ["-u", user], { encoding: "utf8", stdio: "pipe" }));
    const gid = Number(execFileSync("id", ["-g", user], { encoding: "utf8", stdio: "pipe" }));
    return { uid, gid };
  } catch {
    return null;
  }
}

/** The unprivileged user to run the cluster as (root only), creating one when needed. */
function clusterUser(): { name: string; uid: number; gid: number } {
  for (const name of [PG_USER, FALLBACK_USER]) {
    const ids = userIds(name);
    if (ids) return { name, ...ids };
  }
  execFileSync(
    "useradd",
    ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_USER],
    { stdio: "pipe" },
  );
  const ids = userIds(FALLBACK_USER);
  if (!ids) throw new Error(`pg-cluster: useradd ${FALLBACK_USER} did not create the user`);
  return { name: FALLBACK_USER, ...ids };
}

/** A port that was free a moment ago (the kernel's pick for port 0). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const addr = server.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error("pg-cluster: no port"))));
    });
  });
}

/**
 * Starts a fresh cluster and creates the database `locket` on it.
 * @returns its URL (`postgres://locket@127.0.0.1:PORT/locket`, superuser, no password) and
 *   `stop`, which kills the server and deletes its files (idempotent). Also stopped when the
 *   process exits or gets SIGINT/SIGTERM.
 * @throws Error when PostgreSQL is missing and cannot be installed, or initdb, pg_ctl or
 *   CREATE DATABASE fail (with the server log when there is one).
 */
export async function startPostgres(): Promise<{ url: string; stop: () => Promise<void> }> {
  const t0 = performance.now();
  const bin = await ensureBinaries();
  const dir = mkdtempSync(join(tmpdir(), "locket-pg-"));
  const data = join(dir, "data");
  const log = join(dir, "server.log");
  const user = isRoot() ? clusterUser() : null;
  if (user) chownSync(dir, user.uid, user.gid);

  // As root, run each binary as the unprivileged user; cwd is the temp dir, which that user can
  // enter (it may not be able to enter ours).
  const argv = (tool: string, args: string[]): [string, string[]] =>
    user ? ["runuser", ["-u", user.name, "--", join(bin, tool), ...args]] : [join(bin, tool), args];
  const pgCtlStopSync = (): void => {
    const [cmd, args] = argv("pg_ctl", ["-D", data, "stop", "-m", "immediate", "-w"]);
    try {
      execFileSync(cmd, args, { cwd: dir, stdio: "ignore" });
    } catch {
      // Not running (never started, or already stopped).
    }
  };

  let stopped = false;
  const stopSync = (): void => {
    if (stopped) return;
    stopped = true;
    pgCtlStopSync();
    rmSync(dir, { recursive: true, force: true });
    process.off("exit", stopSync);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  };
  // 'exit' covers a normal end and an uncaught exception; a signal (the test runner killing a
  // file that timed out, Ctrl-C) does not emit it, so stop there and re-raise the signal, which
  // then takes its default action since our listener is gone.
  const onSignal = (signal: NodeJS.Signals): void => {
    stopSync();
    process.kill(process.pid, signal);
  };
  process.on("exit", stopSync);
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  try {
    const [initCmd, initArgs] = argv("initdb", [
      "-D",
      data,
      "-A",
      "trust",
      "-U",
      "locket",
      "--no-sync",
      "--no-locale",
      "-E",
      "UTF8",
    ]);
    await timed("initdb", () => run(initCmd, initArgs, { cwd: dir }));

    const port = await freePort();
    const serverOpts = `-F -k ${dir} -p ${port} -c listen_addresses=127.0.0.1 -c fsync=off`;
    // -l: the server's output goes to a file, so it does not hold our stdout pipe open.
    const [ctlCmd, ctlArgs] = argv("pg_ctl", [
      "-D",
      data,
      "-l",
      log,
      "-w",
      "-t",
      "60",
      "-o",
      serverOpts,
      "start",
    ]);
    await timed("pg_ctl start", () => run(ctlCmd, ctlArgs, { cwd: dir }));

    const admin = `postgres://locket@127.0.0.1:${port}/postgres`;
    await timed("create database", async () => {
      const client = new pg.Client({ connectionString: admin });
      await client.connect();
      try {
        await client.query("CREATE DATABASE locket");
      } finally {
        await client.end();
      }
    });
    debug(`started on port ${port} in ${Math.round(performance.now() - t0)} ms (${dir})`);

    return {
      url: `postgres://locket@127.0.0.1:${port}/locket`,
      stop: async () => {
        const t1 = performance.now();
        stopSync();
        debug(`stopped in ${Math.round(performance.now() - t1)} ms`);
      },
    };
  } catch (err) {
    const serverLog = existsSync(log) ? readFileSync(log, "utf8").slice(-4000) : "";
    stopSync();
    const detail = (err as { stderr?: string }).stderr ?? "";
    throw new Error(
      `pg-cluster: ${(err as Error).message}${detail ? `\n${detail}` : ""}${serverLog ? `\nserver log:\n${serverLog}` : ""}`,
      { cause: err },
    );
  }
}
