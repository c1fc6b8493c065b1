/**
 * The VaultStore contract as tests. Every implementation runs this suite; each case names the
 * clause of `src/store/store.ts` it checks.
 */

import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { afterEach, beforeEach, describe, it } from "node:test";
import type {
  ChargeResult,
  LoginState,
  NewRecord,
  VaultRecord,
  VaultStore,
} from "../src/store/store.ts";

/** A fresh, empty store (not yet migrated) and a way to dispose of it. */
export interface VaultStoreFixture {
  readonly store: VaultStore;
  readonly cleanup: () => Promise<void>;
}

/** A random account name. */
export function randomAccount(): string {
  return `acct-${randomUUID()}`;
}

/** A record for `account` with random secrets. */
export function newRecord(account: string, overrides: Partial<NewRecord> = {}): NewRecord {
  return {
    account,
    registrationRecord: randomBytes(48).toString("base64url"),
    wrappedKey: randomBytes(60).toString("base64url"),
    keyStretching: JSON.stringify({ alg: "argon2id", m: 65536, t: 3, p: 1 }),
    guessLimit: 10,
    ...overrides,
  };
}

/**
 * Asserts that `got` is `expected`'s secrets and limit, with `guessesUsed` used.
 * @throws {AssertionError} when it is not.
 */
function assertRecord(
  got: VaultRecord | null,
  expected: NewRecord,
  guessesUsed: number,
): asserts got is VaultRecord {
  assert.ok(got, `expected a live record for ${expected.account}`);
  assert.equal(got.account, expected.account);
  assert.equal(got.registrationRecord, expected.registrationRecord);
  assert.equal(got.wrappedKey, expected.wrappedKey);
  assert.equal(got.keyStretching, expected.keyStretching);
  assert.equal(got.guessLimit, expected.guessLimit);
  assert.equal(got.guessesUsed, guessesUsed);
  // Types too: a BIGINT column must come back as a number, not a string.
  assert.equal(typeof got.createdAt, "number");
  assert.equal(typeof got.updatedAt, "number");
}

/**
 * Narrows `r` to a charge.
 * @throws {AssertionError} when it is `exhausted`.
 */
function charged(r: ChargeResult): Extract<ChargeResult, { status: "charged" }> {
  assert.equal(r.status, "charged");
  return r as Extract<ChargeResult, { status: "charged" }>;
}

/** Charges `n` guesses one after another. */
async function chargeN(
  store: VaultStore,
  account: string,
  n: number,
  defaultLimit = 10,
): Promise<ChargeResult[]> {
  const out: ChargeResult[] = [];
  for (let i = 0; i < n; i++) out.push(await store.chargeGuess(account, defaultLimit));
  return out;
}

/** A record destroyed by its last guess, and the copy the last charge returned. */
async function destroyed(
  store: VaultStore,
  limit = 3,
): Promise<{ rec: NewRecord; lastCopy: VaultRecord }> {
  const rec = newRecord(randomAccount(), { guessLimit: limit });
  await store.putRecord(rec);
  const results = await chargeN(store, rec.account, limit);
  const last = charged(results[limit - 1]);
  assert.equal(last.last, true);
  assert.ok(last.record);
  return { rec, lastCopy: last.record };
}

function loginState(account: string, expiresAt: number, lastRecord: VaultRecord | null = null) {
  return {
    id: randomUUID(),
    account,
    serverLoginState: randomBytes(96).toString("base64url"),
    expiresAt,
    lastRecord,
  } satisfies LoginState;
}

/**
 * Asserts the outcome of `n` concurrent charges against one counter of `limit` guesses: exactly
 * `limit` charged, with guessesUsed 1…limit once each and `last` on exactly one (the limit-th),
 * and the rest exhausted.
 * @throws {AssertionError} when it is not.
 */
function assertConcurrentCharges(results: ChargeResult[], n: number, limit: number): void {
  const ok = results.filter((r) => r.status === "charged");
  assert.equal(ok.length, limit, "charged");
  assert.equal(results.filter((r) => r.status === "exhausted").length, n - limit, "exhausted");
  const used = ok.map((r) => r.guessesUsed).sort((a, b) => a - b);
  assert.deepEqual(
    used,
    Array.from({ length: limit }, (_, i) => i + 1),
    "each count is charged exactly once",
  );
  const lasts = ok.filter((r) => r.last);
  assert.equal(lasts.length, 1, "exactly one last");
  assert.equal(lasts[0].guessesUsed, limit);
  for (const r of ok) assert.equal(r.guessLimit, limit);
}

/**
 * Registers the VaultStore conformance suite. `make` returns a fresh, empty, unmigrated store;
 * each case gets its own and disposes of it.
 */
export function vaultStoreConformance(name: string, make: () => Promise<VaultStoreFixture>): void {
  describe(`VaultStore conformance: ${name}`, () => {
    describe("migrate: creates the schema when missing (idempotent migrations)", () => {
      it("runs twice on a fresh store, and twice more at once", async () => {
        const { store, cleanup } = await make();
        try {
          await store.migrate();
          await store.migrate();
          await Promise.all([store.migrate(), store.migrate()]);
          assert.equal(await store.getRecord(randomAccount()), null);
        } finally {
          await store.close();
          await cleanup();
        }
      });

      it("keeps existing data", async () => {
        const { store, cleanup } = await make();
        try {
          await store.migrate();
          const rec = newRecord(randomAccount());
          await store.putRecord(rec);
          await store.chargeGuess(rec.account, 10);
          await store.migrate();
          assertRecord(await store.getRecord(rec.account), rec, 1);
        } finally {
          await store.close();
          await cleanup();
        }
      });
    });

    describe("with a migrated store", () => {
      let store: VaultStore;
      let cleanup: () => Promise<void>;

      beforeEach(async () => {
        ({ store, cleanup } = await make());
        await store.migrate();
      });

      afterEach(async () => {
        await store.close();
        await cleanup();
      });

      describe("putRecord / getRecord", () => {
        it("round-trips a record with no guesses used", async () => {
          const rec = newRecord(randomAccount(), { guessLimit: 7 });
          const before = Date.now();
          await store.putRecord(rec);
          const after = Date.now();
          const got = await store.getRecord(rec.account);
          assertRecord(got, rec, 0);
          assert.ok(got.createdAt >= before && got.createdAt <= after, "createdAt is now");
          assert.ok(got.updatedAt >= before && got.updatedAt <= after, "updatedAt is now");
        });

        it("getRecord is null for an account with none", async () => {
          assert.equal(await store.getRecord(randomAccount()), null);
        });

        it("keeps accounts apart", async () => {
          const a = newRecord(randomAccount());
          const b = newRecord(randomAccount(), { guessLimit: 4 });
          await store.putRecord(a);
          await store.putRecord(b);
          assertRecord(await store.getRecord(a.account), a, 0);
          assertRecord(await store.getRecord(b.account), b, 0);
        });

        it("putRecord replaces an existing record, with no guesses used", async () => {
          const account = randomAccount();
          await store.putRecord(newRecord(account, { guessLimit: 10 }));
          await chargeN(store, account, 4);
          const replacement = newRecord(account, { guessLimit: 5 });
          await store.putRecord(replacement);
          assertRecord(await store.getRecord(account), replacement, 0);
          assert.deepEqual(await store.status(account, 10), {
            exists: true,
            destroyed: false,
            guessesUsed: 0,
            guessLimit: 5,
          });
          // The new limit applies to later charges.
          const results = await chargeN(store, account, 5);
          assert.equal(charged(results[4]).last, true);
        });

        it("putRecord turns a phantom into a live record with no guesses used", async () => {
          const account = randomAccount();
          await chargeN(store, account, 3, 10);
          const rec = newRecord(account, { guessLimit: 6 });
          await store.putRecord(rec);
          assertRecord(await store.getRecord(account), rec, 0);
          const r = charged(await store.chargeGuess(account, 10));
          assert.equal(r.guessesUsed, 1);
          assert.equal(r.guessLimit, 6);
          assertRecord(r.record, rec, 1);
        });

        it("putRecord after a destruction (re-enrolment) makes it live with no guesses used", async () => {
          const { rec } = await destroyed(store, 3);
          const again = newRecord(rec.account, { guessLimit: 4 });
          await store.putRecord(again);
          assertRecord(await store.getRecord(rec.account), again, 0);
          assert.deepEqual(await store.status(rec.account, 10), {
            exists: true,
            destroyed: false,
            guessesUsed: 0,
            guessLimit: 4,
          });
          const r = charged(await store.chargeGuess(rec.account, 10));
          assert.equal(r.guessesUsed, 1);
          assert.equal(r.last, false);
        });
      });

      describe("status: a phantom counts as no record", () => {
        it("none: not existing, not destroyed, the default limit", async () => {
          assert.deepEqual(await store.status(randomAccount(), 12), {
            exists: false,
            destroyed: false,
            guessesUsed: 0,
            guessLimit: 12,
          });
        });

        it("live: existing, with its guesses used and limit", async () => {
          const rec = newRecord(randomAccount(), { guessLimit: 8 });
          await store.putRecord(rec);
          await chargeN(store, rec.account, 3);
          assert.deepEqual(await store.status(rec.account, 12), {
            exists: true,
            destroyed: false,
            guessesUsed: 3,
            guessLimit: 8,
          });
        });

        it("phantom: the same as none, whatever was charged", async () => {
          const account = randomAccount();
          await chargeN(store, account, 2, 5);
          assert.deepEqual(await store.status(account, 12), {
            exists: false,
            destroyed: false,
            guessesUsed: 0,
            guessLimit: 12,
          });
          assert.equal(await store.getRecord(account), null);
        });

        it("destroyed: not existing, destroyed, every guess used", async () => {
          const { rec } = await destroyed(store, 3);
          assert.deepEqual(await store.status(rec.account, 12), {
            exists: false,
            destroyed: true,
            guessesUsed: 3,
            guessLimit: 3,
          });
        });
      });

      describe("chargeGuess on a live record", () => {
        it("counts up, durably, and destroys the record on the last guess", async () => {
          const limit = 4;
          const rec = newRecord(randomAccount(), { guessLimit: limit });
          await store.putRecord(rec);
          for (let i = 1; i <= limit; i++) {
            const before = Date.now();
            const r = charged(await store.chargeGuess(rec.account, 99));
            assert.ok(
              r.record && r.record.updatedAt >= before,
              "the returned copy carries the charge's time",
            );
            assert.equal(r.guessesUsed, i);
            assert.equal(r.guessLimit, limit, "the record's limit, not the default");
            assert.equal(r.last, i === limit, `last on charge ${i}`);
            assertRecord(r.record, rec, i);
            if (i < limit) {
              // The charge is stored: a fresh read sees it.
              assertRecord(await store.getRecord(rec.account), rec, i);
              assert.equal((await store.status(rec.account, 99)).guessesUsed, i);
            }
          }
          // The last charge destroyed the stored record; only the returned copy is left.
          assert.equal(await store.getRecord(rec.account), null);
          assert.deepEqual(await store.status(rec.account, 99), {
            exists: false,
            destroyed: true,
            guessesUsed: limit,
            guessLimit: limit,
          });
        });

        it("returns exhausted after the record is destroyed, every time", async () => {
          const { rec } = await destroyed(store, 2);
          for (let i = 0; i < 3; i++) {
            assert.deepEqual(await store.chargeGuess(rec.account, 10), { status: "exhausted" });
          }
          assert.equal(await store.getRecord(rec.account), null);
          assert.equal((await store.status(rec.account, 10)).guessesUsed, 2);
        });

        it("a limit of one: the first charge is the last", async () => {
          const rec = newRecord(randomAccount(), { guessLimit: 1 });
          await store.putRecord(rec);
          const r = charged(await store.chargeGuess(rec.account, 10));
          assert.equal(r.last, true);
          assert.equal(r.guessesUsed, 1);
          assertRecord(r.record, rec, 1);
          assert.equal(await store.getRecord(rec.account), null);
          assert.deepEqual(await store.chargeGuess(rec.account, 10), { status: "exhausted" });
        });
      });

      describe("chargeGuess without a record: a phantom counter, charged the same way", () => {
        it("counts up with record null and is exhausted after defaultLimit", async () => {
          const account = randomAccount();
          const limit = 3;
          for (let i = 1; i <= limit; i++) {
            const r = charged(await store.chargeGuess(account, limit));
            assert.equal(r.record, null);
            assert.equal(r.guessesUsed, i);
            assert.equal(r.guessLimit, limit);
            assert.equal(r.last, i === limit);
            assert.equal(await store.getRecord(account), null);
          }
          assert.deepEqual(await store.chargeGuess(account, limit), { status: "exhausted" });
          assert.deepEqual(await store.chargeGuess(account, limit), { status: "exhausted" });
          assert.equal(await store.getRecord(account), null);
        });

        // "Charged the same way": the last guess leaves a tombstone, as for a real record, so
        // status no longer reads as "no record" (see the phantom status case above).
        it("an exhausted phantom is a tombstone: status destroyed", async () => {
          const account = randomAccount();
          await chargeN(store, account, 2, 2);
          assert.deepEqual(await store.status(account, 7), {
            exists: false,
            destroyed: true,
            guessesUsed: 2,
            guessLimit: 2,
          });
        });

        it("keeps the limit it was created with", async () => {
          const account = randomAccount();
          await store.chargeGuess(account, 2);
          const r = charged(await store.chargeGuess(account, 50));
          assert.equal(r.guessLimit, 2);
          assert.equal(r.last, true);
          assert.deepEqual(await store.chargeGuess(account, 50), { status: "exhausted" });
        });
      });

      describe("resetGuesses", () => {
        it("sets a live record's guesses used to zero", async () => {
          const rec = newRecord(randomAccount(), { guessLimit: 5 });
          await store.putRecord(rec);
          await chargeN(store, rec.account, 4);
          await store.resetGuesses(rec.account);
          assertRecord(await store.getRecord(rec.account), rec, 0);
          assert.equal((await store.status(rec.account, 10)).guessesUsed, 0);
          // The full allowance is back.
          const results = await chargeN(store, rec.account, 5);
          assert.deepEqual(
            results.map((r) => charged(r).last),
            [false, false, false, false, true],
          );
        });

        it("is a no-op without a record: creates nothing", async () => {
          const account = randomAccount();
          await store.resetGuesses(account);
          assert.equal(await store.getRecord(account), null);
          assert.deepEqual(await store.status(account, 10), {
            exists: false,
            destroyed: false,
            guessesUsed: 0,
            guessLimit: 10,
          });
          assert.equal(charged(await store.chargeGuess(account, 10)).guessesUsed, 1);
        });

        it("is a no-op on a phantom: its counter keeps counting", async () => {
          const account = randomAccount();
          await chargeN(store, account, 2, 5);
          await store.resetGuesses(account);
          assert.equal(charged(await store.chargeGuess(account, 5)).guessesUsed, 3);
        });

        it("is a no-op on a destroyed record: it stays destroyed", async () => {
          const { rec } = await destroyed(store, 2);
          await store.resetGuesses(rec.account);
          assert.equal(await store.getRecord(rec.account), null);
          assert.equal((await store.status(rec.account, 10)).destroyed, true);
          assert.deepEqual(await store.chargeGuess(rec.account, 10), { status: "exhausted" });
        });
      });

      describe("reviveRecord", () => {
        it("puts back a record destroyed by its last guess, with no guesses used", async () => {
          const { rec, lastCopy } = await destroyed(store, 3);
          await store.reviveRecord(lastCopy);
          const got = await store.getRecord(rec.account);
          assertRecord(got, rec, 0);
          assert.equal(got.createdAt, lastCopy.createdAt, "keeps its creation time");
          assert.deepEqual(await store.status(rec.account, 10), {
            exists: true,
            destroyed: false,
            guessesUsed: 0,
            guessLimit: 3,
          });
          const r = charged(await store.chargeGuess(rec.account, 10));
          assert.equal(r.guessesUsed, 1);
          assertRecord(r.record, rec, 1);
        });

        it("does nothing when the account was re-enrolled meanwhile", async () => {
          const { rec, lastCopy } = await destroyed(store, 3);
          const again = newRecord(rec.account, { guessLimit: 6 });
          await store.putRecord(again);
          await chargeN(store, rec.account, 2);
          await store.reviveRecord(lastCopy);
          // Neither the secrets nor the count of the new record change.
          assertRecord(await store.getRecord(rec.account), again, 2);
        });
      });

      describe("deleteRecord: deletes the record and any tombstone or phantom", () => {
        it("returns true for a live record, which is then gone", async () => {
          const rec = newRecord(randomAccount());
          await store.putRecord(rec);
          await chargeN(store, rec.account, 3);
          assert.equal(await store.deleteRecord(rec.account), true);
          assert.equal(await store.getRecord(rec.account), null);
          assert.deepEqual(await store.status(rec.account, 10), {
            exists: false,
            destroyed: false,
            guessesUsed: 0,
            guessLimit: 10,
          });
          // A later charge starts a fresh phantom.
          const r = charged(await store.chargeGuess(rec.account, 10));
          assert.equal(r.record, null);
          assert.equal(r.guessesUsed, 1);
        });

        it("returns false without a record", async () => {
          assert.equal(await store.deleteRecord(randomAccount()), false);
        });

        it("returns false for a tombstone, and removes it", async () => {
          const { rec } = await destroyed(store, 2);
          assert.equal(await store.deleteRecord(rec.account), false);
          assert.equal((await store.status(rec.account, 10)).destroyed, false);
          // No longer exhausted: a fresh phantom with the default limit.
          const r = charged(await store.chargeGuess(rec.account, 5));
          assert.equal(r.record, null);
          assert.equal(r.guessesUsed, 1);
          assert.equal(r.guessLimit, 5);
        });

        it("returns false for a phantom, and removes it: a new phantom starts fresh", async () => {
          const account = randomAccount();
          await chargeN(store, account, 3, 3);
          assert.deepEqual(await store.chargeGuess(account, 3), { status: "exhausted" });
          assert.equal(await store.deleteRecord(account), false);
          const r = charged(await store.chargeGuess(account, 4));
          assert.equal(r.guessesUsed, 1);
          assert.equal(r.guessLimit, 4);
        });

        // Not written in store.ts, but both stores do it and it matters: a pending login that
        // used the last guess must not revive a record deleted after it started.
        it("also drops the account's pending login states (not in store.ts yet)", async () => {
          const { rec, lastCopy } = await destroyed(store, 1);
          const s = loginState(rec.account, Date.now() + 60_000, lastCopy);
          await store.saveLoginState(s);
          await store.deleteRecord(rec.account);
          assert.equal(await store.takeLoginState(s.id, Date.now()), null);
        });

        it("a re-enrolment voids a pending last-guess login, so the old record cannot come back", async () => {
          const { lastCopy } = await destroyed(store, 2);
          const s = loginState(lastCopy.account, Date.now() + 60_000, lastCopy);
          await store.saveLoginState(s);
          const fresh = newRecord(lastCopy.account, { wrappedKey: "re-enrolled" });
          await store.putRecord(fresh);
          assert.equal(await store.takeLoginState(s.id, Date.now()), null);
          assert.equal((await store.getRecord(lastCopy.account))?.wrappedKey, "re-enrolled");
        });

        it("putRecord refuses a guess limit below 1", async () => {
          await assert.rejects(
            store.putRecord(newRecord(randomAccount(), { guessLimit: 0 })),
            RangeError,
          );
        });
      });

      describe("login states", () => {
        it("saveLoginState / takeLoginState round-trip, once", async () => {
          const now = Date.now();
          const s = loginState(randomAccount(), now + 60_000);
          await store.saveLoginState(s);
          assert.deepEqual(await store.takeLoginState(s.id, now), s);
          assert.equal(await store.takeLoginState(s.id, now), null, "a second take gets nothing");
        });

        it("round-trips lastRecord (the destroyed record's only copy)", async () => {
          const { lastCopy } = await destroyed(store, 2);
          const now = Date.now();
          const s = loginState(lastCopy.account, now + 60_000, lastCopy);
          await store.saveLoginState(s);
          const got = await store.takeLoginState(s.id, now);
          assert.deepEqual(got, s);
          // What the server does next with it.
          await store.reviveRecord(got!.lastRecord!);
          assert.equal((await store.getRecord(lastCopy.account))?.wrappedKey, lastCopy.wrappedKey);
        });

        it("takeLoginState is null for an unknown id", async () => {
          assert.equal(await store.takeLoginState(randomUUID(), Date.now()), null);
        });

        it("takeLoginState is null once expired", async () => {
          const expiresAt = Date.now() + 1000;
          const s = loginState(randomAccount(), expiresAt);
          await store.saveLoginState(s);
          const other = loginState(randomAccount(), expiresAt);
          await store.saveLoginState(other);
          assert.equal(await store.takeLoginState(s.id, expiresAt + 1), null);
          // Expiry is judged at the `now` given, not the clock.
          assert.deepEqual(await store.takeLoginState(other.id, expiresAt - 1), other);
        });

        it("two concurrent takes of one state: exactly one gets it", async () => {
          const now = Date.now();
          const s = loginState(randomAccount(), now + 60_000);
          await store.saveLoginState(s);
          const got = await Promise.all([
            store.takeLoginState(s.id, now),
            store.takeLoginState(s.id, now),
          ]);
          assert.equal(got.filter((g) => g !== null).length, 1);
        });

        it("purgeExpired deletes the expired states and counts them", async () => {
          const base = Date.now();
          const states = [100, 200, 300, 400].map((d) => loginState(randomAccount(), base + d));
          for (const s of states) await store.saveLoginState(s);
          assert.equal(await store.purgeExpired(base + 250), 2);
          assert.equal(await store.purgeExpired(base + 250), 0, "nothing left to purge");
          assert.equal(await store.takeLoginState(states[0].id, base), null, "purged");
          assert.deepEqual(await store.takeLoginState(states[2].id, base + 250), states[2]);
          assert.equal(await store.purgeExpired(base + 1000), 1);
        });
      });

      describe("concurrency: concurrent charges never exceed the limit", () => {
        it("200 parallel charges on a live record with limit 10 charge exactly 10", async () => {
          const rec = newRecord(randomAccount(), { guessLimit: 10 });
          await store.putRecord(rec);
          const results = await Promise.all(
            Array.from({ length: 200 }, () => store.chargeGuess(rec.account, 10)),
          );
          assertConcurrentCharges(results, 200, 10);
          for (const r of results) if (r.status === "charged") assert.ok(r.record);
          assert.equal(await store.getRecord(rec.account), null);
          assert.deepEqual(await store.status(rec.account, 10), {
            exists: false,
            destroyed: true,
            guessesUsed: 10,
            guessLimit: 10,
          });
        });

        it("200 parallel charges on a phantom with defaultLimit 10 charge exactly 10", async () => {
          const account = randomAccount();
          const results = await Promise.all(
            Array.from({ length: 200 }, () => store.chargeGuess(account, 10)),
          );
          assertConcurrentCharges(results, 200, 10);
          for (const r of results) if (r.status === "charged") assert.equal(r.record, null);
          assert.equal(await store.getRecord(account), null);
          assert.deepEqual(await store.status(account, 10), {
            exists: false,
            destroyed: true,
            guessesUsed: 10,
            guessLimit: 10,
          });
          assert.deepEqual(await store.chargeGuess(account, 10), { status: "exhausted" });
        });

        it("50 parallel charges over 5 accounts stay independent", async () => {
          const accounts = Array.from({ length: 5 }, () => randomAccount());
          // Two live records and three phantoms, none reaching its limit.
          for (const account of accounts.slice(0, 2)) {
            await store.putRecord(newRecord(account, { guessLimit: 20 }));
          }
          const jobs = Array.from({ length: 50 }, (_, i) => accounts[i % 5]);
          const results = await Promise.all(jobs.map((a) => store.chargeGuess(a, 20)));
          for (const account of accounts) {
            const mine = results.filter((_, i) => jobs[i] === account).map(charged);
            assert.deepEqual(
              mine.map((r) => r.guessesUsed).sort((a, b) => a - b),
              Array.from({ length: 10 }, (_, i) => i + 1),
              account,
            );
            assert.ok(mine.every((r) => !r.last && r.guessLimit === 20));
          }
          for (const account of accounts.slice(0, 2)) {
            assert.equal((await store.getRecord(account))?.guessesUsed, 10);
          }
          for (const account of accounts.slice(2)) {
            assert.equal(charged(await store.chargeGuess(account, 20)).guessesUsed, 11);
          }
        });
      });
    });
  });
}
