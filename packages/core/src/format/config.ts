import { fromHex, fromUtf8, toHex, utf8 } from "../bytes.ts";
import { IntegrityError, UnsupportedVersionError } from "../errors.ts";

/**
 * The repository config (SPEC.md "Config"): plaintext UTF-8 JSON holding the format version,
 * a random repository ID and the key check value. It holds no secret: the key check is an HKDF
 * output that commits to the root key without revealing anything about it.
 */

export const REPOSITORY_VERSION = 1;

export interface RepoConfig {
  readonly version: number;
  /** 16 random bytes, hex; names this repository in device state. */
  readonly id: string;
  /** Key check value (hex of 32 bytes). */
  readonly keyCheck: string;
  readonly createdAt: string;
}

/** Encodes the config object. */
export function encodeConfig(c: RepoConfig): Uint8Array {
  return utf8(`${JSON.stringify({ locket: "repository", ...c }, null, 2)}\n`);
}

/**
 * Parses and validates the config.
 * @throws {IntegrityError} when it is not a Locket config.
 * @throws {UnsupportedVersionError} for a newer format version.
 */
export function decodeConfig(bytes: Uint8Array): RepoConfig & { keyCheckBytes: Uint8Array } {
  let c: Record<string, unknown>;
  try {
    c = JSON.parse(fromUtf8(bytes));
  } catch {
    throw new IntegrityError("repository config is not valid JSON", "config");
  }
  if (!c || c.locket !== "repository")
    throw new IntegrityError("not a Locket repository config", "config");
  if (c.version !== REPOSITORY_VERSION) {
    throw new UnsupportedVersionError(
      `repository format version ${String(c.version)} is not supported by this build (supports ${REPOSITORY_VERSION})`,
    );
  }
  if (typeof c.id !== "string" || !/^[0-9a-f]{32}$/.test(c.id))
    throw new IntegrityError("config id is malformed", "config");
  if (typeof c.keyCheck !== "string" || !/^[0-9a-f]{64}$/.test(c.keyCheck)) {
    throw new IntegrityError("config key check is malformed", "config");
  }
  return {
    version: c.version,
    id: c.id,
    keyCheck: c.keyCheck,
    createdAt: String(c.createdAt ?? ""),
    keyCheckBytes: fromHex(c.keyCheck),
  };
}

/** A new repository ID. */
export function newRepoId(random: (n: number) => Uint8Array): string {
  return toHex(random(16));
}
