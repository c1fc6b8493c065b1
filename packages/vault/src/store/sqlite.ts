import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { DatabaseSync } from "node:sqlite";
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
 * Migrations, applied in order; `schema_version` holds how many ran. Never edit one that has
 * shipped: add a new one.
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
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL
   );
   CREATE TABLE login_states (
     id TEXT PRIMARY KEY,
     account TEXT NOT NULL,
     server_login_state TEXT NOT NULL,
     expires_at INTEGER NOT NULL,
     last_record TEXT
   );
   CREATE INDEX login_states_expiry ON login_states (expires_at);`,
];

/** Insert or replace with a live record (new enrolments get a fresh creation time). */
const UPSERT_LIVE = `INSERT INTO records (account, state, registration_record, wrapped_key, key_stretching, guess_limit, guesses_used, created_at, updated_at)
  VALUES (?, 'live', ?, ?, ?, ?, 0, ?, ?)
  ON CONFLICT (account) DO UPDATE SET state = 'live', registration_record = excluded.registration_record,
    wrapped_key = excluded.wrapped_key, key_stretching = excluded.key_stretching,
    guess_limit = excluded.guess_limit, guesses_used = 0, updated_at = excluded.updated_at,
    created_at = CASE WHEN records.state = 'live' THEN records.created_at ELSE excluded.created_at END`;

/**
 * The embedded default: one SQLite file through node:sqlite, in WAL mode with `synchronous=FULL`
 * so that a charged guess survives a power cut. One connection, and every write in a
 * `BEGIN IMMEDIATE` transaction, so charges are serialized even across processes that share
 * the file.
 */
export class SqliteVaultStore implements VaultStore {
  private readonly db: DatabaseSync;

  /** Opens (creating when missing) the database at `path`, or in memory for ":memory:". */
  constructor(path: string) {
    if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
    this.db = new DatabaseSync(path, { timeout: 5000 });
    this.db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;");
  }

  private tx<T>(fn: () => T): T {
    this.db.exec("BEGIN IMMEDIATE");
    try {
      const out = fn();
      this.db.exec("COMMIT");
      return out;
    } catch (err) {
      this.db.exec("ROLLBACK");
      throw err;
    }
  }

  private row(account: string): RecordRow | undefined {
    return this.db.prepare("SELECT * FROM records WHERE account = ?").get(account) as
      | RecordRow
      | undefined;
  }

  async migrate(): Promise<void> {
    this.db.exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
    this.tx(() => {
      const v = this.db.prepare("SELECT version FROM schema_version").get() as
        | { version: number }
        | undefined;
      const current = v?.version ?? 0;
      for (let i = current; i < MIGRATIONS.length; i++) this.db.exec(MIGRATIONS[i]);
      if (!v)
        this.db.prepare("INSERT INTO schema_version (version) VALUES (?)").run(MIGRATIONS.length);
      else this.db.prepare("UPDATE schema_version SET version = ?").run(MIGRATIONS.length);
    });
  }

  async putRecord(r: NewRecord): Promise<void> {
    assertGuessLimit(r.guessLimit);
    const now = Date.now();
    this.tx(() => {
      // A new enrolment voids pending logins, so none can revive an older record later.
      this.db.prepare("DELETE FROM login_states WHERE account = ?").run(r.account);
      this.db
        .prepare(UPSERT_LIVE)
        .run(
          r.account,
          r.registrationRecord,
          r.wrappedKey,
          r.keyStretching,
          r.guessLimit,
          now,
          now,
        );
    });
  }

  async getRecord(account: string): Promise<VaultRecord | null> {
    const r = this.row(account);
    return r && r.state === "live" ? recordFromRow(r) : null;
  }

  async status(account: string, defaultLimit: number): Promise<RecordStatus> {
    const r = this.row(account);
    return statusFromRow(r, defaultLimit);
  }

  async deleteRecord(account: string): Promise<boolean> {
    return this.tx(() => {
      const r = this.row(account);
      this.db.prepare("DELETE FROM records WHERE account = ?").run(account);
      this.db.prepare("DELETE FROM login_states WHERE account = ?").run(account);
      return r?.state === "live";
    });
  }

  async chargeGuess(account: string, defaultLimit: number): Promise<ChargeResult> {
    return this.tx((): ChargeResult => {
      const now = Date.now();
      let r = this.row(account);
      if (!r) {
        this.db
          .prepare(
            "INSERT INTO records (account, state, guess_limit, guesses_used, created_at, updated_at) VALUES (?, 'phantom', ?, 0, ?, ?)",
          )
          .run(account, defaultLimit, now, now);
        r = this.row(account)!;
      }
      const decision = decideCharge(r);
      if (decision.exhausted) return { status: "exhausted" };
      const { used, last } = decision;
      if (last) {
        // The last guess destroys the record now; only the login state keeps a copy, to put it
        // back if (and only if) this very login finishes verified.
        this.db
          .prepare(
            `UPDATE records SET state = 'destroyed', registration_record = NULL, wrapped_key = NULL,
               key_stretching = NULL, guesses_used = ?, updated_at = ? WHERE account = ?`,
          )
          .run(used, now, account);
      } else {
        this.db
          .prepare("UPDATE records SET guesses_used = ?, updated_at = ? WHERE account = ?")
          .run(used, now, account);
      }
      return chargedResult(r, used, last, now);
    });
  }

  async resetGuesses(account: string): Promise<void> {
    this.db
      .prepare(
        "UPDATE records SET guesses_used = 0, updated_at = ? WHERE account = ? AND state = 'live'",
      )
      .run(Date.now(), account);
  }

  async reviveRecord(rec: VaultRecord): Promise<void> {
    this.tx(() => {
      if (this.row(rec.account)?.state === "live") return;
      const now = Date.now();
      this.db
        .prepare(UPSERT_LIVE)
        .run(
          rec.account,
          rec.registrationRecord,
          rec.wrappedKey,
          rec.keyStretching,
          rec.guessLimit,
          rec.createdAt,
          now,
        );
    });
  }

  async saveLoginState(s: LoginState): Promise<void> {
    this.db
      .prepare(
        "INSERT INTO login_states (id, account, server_login_state, expires_at, last_record) VALUES (?, ?, ?, ?, ?)",
      )
      .run(
        s.id,
        s.account,
        s.serverLoginState,
        s.expiresAt,
        s.lastRecord ? JSON.stringify(s.lastRecord) : null,
      );
  }

  async takeLoginState(id: string, now: number): Promise<LoginState | null> {
    return this.tx(() => {
      const r = this.db.prepare("SELECT * FROM login_states WHERE id = ?").get(id) as
        | {
            id: string;
            account: string;
            server_login_state: string;
            expires_at: number;
            last_record: string | null;
          }
        | undefined;
      if (!r) return null;
      this.db.prepare("DELETE FROM login_states WHERE id = ?").run(id);
      if (r.expires_at <= now) return null;
      return {
        id: r.id,
        account: r.account,
        serverLoginState: r.server_login_state,
        expiresAt: r.expires_at,
        lastRecord: r.last_record ? (JSON.parse(r.last_record) as VaultRecord) : null,
      };
    });
  }

  async purgeExpired(now: number): Promise<number> {
    return Number(
      this.db.prepare("DELETE FROM login_states WHERE expires_at <= ?").run(now).changes,
    );
  }

  async close(): Promise<void> {
    if (this.db.isOpen) this.db.close();
  }
}
