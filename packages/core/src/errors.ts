/**
 * Locket's typed errors. Every error a user can meet carries a stable `code` (for scripts and
 * SDK callers) and the CLI exit status it maps to. Messages are lowercase, say what was expected,
 * and never contain a secret.
 */

/** Stable error codes. Adding one is an API change; renaming one is a breaking change. */
export type ErrorCode =
  | "usage"
  | "wrong_key"
  | "wrong_password"
  | "guess_limit"
  | "integrity"
  | "unsupported_version"
  | "storage"
  | "not_found"
  | "already_exists"
  | "locked"
  | "unauthorized"
  | "rate_limited"
  | "rollback"
  | "failure";

/** CLI exit status for each code (SPEC.md "Exit status"). */
export const EXIT_STATUS: Record<ErrorCode, number> = {
  usage: 2,
  wrong_key: 4,
  wrong_password: 4,
  guess_limit: 5,
  integrity: 3,
  rollback: 3,
  unsupported_version: 1,
  storage: 1,
  not_found: 1,
  already_exists: 1,
  locked: 1,
  unauthorized: 1,
  rate_limited: 1,
  failure: 1,
};

/** Base class of every error Locket throws on purpose. */
export class LocketError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "LocketError";
    this.code = code;
  }
  /** The CLI exit status for this error. */
  get exitStatus(): number {
    return EXIT_STATUS[this.code];
  }
}

/** The caller asked for something malformed (bad flag, bad argument, missing option). */
export class UsageError extends LocketError {
  constructor(message: string) {
    super("usage", message);
    this.name = "UsageError";
  }
}

/** The key (root key, recovery key) does not open this repository. */
export class WrongKeyError extends LocketError {
  constructor(message: string) {
    super("wrong_key", message);
    this.name = "WrongKeyError";
  }
}

/** The password is wrong. `guessesRemaining` says how many tries the vault still allows. */
export class WrongPasswordError extends LocketError {
  readonly guessesRemaining: number;
  constructor(guessesRemaining: number) {
    super(
      "wrong_password",
      guessesRemaining > 0
        ? `wrong password; ${guessesRemaining} ${guessesRemaining === 1 ? "guess" : "guesses"} left before this backup's password is locked for good`
        : "wrong password; that was the last guess: this backup's password can no longer be tried; use the recovery key",
    );
    this.name = "WrongPasswordError";
    this.guessesRemaining = guessesRemaining;
  }
}

/** Every guess is spent: the vault destroyed the record, and only the recovery key is left. */
export class GuessLimitError extends LocketError {
  constructor() {
    super("guess_limit", "this backup's password can no longer be tried; use the recovery key");
    this.name = "GuessLimitError";
  }
}

/**
 * Stored data is damaged, truncated, swapped or forged. `object` names the damaged object
 * (for example `data/3f/3f2a…`), so an operator knows what to look at.
 */
export class IntegrityError extends LocketError {
  readonly object: string | undefined;
  constructor(message: string, object?: string, options?: { cause?: unknown }) {
    super("integrity", object ? `${object}: ${message}` : message, options);
    this.name = "IntegrityError";
    this.object = object;
  }
}

/** Storage serves an older history than this device has already seen. */
export class RollbackError extends LocketError {
  constructor(message: string) {
    super("rollback", message);
    this.name = "RollbackError";
  }
}

/** An object declares a format version this build does not understand. */
export class UnsupportedVersionError extends LocketError {
  constructor(message: string) {
    super("unsupported_version", message);
    this.name = "UnsupportedVersionError";
  }
}

/** The storage backend failed (I/O error, permission, network). */
export class StorageError extends LocketError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("storage", message, options);
    this.name = "StorageError";
  }
}

/**
 * A read of a range that an object does not hold (past its end, or malformed). Still a storage
 * error (code "storage"); a reader that took the range from an authenticated index treats it as
 * a truncated object, that is damage.
 */
export class OutOfRangeError extends StorageError {
  constructor(message: string) {
    super(message);
    this.name = "OutOfRangeError";
  }
}

/** A named thing (object, snapshot, repository, path) does not exist. */
export class NotFoundError extends LocketError {
  constructor(message: string) {
    super("not_found", message);
    this.name = "NotFoundError";
  }
}

/** Something that must be created fresh already exists (a repository, a restore target). */
export class AlreadyExistsError extends LocketError {
  constructor(message: string) {
    super("already_exists", message);
    this.name = "AlreadyExistsError";
  }
}
