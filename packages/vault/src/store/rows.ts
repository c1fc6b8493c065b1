import type { ChargeResult, RecordStatus, VaultRecord } from "./store.ts";

/**
 * The rules both record stores share, on the row shape both schemas have: how a row becomes a
 * record or a status, and the guess-limit decision itself. Only the SQL around them differs.
 */

/** A `records` row (PostgreSQL returns BIGINT times as strings). */
export interface RecordRow {
  account: string;
  state: "live" | "phantom" | "destroyed";
  registration_record: string | null;
  wrapped_key: string | null;
  key_stretching: string | null;
  guess_limit: number;
  guesses_used: number;
  created_at: number | string;
  updated_at: number | string;
}

/** A live row as a record. */
export function recordFromRow(r: RecordRow): VaultRecord {
  return {
    account: r.account,
    registrationRecord: r.registration_record!,
    wrappedKey: r.wrapped_key!,
    keyStretching: r.key_stretching!,
    guessLimit: r.guess_limit,
    guessesUsed: r.guesses_used,
    // Millisecond timestamps stay far below 2^53, so the conversion is exact.
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

/** Status of an account's row; a phantom counts as no record. */
export function statusFromRow(r: RecordRow | undefined, defaultLimit: number): RecordStatus {
  if (!r || r.state === "phantom") {
    return { exists: false, destroyed: false, guessesUsed: 0, guessLimit: defaultLimit };
  }
  return {
    exists: r.state === "live",
    destroyed: r.state === "destroyed",
    guessesUsed: r.guesses_used,
    guessLimit: r.guess_limit,
  };
}

/**
 * The guess-limit rule for one charge against a locked row: exhausted when every guess is
 * spent, otherwise one more guess used, which is the last when it reaches the limit (the caller
 * then destroys the record in the same transaction).
 */
export function decideCharge(
  r: RecordRow,
): { exhausted: true } | { exhausted: false; used: number; last: boolean } {
  if (r.state === "destroyed" || r.guesses_used >= r.guess_limit) return { exhausted: true };
  const used = r.guesses_used + 1;
  return { exhausted: false, used, last: used >= r.guess_limit };
}

/** The result of a charge that `decideCharge` allowed and the caller stored at `now`. */
export function chargedResult(
  r: RecordRow,
  used: number,
  last: boolean,
  now: number,
): ChargeResult {
  const record =
    r.state === "live" ? { ...recordFromRow(r), guessesUsed: used, updatedAt: now } : null;
  return { status: "charged", record, guessesUsed: used, guessLimit: r.guess_limit, last };
}

/**
 * Refuses a guess limit a record cannot have.
 * @throws {RangeError} when below 1 or not a whole number.
 */
export function assertGuessLimit(limit: number): void {
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError("guessLimit must be at least 1");
}
