// Run by npm run test:pg
/**
 * The conformance suite on PostgresVaultStore, against a throwaway cluster started once for this
 * file; each case gets a database of its own.
 */

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { PostgresVaultStore } from "../../src/store/postgres.ts";
import { startPostgres } from "../pg-cluster.ts";
import { newRecord, randomAccount, vaultStoreConformance } from "../store-conformance.ts";

let cluster: { url: string; stop: () => Promise<void> } | undefined;
let admin: pg.Client | undefined;

before(async () => {
  cluster = await startPostgres();
  admin = new pg.Client({ connectionString: cluster.url });
  await admin.connect();
});

after(async () => {
  await admin?.end();
  await cluster?.stop();
});

/** Creates an empty database; returns its URL and a function that drops it. */
async function freshDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  if (!cluster || !admin) throw new Error("the cluster is not running");
  const name = `vault_${randomBytes(8).toString("hex")}`;
  await admin.query(`CREATE DATABASE ${name}`);
  const url = new URL(cluster.url);
  url.pathname = `/${name}`;
  const client = admin;
  return {
    url: url.toString(),
    // FORCE: a case that failed may have left connections open.
    drop: async () => {
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    },
  };
}

vaultStoreConformance("PostgresVaultStore", async () => {
  const { url, drop } = await freshDatabase();
  return { store: new PostgresVaultStore(url), cleanup: drop };
});

describe("PostgresVaultStore across servers", () => {
  it("two stores migrating one fresh database at once do not race", async () => {
    const { url, drop } = await freshDatabase();
    const stores = Array.from({ length: 4 }, () => new PostgresVaultStore(url, { max: 2 }));
    try {
      await Promise.all(stores.map((s) => s.migrate()));
      const versions = await stores[0]["pool"].query("SELECT version FROM schema_version");
      assert.deepEqual(versions.rows, [{ version: 1 }]);
    } finally {
      for (const s of stores) await s.close();
      await drop();
    }
  });

  it("200 charges spread over two stores (two pools) charge exactly 10", async () => {
    const { url, drop } = await freshDatabase();
    const a = new PostgresVaultStore(url);
    const b = new PostgresVaultStore(url);
    try {
      await a.migrate();
      const rec = newRecord(randomAccount(), { guessLimit: 10 });
      await a.putRecord(rec);
      const phantom = randomAccount();
      const results = await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          (i % 2 ? a : b).chargeGuess(i % 4 < 2 ? rec.account : phantom, 10),
        ),
      );
      const ok = results.filter((r) => r.status === "charged");
      assert.equal(ok.length, 20);
      assert.equal(ok.filter((r) => r.last).length, 2);
      assert.equal((await b.status(rec.account, 10)).destroyed, true);
    } finally {
      await a.close();
      await b.close();
      await drop();
    }
  });

  it("stores times as BIGINT and reads them back as numbers", async () => {
    const { url, drop } = await freshDatabase();
    const store = new PostgresVaultStore(url);
    try {
      await store.migrate();
      const types = await store["pool"].query(
        `SELECT table_name, column_name, data_type FROM information_schema.columns
         WHERE column_name IN ('created_at', 'updated_at', 'expires_at') ORDER BY 1, 2`,
      );
      assert.ok(types.rows.length === 3 && types.rows.every((r) => r.data_type === "bigint"));
      const rec = newRecord(randomAccount());
      await store.putRecord(rec);
      const got = await store.getRecord(rec.account);
      assert.equal(typeof got?.createdAt, "number");
    } finally {
      await store.close();
      await drop();
    }
  });

  it("close is idempotent", async () => {
    const { url, drop } = await freshDatabase();
    const store = new PostgresVaultStore(url);
    await store.close();
    await store.close();
    await drop();
  });
});
