/**
 * The key vault across real processes: a `locket vault serve` child process (SQLite in its data
 * folder) and `locket` CLI runs against it, each with its own LOCKET_HOME. The vault's in-process
 * behaviour is covered by packages/vault/test/vault.test.ts; this file checks what a user sees:
 * exit statuses, messages, device state, restored bytes, and what reaches the wire, the logs and
 * the disk.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { cp, mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, type TestContext, test } from "node:test";
import { SignJWT } from "jose";
import { diffTrees, hashTree } from "../src/compare.ts";
import {
  type CliResult,
  type ErrorJson,
  cliEnv as harnessEnv,
  fails as harnessFails,
  locket,
  ok,
  parseJson,
  scratch,
  show,
  startVault,
  type VaultProcess,
} from "./harness.ts";

const GUESS_LIMIT = 10;
const MARKER = "Marker-Pw-91f3";
/**
 * V8's on-disk compile cache for the CLI runs (about half of each run's start-up), shared by this
 * file's runs and removed with the rest of its temporary files.
 */
const COMPILE_CACHE = await mkdtemp(join(tmpdir(), "locket-vault-cli-cache-"));

// ---------------------------------------------------------------------------------------------
// Helpers

interface StatusJson {
  readonly vault: string;
  readonly account: string;
  readonly exists: boolean;
  readonly destroyed: boolean;
  readonly guessesUsed: number;
  readonly guessLimit: number;
  readonly guessesRemaining: number;
}

interface RestoreJson {
  readonly snapshot: string;
  readonly files: number;
}

/** The harness's environment for one CLI run, with this file's compile cache. */
function cliEnv(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return harnessEnv(home, extra, { compileCache: COMPILE_CACHE });
}

/** `fails`, also asserting an expected failure: no stack trace, no "unexpected error". */
function fails(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  status: number,
): Promise<CliResult & { error: ErrorJson }> {
  return harnessFails(args, env, status, { clean: true });
}

/** Every regular file under `root` (absolute paths). */
async function filesUnder(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** A port nothing listens on (the kernel's pick for port 0, released again). */
function deadPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** The JSON log lines of a server; asserts every stderr line is one of those or a `locket:` line. */
function logLines(vault: VaultProcess): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of vault.stderr().split("\n")) {
    if (line === "" || line.startsWith("locket: ")) continue;
    const v = JSON.parse(line) as Record<string, unknown>;
    assert.equal(typeof v.time, "string", line);
    assert.ok(["info", "warn", "error"].includes(v.level as string), line);
    assert.equal(typeof v.event, "string", line);
    out.push(v);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// An HTTP proxy that records every exchange

interface Exchange {
  readonly method: string;
  readonly path: string;
  readonly requestHeaders: string;
  readonly requestBody: Buffer;
  readonly status: number;
  readonly responseHeaders: string;
  readonly responseBody: Buffer;
}

function headerText(headers: Headers): string {
  const lines: string[] = [];
  headers.forEach((value, name) => {
    lines.push(`${name}: ${value}`);
  });
  return lines.join("\n");
}

async function startProxy(
  target: string,
): Promise<{ url: string; exchanges: Exchange[]; close(): Promise<void> }> {
  const exchanges: Exchange[] = [];
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const requestBody = Buffer.concat(chunks);
    const headers: Record<string, string> = {};
    for (const name of ["authorization", "content-type"]) {
      const v = req.headers[name];
      if (typeof v === "string") headers[name] = v;
    }
    try {
      const upstream = await fetch(new URL(req.url ?? "/", target), {
        method: req.method,
        headers,
        body: requestBody.length ? requestBody : undefined,
      });
      const responseBody = Buffer.from(await upstream.arrayBuffer());
      exchanges.push({
        method: req.method ?? "",
        path: req.url ?? "",
        requestHeaders: JSON.stringify(req.headers),
        requestBody,
        status: upstream.status,
        responseHeaders: headerText(upstream.headers),
        responseBody,
      });
      res.writeHead(upstream.status, {
        "content-type": upstream.headers.get("content-type") ?? "application/json",
      });
      res.end(responseBody);
    } catch (err) {
      res.writeHead(502, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { code: "failure", message: String(err) } }));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    exchanges,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The password and the encodings a careless implementation might store or send it in. */
function secretForms(secret: string): { name: string; bytes: Buffer }[] {
  const b = Buffer.from(secret, "utf8");
  return [
    { name: "utf-8", bytes: b },
    { name: "base64", bytes: Buffer.from(b.toString("base64").replace(/=+$/, "")) },
    { name: "base64url", bytes: Buffer.from(b.toString("base64url")) },
    { name: "hex", bytes: Buffer.from(b.toString("hex")) },
    { name: "HEX", bytes: Buffer.from(b.toString("hex").toUpperCase()) },
    { name: "utf-16le", bytes: Buffer.from(secret, "utf16le") },
  ];
}

function assertAbsent(haystack: Buffer, secret: string, where: string): void {
  for (const form of secretForms(secret)) {
    assert.ok(!haystack.includes(form.bytes), `the password (${form.name}) appears in ${where}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Shared: one vault server, one chat data set, and a base device with one snapshot

let root: string;
let vaultDir: string;
let vault: VaultProcess | undefined;
let vaultStarting: Promise<VaultProcess> | undefined;
let chat: string;
let base: { repo: string; home: string; recoveryKey: string };

before(async () => {
  root = await mkdtemp(join(tmpdir(), "locket-vault-cli-"));
  vaultDir = join(root, "vault");
  chat = join(root, "chat");
  const home = join(root, "home");
  const repo = join(root, "repo");
  const env = cliEnv(home);
  vaultStarting = startVault(["--data-dir", vaultDir], cliEnv(join(root, "vault-home")));
  [vault] = await Promise.all([
    vaultStarting,
    ok(["demo-data", chat, "--messages", "300", "--media-mb", "1"], env),
  ]);
  const init = await ok<{ recoveryKey: string }>(["init", "--repo", repo], env);
  await ok(["backup", join(chat, "chat.db"), join(chat, "Media"), "--repo", repo], env);
  base = { repo, home, recoveryKey: init.recoveryKey };
});

after(async () => {
  // Also when `before` failed half-way: the server may have started anyway.
  await (vault ?? (await vaultStarting?.catch(() => undefined)))?.stop();
  if (root) await rm(root, { recursive: true, force: true });
  await rm(COMPILE_CACHE, { recursive: true, force: true });
});

/** A fresh account name. */
function account(label: string): string {
  return `${label}-${randomBytes(4).toString("hex")}`;
}

/** An account token from `locket vault token --account A --data-dir D`. */
async function token(acct: string): Promise<string> {
  const r = await locket(
    ["vault", "token", "--account", acct, "--data-dir", vaultDir],
    cliEnv(join(root, "token-home")),
  );
  assert.equal(r.status, 0, show(r));
  const jwt = r.stdout.trim();
  assert.match(jwt, /^[\w-]+\.[\w-]+\.[\w-]+$/, show(r));
  return jwt;
}

/**
 * A device that holds the key: a copy of the base repository and of the base home, in a scratch
 * folder. `enrolledEnv` runs commands on it with the account token.
 */
async function device(t: TestContext, label: string) {
  const dir = await scratch(t, label);
  const repo = join(dir, "repo");
  const home = join(dir, "home");
  await cp(base.repo, repo, { recursive: true });
  await cp(base.home, home, { recursive: true });
  const acct = account(label);
  const jwt = await token(acct);
  let n = 0;
  return {
    dir,
    repo,
    home,
    account: acct,
    token: jwt,
    /** Env of the device that holds the key (its default repository would be the base's). */
    enrolledEnv: (extra: Record<string, string> = {}) =>
      cliEnv(home, { LOCKET_TOKEN: jwt, LOCKET_REPOSITORY: repo, ...extra }),
    /** A new device: its own empty home and target folder. */
    newDevice: () => {
      n++;
      return { home: join(dir, `new-home-${n}`), target: join(dir, `restored-${n}`) };
    },
  };
}

/** `restore latest` on a new device with only the repository, the vault and a password. */
function restoreArgs(repo: string, url: string, acct: string, target: string): string[] {
  return [
    "restore",
    "latest",
    "--repo",
    repo,
    "--vault",
    url,
    "--account",
    acct,
    "--target",
    target,
  ];
}

async function assertRestored(target: string): Promise<void> {
  assert.deepEqual(await diffTrees(chat, target), [], "every file is byte-identical");
}

async function status(
  env: NodeJS.ProcessEnv,
  extra: string[] = [],
): Promise<StatusJson & CliResult> {
  return ok<StatusJson>(["password", "status", ...extra], env);
}

function guessesLeft(n: number): RegExp {
  return new RegExp(`wrong password; ${n} ${n === 1 ? "guess" : "guesses"} left`);
}

// ---------------------------------------------------------------------------------------------

describe("key vault across processes", { concurrency: true, timeout: 180_000 }, () => {
  test("full story: enrol with a password, back up, restore on a new device with the password", async (t) => {
    const dir = await scratch(t, "story");
    const home = join(dir, "home");
    const repo = join(dir, "repo");
    const acct = account("story");
    const jwt = await token(acct);
    const env = cliEnv(home, { LOCKET_TOKEN: jwt });
    const url = vault!.url;
    const pw = "correct horse battery staple";

    await ok(["init", "--repo", repo], env);
    const set = await ok<{ vault: string; account: string; guessLimit: number }>(
      ["password", "set", "--vault", url, "--account", acct],
      { ...env, LOCKET_PASSWORD: pw },
    );
    assert.deepEqual([set.vault, set.account, set.guessLimit], [url, acct, GUESS_LIMIT]);
    // The vault and account are remembered: status needs neither flag.
    const s = await status(env);
    assert.equal(s.exists, true);
    assert.equal(s.destroyed, false);
    assert.equal(s.guessesUsed, 0);
    assert.equal(s.guessLimit, GUESS_LIMIT);
    assert.equal(s.guessesRemaining, GUESS_LIMIT);

    const backup = await ok<{ seq: number; summary: { files: number } }>(
      ["backup", join(chat, "chat.db"), join(chat, "Media")],
      env,
    );
    assert.equal(backup.seq, 1);

    await t.test("restore with LOCKET_PASSWORD", async () => {
      const target = join(dir, "restored-env");
      const newEnv = cliEnv(join(dir, "new-home-env"), { LOCKET_TOKEN: jwt, LOCKET_PASSWORD: pw });
      const r = await ok<RestoreJson>(restoreArgs(repo, url, acct, target), newEnv);
      assert.equal(r.files, backup.summary.files);
      await assertRestored(target);
      // The new device did not keep the root key.
      const states = await filesUnder(join(dir, "new-home-env", "repos"));
      assert.equal(states.length, 1);
      assert.ok(!("rootKey" in JSON.parse(await readFile(states[0], "utf8"))));
    });

    await t.test("restore with --password-stdin", async () => {
      const target = join(dir, "restored-stdin");
      const newEnv = cliEnv(join(dir, "new-home-stdin"), { LOCKET_TOKEN: jwt });
      const r = await ok<RestoreJson>(
        [...restoreArgs(repo, url, acct, target), "--password-stdin"],
        newEnv,
        { input: `${pw}\n` },
      );
      assert.equal(r.files, backup.summary.files);
      await assertRestored(target);
    });

    assert.equal((await status(env)).guessesRemaining, GUESS_LIMIT, "a right password resets");
  });

  test("9 wrong passwords count down 9..1; the right one then restores and resets to 10", async (t) => {
    const d = await device(t, "nine");
    const url = vault!.url;
    await ok(
      ["password", "set", "--repo", d.repo, "--vault", url, "--account", d.account],
      d.enrolledEnv({ LOCKET_PASSWORD: "right-pw-9" }),
    );
    const nd = d.newDevice();
    const args = restoreArgs(d.repo, url, d.account, nd.target);
    for (let i = 1; i <= 9; i++) {
      const r = await fails(
        args,
        cliEnv(nd.home, { LOCKET_TOKEN: d.token, LOCKET_PASSWORD: `wrong-${i}` }),
        4,
      );
      assert.equal(r.error.code, "wrong_password");
      assert.match(r.stderr, guessesLeft(10 - i), show(r));
    }
    assert.equal(await exists(nd.target), false, "failed restores write nothing");
    const mid = await status(d.enrolledEnv());
    assert.equal(mid.guessesUsed, 9);
    assert.equal(mid.guessesRemaining, 1);

    await ok<RestoreJson>(
      args,
      cliEnv(nd.home, { LOCKET_TOKEN: d.token, LOCKET_PASSWORD: "right-pw-9" }),
    );
    await assertRestored(nd.target);
    const s = await status(d.enrolledEnv());
    assert.equal(s.exists, true);
    assert.equal(s.guessesUsed, 0);
    assert.equal(s.guessesRemaining, GUESS_LIMIT);
  });

  test("10 wrong passwords destroy the record: exit 5, the recovery key restores, set re-enables", async (t) => {
    const d = await device(t, "ten");
    const url = vault!.url;
    const right = "right-pw-10";
    await ok(
      ["password", "set", "--repo", d.repo, "--vault", url, "--account", d.account],
      d.enrolledEnv({ LOCKET_PASSWORD: right }),
    );
    const nd = d.newDevice();
    const args = restoreArgs(d.repo, url, d.account, nd.target);
    const withPw = (pw: string) => cliEnv(nd.home, { LOCKET_TOKEN: d.token, LOCKET_PASSWORD: pw });
    for (let i = 1; i <= 10; i++) {
      const r = await fails(args, withPw(`wrong-${i}`), 4);
      assert.equal(r.error.code, "wrong_password");
      if (i < 10) assert.match(r.stderr, guessesLeft(10 - i), show(r));
      else {
        assert.match(r.stderr, /that was the last guess/, show(r));
        assert.match(r.stderr, /use the recovery key/, show(r));
      }
    }
    const events = logLines(vault!).filter((l) => l.account === d.account);
    assert.ok(events.some((l) => l.event === "last_guess_charged" && l.level === "warn"));

    const limit = await fails(args, withPw(right), 5);
    assert.equal(limit.error.code, "guess_limit");
    assert.match(limit.stderr, /use the recovery key/);
    assert.equal(await exists(nd.target), false);

    // Status (JSON and human) and a recovery-key restore on yet another device, side by side.
    const rk = d.newDevice();
    const [s, human] = await Promise.all([
      status(d.enrolledEnv()),
      locket(["password", "status"], d.enrolledEnv()),
      ok<RestoreJson>(
        [
          "restore",
          "latest",
          "--repo",
          d.repo,
          "--recovery-key",
          base.recoveryKey,
          "--target",
          rk.target,
        ],
        cliEnv(rk.home),
      ),
    ]);
    assert.equal(s.exists, false);
    assert.equal(s.destroyed, true);
    assert.equal(s.guessesRemaining, 0);
    assert.equal(human.status, 0, show(human));
    assert.match(human.stdout, /destroyed/, show(human));
    assert.match(human.stdout, /use the recovery key/, show(human));
    await assertRestored(rk.target);

    // The enrolled device sets the password again (vault and account remembered).
    const again = await ok<{ guessLimit: number }>(
      ["password", "set", "--repo", d.repo],
      d.enrolledEnv({ LOCKET_PASSWORD: right }),
    );
    assert.equal(again.guessLimit, GUESS_LIMIT);
    const nd2 = d.newDevice();
    await ok<RestoreJson>(
      restoreArgs(d.repo, url, d.account, nd2.target),
      cliEnv(nd2.home, { LOCKET_TOKEN: d.token, LOCKET_PASSWORD: right }),
    );
    await assertRestored(nd2.target);
    const s2 = await status(d.enrolledEnv());
    assert.equal(s2.exists, true);
    assert.equal(s2.destroyed, false);
    assert.equal(s2.guessesRemaining, GUESS_LIMIT);
  });

  test("password change: the old password fails (exit 4), the new one restores, no data uploaded", async (t) => {
    const d = await device(t, "change");
    const url = vault!.url;
    await ok(
      ["password", "set", "--repo", d.repo, "--vault", url, "--account", d.account],
      d.enrolledEnv({ LOCKET_PASSWORD: "old-pw-1" }),
    );
    const dataBefore = await hashTree(join(d.repo, "data"));
    const snapshotsBefore = await hashTree(join(d.repo, "snapshots"));
    assert.ok(dataBefore.size > 0);

    const changed = await ok<{ vault: string; account: string; guessLimit: number }>(
      ["password", "change", "--repo", d.repo],
      d.enrolledEnv({ LOCKET_PASSWORD: "new-pw-2" }),
    );
    assert.deepEqual(
      [changed.vault, changed.account, changed.guessLimit],
      [url, d.account, GUESS_LIMIT],
    );
    assert.deepEqual(await hashTree(join(d.repo, "data")), dataBefore, "data/ is unchanged");
    assert.deepEqual(await hashTree(join(d.repo, "snapshots")), snapshotsBefore, "no new snapshot");

    const nd = d.newDevice();
    const args = restoreArgs(d.repo, url, d.account, nd.target);
    const old = await fails(
      args,
      cliEnv(nd.home, { LOCKET_TOKEN: d.token, LOCKET_PASSWORD: "old-pw-1" }),
      4,
    );
    assert.equal(old.error.code, "wrong_password");
    assert.match(old.stderr, guessesLeft(9));
    await ok<RestoreJson>(
      args,
      cliEnv(nd.home, { LOCKET_TOKEN: d.token, LOCKET_PASSWORD: "new-pw-2" }),
    );
    await assertRestored(nd.target);
  });

  test("password disable: status says none; the password then exits 4 like any unknown account", async (t) => {
    const d = await device(t, "disable");
    const url = vault!.url;
    const pw = "right-pw-disable";
    await ok(
      ["password", "set", "--repo", d.repo, "--vault", url, "--account", d.account],
      d.enrolledEnv({ LOCKET_PASSWORD: pw }),
    );
    const off = await ok<{ deleted: boolean }>(
      ["password", "disable", "--repo", d.repo],
      d.enrolledEnv(),
    );
    assert.equal(off.deleted, true);
    const at = ["--repo", d.repo, "--vault", url, "--account", d.account];
    const s = await status(d.enrolledEnv(), at);
    assert.equal(s.exists, false);
    assert.equal(s.destroyed, false);
    assert.equal(s.guessesRemaining, 0);
    const human = await locket(["password", "status", ...at], d.enrolledEnv());
    assert.match(human.stdout, /no password is set/, show(human));

    const nd = d.newDevice();
    const r = await fails(
      restoreArgs(d.repo, url, d.account, nd.target),
      cliEnv(nd.home, { LOCKET_TOKEN: d.token, LOCKET_PASSWORD: pw }),
      4,
    );
    assert.equal(r.error.code, "wrong_password");
    assert.match(r.stderr, guessesLeft(9));
    assert.doesNotMatch(r.stderr, /no (password|record)|not set|unknown|does not exist|disabled/i);

    // An account that never enrolled answers exactly the same.
    const stranger = account("stranger");
    const nd2 = d.newDevice();
    const r2 = await fails(
      restoreArgs(d.repo, url, stranger, nd2.target),
      cliEnv(nd2.home, { LOCKET_TOKEN: await token(stranger), LOCKET_PASSWORD: pw }),
      4,
    );
    assert.deepEqual(r2.error, r.error);
  });

  test("the password never reaches the wire, the vault's logs, or any file", async (t) => {
    const d = await device(t, "marker");
    const proxy = await startProxy(vault!.url);
    t.after(() => proxy.close());
    const set = await ok(
      ["password", "set", "--repo", d.repo, "--vault", proxy.url, "--account", d.account],
      d.enrolledEnv({ LOCKET_PASSWORD: MARKER }),
    );
    const nd = d.newDevice();
    const restored = await ok<RestoreJson>(
      [...restoreArgs(d.repo, proxy.url, d.account, nd.target), "--password-stdin"],
      cliEnv(nd.home, { LOCKET_TOKEN: d.token }),
      { input: `${MARKER}\n` },
    );
    await assertRestored(nd.target);

    // The proxy saw the whole exchange: enrolment and a verified recovery.
    const paths = proxy.exchanges.map((e) => `${e.method} ${e.path} ${e.status}`);
    for (const p of [
      "POST /v1/registration/start 200",
      "POST /v1/registration/finish 200",
      "POST /v1/recovery/start 200",
      "POST /v1/recovery/finish 200",
    ]) {
      assert.ok(paths.includes(p), `${p} went through the proxy: ${paths.join(", ")}`);
    }
    for (const e of proxy.exchanges) {
      const where = `${e.method} ${e.path}`;
      assertAbsent(
        Buffer.from(e.path + e.requestHeaders + e.responseHeaders),
        MARKER,
        `${where} (headers)`,
      );
      assertAbsent(e.requestBody, MARKER, `${where} (request body)`);
      assertAbsent(e.responseBody, MARKER, `${where} (response body)`);
    }

    // The vault's logs: JSON lines, no password, no token.
    const logs = vault!.stderr();
    assert.ok(
      logLines(vault!).some((l) => l.event === "record_recovered" && l.account === d.account),
    );
    assertAbsent(Buffer.from(logs), MARKER, "the vault's stderr");
    assert.ok(!logs.includes(d.token), "the account token appears in the vault's log");

    // The CLI's own output.
    for (const r of [set, restored])
      assertAbsent(Buffer.from(r.stdout + r.stderr), MARKER, `output of ${r.args.join(" ")}`);

    // Every file of the vault (secrets, SQLite database and its WAL) and of both devices.
    const vaultFiles = await filesUnder(vaultDir);
    const names = vaultFiles.map((f) => f.slice(vaultDir.length + 1));
    for (const n of ["vault.db", "opaque-setup", "token-secret"])
      assert.ok(names.includes(n), `${n} in ${names.join(", ")}`);
    const all = [
      ...vaultFiles,
      ...(await filesUnder(d.home)),
      ...(await filesUnder(nd.home)),
      ...(await filesUnder(d.repo)),
    ];
    assert.ok(
      all.some((f) => f.endsWith("vault.db-wal")),
      "the WAL was scanned",
    );
    for (const f of all) assertAbsent(await readFile(f), MARKER, f);
  });

  test("usage errors exit 2; an unreachable vault exits 1 with a clear message", async (t) => {
    const d = await device(t, "usage");
    const url = vault!.url;
    const noToken = await fails(
      ["password", "set", "--repo", d.repo, "--vault", url, "--account", d.account],
      cliEnv(d.home, { LOCKET_PASSWORD: "pw-usage" }),
      2,
    );
    assert.match(noToken.error.message, /LOCKET_TOKEN/);
    const noVault = await fails(
      ["password", "set", "--repo", d.repo, "--account", d.account],
      d.enrolledEnv({ LOCKET_PASSWORD: "pw-usage" }),
      2,
    );
    assert.match(noVault.error.message, /--vault/);
    const bogus = await fails(
      ["password", "bogus", "--repo", d.repo, "--vault", url, "--account", d.account],
      d.enrolledEnv(),
      2,
    );
    assert.match(bogus.error.message, /set, change, disable, status/);
    const tokenDir = join(d.dir, "token-data");
    const noAccount = await fails(["vault", "token", "--data-dir", tokenDir], cliEnv(d.home), 2);
    assert.match(noAccount.error.message, /--account/);
    assert.equal(await exists(tokenDir), false, "no secret was created for a refused command");
    const nowhere = `http://127.0.0.1:${await deadPort()}`;
    const st = await fails(
      ["password", "status", "--repo", d.repo, "--vault", nowhere, "--account", d.account],
      d.enrolledEnv(),
      1,
    );
    assert.match(st.error.message, /vault at http:\/\/127\.0\.0\.1:\d+ cannot be reached/);
    const nd = d.newDevice();
    const rs = await fails(
      restoreArgs(d.repo, nowhere, d.account, nd.target),
      cliEnv(nd.home, { LOCKET_TOKEN: d.token, LOCKET_PASSWORD: "pw-usage" }),
      1,
    );
    assert.match(rs.error.message, /cannot be reached/);
  });

  test("an expired or foreign token exits 1 naming the token, and charges no guess", async (t) => {
    const d = await device(t, "token");
    const url = vault!.url;
    const pw = "right-pw-token";
    await ok(
      ["password", "set", "--repo", d.repo, "--vault", url, "--account", d.account],
      d.enrolledEnv({ LOCKET_PASSWORD: pw }),
    );
    const now = Math.floor(Date.now() / 1000);
    const foreign = await new SignJWT({})
      .setProtectedHeader({ alg: "HS256" })
      .setSubject(d.account)
      .setAudience("locket-vault")
      .setIssuedAt()
      .setExpirationTime("5m")
      .sign(randomBytes(32));
    const secret = Buffer.from(
      (await readFile(join(vaultDir, "token-secret"), "utf8")).trim(),
      "hex",
    );
    const expired = await new SignJWT({})
      .setProtectedHeader({ alg: "HS256" })
      .setSubject(d.account)
      .setAudience("locket-vault")
      .setIssuedAt(now - 600)
      .setExpirationTime(now - 60)
      .sign(secret);
    for (const [label, bad] of [
      ["foreign", foreign],
      ["expired", expired],
    ] as const) {
      const nd = d.newDevice();
      const r = await fails(
        restoreArgs(d.repo, url, d.account, nd.target),
        cliEnv(nd.home, { LOCKET_TOKEN: bad, LOCKET_PASSWORD: pw }),
        1,
      );
      assert.equal(r.error.code, "unauthorized", label);
      assert.match(r.error.message, /token/, label);
      if (label === "foreign") {
        const st = await fails(
          ["password", "status", "--repo", d.repo],
          cliEnv(d.home, { LOCKET_TOKEN: bad }),
          1,
        );
        assert.match(st.error.message, /token/, label);
      }
    }
    const s = await status(d.enrolledEnv());
    assert.equal(s.exists, true);
    assert.equal(s.guessesUsed, 0, "no guess was charged");
    assert.equal(s.guessesRemaining, GUESS_LIMIT);
  });

  test("an empty password is refused on this device: it can never be right, so no guess is spent", async (t) => {
    // `password set` refuses passwords under 4 characters and the vault client refuses an empty
    // one at enrolment, so an empty password (LOCKET_PASSWORD="$UNSET" in a script, an empty
    // pipe) is a mistake, not a guess; spending one would let 10 runs of a broken script
    // destroy the record.
    const d = await device(t, "empty");
    const url = vault!.url;
    await ok(
      ["password", "set", "--repo", d.repo, "--vault", url, "--account", d.account],
      d.enrolledEnv({ LOCKET_PASSWORD: "right-pw-empty" }),
    );
    const nd = d.newDevice();
    const args = restoreArgs(d.repo, url, d.account, nd.target);
    const viaEnv = await locket(
      [...args, "--json"],
      cliEnv(nd.home, { LOCKET_TOKEN: d.token, LOCKET_PASSWORD: "" }),
    );
    const viaStdin = await locket(
      [...args, "--password-stdin", "--json"],
      cliEnv(nd.home, { LOCKET_TOKEN: d.token }),
      { input: "\n" },
    );
    const s = await status(d.enrolledEnv());
    assert.equal(s.guessesUsed, 0, "an empty password spent a guess at the vault");
    for (const r of [viaEnv, viaStdin]) {
      assert.equal(r.status, 2, `an empty password is a usage error\n${show(r)}`);
      assert.equal((parseJson(r).error as ErrorJson).code, "usage", show(r));
    }
  });

  test("password set --guess-limit 0 is a usage error: it does not replace a limit of 3 by 10", async (t) => {
    const d = await device(t, "limit");
    const url = vault!.url;
    const at = ["--repo", d.repo, "--vault", url, "--account", d.account];
    const three = await ok<{ guessLimit: number }>(
      ["password", "set", ...at, "--guess-limit", "3"],
      d.enrolledEnv({ LOCKET_PASSWORD: "right-pw-limit" }),
    );
    assert.equal(three.guessLimit, 3);
    const zero = await locket(
      ["password", "set", ...at, "--guess-limit", "0", "--json"],
      d.enrolledEnv({ LOCKET_PASSWORD: "right-pw-limit" }),
    );
    const s = await status(d.enrolledEnv(), at);
    assert.equal(s.guessLimit, 3, "--guess-limit 0 replaced the record's limit of 3");
    assert.equal(zero.status, 2, `--guess-limit 0 is a usage error\n${show(zero)}`);
  });

  test("a token that 'vault token --ttl N' issues is accepted by the vault, or refused at issue", async (t) => {
    const dir = await scratch(t, "ttl");
    const acct = account("ttl");
    const env = cliEnv(join(dir, "home"));
    // Within the vault's 1 hour maximum (SPEC.md: exp at most one hour away): accepted.
    const fine = await locket(
      ["vault", "token", "--account", acct, "--data-dir", vaultDir, "--ttl", "3000"],
      env,
    );
    assert.equal(fine.status, 0, show(fine));
    const at = ["--repo", base.repo, "--vault", vault!.url, "--account", acct];
    await status({ ...env, LOCKET_TOKEN: fine.stdout.trim() }, at);
    for (const ttl of ["0", "7200"]) {
      const r = await locket(
        ["vault", "token", "--account", acct, "--data-dir", vaultDir, "--ttl", ttl],
        env,
      );
      if (r.status === 0) {
        const use = await locket(["password", "status", ...at], {
          ...env,
          LOCKET_TOKEN: r.stdout.trim(),
        });
        assert.equal(
          use.status,
          0,
          `vault token --ttl ${ttl} issued a token the vault refuses\n${show(use)}`,
        );
      } else {
        assert.equal(r.status, 2, show(r));
        assert.match(r.stderr, /--ttl/, show(r));
      }
    }
  });
});
