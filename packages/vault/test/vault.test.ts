import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { GuessLimitError, LocketError, type WrongPasswordError } from "@locket/core";
import * as opaque from "@serenity-kit/opaque";
import { SignJWT } from "jose";
import { nodePrimitives } from "../../node/src/primitives.ts";
import { VaultClient } from "../src/client.ts";
import { type KeyStretching, unwrapRootKey } from "../src/protocol.ts";
import { createApp, createVerifier, issueToken, type VaultConfig } from "../src/server/index.ts";
import { SqliteVaultStore } from "../src/store/sqlite.ts";

// Fast Argon2id for tests only; the default is 64 MiB × 3.
const FAST: KeyStretching = { "argon2id-custom": { memory: 1024, iterations: 1, parallelism: 1 } };
const SECRET = randomBytes(32);
const MARKER = "correct-horse-MARKER-7f3a";

interface Harness {
  app: Awaited<ReturnType<typeof createApp>>;
  store: SqliteVaultStore;
  /** Every request body and log line, to prove the password never appears in them. */
  captured: string[];
  client(account: string): Promise<VaultClient>;
  post(account: string, path: string, body: unknown, token?: string): Promise<Response>;
}

async function harness(config: Partial<VaultConfig> = {}): Promise<Harness> {
  await opaque.ready;
  const store = new SqliteVaultStore(":memory:");
  await store.migrate();
  const captured: string[] = [];
  const app = await createApp({
    store,
    serverSetup: opaque.server.createSetup(),
    verify: await createVerifier({ hs256Secret: SECRET }),
    log: (level, event, fields) => captured.push(JSON.stringify({ level, event, ...fields })),
    config: {
      ipRateLimit: { burst: 1e6, perSecond: 1e6 },
      accountRateLimit: { burst: 1e6, perSecond: 1e6 },
      ...config,
    },
  });
  const fetchVia: typeof fetch = async (input, init) => {
    if (init?.body) captured.push(String(init.body));
    return app.request(String(input), init as RequestInit);
  };
  return {
    app,
    store,
    captured,
    client: async (account) =>
      new VaultClient({
        url: "http://vault.test",
        token: await issueToken(SECRET, account),
        primitives: nodePrimitives,
        keyStretching: FAST,
        fetch: fetchVia,
      }),
    post: async (account, path, body, token) =>
      app.request(`http://vault.test${path}`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${token ?? (await issueToken(SECRET, account))}`,
          "content-type": "application/json",
        },
        body: JSON.stringify(body),
      }),
  };
}

const ENVELOPE = {
  rootKey: Uint8Array.from({ length: 32 }, (_, i) => i),
  repoId: "0123456789abcdef0123456789abcdef",
};

async function expectCode(p: Promise<unknown>, code: string): Promise<LocketError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof LocketError, `expected a LocketError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}`);
}

describe("vault", () => {
  it("enrols and recovers the root key; the password never crosses the wire or reaches a log", async () => {
    const h = await harness();
    const c = await h.client("alice");
    assert.deepEqual(await c.enroll(MARKER, ENVELOPE), { guessLimit: 10 });
    const env = await c.recover(MARKER);
    assert.deepEqual(env.rootKey, ENVELOPE.rootKey);
    assert.equal(env.repoId, ENVELOPE.repoId);
    const all = h.captured.join("\n");
    assert.ok(h.captured.length > 6, "bodies and logs were captured");
    assert.ok(!all.includes(MARKER), "the password appears in a request body or a log line");
    assert.ok(
      !all.includes(Buffer.from(MARKER).toString("base64")),
      "base64 of the password appears",
    );
    assert.ok(!all.includes(Buffer.from(ENVELOPE.rootKey).toString("hex")), "the root key appears");
  });

  it("9 wrong passwords then the right one works and resets the count", async () => {
    const h = await harness();
    const c = await h.client("bob");
    await c.enroll("right", ENVELOPE);
    for (let i = 1; i <= 9; i++) {
      const err = await expectCode(c.recover(`wrong-${i}`), "wrong_password");
      assert.equal((err as WrongPasswordError).guessesRemaining, 10 - i);
    }
    assert.equal((await c.status()).guessesRemaining, 1);
    assert.deepEqual((await c.recover("right")).rootKey, ENVELOPE.rootKey);
    const s = await c.status();
    assert.equal(s.guessesUsed, 0);
    assert.equal(s.guessesRemaining, 10);
  });

  it("the 10th guess, if right, still works (the record is revived)", async () => {
    const h = await harness();
    const c = await h.client("carol");
    await c.enroll("right", ENVELOPE);
    for (let i = 0; i < 9; i++) await expectCode(c.recover("wrong"), "wrong_password");
    assert.deepEqual((await c.recover("right")).rootKey, ENVELOPE.rootKey);
    assert.equal((await c.status()).guessesRemaining, 10);
  });

  it("10 wrong passwords destroy the record; the right one then fails with guess_limit", async () => {
    const h = await harness();
    const c = await h.client("dave");
    await c.enroll("right", ENVELOPE);
    for (let i = 0; i < 10; i++) await expectCode(c.recover("wrong"), "wrong_password");
    const s = await c.status();
    assert.equal(s.destroyed, true);
    assert.equal(s.exists, false);
    assert.equal(await h.store.getRecord("dave"), null, "secrets are gone from the store");
    const err = await expectCode(c.recover("right"), "guess_limit");
    assert.ok(err instanceof GuessLimitError);
    assert.equal(err.exitStatus, 5);
    assert.match(err.message, /can no longer be tried; use the recovery key/);
  });

  it("a client that stops after the server's first answer still spends a guess", async () => {
    const h = await harness();
    const c = await h.client("erin");
    await c.enroll("right", ENVELOPE);
    const { startLoginRequest } = opaque.client.startLogin({ password: "right" });
    const res = await h.post("erin", "/v1/recovery/start", { startLoginRequest });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { guessesRemaining: number }).guessesRemaining, 9);
    assert.equal((await c.status()).guessesUsed, 1, "the charge is durable without a finish");
  });

  it("200 parallel attempts against a limit of 10 charge exactly 10", async () => {
    const h = await harness();
    const c = await h.client("frank");
    await c.enroll("right", ENVELOPE);
    const token = await issueToken(SECRET, "frank");
    const results = await Promise.all(
      Array.from({ length: 200 }, () =>
        h.post(
          "frank",
          "/v1/recovery/start",
          { startLoginRequest: opaque.client.startLogin({ password: "x" }).startLoginRequest },
          token,
        ),
      ),
    );
    const statuses = results.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 200).length, 10);
    assert.equal(statuses.filter((s) => s === 410).length, 190);
    const s = await c.status();
    assert.equal(s.destroyed, true);
    assert.equal(s.guessesUsed, 10);
  });

  it("an unknown account gets answers of the same shape and the same countdown", async () => {
    const h = await harness();
    const real = await h.client("grace");
    await real.enroll("right", ENVELOPE);
    const shape = async (account: string) => {
      const { startLoginRequest } = opaque.client.startLogin({ password: "guess" });
      const res = await h.post(account, "/v1/recovery/start", { startLoginRequest });
      const body = (await res.json()) as Record<string, unknown>;
      return {
        status: res.status,
        keys: Object.keys(body).sort(),
        responseLength: String(body.loginResponse).length,
        guessesRemaining: body.guessesRemaining,
      };
    };
    for (let i = 0; i < 3; i++) assert.deepEqual(await shape("nobody"), await shape("grace"));
    const ghost = await h.client("nobody");
    await expectCode(ghost.recover("anything"), "wrong_password");
  });

  it("password change from an enrolled device replaces the record; the old password stops working", async () => {
    const h = await harness();
    const c = await h.client("heidi");
    await c.enroll("old", ENVELOPE);
    await c.enroll("new", ENVELOPE);
    await expectCode(c.recover("old"), "wrong_password");
    assert.deepEqual((await c.recover("new")).rootKey, ENVELOPE.rootKey);
  });

  it("an envelope that could never be recovered is refused before the earlier record is replaced", async () => {
    const h = await harness();
    const c = await h.client("ivan");
    await c.enroll("kept", ENVELOPE);
    const bad = [
      { ...ENVELOPE, repoId: "my-repo" },
      { ...ENVELOPE, repoId: ENVELOPE.repoId.toUpperCase() },
      { ...ENVELOPE, rootKey: new Uint8Array(31) },
    ];
    for (const env of bad) {
      const sent = h.captured.length;
      const err = await expectCode(c.enroll("lost", env), "usage");
      assert.match(err.message, /repository ID|root key/);
      assert.equal(h.captured.length, sent, "nothing was sent to the vault");
    }
    assert.deepEqual((await c.recover("kept")).rootKey, ENVELOPE.rootKey);
  });

  it("disable deletes the record", async () => {
    const h = await harness();
    const c = await h.client("ivan");
    await c.enroll("pw", ENVELOPE);
    assert.equal(await c.disable(), true);
    assert.equal((await c.status()).exists, false);
    assert.equal(await c.disable(), false);
    await expectCode(c.recover("pw"), "wrong_password");
  });

  it("the vault cannot unwrap the key: the stored envelope needs the export key", async () => {
    const h = await harness();
    const c = await h.client("judy");
    await c.enroll("pw", ENVELOPE);
    const rec = (await h.store.getRecord("judy"))!;
    const fakeExportKey = Buffer.from(randomBytes(64)).toString("base64url");
    assert.equal(await unwrapRootKey(nodePrimitives, fakeExportKey, rec.wrappedKey), null);
  });

  it("refuses missing, foreign-audience, expired and over-long tokens", async () => {
    const h = await harness();
    const body = {
      startLoginRequest: opaque.client.startLogin({ password: "x" }).startLoginRequest,
    };
    const noAuth = await h.app.request("http://vault.test/v1/recovery/start", {
      method: "POST",
      body: JSON.stringify(body),
    });
    assert.equal(noAuth.status, 401);
    const sign = (aud: string, exp: string | number, iat?: number) => {
      const jwt = new SignJWT({})
        .setProtectedHeader({ alg: "HS256" })
        .setSubject("kate")
        .setAudience(aud)
        .setExpirationTime(exp);
      return (iat ? jwt.setIssuedAt(iat) : jwt.setIssuedAt()).sign(SECRET);
    };
    assert.equal(
      (await h.post("kate", "/v1/recovery/start", body, await sign("other-app", "5m"))).status,
      401,
    );
    assert.equal(
      (
        await h.post(
          "kate",
          "/v1/recovery/start",
          body,
          await sign(
            "locket-vault",
            Math.floor(Date.now() / 1000) - 60,
            Math.floor(Date.now() / 1000) - 120,
          ),
        )
      ).status,
      401,
    );
    assert.equal(
      (await h.post("kate", "/v1/recovery/start", body, await sign("locket-vault", "30d"))).status,
      401,
    );
    const otherSecret = await new SignJWT({})
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("kate")
      .setAudience("locket-vault")
      .setIssuedAt()
      .setExpirationTime("5m")
      .sign(randomBytes(32));
    assert.equal((await h.post("kate", "/v1/recovery/start", body, otherSecret)).status, 401);
    assert.equal(
      (await h.store.status("kate", 10)).guessesUsed,
      0,
      "no guess charged without a valid token",
    );
  });

  it("a login state cannot be finished by another account, nor twice", async () => {
    const h = await harness();
    const c = await h.client("leo");
    await c.enroll("pw", ENVELOPE);
    const { clientLoginState, startLoginRequest } = opaque.client.startLogin({ password: "pw" });
    const start = (await (
      await h.post("leo", "/v1/recovery/start", { startLoginRequest })
    ).json()) as { loginId: string; loginResponse: string };
    const fin = opaque.client.finishLogin({
      clientLoginState,
      loginResponse: start.loginResponse,
      password: "pw",
      keyStretching: FAST,
    })!;
    const body = { loginId: start.loginId, finishLoginRequest: fin.finishLoginRequest };
    assert.equal((await h.post("mallory", "/v1/recovery/finish", body)).status, 401);
    // Mallory's attempt consumed the state: the state is single-use whoever presents it.
    assert.equal((await h.post("leo", "/v1/recovery/finish", body)).status, 401);
  });

  it("rejects oversized bodies and malformed fields, and rate-limits", async () => {
    const h = await harness({ accountRateLimit: { burst: 3, perSecond: 0.001 } });
    const big = await h.post("nia", "/v1/recovery/start", {
      startLoginRequest: "A".repeat(20_000),
    });
    assert.equal(big.status, 413);
    const bad = await h.post("nia", "/v1/recovery/start", { startLoginRequest: "not base64url!" });
    assert.equal(bad.status, 400);
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++)
      statuses.push((await h.post("nia", "/v1/recovery/start", {})).status);
    assert.ok(statuses.includes(429), `statuses: ${statuses}`);
  });
});
