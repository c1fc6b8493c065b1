import pg from "pg";
import {
  assertGuessLimit,
  chargedResult,
  decideCharge,
  type RecordRow,
  recordFromRow,
  statusFromRow,
} from "./rows.ts";
import type {
  ChargeResult,
  LoginState,
  NewRecord,
  RecordStatus,
  VaultRecord,
  VaultStore,
} from "./store.ts";

/**
 * Migrations, applied in order; `schema_version` holds how many ran. The same schema as
 * `sqlite.ts`, with BIGINT for millisecond times. Never edit one that has shipped: add a new one.
 */
const MIGRATIONS = [
  `CREATE TABLE records (
     account TEXT PRIMARY KEY,
     state TEXT NOT NULL CHECK (state IN ('live', 'phantom', 'destroyed')),
     registration_record TEXT,
     wrapped_key TEXT,
     key_stretching TEXT,
     guess_limit INTEGER NOT NULL,
     guesses_used INTEGER NOT NULL DEFAULT 0,
     created_at BIGINT NOT NULL,
     updated_at BIGINT NOT NULL
   );
   CREATE TABLE login_states (
     id TEXT PRIMARY KEY,
     account TEXT NOT NULL,
     server_login_state TEXT NOT NULL,
     expires_at BIGINT NOT NULL,
     last_record TEXT
   );
   CREATE INDEX login_states_expiry ON login_states (expires_at);`,
];

/**
 * Key of the advisory lock that serializes migrations, so that two servers starting against the
 * same database do not both run `CREATE TABLE` ("Locket" in ASCII). Advisory locks are scoped to
 * the database, so other databases on the cluster are unaffected.
 */
const MIGRATION_LOCK = "83755231306100";

/** How often `chargeGuess` retries when a concurrent `deleteRecord` removes the row it created. */
const CHARGE_ATTEMPTS = 3;

/** A `records` row as node-postgres returns it: BIGINT columns arrive as strings. */
interface LoginRow {
  id: string;
  account: string;
  server_login_state: string;
  expires_at: string;
  last_record: string | null;
}

const UPSERT_LIVE = `INSERT INTO records (account, state, registration_record, wrapped_key, key_stretching, guess_limit, guesses_used, created_at, updated_at)
  VALUES ($1, 'live', $2, $3, $4, $5, 0, $6, $7)
  ON CONFLICT (account) DO UPDATE SET state = 'live', registration_record = excluded.registration_record,
    wrapped_key = excluded.wrapped_key, key_stretching = excluded.key_stretching,
    guess_limit = excluded.guess_limit, guesses_used = 0, updated_at = excluded.updated_at,
    created_at = CASE WHEN records.state = 'live' THEN records.created_at ELSE excluded.created_at END`;

/**
 * PostgreSQL, for servers that run several instances against one database. Every write that
 * reads before it writes does so under a row lock (`SELECT … FOR UPDATE`) or in one statement, so
 * guesses are charged exactly once across connections and servers. Commits use the server's
 * `synchronous_commit` (on by default): a charge is flushed to the WAL before `chargeGuess`
 * resolves. Do not run it against a database configured with `synchronous_commit = off`.
 */
export class PostgresVaultStore implements VaultStore {
  private readonly pool: pg.Pool;
  private closed = false;

  /**
   * Creates a pool of up to `max` connections to `connectionString` (`postgres://…`). Connects
   * lazily: a bad address or credentials surface on the first call, not here.
   */
  constructor(connectionString: string, options: { max?: number } = {}) {
    this.pool = new pg.Pool({ connectionString, max: options.max ?? 10 });
    // An idle connection that dies (server restart, network) is reported here; without a
    // listener the pool's "error" event would crash the process. The next query on the pool
    // opens a new connection or fails with its own error, so there is nothing else to do.
    this.pool.on("error", () => {});
  }

  /**
   * Runs `fn` in a transaction on one connection, committing when it resolves and rolling back
   * when it throws.
   * @throws whatever `fn` throws, or the connection's error.
   */
  private async tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      const out = await fn(client);
      await client.query("COMMIT");
      client.release();
      return out;
    } catch (err) {
      try {
        await client.query("ROLLBACK");
        client.release();
      } catch (rollbackErr) {
        // The connection is broken: destroy it instead of returning it to the pool.
        client.release(rollbackErr as Error);
      }
      throw err;
    }
  }

  private async row(account: string): Promise<RecordRow | undefined> {
    const res = await this.pool.query<RecordRow>("SELECT * FROM records WHERE account = $1", [
      account,
    ]);
    return res.rows[0];
  }

  /**
   * Creates or upgrades the schema. Safe to call concurrently from several servers: the
   * migrations run in one transaction under an advisory lock.
   * @throws pg.DatabaseError when a migration fails (nothing is applied then).
   */
  async migrate(): Promise<void> {
    await this.tx(async (c) => {
      await c.query(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`);
      // Inside the lock: concurrent `CREATE TABLE IF NOT EXISTS` can still fail on a unique
      // violation in the catalog.
      await c.query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
      const v = await c.query<{ version: number }>("SELECT version FROM schema_version");
      const current = v.rows[0]?.version ?? 0;
      for (let i = current; i < MIGRATIONS.length; i++) await c.query(MIGRATIONS[i]);
      if (v.rows.length === 0) {
        await c.query("INSERT INTO schema_version (version) VALUES ($1)", [MIGRATIONS.length]);
      } else if (current < MIGRATIONS.length) {
        await c.query("UPDATE schema_version SET version = $1", [MIGRATIONS.length]);
      }
    });
  }

  /** @throws pg.DatabaseError (connection, or missing schema). */
  async putRecord(r: NewRecord): Promise<void> {
    assertGuessLimit(r.guessLimit);
    const now = Date.now();
    await this.tx(async (c) => {
      // A new enrolment voids pending logins, so none can revive an older record later.
      await c.query("DELETE FROM login_states WHERE account = $1", [r.account]);
      await c.query(UPSERT_LIVE, [
        r.account,
        r.registrationRecord,
        r.wrappedKey,
        r.keyStretching,
        r.guessLimit,
        now,
        now,
      ]);
    });
  }

  /** @throws pg.DatabaseError (connection, or missing schema). */
  async getRecord(account: string): Promise<VaultRecord | null> {
    const r = await this.row(account);
    return r && r.state === "live" ? recordFromRow(r) : null;
  }

  /** @throws pg.DatabaseError (connection, or missing schema). */
  async status(account: string, defaultLimit: number): Promise<RecordStatus> {
    const r = await this.row(account);
    return statusFromRow(r, defaultLimit);
  }

  /**
   * Also deletes the account's pending login states, as `sqlite.ts` does: otherwise a login that
   * used the last guess could revive the deleted record when it finishes.
   * @throws pg.DatabaseError (connection, or missing schema).
   */
  async deleteRecord(account: string): Promise<boolean> {
    return this.tx(async (c) => {
      const res = await c.query<{ state: RecordRow["state"] }>(
        "DELETE FROM records WHERE account = $1 RETURNING state",
        [account],
      );
      await c.query("DELETE FROM login_states WHERE account = $1", [account]);
      return res.rows[0]?.state === "live";
    });
  }

  /**
   * One transaction: create the phantom row if there is none (a no-op otherwise, waiting for a
   * concurrent insert to commit), lock the row, then charge it. The row lock serializes
   * concurrent charges, and each sees the count the previous one committed.
   * @throws pg.DatabaseError (connection, or missing schema); nothing is charged then.
   */
  async chargeGuess(account: string, defaultLimit: number): Promise<ChargeResult> {
    return this.tx(async (c): Promise<ChargeResult> => {
      const now = Date.now();
      let r: RecordRow | undefined;
      for (let attempt = 0; attempt < CHARGE_ATTEMPTS && !r; attempt++) {
        await c.query(
          `INSERT INTO records (account, state, guess_limit, guesses_used, created_at, updated_at)
           VALUES ($1, 'phantom', $2, 0, $3, $3) ON CONFLICT (account) DO NOTHING`,
          [account, defaultLimit, now],
        );
        // Empty only if a concurrent deleteRecord removed the row between the two statements
        // (each statement takes a new snapshot under READ COMMITTED): insert again.
        r = (
          await c.query<RecordRow>("SELECT * FROM records WHERE account = $1 FOR UPDATE", [account])
        ).rows[0];
      }
      if (!r) throw new Error(`chargeGuess: row for ${account} vanished ${CHARGE_ATTEMPTS} times`);
      const decision = decideCharge(r);
      if (decision.exhausted) return { status: "exhausted" };
      const { used, last } = decision;
      if (last) {
        // The last guess destroys the record now; only the login state keeps a copy, to put it
        // back if (and only if) this very login finishes verified.
        await c.query(
          `UPDATE records SET state = 'destroyed', registration_record = NULL, wrapped_key = NULL,
             key_stretching = NULL, guesses_used = $1, updated_at = $2 WHERE account = $3`,
          [used, now, account],
        );
      } else {
        await c.query("UPDATE records SET guesses_used = $1, updated_at = $2 WHERE account = $3", [
          used,
          now,
          account,
        ]);
      }
      return chargedResult(r, used, last, now);
    });
  }

  /** @throws pg.DatabaseError (connection, or missing schema). */
  async resetGuesses(account: string): Promise<void> {
    await this.pool.query(
      "UPDATE records SET guesses_used = 0, updated_at = $1 WHERE account = $2 AND state = 'live'",
      [Date.now(), account],
    );
  }

  /**
   * One statement: the conflict clause's `WHERE` leaves a live row untouched, atomically with
   * respect to a concurrent `putRecord`.
   * @throws pg.DatabaseError (connection, or missing schema).
   */
  async reviveRecord(rec: VaultRecord): Promise<void> {
    await this.pool.query(`${UPSERT_LIVE} WHERE records.state <> 'live'`, [
      rec.account,
      rec.registrationRecord,
      rec.wrappedKey,
      rec.keyStretching,
      rec.guessLimit,
      rec.createdAt,
      Date.now(),
    ]);
  }

  /** @throws pg.DatabaseError, for instance on a duplicate `id`. */
  async saveLoginState(s: LoginState): Promise<void> {
    await this.pool.query(
      "INSERT INTO login_states (id, account, server_login_state, expires_at, last_record) VALUES ($1, $2, $3, $4, $5)",
      [
        s.id,
        s.account,
        s.serverLoginState,
        s.expiresAt,
        s.lastRecord ? JSON.stringify(s.lastRecord) : null,
      ],
    );
  }

  /**
   * One `DELETE … RETURNING`, so two concurrent takes of one id never both get it. An expired
   * state is deleted too, as in `sqlite.ts`.
   * @throws pg.DatabaseError (connection, or missing schema).
   */
  async takeLoginState(id: string, now: number): Promise<LoginState | null> {
    const res = await this.pool.query<LoginRow>(
      "DELETE FROM login_states WHERE id = $1 RETURNING *",
      [id],
    );
    const r = res.rows[0];
    if (!r) return null;
    const expiresAt = Number(r.expires_at);
    if (expiresAt <= now) return null;
    return {
      id: r.id,
      account: r.account,
      serverLoginState: r.server_login_state,
      expiresAt,
      lastRecord: r.last_record ? (JSON.parse(r.last_record) as VaultRecord) : null,
    };
  }

  /** @throws pg.DatabaseError (connection, or missing schema). */
  async purgeExpired(now: number): Promise<number> {
    const res = await this.pool.query("DELETE FROM login_states WHERE expires_at <= $1", [now]);
    return res.rowCount ?? 0;
  }

  /** Closes the pool, waiting for checked-out connections to be released. Idempotent. */
  async close(): Promise<void> {
    // pg.Pool.end() rejects when called twice.
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}
