import { LocketError } from "@locket/core";
import { importSPKI, type JWTPayload, jwtVerify, SignJWT } from "jose";

/**
 * Who may act on a vault record is decided by an account token that the app's own backend
 * issues (as Juicebox realms do): a signed JWT whose `sub` is the account, whose `aud` names this
 * vault, with a short `exp`. A self-hosted vault can issue its own (`locket vault token`).
 */

export interface AuthConfig {
  /** HS256 shared secret (at least 32 bytes). */
  readonly hs256Secret?: Uint8Array;
  /** EdDSA or ES256 public keys (PEM, SPKI) of the app backend. */
  readonly publicKeysPem?: readonly string[];
  /** Required `aud` (default "locket-vault"). */
  readonly audience?: string;
  /** Longest accepted token lifetime (`exp - iat`, or `exp - now`), in seconds (default 3600). */
  readonly maxLifetimeSeconds?: number;
}

/** The caller, once its token verifies. */
export interface Caller {
  readonly account: string;
}

/** An HTTP-level error with a stable code, turned into a JSON body by the app. */
export class HttpError extends LocketError {
  readonly status: number;
  constructor(status: number, code: LocketError["code"], message: string) {
    super(code, message);
    this.name = "HttpError";
    this.status = status;
  }
}

export const DEFAULT_AUDIENCE = "locket-vault";

/** Builds the verifier; throws at start-up if no key is configured. */
export async function createVerifier(
  config: AuthConfig,
): Promise<(authorization: string | undefined) => Promise<Caller>> {
  const audience = config.audience ?? DEFAULT_AUDIENCE;
  const maxLifetime = config.maxLifetimeSeconds ?? 3600;
  const keys: { key: Uint8Array | CryptoKey; algorithms: string[] }[] = [];
  if (config.hs256Secret) {
    if (config.hs256Secret.length < 32)
      throw new RangeError("the HS256 token secret must be at least 32 bytes");
    keys.push({ key: config.hs256Secret, algorithms: ["HS256"] });
  }
  for (const pem of config.publicKeysPem ?? []) {
    let imported: CryptoKey | undefined;
    for (const alg of ["EdDSA", "ES256"]) {
      try {
        imported = (await importSPKI(pem, alg)) as CryptoKey;
        keys.push({ key: imported, algorithms: [alg] });
        break;
      } catch {
        // Try the next algorithm.
      }
    }
    if (!imported)
      throw new RangeError("a token public key is neither an Ed25519 nor a P-256 SPKI PEM");
  }
  if (keys.length === 0)
    throw new RangeError("no token key configured: set an HS256 secret or a public key");

  return async (authorization) => {
    const m = /^Bearer ([A-Za-z0-9_.-]+)$/.exec(authorization ?? "");
    if (!m) throw new HttpError(401, "unauthorized", "missing bearer token");
    let payload: JWTPayload | undefined;
    for (const { key, algorithms } of keys) {
      try {
        ({ payload } = await jwtVerify(m[1], key, {
          audience,
          algorithms,
          requiredClaims: ["sub", "exp"],
        }));
        break;
      } catch {
        // Try the next key; a token that no key verifies is refused below.
      }
    }
    if (!payload?.sub)
      throw new HttpError(401, "unauthorized", "invalid, expired or foreign token");
    const now = Math.floor(Date.now() / 1000);
    const lifetime = payload.exp! - (payload.iat ?? now);
    if (lifetime > maxLifetime || payload.exp! - now > maxLifetime) {
      throw new HttpError(401, "unauthorized", `token lifetime exceeds ${maxLifetime} s`);
    }
    if (payload.sub.length > 256) throw new HttpError(401, "unauthorized", "account name too long");
    return { account: payload.sub };
  };
}

/** Issues an HS256 token for `account` (for self-hosters and tests). */
export function issueToken(
  secret: Uint8Array,
  account: string,
  opts: { audience?: string; ttlSeconds?: number } = {},
): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(account)
    .setAudience(opts.audience ?? DEFAULT_AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(`${opts.ttlSeconds ?? 900}s`)
    .sign(secret);
}
