import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { SqliteVaultStore } from "../src/store/sqlite.ts";
import { newRecord, randomAccount, vaultStoreConformance } from "./store-conformance.ts";

/** A fresh directory for one database file; removing it also removes the WAL and SHM files. */
function tempDir(): { dir: string; remove: () => Promise<void> } {
  const dir = mkdtempSync(join(tmpdir(), "locket-vault-sqlite-"));
  return { dir, remove: async () => rmSync(dir, { recursive: true, force: true }) };
}

vaultStoreConformance("SqliteVaultStore (file)", async () => {
  const { dir, remove } = tempDir();
  return { store: new SqliteVaultStore(join(dir, "vault.db")), cleanup: remove };
});

vaultStoreConformance("SqliteVaultStore (:memory:)", async () => ({
  store: new SqliteVaultStore(":memory:"),
  cleanup: async () => {},
}));

describe("SqliteVaultStore durability", () => {
  it("a charge survives closing and reopening the file", async () => {
    const { dir, remove } = tempDir();
    try {
      const path = join(dir, "nested", "vault.db");
      const rec = newRecord(randomAccount(), { guessLimit: 5 });
      const phantom = randomAccount();
      const first = new SqliteVaultStore(path);
      await first.migrate();
      await first.putRecord(rec);
      await first.chargeGuess(rec.account, 5);
      await first.chargeGuess(rec.account, 5);
      await first.chargeGuess(phantom, 3);
      await first.close();

      const second = new SqliteVaultStore(path);
      try {
        await second.migrate();
        assert.equal((await second.getRecord(rec.account))?.guessesUsed, 2);
        const r = await second.chargeGuess(rec.account, 5);
        assert.equal(r.status === "charged" && r.guessesUsed, 3);
        const p = await second.chargeGuess(phantom, 3);
        assert.equal(p.status === "charged" && p.guessesUsed, 2);
      } finally {
        await second.close();
      }
    } finally {
      await remove();
    }
  });

  it("two stores on one file see each other's charges", async () => {
    const { dir, remove } = tempDir();
    const path = join(dir, "vault.db");
    const a = new SqliteVaultStore(path);
    const b = new SqliteVaultStore(path);
    try {
      await a.migrate();
      await b.migrate();
      const rec = newRecord(randomAccount(), { guessLimit: 3 });
      await a.putRecord(rec);
      await a.chargeGuess(rec.account, 3);
      await b.chargeGuess(rec.account, 3);
      const last = await a.chargeGuess(rec.account, 3);
      assert.equal(last.status === "charged" && last.last, true);
      assert.deepEqual(await b.chargeGuess(rec.account, 3), { status: "exhausted" });
    } finally {
      await a.close();
      await b.close();
      await remove();
    }
  });

  it("close is idempotent", async () => {
    const store = new SqliteVaultStore(":memory:");
    await store.close();
    await store.close();
  });
});
