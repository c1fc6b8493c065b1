import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { UsageError } from "@locket/core";
import { locketHome } from "../../device.ts";
import type { Command } from "../command.ts";

export const vault: Command = {
  name: "vault",
  summary: "run a key vault server, or issue an account token for one",
  usage:
    "locket vault serve [--db URL] [--data-dir DIR] [--port N] | locket vault token --account NAME",
  help: `serve   runs the key vault (HTTP JSON API) until interrupted. Records live in SQLite (the
        default, a file in --data-dir) or PostgreSQL (--db postgres://user@host/db). On first
        start it creates, owner-only in --data-dir, the server's OPAQUE setup and an HS256 token
        secret. Serve it behind TLS (docs/operations.md).
token   prints an account token signed with --data-dir's secret, for a self-hosted vault.

Options:
      --db URL             sqlite:PATH or postgres://… (default sqlite:DATA_DIR/vault.db)
      --data-dir DIR       secrets and the default database (default $LOCKET_HOME/vault)
      --host ADDR          listen address (default 127.0.0.1)
      --port N             port (default 7411; 0 picks a free one)
      --token-public-key FILE   also accept tokens signed by this Ed25519/P-256 key (PEM; repeatable)
      --guess-limit N      guesses per record (default 10)
      --cors ORIGIN        allow browser clients from ORIGIN (repeatable)
      --ttl SECONDS        token lifetime for 'token' (default 900)

Examples:
  locket vault serve --data-dir ~/vault --port 7411
  export LOCKET_TOKEN=$(locket vault token --account alice --data-dir ~/vault)`,
  options: {
    db: { type: "string" },
    "data-dir": { type: "string" },
    host: { type: "string" },
    port: { type: "string" },
    "token-public-key": { type: "string", multiple: true },
    "guess-limit": { type: "string" },
    cors: { type: "string", multiple: true },
    ttl: { type: "string" },
  },
  async run(ctx) {
    // Loaded here, not at start-up: every other command would pay for the server's modules.
    const { issueToken, loadTokenSecret, serveVault } = await import("@locket/vault/server");
    const action = ctx.positionals[0];
    const dataDir = ctx.str("data-dir") ?? join(locketHome(ctx.env), "vault");
    if (action === "token") {
      const account = ctx.str("account") ?? ctx.env.LOCKET_ACCOUNT;
      if (!account) throw new UsageError("vault token needs --account NAME");
      // The vault refuses tokens that live longer than an hour (SPEC.md section 14).
      const ttl = ctx.int("ttl", 900);
      if (ttl < 1 || ttl > 3600) throw new UsageError("--ttl must be from 1 to 3600 seconds");
      const token = await issueToken(await loadTokenSecret(dataDir, ctx.env), account, {
        ttlSeconds: ttl,
      });
      if (!ctx.json) process.stdout.write(`${token}\n`);
      return { account, token };
    }
    if (action !== "serve") throw new UsageError("vault needs 'serve' or 'token'");
    const limit = ctx.int("guess-limit", 10);
    if (limit < 1) throw new UsageError("--guess-limit must be at least 1");
    const keys = await Promise.all(
      ((ctx.values["token-public-key"] as string[] | undefined) ?? []).map((f) =>
        readFile(f, "utf8"),
      ),
    );
    const running = await serveVault({
      db: ctx.str("db"),
      dataDir,
      host: ctx.str("host"),
      port: ctx.int("port", 7411),
      publicKeysPem: keys,
      config: {
        defaultGuessLimit: limit,
        maxGuessLimit: limit,
        corsOrigins: (ctx.values.cors as string[] | undefined) ?? [],
      },
      env: ctx.env,
    });
    ctx.warn(`key vault listening on ${running.url} (data in ${dataDir}); Ctrl-C stops it`);
    if (ctx.json)
      process.stdout.write(`${JSON.stringify({ ok: true, command: "vault", url: running.url })}\n`);
    await new Promise<void>((resolve) => {
      const stop = () => resolve();
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
    });
    await running.close();
    return { url: running.url, stopped: true };
  },
};
