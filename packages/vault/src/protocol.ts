import {
  fromHex,
  fromUtf8,
  open,
  type Primitives,
  seal,
  toHex,
  UsageError,
  utf8,
} from "@locket/core";

/**
 * What the client stores in the vault besides the OPAQUE record (SPEC.md "Key vault"): the
 * root key sealed under a key only the password can produce.
 *
 *   wrap key    = HKDF-SHA256(ikm = OPAQUE export key, salt = "", info = "locket/v1/vault-wrap", 32)
 *   wrapped key = nonce || AES-256-GCM(wrap key, nonce, envelope, aad = "locket/v1/vault-wrapped-key")
 *   envelope    = UTF-8 JSON {"version": 1, "rootKey": hex, "repoId": hex}
 *
 * The export key never leaves the client and the vault never learns it, so the vault can never
 * unwrap the root key.
 */

export const WRAP_LABEL = "locket/v1/vault-wrap";
export const WRAP_AAD = utf8("locket/v1/vault-wrapped-key");

/** Argon2id parameters for OPAQUE's key stretching, as @serenity-kit/opaque takes them. */
export type KeyStretching = {
  "argon2id-custom": { memory: number; iterations: number; parallelism: number };
};

/**
 * Default key stretching: Argon2id with 64 MiB, 3 passes, 4 lanes (RFC 9106's memory-constrained
 * recommendation; about a second on a phone). Signal's PIN uses 16 MiB and 32 passes.
 */
export const DEFAULT_KEY_STRETCHING: KeyStretching = {
  "argon2id-custom": { memory: 65536, iterations: 3, parallelism: 4 },
};

/**
 * Parses key stretching parameters handed back by a vault, refusing values that would make the
 * client hang or exhaust memory (a hostile vault could otherwise ask for 4 GiB).
 * @throws {RangeError} when malformed or out of bounds.
 */
export function parseKeyStretching(json: string): KeyStretching {
  const v = JSON.parse(json) as KeyStretching;
  const a = v?.["argon2id-custom"];
  if (
    !a ||
    !Number.isInteger(a.memory) ||
    !Number.isInteger(a.iterations) ||
    !Number.isInteger(a.parallelism) ||
    a.memory < 1024 ||
    a.memory > 1024 * 1024 ||
    a.iterations < 1 ||
    a.iterations > 64 ||
    a.parallelism < 1 ||
    a.parallelism > 16
  ) {
    throw new RangeError("key stretching parameters are malformed or out of bounds");
  }
  return {
    "argon2id-custom": { memory: a.memory, iterations: a.iterations, parallelism: a.parallelism },
  };
}

/** The envelope sealed in the vault. */
export interface Envelope {
  readonly rootKey: Uint8Array;
  readonly repoId: string;
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** base64url without padding. */
export function toBase64Url(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 3) {
    const n = (b[i] << 16) | ((b[i + 1] ?? 0) << 8) | (b[i + 2] ?? 0);
    const chars = Math.min(4, Math.ceil(((b.length - i) * 8) / 6));
    for (let j = 0; j < chars; j++) s += B64[(n >> (18 - 6 * j)) & 63];
  }
  return s;
}

/** Parses base64url (padding optional). @throws {RangeError} on a bad character. */
export function fromBase64Url(s: string): Uint8Array {
  const clean = s.replace(/=+$/, "");
  const out: number[] = [];
  let acc = 0;
  let bits = 0;
  for (const ch of clean) {
    const v = B64.indexOf(ch);
    if (v < 0) throw new RangeError("bad base64url character");
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push((acc >> bits) & 255);
    }
  }
  return Uint8Array.from(out);
}

async function wrapKey(p: Primitives, exportKey: string) {
  return p.aesGcmKey(
    await p.hkdfSha256(fromBase64Url(exportKey), new Uint8Array(0), utf8(WRAP_LABEL), 32),
  );
}

/**
 * Checks that `env` is what `unwrapRootKey` accepts: a 32-byte root key and a repository ID of
 * 32 hex digits (`Repository.config.id`). A record sealing anything else could never be recovered.
 * @throws {UsageError} when it is not.
 */
export function checkEnvelope(env: Envelope): void {
  if (!(env?.rootKey instanceof Uint8Array) || env.rootKey.length !== 32) {
    throw new UsageError("the root key to enrol must be 32 bytes");
  }
  if (typeof env.repoId !== "string" || !/^[0-9a-f]{32}$/.test(env.repoId)) {
    const got = JSON.stringify(String(env.repoId)).slice(0, 80);
    throw new UsageError(
      `the repository ID to enrol must be 32 lowercase hex digits (Repository.config.id), got ${got}`,
    );
  }
}

/**
 * Seals the envelope under the export key.
 * @throws {UsageError} when the envelope fails checkEnvelope.
 */
export async function wrapRootKey(
  p: Primitives,
  exportKey: string,
  env: Envelope,
): Promise<string> {
  checkEnvelope(env);
  const plain = utf8(
    JSON.stringify({ version: 1, rootKey: toHex(env.rootKey), repoId: env.repoId }),
  );
  return toBase64Url(await seal(p, await wrapKey(p, exportKey), plain, WRAP_AAD));
}

/**
 * Opens the envelope. Returns null when it does not authenticate under this export key.
 */
export async function unwrapRootKey(
  p: Primitives,
  exportKey: string,
  wrapped: string,
): Promise<Envelope | null> {
  const plain = await open(await wrapKey(p, exportKey), fromBase64Url(wrapped), WRAP_AAD);
  if (!plain) return null;
  const v = JSON.parse(fromUtf8(plain)) as { version: number; rootKey: string; repoId: string };
  if (v.version !== 1 || !/^[0-9a-f]{64}$/.test(v.rootKey) || !/^[0-9a-f]{32}$/.test(v.repoId))
    return null;
  return { rootKey: fromHex(v.rootKey), repoId: v.repoId };
}
