/**
 * The vault's storage interface. Two implementations, node:sqlite (`sqlite.ts`) and PostgreSQL
 * (`postgres.ts`), pass one conformance suite (`test/store-conformance.ts`). The guess limit
 * lives here: `chargeGuess` is the one operation that must be atomic and durable, because the
 * server answers a login attempt only after it returns.
 */

/** What a client registers: everything needed to recover the root key with the password. */
export interface NewRecord {
  /** The account, as the `sub` of the caller's token. */
  readonly account: string;
  /** OPAQUE registration record (opaque-ke, base64url). Reveals nothing without the server key. */
  readonly registrationRecord: string;
  /** The root key sealed under a key derived from the OPAQUE export key (base64url). */
  readonly wrappedKey: string;
  /** The client's Argon2id parameters, as JSON, handed back at recovery. */
  readonly keyStretching: string;
  /** Guesses allowed before the record is destroyed. */
  readonly guessLimit: number;
}

/** A live record. */
export interface VaultRecord extends NewRecord {
  readonly guessesUsed: number;
  readonly createdAt: number;
  readonly updatedAt: number;
}

/**
 * Outcome of charging a guess.
 * - `charged`: one guess was used and is durable. `record` is null for an account that has no
 *   record (a phantom, charged exactly like a real one so that both look the same).
 *   `last` is true when this charge used the final guess: the stored record has already been
 *   destroyed, and `record` is the only copy left, for the login state.
 * - `exhausted`: every guess was used earlier; the record is gone.
 */
export type ChargeResult =
  | {
      readonly status: "charged";
      readonly record: VaultRecord | null;
      readonly guessesUsed: number;
      readonly guessLimit: number;
      readonly last: boolean;
    }
  | { readonly status: "exhausted" };

/** Server-side state of a login between its two messages. Never sent to the client. */
export interface LoginState {
  readonly id: string;
  readonly account: string;
  /** opaque-ke server login state. */
  readonly serverLoginState: string;
  /** Milliseconds since the epoch at which the state becomes void. */
  readonly expiresAt: number;
  /** On the last guess: the destroyed record, put back only if this login finishes verified. */
  readonly lastRecord: VaultRecord | null;
}

/** Record status without secrets, for `password status`. */
export interface RecordStatus {
  readonly exists: boolean;
  readonly destroyed: boolean;
  readonly guessesUsed: number;
  readonly guessLimit: number;
}

export interface VaultStore {
  /** Creates the schema when missing (idempotent migrations). */
  migrate(): Promise<void>;

  /**
   * Creates or replaces `account`'s record (registration, password change, re-enrolment after a
   * destruction), with no guesses used, and deletes the account's pending login states (so a
   * login begun against the old record can never revive it).
   * @throws {RangeError} when `guessLimit` is below 1.
   */
  putRecord(record: NewRecord): Promise<void>;

  /** The live record of `account`, or null (none, phantom or destroyed). */
  getRecord(account: string): Promise<VaultRecord | null>;

  /**
   * Status of `account`. A phantom counts as no record; a phantom whose guesses are spent shows
   * as destroyed, exactly like a real record, so status cannot tell them apart either.
   */
  status(account: string, defaultLimit: number): Promise<RecordStatus>;

  /**
   * Deletes `account`'s record, any tombstone or phantom, and its pending login states; returns
   * whether a live record existed.
   */
  deleteRecord(account: string): Promise<boolean>;

  /**
   * Atomically charges one guess against `account` and makes the charge durable before it
   * resolves. Concurrent calls never charge more than the limit in total. An account without a
   * record gets a phantom counter with `defaultLimit`, charged the same way. When a charge uses
   * the last guess, the record is destroyed (secrets erased, a tombstone kept) in the same
   * transaction.
   */
  chargeGuess(account: string, defaultLimit: number): Promise<ChargeResult>;

  /** Sets `account`'s guesses used to zero (after a verified login). No-op without a live record. */
  resetGuesses(account: string): Promise<void>;

  /**
   * Puts back a record destroyed by its last guess, after that login finished verified. Does
   * nothing if the account has a live record again (re-enrolled meanwhile).
   */
  reviveRecord(record: VaultRecord): Promise<void>;

  /** Stores a login state. */
  saveLoginState(state: LoginState): Promise<void>;

  /** Removes and returns the login state `id` if it exists and has not expired at `now`. */
  takeLoginState(id: string, now: number): Promise<LoginState | null>;

  /** Deletes expired login states; returns how many. */
  purgeExpired(now: number): Promise<number>;

  close(): Promise<void>;
}
