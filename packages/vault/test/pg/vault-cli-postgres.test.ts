// Run by npm run test:pg
/**
 * The key vault on PostgreSQL across real processes: `locket vault serve --db postgres://…`
 * child processes (two of them on one database) and `locket` CLI runs against them, on a
 * throwaway cluster from `startPostgres()`.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import * as opaque from "@serenity-kit/opaque";
import pg from "pg";
import { diffTrees } from "../../../node/src/compare.ts";
import { parseKeyStretching } from "../../src/protocol.ts";
import { startPostgres } from "../pg-cluster.ts";

const LOCKET_JS = fileURLToPath(new URL("../../../node/bin/locket.js", import.meta.url));
const BIN_DIR = fileURLToPath(new URL("../../../../node_modules/.bin", import.meta.url));
const CLI_TIMEOUT_MS = 60_000;
const GUESS_LIMIT = 10;

// ---------------------------------------------------------------------------------------------
// Helpers (as in packages/node/test/vault-cli.test.ts)

interface CliResult {
  readonly args: readonly string[];
  readonly status: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

interface ErrorJson {
  readonly code: string;
  readonly message: string;
  readonly exitStatus: number;
}

interface StatusJson {
  readonly exists: boolean;
  readonly destroyed: boolean;
  readonly guessesUsed: number;
  readonly guessLimit: number;
  readonly guessesRemaining: number;
}

let compileCache: string;

/** The environment for one CLI run: no LOCKET_* from outside, the given home, Node 24 first on PATH. */
function cliEnv(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("LOCKET_") && k !== "NODE_TEST_CONTEXT") env[k] = v;
  }
  return {
    ...env,
    PATH: `${BIN_DIR}${delimiter}${process.env.PATH ?? ""}`,
    LOCKET_HOME: home,
    NODE_COMPILE_CACHE: compileCache,
    ...extra,
  };
}

function locket(args: readonly string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [LOCKET_JS, ...args], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), CLI_TIMEOUT_MS);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (status, signal) => {
      clearTimeout(timer);
      resolve({ args, status, signal, stdout, stderr });
    });
  });
}

function show(r: CliResult): string {
  return `locket ${r.args.join(" ")}\n  exit ${r.status} ${r.signal ?? ""}\n  stdout: ${r.stdout}\n  stderr: ${r.stderr}`;
}

function parseJson(r: CliResult): Record<string, unknown> {
  const lines = r.stdout.split("\n").filter((l) => l !== "");
  assert.equal(lines.length, 1, `expected exactly one JSON line on stdout\n${show(r)}`);
  return JSON.parse(lines[0]) as Record<string, unknown>;
}

async function ok<T>(args: readonly string[], env: NodeJS.ProcessEnv): Promise<T & CliResult> {
  const r = await locket([...args, "--json"], env);
  assert.equal(r.status, 0, show(r));
  const json = parseJson(r);
  assert.equal(json.ok, true, show(r));
  return { ...(json as T), ...r };
}

async function fails(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  status: number,
): Promise<CliResult & { error: ErrorJson }> {
  const r = await locket([...args, "--json"], env);
  assert.equal(r.status, status, show(r));
  const json = parseJson(r);
  assert.equal(json.ok, false, show(r));
  const error = json.error as ErrorJson;
  assert.equal(error.exitStatus, status, show(r));
  assert.ok(r.stderr.includes(error.message), `stderr repeats the message\n${show(r)}`);
  return { ...r, error };
}

function guessesLeft(n: number): RegExp {
  return new RegExp(`wrong password; ${n} ${n === 1 ? "guess" : "guesses"} left`);
}

// ---------------------------------------------------------------------------------------------
// Vault servers as child processes

interface VaultProcess {
  readonly url: string;
  stderr(): string;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** Starts `locket vault serve --port 0 --json ARGS…` and waits for its `{"ok":true,…,"url"}` line. */
function startVault(args: readonly string[], env: NodeJS.ProcessEnv): Promise<VaultProcess> {
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
    const timer = setTimeout(() => fail("did not start within 30 s"), 30_000);
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
        const line = JSON.parse(stdout.slice(0, nl)) as { ok: boolean; url: string };
        assert.equal(line.ok, true);
        assert.match(line.url, /^http:\/\/127\.0\.0\.1:\d+$/);
        resolve({ url: line.url, stderr: () => stderr, stop });
      } catch (err) {
        void stop().then(() => reject(err));
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Shared: a throwaway cluster, two vault servers on its database, a chat data set

let root: string;
let cluster: { url: string; stop: () => Promise<void> } | undefined;
let vaultDir: string;
const vaults: Promise<VaultProcess>[] = [];
let a: VaultProcess;
let b: VaultProcess;
let chat: string;

before(async () => {
  compileCache = await mkdtemp(join(tmpdir(), "locket-vault-pg-cache-"));
  root = await mkdtemp(join(tmpdir(), "locket-vault-pg-cli-"));
  vaultDir = join(root, "vault");
  chat = join(root, "chat");
  const [c] = await Promise.all([
    startPostgres(),
    ok(["demo-data", chat, "--messages", "300", "--media-mb", "1"], cliEnv(join(root, "home"))),
  ]);
  cluster = c;
  const serve = ["--db", c.url, "--data-dir", vaultDir];
  // The first start creates the OPAQUE setup and the token secret that both servers share.
  vaults.push(startVault(serve, cliEnv(join(root, "vault-home-a"))));
  a = await vaults[0];
  vaults.push(startVault(serve, cliEnv(join(root, "vault-home-b"))));
  b = await vaults[1];
  assert.notEqual(a.url, b.url);
});

after(async () => {
  for (const v of vaults) await (await v.catch(() => undefined))?.stop();
  await cluster?.stop();
  if (root) await rm(root, { recursive: true, force: true });
  if (compileCache) await rm(compileCache, { recursive: true, force: true });
});

function account(label: string): string {
  return `${label}-${randomBytes(4).toString("hex")}`;
}

async function token(acct: string): Promise<string> {
  const r = await locket(
    ["vault", "token", "--account", acct, "--data-dir", vaultDir],
    cliEnv(join(root, "token-home")),
  );
  assert.equal(r.status, 0, show(r));
  return r.stdout.trim();
}

/**
 * One request to the vault's HTTP API on a connection of its own (no keep-alive: this process
 * blocks its event loop in Argon2 for seconds, long enough for a server to close an idle socket
 * that fetch would then reuse).
 */
function api(
  method: "GET" | "POST",
  url: string,
  jwt: string,
  body?: unknown,
): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      url,
      {
        method,
        agent: false,
        headers: {
          authorization: `Bearer ${jwt}`,
          ...(data ? { "content-type": "application/json" } : {}),
        },
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => {
          text += d;
        });
        res.on("end", () => {
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) });
          } catch (err) {
            reject(err);
          }
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(data);
  });
}

async function recordVia(url: string, jwt: string): Promise<StatusJson> {
  const res = await api("GET", `${url}/v1/record`, jwt);
  assert.equal(res.status, 200);
  return res.body as unknown as StatusJson;
}

/** The `records` row of `acct`. */
async function recordRow(acct: string): Promise<Record<string, unknown>> {
  const client = new pg.Client({ connectionString: cluster!.url });
  await client.connect();
  try {
    const res = await client.query("SELECT * FROM records WHERE account = $1", [acct]);
    assert.equal(res.rows.length, 1);
    return res.rows[0] as Record<string, unknown>;
  } finally {
    await client.end();
  }
}

/** Every row of the vault's tables, as text. */
async function dumpTables(): Promise<string> {
  const client = new pg.Client({ connectionString: cluster!.url });
  await client.connect();
  try {
    const records = await client.query("SELECT * FROM records");
    const logins = await client.query("SELECT * FROM login_states");
    return JSON.stringify([records.rows, logins.rows]);
  } finally {
    await client.end();
  }
}

// ---------------------------------------------------------------------------------------------

describe("key vault on PostgreSQL, across processes", { timeout: 180_000 }, () => {
  test("full story: enrol at one server, restore through the other; 10 wrong → exit 5 → recovery key", async () => {
    const dir = join(root, "story");
    const repo = join(dir, "repo");
    const acct = account("pg-story");
    const jwt = await token(acct);
    const env = cliEnv(join(dir, "home"), { LOCKET_TOKEN: jwt });
    const pw = "pg-story-Pw-55c1";

    const init = await ok<{ recoveryKey: string }>(["init", "--repo", repo], env);
    const set = await ok<{ guessLimit: number }>(
      ["password", "set", "--vault", a.url, "--account", acct],
      { ...env, LOCKET_PASSWORD: pw },
    );
    assert.equal(set.guessLimit, GUESS_LIMIT);
    // The other server sees the record at once (one database).
    const s = await ok<StatusJson>(["password", "status", "--vault", b.url], env);
    assert.deepEqual(
      [s.exists, s.destroyed, s.guessesUsed, s.guessesRemaining],
      [true, false, 0, GUESS_LIMIT],
    );
    await ok(["backup", join(chat, "chat.db"), join(chat, "Media")], env);

    // A new device, through server B (same OPAQUE setup, same database).
    const target = join(dir, "restored");
    const restoreArgs = (url: string, t: string) => [
      "restore",
      "latest",
      "--repo",
      repo,
      "--vault",
      url,
      "--account",
      acct,
      "--target",
      t,
    ];
    const newHome = join(dir, "new-home");
    await ok(
      restoreArgs(b.url, target),
      cliEnv(newHome, { LOCKET_TOKEN: jwt, LOCKET_PASSWORD: pw }),
    );
    assert.deepEqual(await diffTrees(chat, target), [], "every file is byte-identical");

    const tables = await dumpTables();
    assert.ok(tables.includes(acct), "the record is in the database");
    for (const form of [pw, Buffer.from(pw).toString("base64"), Buffer.from(pw).toString("hex")]) {
      assert.ok(!tables.includes(form), "the password appears in the database");
      assert.ok(!a.stderr().includes(form) && !b.stderr().includes(form), "… or in a log");
    }

    // 10 wrong passwords, alternating between the two servers: one count across both.
    const wrongTarget = join(dir, "never");
    for (let i = 1; i <= GUESS_LIMIT; i++) {
      const url = i % 2 ? a.url : b.url;
      const r = await fails(
        restoreArgs(url, wrongTarget),
        cliEnv(newHome, { LOCKET_TOKEN: jwt, LOCKET_PASSWORD: `wrong-${i}` }),
        4,
      );
      assert.equal(r.error.code, "wrong_password");
      if (i < GUESS_LIMIT) assert.match(r.stderr, guessesLeft(GUESS_LIMIT - i), show(r));
      else assert.match(r.stderr, /that was the last guess/, show(r));
    }
    for (const url of [a.url, b.url]) {
      const r = await fails(
        restoreArgs(url, wrongTarget),
        cliEnv(newHome, { LOCKET_TOKEN: jwt, LOCKET_PASSWORD: pw }),
        5,
      );
      assert.equal(r.error.code, "guess_limit");
      assert.match(r.stderr, /use the recovery key/);
    }
    for (const url of [a.url, b.url]) {
      const st = await recordVia(url, jwt);
      assert.deepEqual([st.exists, st.destroyed, st.guessesUsed], [false, true, GUESS_LIMIT]);
    }
    // The secrets are gone from the database: a tombstone is left.
    const row = await recordRow(acct);
    assert.deepEqual(
      [row.state, row.registration_record, row.wrapped_key, row.guesses_used],
      ["destroyed", null, null, GUESS_LIMIT],
    );

    // The recovery key still restores.
    const rkTarget = join(dir, "restored-rk");
    await ok(
      [
        "restore",
        "latest",
        "--repo",
        repo,
        "--recovery-key",
        init.recoveryKey,
        "--target",
        rkTarget,
      ],
      cliEnv(join(dir, "rk-home")),
    );
    assert.deepEqual(await diffTrees(chat, rkTarget), [], "every file is byte-identical");
  });

  test("two servers, one database: 40 parallel wrong attempts charge exactly 10", async (t) => {
    const dir = join(root, "parallel");
    const acct = account("pg-par");
    const jwt = await token(acct);
    const env = cliEnv(join(dir, "home"), { LOCKET_TOKEN: jwt });
    const right = "pg-par-right-pw";
    await ok(["init", "--repo", join(dir, "repo")], env);
    await ok(["password", "set", "--vault", a.url, "--account", acct], {
      ...env,
      LOCKET_PASSWORD: right,
    });
    // Let the per-account and per-IP token buckets (20 and 60 burst) refill after enrolment.
    await sleep(3_000);

    await opaque.ready;
    const attempts = Array.from({ length: 40 }, (_, i) => {
      const password = `wrong-parallel-${i}`;
      const { clientLoginState, startLoginRequest } = opaque.client.startLogin({ password });
      return { i, password, clientLoginState, startLoginRequest, url: i % 2 ? b.url : a.url };
    });
    const answers = await Promise.all(
      attempts.map(async (at) => {
        const res = await api("POST", `${at.url}/v1/recovery/start`, jwt, {
          startLoginRequest: at.startLoginRequest,
        });
        return { ...at, ...res };
      }),
    );
    const by = (status: number) => answers.filter((x) => x.status === status);
    const charged = by(200);
    const exhausted = by(410);
    const limited = by(429);
    t.diagnostic(
      `200: ${charged.length} (A ${charged.filter((x) => x.url === a.url).length}, B ${charged.filter((x) => x.url === b.url).length}), 410: ${exhausted.length}, 429: ${limited.length}`,
    );
    assert.deepEqual(
      answers.filter((x) => ![200, 410, 429].includes(x.status)).map((x) => x.status),
      [],
      "only 200, 410 and 429 answers",
    );
    assert.equal(charged.length, GUESS_LIMIT, "exactly 10 attempts were charged (exit 4)");
    assert.equal(exhausted.length + limited.length, 40 - GUESS_LIMIT, "the rest were refused");
    assert.deepEqual(
      charged.map((x) => x.body.guessesRemaining as number).sort((p, q) => p - q),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
      "each charge saw a distinct count",
    );
    for (const x of exhausted) {
      assert.equal((x.body.error as { code: string }).code, "guess_limit", "410 is exit 5");
    }

    // Each charged answer is what the CLI turns into exit 4: the wrong password does not finish.
    for (const x of charged) {
      const finish = opaque.client.finishLogin({
        clientLoginState: x.clientLoginState,
        loginResponse: x.body.loginResponse as string,
        password: x.password,
        keyStretching: parseKeyStretching(x.body.keyStretching as string),
      });
      assert.equal(finish, undefined, "a wrong password cannot finish the login");
    }

    for (const url of [a.url, b.url]) {
      const st = await recordVia(url, jwt);
      assert.deepEqual(
        [st.exists, st.destroyed, st.guessesUsed, st.guessLimit],
        [false, true, GUESS_LIMIT, GUESS_LIMIT],
      );
    }
    const s = await ok<StatusJson>(["password", "status"], env);
    assert.equal(s.destroyed, true);
    assert.equal(s.guessesUsed, GUESS_LIMIT);

    // The right password, through either server, now exits 5.
    for (const url of [a.url, b.url]) {
      const r = await fails(
        [
          "restore",
          "latest",
          "--repo",
          join(dir, "repo"),
          "--vault",
          url,
          "--account",
          acct,
          "--target",
          join(dir, "t"),
        ],
        cliEnv(join(dir, "new-home"), { LOCKET_TOKEN: jwt, LOCKET_PASSWORD: right }),
        5,
      );
      assert.match(r.stderr, /use the recovery key/);
    }
  });
});
