import { randomBytes } from "node:crypto";
import { LocketError } from "@locket/core";
import * as opaque from "@serenity-kit/opaque";
import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { cors } from "hono/cors";
import { timeout } from "hono/timeout";
import { DEFAULT_KEY_STRETCHING } from "../protocol.ts";
import type { VaultStore } from "../store/store.ts";
import { type Caller, HttpError } from "./auth.ts";
import type { Logger } from "./log.ts";
import { type RateLimit, RateLimiter } from "./rate-limit.ts";

/** Operator settings, with defaults in `DEFAULT_VAULT_CONFIG`. */
export interface VaultConfig {
  /** Guesses a new record gets unless the client asks for fewer. */
  readonly defaultGuessLimit: number;
  /** Most guesses a client may ask for. */
  readonly maxGuessLimit: number;
  /** How long a login may take between its two messages. */
  readonly loginTtlMs: number;
  readonly bodyLimitBytes: number;
  readonly requestTimeoutMs: number;
  /** Per client IP, all endpoints. */
  readonly ipRateLimit: RateLimit;
  /** Per account, recovery and registration endpoints. */
  readonly accountRateLimit: RateLimit;
  /** Origins allowed by CORS for browser clients ("*" for any). */
  readonly corsOrigins: readonly string[];
}

export const DEFAULT_VAULT_CONFIG: VaultConfig = {
  defaultGuessLimit: 10,
  maxGuessLimit: 10,
  loginTtlMs: 60_000,
  bodyLimitBytes: 16 * 1024,
  requestTimeoutMs: 10_000,
  ipRateLimit: { burst: 60, perSecond: 5 },
  accountRateLimit: { burst: 20, perSecond: 1 },
  corsOrigins: [],
};

export interface VaultDeps {
  readonly store: VaultStore;
  /** The server's long-term OPAQUE setup (secret). */
  readonly serverSetup: string;
  /** Verifies the bearer token; see `createVerifier`. */
  readonly verify: (authorization: string | undefined) => Promise<Caller>;
  readonly log: Logger;
  readonly config?: Partial<VaultConfig>;
  /** Where the client address comes from (the Node adapter's connection info). */
  readonly clientIp?: (c: Context) => string;
}

type Vars = { Variables: { caller: Caller; requestId: string } };

const B64URL = /^[A-Za-z0-9_-]{1,8192}$/;

function field(body: Record<string, unknown>, name: string, pattern = B64URL): string {
  const v = body[name];
  if (typeof v !== "string" || !pattern.test(v))
    throw new HttpError(400, "usage", `field ${name} is missing or malformed`);
  return v;
}

async function jsonBody(c: Context): Promise<Record<string, unknown>> {
  try {
    const b = await c.req.json();
    if (!b || typeof b !== "object" || Array.isArray(b)) throw new Error("not an object");
    return b as Record<string, unknown>;
  } catch {
    throw new HttpError(400, "usage", "body must be a JSON object");
  }
}

/**
 * The vault's HTTP API as a Hono app, callable in-process by tests (`app.request(…)`) and served
 * by `serveVault`. Every endpoint but /health needs a bearer token; the token's subject is the
 * account acted on. See SPEC.md "Key vault" for the messages.
 */
export async function createApp(deps: VaultDeps): Promise<Hono<Vars>> {
  await opaque.ready;
  const config: VaultConfig = { ...DEFAULT_VAULT_CONFIG, ...deps.config };
  const { store, serverSetup, log } = deps;
  const ipLimiter = new RateLimiter(config.ipRateLimit);
  const accountLimiter = new RateLimiter(config.accountRateLimit);
  const serverPublicKey = opaque.server.getPublicKey(serverSetup);
  const app = new Hono<Vars>();

  app.onError((err, c) => {
    const e = err instanceof LocketError ? err : new HttpError(500, "failure", "internal error");
    const status = err instanceof HttpError ? err.status : err instanceof LocketError ? 400 : 500;
    if (status >= 500)
      log("error", "request_failed", {
        requestId: c.get("requestId"),
        error: (err as Error).message,
      });
    return c.json({ error: { code: e.code, message: e.message } }, status as 400);
  });
  app.notFound((c) => c.json({ error: { code: "not_found", message: "no such endpoint" } }, 404));

  app.use("*", async (c, next) => {
    const started = Date.now();
    const id = randomBytes(8).toString("hex");
    c.set("requestId", id);
    c.header("x-request-id", id);
    const ip = deps.clientIp?.(c) ?? "unknown";
    if (!ipLimiter.take(ip))
      throw new HttpError(429, "rate_limited", "too many requests from this address; slow down");
    await next();
    log("info", "request", {
      requestId: id,
      method: c.req.method,
      path: c.req.path,
      status: c.res.status,
      ms: Date.now() - started,
      ip,
      account: c.get("caller")?.account,
    });
  });
  if (config.corsOrigins.length) {
    app.use(
      "*",
      cors({
        origin: [...config.corsOrigins],
        allowHeaders: ["authorization", "content-type"],
        allowMethods: ["GET", "POST", "DELETE"],
      }),
    );
  }
  app.use("*", timeout(config.requestTimeoutMs));
  app.use(
    "*",
    bodyLimit({
      maxSize: config.bodyLimitBytes,
      onError: () => {
        throw new HttpError(413, "usage", `request body exceeds ${config.bodyLimitBytes} bytes`);
      },
    }),
  );

  app.get("/health", (c) => c.json({ ok: true, serverPublicKey }));

  app.use("/v1/*", async (c, next) => {
    const caller = await deps.verify(c.req.header("authorization"));
    c.set("caller", caller);
    if (c.req.method === "POST" && !accountLimiter.take(caller.account)) {
      throw new HttpError(429, "rate_limited", "too many attempts for this account; wait a minute");
    }
    await next();
  });

  app.post("/v1/registration/start", async (c) => {
    const body = await jsonBody(c);
    const { registrationResponse } = opaque.server.createRegistrationResponse({
      serverSetup,
      userIdentifier: c.get("caller").account,
      registrationRequest: field(body, "registrationRequest"),
    });
    return c.json({ registrationResponse, serverPublicKey });
  });

  app.post("/v1/registration/finish", async (c) => {
    const body = await jsonBody(c);
    const requested = body.guessLimit ?? config.defaultGuessLimit;
    if (
      !Number.isInteger(requested) ||
      (requested as number) < 1 ||
      (requested as number) > config.maxGuessLimit
    ) {
      throw new HttpError(
        400,
        "usage",
        `guessLimit must be a whole number from 1 to ${config.maxGuessLimit}`,
      );
    }
    const keyStretching = field(body, "keyStretching", /^[\x20-\x7e]{1,512}$/);
    await store.putRecord({
      account: c.get("caller").account,
      registrationRecord: field(body, "registrationRecord"),
      wrappedKey: field(body, "wrappedKey"),
      keyStretching,
      guessLimit: requested as number,
    });
    log("info", "record_registered", { account: c.get("caller").account, guessLimit: requested });
    return c.json({ guessLimit: requested });
  });

  app.post("/v1/recovery/start", async (c) => {
    const body = await jsonBody(c);
    const startLoginRequest = field(body, "startLoginRequest");
    const account = c.get("caller").account;
    // The charge is durable before anything about the password can leave this server.
    const charge = await store.chargeGuess(account, config.defaultGuessLimit);
    if (charge.status === "exhausted") {
      throw new HttpError(
        410,
        "guess_limit",
        "this backup's password can no longer be tried; use the recovery key",
      );
    }
    // For an account with no record, opaque-ke answers with a fake response of the same shape.
    const { loginResponse, serverLoginState } = opaque.server.startLogin({
      serverSetup,
      userIdentifier: account,
      registrationRecord: charge.record?.registrationRecord ?? null,
      startLoginRequest,
    });
    const loginId = randomBytes(16).toString("hex");
    await store.saveLoginState({
      id: loginId,
      account,
      serverLoginState,
      expiresAt: Date.now() + config.loginTtlMs,
      lastRecord: charge.last ? charge.record : null,
    });
    if (charge.last) log("warn", "last_guess_charged", { account });
    return c.json({
      loginId,
      loginResponse,
      keyStretching: charge.record?.keyStretching ?? JSON.stringify(DEFAULT_KEY_STRETCHING),
      guessesRemaining: charge.guessLimit - charge.guessesUsed,
      guessLimit: charge.guessLimit,
    });
  });

  app.post("/v1/recovery/finish", async (c) => {
    const body = await jsonBody(c);
    const loginId = field(body, "loginId", /^[0-9a-f]{32}$/);
    const finishLoginRequest = field(body, "finishLoginRequest");
    const account = c.get("caller").account;
    const state = await store.takeLoginState(loginId, Date.now());
    if (!state || state.account !== account)
      throw new HttpError(401, "unauthorized", "login expired or unknown; start again");
    try {
      opaque.server.finishLogin({ serverLoginState: state.serverLoginState, finishLoginRequest });
    } catch {
      throw new HttpError(401, "unauthorized", "login could not be verified");
    }
    // Verified: only now is the count reset and the wrapped key released.
    if (state.lastRecord) await store.reviveRecord(state.lastRecord);
    else await store.resetGuesses(account);
    const record = await store.getRecord(account);
    if (!record) throw new HttpError(401, "unauthorized", "login could not be verified");
    log("info", "record_recovered", { account });
    return c.json({ wrappedKey: record.wrappedKey });
  });

  app.get("/v1/record", async (c) => {
    const s = await store.status(c.get("caller").account, config.defaultGuessLimit);
    return c.json({ ...s, guessesRemaining: s.exists ? s.guessLimit - s.guessesUsed : 0 });
  });

  app.delete("/v1/record", async (c) => {
    const deleted = await store.deleteRecord(c.get("caller").account);
    log("info", "record_deleted", { account: c.get("caller").account, existed: deleted });
    return c.json({ deleted });
  });

  return app;
}
