import { randomBytes } from "node:crypto";
import { link, mkdir, open, readFile, unlink } from "node:fs/promises";
import { join } from "node:path";
import { UsageError } from "@locket/core";
import * as opaque from "@serenity-kit/opaque";
import type { VaultStore } from "../store/store.ts";

/**
 * Reads a secret from `dir/name`, creating it with `make()` and owner-only permissions on first
 * start. The exclusive create means two servers starting at once cannot write different ones.
 */
async function secretFile(dir: string, name: string, make: () => string): Promise<string> {
  const path = join(dir, name);
  try {
    return (await readFile(path, "utf8")).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // Written in full to a temporary file, then linked into place: link(2) fails if another server
  // got there first, and nobody ever reads a half-written secret.
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  const fh = await open(tmp, "wx", 0o600);
  try {
    await fh.writeFile(`${make()}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  } finally {
    await unlink(tmp);
  }
  return (await readFile(path, "utf8")).trim();
}

/**
 * The server's long-term OPAQUE setup: `LOCKET_VAULT_OPAQUE_SETUP` when set, else
 * `dataDir/opaque-setup` (created on first start). Losing it makes every record unusable.
 */
export async function loadServerSetup(
  dataDir: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string> {
  await opaque.ready;
  return (
    env.LOCKET_VAULT_OPAQUE_SETUP ??
    secretFile(dataDir, "opaque-setup", () => opaque.server.createSetup())
  );
}

/**
 * The HS256 token secret for self-hosting: `LOCKET_VAULT_TOKEN_SECRET` (hex, 64+ digits) when
 * set, else `dataDir/token-secret` (created on first start). `locket vault token` signs with it.
 */
export async function loadTokenSecret(
  dataDir: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Uint8Array> {
  const hex =
    env.LOCKET_VAULT_TOKEN_SECRET ??
    (await secretFile(dataDir, "token-secret", () => randomBytes(32).toString("hex")));
  if (!/^([0-9a-f]{2}){32,}$/i.test(hex))
    throw new UsageError("the token secret must be at least 64 hex digits");
  return Uint8Array.from(Buffer.from(hex, "hex"));
}

/**
 * Opens the record store named by `url`: `sqlite:PATH` (the embedded default) or
 * `postgres://…` / `postgresql://…`, and applies migrations.
 * @throws {UsageError} for any other scheme.
 */
export async function openStore(url: string): Promise<VaultStore> {
  let store: VaultStore;
  if (url.startsWith("sqlite:")) {
    const { SqliteVaultStore } = await import("../store/sqlite.ts");
    store = new SqliteVaultStore(url.slice("sqlite:".length));
  } else if (/^postgres(ql)?:\/\//.test(url)) {
    const { PostgresVaultStore } = await import("../store/postgres.ts");
    store = new PostgresVaultStore(url);
  } else {
    throw new UsageError(
      `--db must be sqlite:PATH or postgres://…, got ${url.replace(/\/\/[^@]*@/, "//…@")}`,
    );
  }
  await store.migrate();
  return store;
}
