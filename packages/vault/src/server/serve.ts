import { join } from "node:path";
import { serve } from "@hono/node-server";
import { getConnInfo } from "@hono/node-server/conninfo";
import { createApp, type VaultConfig } from "./app.ts";
import { type AuthConfig, createVerifier } from "./auth.ts";
import { jsonLogger, type Logger } from "./log.ts";
import { loadServerSetup, loadTokenSecret, openStore } from "./setup.ts";

export interface ServeOptions {
  /** `sqlite:PATH` or `postgres://…` (default `sqlite:DATA_DIR/vault.db`). */
  readonly db?: string;
  /** Where the OPAQUE setup and the token secret live (owner-only). */
  readonly dataDir: string;
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port?: number;
  /** Extra token verification keys (PEM) of an app backend; the local HS256 secret always works. */
  readonly publicKeysPem?: readonly string[];
  readonly audience?: string;
  readonly config?: Partial<VaultConfig>;
  readonly log?: Logger;
  readonly env?: NodeJS.ProcessEnv;
}

export interface RunningVault {
  /** `http://HOST:PORT`. */
  readonly url: string;
  close(): Promise<void>;
}

/**
 * Starts the vault: opens the store (migrating it), loads or creates the OPAQUE setup and the
 * token secret, and listens. Deploy it behind a TLS-terminating proxy (docs/operations.md).
 */
export async function serveVault(opts: ServeOptions): Promise<RunningVault> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? jsonLogger();
  const store = await openStore(opts.db ?? `sqlite:${join(opts.dataDir, "vault.db")}`);
  const auth: AuthConfig = {
    hs256Secret: await loadTokenSecret(opts.dataDir, env),
    publicKeysPem: opts.publicKeysPem,
    audience: opts.audience,
  };
  const app = await createApp({
    store,
    serverSetup: await loadServerSetup(opts.dataDir, env),
    verify: await createVerifier(auth),
    log,
    config: opts.config,
    clientIp: (c) => getConnInfo(c).remote.address ?? "unknown",
  });
  const purge = setInterval(() => void store.purgeExpired(Date.now()).catch(() => {}), 30_000);
  purge.unref();
  const host = opts.host ?? "127.0.0.1";
  return new Promise((resolve, reject) => {
    const server = serve({ fetch: app.fetch, hostname: host, port: opts.port ?? 7411 }, (info) => {
      const url = `http://${host.includes(":") ? `[${host}]` : host}:${info.port}`;
      log("info", "listening", { url });
      resolve({
        url,
        close: async () => {
          clearInterval(purge);
          await new Promise<void>((r) => server.close(() => r()));
          await store.close();
        },
      });
    });
    server.on("error", reject);
  });
}
