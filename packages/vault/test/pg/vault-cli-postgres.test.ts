// Run by npm run test:pg
/**
 * The key vault on PostgreSQL across real processes: `locket vault serve --db postgres://…`
 * child processes (two of them on one database) and `locket` CLI runs against them, on a
 * throwaway cluster from `startPostgres()`.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import * as opaque from "@serenity-kit/opaque";
import pg from "pg";
import { diffTrees } from "../../../node/src/compare.ts";
import {
  fails,
  cliEnv as harnessEnv,
  locket,
  ok,
  show,
  startVault,
  type VaultProcess,
} from "../../../node/test/harness.ts";
import { parseKeyStretching } from "../../src/protocol.ts";
import { startPostgres } from "../pg-cluster.ts";

const GUESS_LIMIT = 10;

// ---------------------------------------------------------------------------------------------
// Helpers (the CLI harness is packages/node/test/harness.ts)

interface StatusJson {
  readonly exists: boolean;
  readonly destroyed: boolean;
  readonly guessesUsed: number;
  readonly guessLimit: number;
  readonly guessesRemaining: number;
}

let compileCache: string;

/** The harness's environment for one CLI run, with this file's compile cache. */
function cliEnv(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return harnessEnv(home, extra, { compileCache });
}

function guessesLeft(n: number): RegExp {
  return new RegExp(`wrong password; ${n} ${n === 1 ? "guess" : "guesses"} left`);
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
  vaults.push(startVault(serve, cliEnv(join(root, "vault-home-a")), { startTimeoutMs: 30_000 }));
  a = await vaults[0];
  vaults.push(startVault(serve, cliEnv(join(root, "vault-home-b")), { startTimeoutMs: 30_000 }));
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
