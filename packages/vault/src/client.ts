import {
  GuessLimitError,
  IntegrityError,
  LocketError,
  type Primitives,
  StorageError,
  UsageError,
  WrongPasswordError,
} from "@locket/core";
import * as opaque from "@serenity-kit/opaque";
import {
  checkEnvelope,
  DEFAULT_KEY_STRETCHING,
  type Envelope,
  type KeyStretching,
  parseKeyStretching,
  unwrapRootKey,
  wrapRootKey,
} from "./protocol.ts";

/**
 * The vault client (browsers and Node): enrolls a root key under a password and recovers it.
 * The password only ever enters OPAQUE on this side; what crosses the network is OPAQUE
 * messages, the sealed root key and the caller's token.
 */

export interface VaultClientOptions {
  /** Base URL of the vault, e.g. `https://vault.example.com`. */
  readonly url: string;
  /** The account token (bearer JWT) issued by the app's backend, or a function that gets one. */
  readonly token: string | (() => Promise<string>);
  readonly primitives: Primitives;
  /** Key stretching for enrolment (recovery uses what the vault hands back). */
  readonly keyStretching?: KeyStretching;
  readonly fetch?: typeof fetch;
}

/** Status of this account's vault record. */
export interface VaultStatus {
  readonly exists: boolean;
  readonly destroyed: boolean;
  readonly guessesUsed: number;
  readonly guessLimit: number;
  readonly guessesRemaining: number;
}

export class VaultClient {
  private readonly opts: VaultClientOptions;

  constructor(opts: VaultClientOptions) {
    if (!/^https?:\/\//.test(opts.url))
      throw new UsageError(`vault URL must start with http:// or https://, got ${opts.url}`);
    this.opts = opts;
  }

  private async call(
    method: "GET" | "POST" | "DELETE",
    path: string,
    body?: unknown,
  ): Promise<Record<string, unknown>> {
    const token = typeof this.opts.token === "string" ? this.opts.token : await this.opts.token();
    const f = this.opts.fetch ?? fetch;
    let res: Response;
    try {
      res = await f(new URL(path, this.opts.url), {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body ? { "content-type": "application/json" } : {}),
        },
        body: body ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(30_000),
      });
    } catch (err) {
      throw new StorageError(
        `vault at ${this.opts.url} cannot be reached: ${(err as Error).message}`,
        { cause: err },
      );
    }
    let json: Record<string, unknown>;
    try {
      json = (await res.json()) as Record<string, unknown>;
    } catch {
      throw new StorageError(`vault answered ${res.status} without JSON`);
    }
    if (!res.ok) {
      const e = (json.error ?? {}) as { code?: string; message?: string };
      if (e.code === "guess_limit") throw new GuessLimitError();
      const code = (
        ["unauthorized", "rate_limited", "usage", "not_found"].includes(e.code ?? "")
          ? e.code
          : "storage"
      ) as LocketError["code"];
      throw new LocketError(code, `vault: ${e.message ?? `HTTP ${res.status}`}`);
    }
    return json;
  }

  /**
   * Registers `password` for this account and stores the root key sealed under it, replacing
   * any earlier record (so this is also "change password"). No backup is re-uploaded.
   */
  async enroll(
    password: string,
    envelope: Envelope,
    guessLimit?: number,
  ): Promise<{ guessLimit: number }> {
    if (password.length === 0) throw new UsageError("the password must not be empty");
    // Refuse a bad envelope before the vault replaces any earlier record.
    checkEnvelope(envelope);
    await opaque.ready;
    const keyStretching = this.opts.keyStretching ?? DEFAULT_KEY_STRETCHING;
    const { clientRegistrationState, registrationRequest } = opaque.client.startRegistration({
      password,
    });
    const { registrationResponse } = (await this.call("POST", "/v1/registration/start", {
      registrationRequest,
    })) as {
      registrationResponse: string;
    };
    const { registrationRecord, exportKey } = opaque.client.finishRegistration({
      clientRegistrationState,
      registrationResponse,
      password,
      keyStretching,
    });
    const wrappedKey = await wrapRootKey(this.opts.primitives, exportKey, envelope);
    const res = await this.call("POST", "/v1/registration/finish", {
      registrationRecord,
      wrappedKey,
      keyStretching: JSON.stringify(keyStretching),
      ...(guessLimit !== undefined ? { guessLimit } : {}),
    });
    return { guessLimit: res.guessLimit as number };
  }

  /**
   * Recovers the root key with `password`. One call spends one guess, charged by the vault
   * before it answers; a verified login resets the count.
   * @throws {WrongPasswordError} with the guesses left.
   * @throws {GuessLimitError} when every guess is spent (the record is destroyed).
   */
  async recover(password: string): Promise<Envelope> {
    // An empty password can never be right (enrolment refuses it): never spend a guess on one,
    // as a script with an unset variable would, ten times.
    if (password.length === 0) throw new UsageError("the password must not be empty");
    await opaque.ready;
    const { clientLoginState, startLoginRequest } = opaque.client.startLogin({ password });
    const start = (await this.call("POST", "/v1/recovery/start", { startLoginRequest })) as {
      loginId: string;
      loginResponse: string;
      keyStretching: string;
      guessesRemaining: number;
    };
    let keyStretching: KeyStretching;
    try {
      keyStretching = parseKeyStretching(start.keyStretching);
    } catch (err) {
      throw new IntegrityError(
        `vault sent unusable key stretching parameters: ${(err as Error).message}`,
      );
    }
    const finish = opaque.client.finishLogin({
      clientLoginState,
      loginResponse: start.loginResponse,
      password,
      keyStretching,
    });
    if (!finish) throw new WrongPasswordError(start.guessesRemaining);
    const { wrappedKey } = (await this.call("POST", "/v1/recovery/finish", {
      loginId: start.loginId,
      finishLoginRequest: finish.finishLoginRequest,
    })) as { wrappedKey: string };
    const env = await unwrapRootKey(this.opts.primitives, finish.exportKey, wrappedKey);
    if (!env)
      throw new IntegrityError(
        "the vault's sealed key does not open with this password (forged record?)",
      );
    return env;
  }

  /** This account's record status. */
  async status(): Promise<VaultStatus> {
    return (await this.call("GET", "/v1/record")) as unknown as VaultStatus;
  }

  /** Deletes this account's record; the recovery key still restores backups. */
  async disable(): Promise<boolean> {
    return (await this.call("DELETE", "/v1/record")).deleted === true;
  }
}
