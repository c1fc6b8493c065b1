/**
 * S3 storage (AWS S3 and S3-compatible servers: Ceph RADOS Gateway, MinIO, ...), laid out like
 * the local backend and like restic's S3 backend, so a repository can be copied between a folder
 * and a bucket with any sync tool:
 *
 *   PREFIX/config
 *   PREFIX/data/<first two hex digits>/<name>
 *   PREFIX/index/<name>
 *   PREFIX/snapshots/<name>
 *
 * There are no temporary objects: a PutObject or a completed multipart upload appears whole or
 * not at all, and uploads in progress are never listed. This module imports nothing from node:*,
 * so it runs in browsers too (the SDK picks fetch there); see docs/operations.md for the CORS
 * policy a bucket needs for that.
 */

import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  type GetObjectCommandOutput,
  HeadObjectCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import {
  AlreadyExistsError,
  describeValue,
  isValidName,
  LocketError,
  NotFoundError,
  OBJECT_KINDS,
  type ObjectInfo,
  type ObjectKind,
  OutOfRangeError,
  type SaveOptions,
  type Storage,
  StorageError,
} from "@locket/core";

const MiB = 1024 * 1024;

/** S3's largest single PutObject. */
const MAX_PUT_BYTES = 5 * 1024 * MiB;

/** S3's smallest part (except the last) and most parts of one multipart upload. */
const MIN_PART_BYTES = 5 * MiB;
const MAX_PARTS = 10_000;

/**
 * How exclusive saves (`config`, and any `{ exclusive: true }` save) are made:
 * - `"conditional"`: PutObject with `If-None-Match: *`, atomic on the server (AWS S3 since 2024,
 *   Ceph RGW 16+, MinIO). The default.
 * - `"head-then-put"`: HeadObject, then PutObject when it is missing. For servers that ignore or
 *   reject the condition. Exclusive within this process (saves of one key are serialised), but
 *   racy between processes: two devices running `init` on one prefix at the same moment could both
 *   succeed, the later config replacing the earlier.
 */
export type S3ExclusiveMode = "conditional" | "head-then-put";

/** One HTTP request made by an S3Storage (each attempt of a retried request is one). */
export interface S3RequestEvent {
  /** The S3 operation: "PutObject", "GetObject", "UploadPart", ... */
  readonly op: string;
  /** The object key, or the listed prefix. */
  readonly key: string;
  /** 1 for the first try, 2 for the first retry, ... */
  readonly attempt: number;
  /** HTTP status, when a response arrived. */
  readonly status?: number;
  /** S3 error code or network error code, when the attempt failed. */
  readonly error?: string;
}

/** Settings of an S3Storage. Everything is optional; the defaults suit AWS S3. */
export interface S3StorageOptions {
  /**
   * Endpoint URL of an S3-compatible server (`http://127.0.0.1:7480`). Default: AWS S3 for the
   * region. When set, path-style addressing is used unless `forcePathStyle` is false.
   */
  readonly endpoint?: string;
  /** Region for signing. Default: `us-east-1`. */
  readonly region?: string;
  /**
   * Credentials or a credential provider. Default: the AWS SDK's chain (AWS_ACCESS_KEY_ID and
   * AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, SSO, web identity, instance metadata). Browsers
   * have no chain: pass them.
   */
  readonly credentials?: S3ClientConfig["credentials"];
  /** Path-style URLs (`ENDPOINT/BUCKET/KEY`). Default: true when `endpoint` is set. */
  readonly forcePathStyle?: boolean;
  /** Most requests in flight at once, over all operations of this storage. Default: 8. */
  readonly concurrency?: number;
  /** Saves larger than this many bytes use a multipart upload. Default: 64 MiB. */
  readonly multipartThreshold?: number;
  /** Part size of multipart uploads, at least 5 MiB (S3's minimum). Default: 16 MiB. */
  readonly partSize?: number;
  /**
   * Time one request may take, in milliseconds, plus one second per `minBytesPerSecond` bytes it
   * sends or receives. Default: 30 000.
   */
  readonly requestTimeoutMs?: number;
  /** The slowest transfer rate that is not taken for a stalled request. Default: 1 MiB/s. */
  readonly minBytesPerSecond?: number;
  /**
   * Tries per request for throttling (503 SlowDown, 429), server errors (5xx), timeouts and
   * network failures, with exponential backoff and full jitter between them. Default: 8.
   */
  readonly maxAttempts?: number;
  /** First backoff ceiling, in ms; it doubles per retry up to `retryMaxDelayMs`. Default: 250. */
  readonly retryBaseDelayMs?: number;
  /** Largest backoff, in ms. Default: 8000. */
  readonly retryMaxDelayMs?: number;
  /** How exclusive saves are made. Default: "conditional". */
  readonly exclusiveMode?: S3ExclusiveMode;
  /** Called after every request attempt (for tests, benchmarks and debugging). */
  readonly onRequest?: (event: S3RequestEvent) => void;
}

/** A parsed `s3://BUCKET/PREFIX` location. */
export interface S3Location {
  readonly bucket: string;
  /** The key prefix without leading or trailing slashes; "" for the bucket's root. */
  readonly prefix: string;
}

/**
 * Parses `s3://BUCKET/PREFIX` (PREFIX optional).
 * @throws {StorageError} when `url` is not of that form, the bucket name is not valid, or the
 *   prefix has empty, `.` or `..` segments.
 */
export function parseS3Url(url: string): S3Location {
  const m = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(url);
  if (!m)
    throw new StorageError(
      `not an s3:// location: ${describeValue(url)} (want s3://BUCKET/PREFIX)`,
    );
  const bucket = m[1];
  // S3's rules, relaxed to what Ceph and MinIO also accept (uppercase and underscores).
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$/.test(bucket)) {
    throw new StorageError(`invalid S3 bucket name: ${describeValue(bucket)}`);
  }
  const prefix = (m[2] ?? "").replace(/\/+$/, "");
  if (prefix !== "" && prefix.split("/").some((p) => p === "" || p === "." || p === "..")) {
    throw new StorageError(`invalid S3 prefix: ${describeValue(prefix)} (empty, . or .. segments)`);
  }
  return { bucket, prefix };
}

/** A `Storage` in an S3 bucket under a key prefix. Get one with `S3Storage.create` or `.open`. */
export class S3Storage implements Storage {
  /** `s3://BUCKET/PREFIX` (no endpoint, no credentials). */
  readonly location: string;
  /** The bucket. */
  readonly bucket: string;
  /** The key prefix ("" or ending in "/"). */
  readonly keyPrefix: string;

  readonly #client: S3Client;
  readonly #endpoint: string;
  readonly #slots: Semaphore;
  readonly #multipartThreshold: number;
  readonly #partSize: number;
  readonly #timeoutMs: number;
  readonly #minBytesPerSecond: number;
  readonly #maxAttempts: number;
  readonly #retryBaseMs: number;
  readonly #retryMaxMs: number;
  readonly #exclusiveMode: S3ExclusiveMode;
  readonly #onRequest: ((event: S3RequestEvent) => void) | undefined;
  /** Keys with a head-then-put exclusive save running, so two in this process cannot both win. */
  readonly #exclusiveLocks = new Map<string, Promise<void>>();
  /**
   * Whether the server has answered any request (with any HTTP status). Until it has, a browser's
   * failed fetch is most likely a CORS policy that does not allow the page (or a wrong endpoint),
   * which no wait fixes: it is tried once more, not for the whole retry budget (~20 s).
   */
  #answered = false;

  private constructor(where: S3Location, options: S3StorageOptions) {
    this.bucket = where.bucket;
    this.keyPrefix = where.prefix === "" ? "" : `${where.prefix}/`;
    this.location = `s3://${where.bucket}${where.prefix === "" ? "" : `/${where.prefix}`}`;
    this.#endpoint = options.endpoint ?? "AWS S3";
    const concurrency = positiveInt("concurrency", options.concurrency ?? 8);
    this.#slots = new Semaphore(concurrency);
    this.#partSize = positiveInt("partSize", options.partSize ?? 16 * MiB);
    if (this.#partSize < MIN_PART_BYTES) {
      throw new StorageError(`S3 part size must be at least ${MIN_PART_BYTES} bytes`);
    }
    // Above 5 GiB a single PutObject is refused, whatever the setting.
    this.#multipartThreshold = Math.min(
      MAX_PUT_BYTES,
      positiveInt("multipartThreshold", options.multipartThreshold ?? 64 * MiB),
    );
    this.#timeoutMs = positiveInt("requestTimeoutMs", options.requestTimeoutMs ?? 30_000);
    this.#minBytesPerSecond = positiveInt("minBytesPerSecond", options.minBytesPerSecond ?? MiB);
    this.#maxAttempts = positiveInt("maxAttempts", options.maxAttempts ?? 8);
    this.#retryBaseMs = positiveInt("retryBaseDelayMs", options.retryBaseDelayMs ?? 250);
    this.#retryMaxMs = positiveInt("retryMaxDelayMs", options.retryMaxDelayMs ?? 8000);
    this.#exclusiveMode = options.exclusiveMode ?? "conditional";
    if (this.#exclusiveMode !== "conditional" && this.#exclusiveMode !== "head-then-put") {
      throw new StorageError(
        `S3 exclusive mode must be "conditional" or "head-then-put", got ${describeValue(this.#exclusiveMode)}`,
      );
    }
    this.#onRequest = options.onRequest;
    this.#client = new S3Client({
      region: options.region ?? "us-east-1",
      endpoint: options.endpoint,
      forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
      credentials: options.credentials,
      // Retries are ours (below): they cover reading response bodies and timeouts too, and
      // their count is the one the caller set.
      maxAttempts: 1,
      // Ceph RGW 16 rejects the SDK's default streamed (aws-chunked) checksums. Integrity does
      // not rest on them: every object is verified against its keyed hash when read.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      requestHandler: {
        // A connect that hangs (a black-holed address) fails here; our deadline covers the rest.
        connectionTimeout: Math.min(this.#timeoutMs, 10_000),
        httpAgent: { keepAlive: true, maxSockets: concurrency },
        httpsAgent: { keepAlive: true, maxSockets: concurrency },
        // Browsers (fetch): keep objects out of the HTTP cache. They are immutable and read
        // once, and Chromium's revalidation of a cached range got RGW's 304, which carries no
        // CORS headers, so the read failed as a CORS error (1 run in 5 of the browser test).
        cache: "no-store",
      },
    });
  }

  /**
   * Storage for a new repository at `url`: checks that the bucket exists and is reachable with
   * these credentials, and that no repository config is under the prefix. Creates nothing (S3
   * has no folders); the caller writes `config` with an exclusive save, which is what makes two
   * concurrent inits safe.
   * @throws {StorageError} when the URL is malformed, the bucket does not exist, access is
   *   denied, or the server cannot be reached.
   * @throws {AlreadyExistsError} when the prefix already holds a repository.
   */
  static async create(url: string, options: S3StorageOptions = {}): Promise<S3Storage> {
    const storage = new S3Storage(parseS3Url(url), options);
    await storage.#checkBucket();
    if (await storage.#exists(`${storage.keyPrefix}config`)) {
      throw new AlreadyExistsError(`a repository already exists at ${storage.location}`);
    }
    return storage;
  }

  /**
   * Storage of the existing repository at `url`. Checks that the bucket is reachable and that
   * `config` exists; it is not read.
   * @throws {NotFoundError} "no repository at s3://…" when there is no config under the prefix.
   * @throws {StorageError} when the URL is malformed, the bucket does not exist, access is
   *   denied, or the server cannot be reached.
   */
  static async open(url: string, options: S3StorageOptions = {}): Promise<S3Storage> {
    const storage = S3Storage.attach(url, options);
    await storage.#checkBucket();
    if (!(await storage.#exists(`${storage.keyPrefix}config`))) {
      throw new NotFoundError(`no repository at ${storage.location}`);
    }
    return storage;
  }

  /**
   * `open` without its two checks, for a caller that reads `config` next: that read reports a
   * missing bucket, denied access or an unreachable server as clearly (and a missing config as
   * NotFoundError), and every command saves the bucket check's and the HEAD's round trips.
   * @throws {StorageError} when the URL is malformed.
   */
  static attach(url: string, options: S3StorageOptions = {}): S3Storage {
    return new S3Storage(parseS3Url(url), options);
  }

  /**
   * Stores `data` as `kind/name` with one PutObject, or a multipart upload above the threshold
   * (completed only when every part landed, so a reader never sees part of it; a failed upload
   * is aborted). Exclusive saves always use one PutObject, since RGW 16 ignores `If-None-Match`
   * on CompleteMultipartUpload.
   * @throws {AlreadyExistsError} when `exclusive` is set and the object exists.
   * @throws {StorageError} on an invalid kind or name, or when S3 fails (after retries for
   *   transient failures; at once for denied access or a missing bucket).
   */
  async save(
    kind: ObjectKind,
    name: string,
    data: Uint8Array,
    options: SaveOptions = {},
  ): Promise<void> {
    const key = this.#key(kind, name);
    if (!options.exclusive) {
      if (data.length > this.#multipartThreshold) await this.#multipart(key, data);
      else await this.#put(key, data);
      return;
    }
    if (data.length > MAX_PUT_BYTES) {
      throw new StorageError(
        `${kind}/${name}: exclusive saves are single PutObjects, limited to 5 GiB (${data.length} bytes)`,
      );
    }
    if (this.#exclusiveMode === "conditional") {
      await this.#putConditional(kind, name, key, data);
      return;
    }
    await this.#locked(key, async () => {
      if (await this.#exists(key)) {
        throw new AlreadyExistsError(`object already exists: ${kind}/${name}`);
      }
      await this.#put(key, data);
    });
  }

  /**
   * Reads `kind/name` with one GetObject (a ranged one for a part). Checks the length of what
   * arrived against what was asked, so a truncated response is retried, never returned.
   * @throws {NotFoundError} when the object does not exist.
   * @throws {StorageError} on an invalid kind, name or range, a range outside the object, or
   *   when S3 fails.
   */
  async load(
    kind: ObjectKind,
    name: string,
    offset?: number,
    length?: number,
  ): Promise<Uint8Array> {
    const key = this.#key(kind, name);
    const start = offset ?? 0;
    const rangeValid =
      Number.isSafeInteger(start) &&
      start >= 0 &&
      (length === undefined || (Number.isSafeInteger(length) && length >= 0));
    if (!rangeValid) throw this.#rangeError(kind, name, start, length);
    if (length === 0) {
      // HTTP cannot ask for zero bytes; the size tells whether the empty range is inside.
      const { size } = await this.stat(kind, name);
      if (start > size) throw this.#rangeError(kind, name, start, length, size);
      return new Uint8Array(0);
    }
    const range =
      start === 0 && length === undefined
        ? undefined
        : `bytes=${start}-${length === undefined ? "" : start + length - 1}`;
    let result: Uint8Array | "past-end";
    try {
      result = await this.#request(
        "GetObject",
        key,
        // A whole object's size is unknown until the answer: allow for one as big as a part, but
        // for the config (a few hundred bytes, and the CLI's first request: a server that never
        // answers must fail it in one request's time, not a part's).
        length ?? (kind === "config" ? 0 : Math.max(this.#partSize, this.#multipartThreshold)),
        async (signal) => {
          let out: GetObjectCommandOutput;
          try {
            out = await this.#client.send(
              new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: range }),
              { abortSignal: signal },
            );
          } catch (err) {
            // 416: the range starts at or after the end (for an empty object: always).
            if (httpStatus(err) === 416) return { status: 416, value: "past-end" as const };
            throw err;
          }
          return {
            status: out.$metadata.httpStatusCode,
            value: await readBody(out, start, length),
          };
        },
      );
    } catch (err) {
      throw this.#notFoundOr(err, kind, name);
    }
    if (result !== "past-end") return result;
    // The range starts at or after the end (416), or ends past it (206 with a shorter range).
    const { size } = await this.stat(kind, name);
    if (length === undefined && start === size) return new Uint8Array(0);
    throw this.#rangeError(kind, name, start, length, size);
  }

  /**
   * Size of `kind/name`, from HeadObject.
   * @throws {NotFoundError} when the object does not exist.
   * @throws {StorageError} on an invalid kind or name, or when S3 fails.
   */
  async stat(kind: ObjectKind, name: string): Promise<ObjectInfo> {
    const key = this.#key(kind, name);
    try {
      const size = await this.#request("HeadObject", key, 0, async (signal) => {
        const out = await this.#client.send(
          new HeadObjectCommand({ Bucket: this.bucket, Key: key }),
          { abortSignal: signal },
        );
        return { status: out.$metadata.httpStatusCode, value: out.ContentLength ?? 0 };
      });
      return { name, size };
    } catch (err) {
      throw this.#notFoundOr(err, kind, name);
    }
  }

  /**
   * Every object of `kind`, from ListObjectsV2 pages of up to 1000 keys under `PREFIX/kind/`.
   * Keys that are not valid object names (or sit in the wrong data/xx folder) are skipped, and a
   * name is yielded at most once even if a server repeats it across pages.
   * @throws {StorageError} on an invalid kind, or when S3 fails (from the iteration).
   */
  async *list(kind: ObjectKind): AsyncIterable<ObjectInfo> {
    if (!OBJECT_KINDS.includes(kind)) {
      throw new StorageError(`invalid object kind: ${describeValue(kind)}`);
    }
    const prefix = kind === "config" ? `${this.keyPrefix}config` : `${this.keyPrefix}${kind}/`;
    const seen = new Set<string>();
    let token: string | undefined;
    do {
      const page: ListObjectsV2CommandOutput = await this.#request(
        "ListObjectsV2",
        prefix,
        0,
        async (signal) => {
          const out = await this.#client.send(
            new ListObjectsV2Command({
              Bucket: this.bucket,
              Prefix: prefix,
              ContinuationToken: token,
              MaxKeys: 1000,
            }),
            { abortSignal: signal },
          );
          return { status: out.$metadata.httpStatusCode, value: out };
        },
      );
      for (const entry of page.Contents ?? []) {
        const name = entry.Key === undefined ? undefined : this.#nameOf(kind, entry.Key);
        if (name === undefined || seen.has(name)) continue;
        seen.add(name);
        yield { name, size: entry.Size ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  /**
   * Deletes `kind/name` with DeleteObject, which S3 answers with success for a missing key too.
   * @throws {StorageError} on an invalid kind or name, or when S3 fails.
   */
  async remove(kind: ObjectKind, name: string): Promise<void> {
    const key = this.#key(kind, name);
    await this.#request("DeleteObject", key, 0, async (signal) => {
      const out = await this.#client.send(
        new DeleteObjectCommand({ Bucket: this.bucket, Key: key }),
        { abortSignal: signal },
      );
      return { status: out.$metadata.httpStatusCode, value: undefined };
    });
  }

  /** Closes the client's idle connections. The storage must not be used afterwards. */
  destroy(): void {
    this.#client.destroy();
  }

  // -------------------------------------------------------------------------------------------

  /** Key of `kind/name`, after checking both, so no argument can reach outside the prefix. */
  #key(kind: ObjectKind, name: string): string {
    if (!OBJECT_KINDS.includes(kind)) {
      throw new StorageError(`invalid object kind: ${describeValue(kind)}`);
    }
    if (!isValidName(kind, name)) {
      throw new StorageError(`invalid object name for kind ${kind}: ${describeValue(name)}`);
    }
    if (kind === "config") return `${this.keyPrefix}config`;
    if (kind === "data") return `${this.keyPrefix}data/${name.slice(0, 2)}/${name}`;
    return `${this.keyPrefix}${kind}/${name}`;
  }

  /** The object name a listed key stands for, or undefined for a key that is not an object. */
  #nameOf(kind: ObjectKind, key: string): string | undefined {
    if (kind === "config") return key === `${this.keyPrefix}config` ? "config" : undefined;
    const rest = key.slice(`${this.keyPrefix}${kind}/`.length);
    if (kind === "data") {
      const m = /^([0-9a-f]{2})\/([0-9a-f]{64})$/.exec(rest);
      if (!m) return undefined;
      return m[2].startsWith(m[1]) ? m[2] : undefined;
    }
    return isValidName(kind, rest) ? rest : undefined;
  }

  /** One plain PutObject. */
  async #put(key: string, data: Uint8Array): Promise<void> {
    await this.#request("PutObject", key, data.length, async (signal) => {
      const out = await this.#client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: data,
          ContentLength: data.length,
        }),
        { abortSignal: signal },
      );
      return { status: out.$metadata.httpStatusCode, value: undefined };
    });
  }

  /**
   * Exclusive save with `If-None-Match: *`. A 412 after a retry may be our own earlier attempt
   * that landed but whose answer was lost: the object is read back, and equal bytes count as
   * success.
   */
  async #putConditional(kind: ObjectKind, name: string, key: string, data: Uint8Array) {
    let attempts = 0;
    try {
      await this.#request("PutObject", key, data.length, async (signal) => {
        attempts++;
        const out = await this.#client.send(
          new PutObjectCommand({
            Bucket: this.bucket,
            Key: key,
            Body: data,
            ContentLength: data.length,
            IfNoneMatch: "*",
          }),
          { abortSignal: signal },
        );
        return { status: out.$metadata.httpStatusCode, value: undefined };
      });
    } catch (err) {
      const raw = rawError(err);
      if (httpStatus(raw) === 412) {
        if (attempts > 1 && (await this.#holds(kind, name, data))) return;
        throw new AlreadyExistsError(`object already exists: ${kind}/${name}`);
      }
      if (httpStatus(raw) === 501 || s3Code(raw) === "NotImplemented") {
        throw new StorageError(
          `${this.location}: the S3 server does not support conditional writes (If-None-Match); ` +
            `use the head-then-put exclusive mode (LOCKET_S3_EXCLUSIVE=head-then-put; racy, see docs/operations.md)`,
          { cause: err },
        );
      }
      throw err;
    }
  }

  /** Whether `kind/name` exists and holds exactly `data`. */
  async #holds(kind: ObjectKind, name: string, data: Uint8Array): Promise<boolean> {
    let stored: Uint8Array;
    try {
      stored = await this.load(kind, name);
    } catch (err) {
      if (err instanceof NotFoundError) return false;
      throw err;
    }
    return stored.length === data.length && stored.every((b, i) => b === data[i]);
  }

  /**
   * Multipart upload: parts in parallel (bounded by the request slots), then complete. Any
   * failure aborts the upload, so no parts are left behind when the server can be reached.
   */
  async #multipart(key: string, data: Uint8Array): Promise<void> {
    const parts = Math.ceil(data.length / this.#partSize);
    if (parts > MAX_PARTS || data.length > MAX_PARTS * 5 * 1024 * MiB) {
      throw new StorageError(`${key}: too large for one multipart upload (${data.length} bytes)`);
    }
    const uploadId = await this.#request("CreateMultipartUpload", key, 0, async (signal) => {
      const out = await this.#client.send(
        new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key }),
        { abortSignal: signal },
      );
      if (!out.UploadId) throw new StorageError(`${key}: CreateMultipartUpload gave no UploadId`);
      return { status: out.$metadata.httpStatusCode, value: out.UploadId };
    });
    try {
      const settled = await Promise.allSettled(
        Array.from({ length: parts }, (_, i) => {
          const body = data.subarray(i * this.#partSize, (i + 1) * this.#partSize);
          return this.#request("UploadPart", key, body.length, async (signal) => {
            const out = await this.#client.send(
              new UploadPartCommand({
                Bucket: this.bucket,
                Key: key,
                UploadId: uploadId,
                PartNumber: i + 1,
                Body: body,
                ContentLength: body.length,
              }),
              { abortSignal: signal },
            );
            if (!out.ETag) throw new StorageError(`${key}: UploadPart ${i + 1} gave no ETag`);
            return { status: out.$metadata.httpStatusCode, value: out.ETag };
          });
        }),
      );
      // Every part has settled, so none can land after the abort below.
      const failed = settled.find((r) => r.status === "rejected");
      if (failed) throw failed.reason;
      const etags = settled.map((r) => (r as PromiseFulfilledResult<string>).value);
      let attempts = 0;
      let landed = true;
      try {
        await this.#request("CompleteMultipartUpload", key, 0, async (signal) => {
          attempts++;
          const out = await this.#client.send(
            new CompleteMultipartUploadCommand({
              Bucket: this.bucket,
              Key: key,
              UploadId: uploadId,
              MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
            }),
            { abortSignal: signal },
          );
          return { status: out.$metadata.httpStatusCode, value: undefined };
        });
      } catch (err) {
        // A retried complete whose first try landed finds the upload gone; the object tells.
        if (!(attempts > 1 && s3Code(rawError(err)) === "NoSuchUpload")) throw err;
        landed = false;
      }
      if (!landed) {
        // (Racy with a concurrent overwrite of the same name, which would be just as valid.)
        const size = await this.#request("HeadObject", key, 0, async (signal) => {
          const out = await this.#client.send(
            new HeadObjectCommand({ Bucket: this.bucket, Key: key }),
            { abortSignal: signal },
          );
          return { status: out.$metadata.httpStatusCode, value: out.ContentLength ?? -1 };
        });
        if (size !== data.length) {
          throw new StorageError(
            `${this.#where(key)}: multipart upload vanished (${size} bytes stored, expected ${data.length})`,
          );
        }
      }
    } catch (err) {
      await this.#abortUpload(key, uploadId);
      throw err;
    }
  }

  /** Best-effort AbortMultipartUpload, with few tries: the save has failed already. */
  async #abortUpload(key: string, uploadId: string): Promise<void> {
    await this.#request(
      "AbortMultipartUpload",
      key,
      0,
      async (signal) => {
        const out = await this.#client.send(
          new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }),
          { abortSignal: signal },
        );
        return { status: out.$metadata.httpStatusCode, value: undefined };
      },
      2,
    ).catch(() => {});
  }

  /** Whether `key` exists (HeadObject). */
  async #exists(key: string): Promise<boolean> {
    try {
      await this.#request("HeadObject", key, 0, async (signal) => {
        const out = await this.#client.send(
          new HeadObjectCommand({ Bucket: this.bucket, Key: key }),
          { abortSignal: signal },
        );
        return { status: out.$metadata.httpStatusCode, value: undefined };
      });
      return true;
    } catch (err) {
      if (err instanceof NotFoundError) return false;
      throw err;
    }
  }

  /**
   * Lists one key under the prefix: the cheapest request whose error answer names the problem
   * (a missing bucket, a wrong key, a bad signature); HEAD answers carry no error code.
   */
  async #checkBucket(): Promise<void> {
    await this.#request("ListObjectsV2", this.keyPrefix, 0, async (signal) => {
      const out = await this.#client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.keyPrefix, MaxKeys: 1 }),
        { abortSignal: signal },
      );
      return { status: out.$metadata.httpStatusCode, value: undefined };
    });
  }

  /** Runs `fn` while holding this process's lock on `key`. */
  async #locked(key: string, fn: () => Promise<void>): Promise<void> {
    for (;;) {
      const held = this.#exclusiveLocks.get(key);
      if (!held) break;
      await held.catch(() => {});
    }
    const run = fn();
    this.#exclusiveLocks.set(key, run);
    try {
      await run;
    } finally {
      if (this.#exclusiveLocks.get(key) === run) this.#exclusiveLocks.delete(key);
    }
  }

  /**
   * Makes one S3 request with a request slot, a deadline per attempt, and retries with
   * exponential backoff and full jitter for transient failures. Errors come out as Locket
   * errors: NotFoundError for a missing key (404 NoSuchKey, HEAD 404), StorageError for the rest
   * (naming the operation, bucket and key, never a credential). Other S3 errors thrown by `fn`
   * keep their status for the caller's checks through `cause`.
   */
  async #request<T>(
    op: string,
    key: string,
    bytes: number,
    fn: (signal: AbortSignal) => Promise<{ status: number | undefined; value: T }>,
    maxAttempts = this.#maxAttempts,
  ): Promise<T> {
    const deadlineMs = this.#timeoutMs + Math.ceil((bytes / this.#minBytesPerSecond) * 1000);
    for (let attempt = 1; ; attempt++) {
      let failure: unknown;
      await this.#slots.acquire();
      try {
        const { status, value } = await withDeadline(deadlineMs, fn);
        this.#answered = true;
        this.#onRequest?.({ op, key, attempt, status });
        return value;
      } catch (err) {
        failure = err;
        if (httpStatus(err) !== undefined) this.#answered = true;
        this.#onRequest?.({
          op,
          key,
          attempt,
          status: httpStatus(err),
          error: s3Code(err) ?? errorCode(err),
        });
      } finally {
        this.#slots.release();
      }
      const budget =
        !this.#answered && isBrowserFetchFailure(failure) ? Math.min(2, maxAttempts) : maxAttempts;
      if (!isTransient(failure) || attempt >= budget) {
        throw this.#toLocketError(op, key, failure, attempt);
      }
      const ceiling = Math.min(this.#retryMaxMs, this.#retryBaseMs * 2 ** (attempt - 1));
      await sleep(Math.random() * ceiling);
    }
  }

  /** Maps a failed request to a Locket error that says what to do about it. */
  #toLocketError(op: string, key: string, err: unknown, attempts: number): Error {
    if (err instanceof LocketError) return err;
    const status = httpStatus(err);
    const code = s3Code(err);
    const where = this.#where(key);
    const tries = attempts > 1 ? ` after ${attempts} attempts` : "";
    if (code === "NoSuchBucket") {
      return new StorageError(
        `S3 bucket ${JSON.stringify(this.bucket)} does not exist at ${this.#endpoint}; ` +
          "create it first (Locket never creates buckets)",
        { cause: err },
      );
    }
    if (status === 404 && (code === "NoSuchKey" || code === undefined || code === "NotFound")) {
      return new NotFoundError(`S3 object not found: ${where}`);
    }
    if (status === 403 || status === 401) {
      const reason = code && code !== "Unknown" ? ` (${code})` : "";
      return new StorageError(
        `S3 access denied${reason} for ${op} ${where} at ${this.#endpoint}: check the credentials ` +
          "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and the bucket's policy",
        { cause: err },
      );
    }
    if (isCredentialsError(err)) {
      return new StorageError(
        `no S3 credentials for ${this.location}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE`,
        { cause: err },
      );
    }
    if (status !== undefined) {
      return new StorageError(
        `S3 ${op} ${where} failed: HTTP ${status}${code ? ` ${code}` : ""}${tries}`,
        { cause: err },
      );
    }
    if (isBrowserFetchFailure(err)) {
      return new StorageError(
        `S3 ${op} ${where} failed in the browser (${(err as Error).message}; endpoint ` +
          `${this.#endpoint})${tries}: the server is unreachable, or its answer had no CORS ` +
          "headers for this page's origin: check the bucket's CORS policy (docs/operations.md); " +
          "Ceph RGW leaves them off a 403 for unknown credentials, so check those too",
        { cause: err },
      );
    }
    const reason = errorCode(err) ?? (err instanceof Error ? err.message : String(err));
    return new StorageError(
      `S3 ${op} ${where} failed: ${reason} (endpoint ${this.#endpoint})${tries}`,
      { cause: err },
    );
  }

  /** NotFoundError with the contract's wording for `kind/name`, or `err` unchanged. */
  #notFoundOr(err: unknown, kind: ObjectKind, name: string): unknown {
    if (err instanceof NotFoundError) return new NotFoundError(`object not found: ${kind}/${name}`);
    return err;
  }

  #rangeError(
    kind: ObjectKind,
    name: string,
    offset: number,
    length: number | undefined,
    size?: number,
  ): OutOfRangeError {
    const of = size === undefined ? "" : ` (${size} bytes)`;
    return new OutOfRangeError(
      `range offset ${offset} length ${length ?? "to end"} is outside ${kind}/${name}${of}`,
    );
  }

  /** `s3://BUCKET/KEY` for messages. */
  #where(key: string): string {
    return `s3://${this.bucket}/${key}`;
  }
}

// ---------------------------------------------------------------------------------------------

/** A response body that was shorter than its headers promised: retried like a dropped connection. */
class TruncatedBodyError extends Error {
  constructor(got: number, want: number) {
    super(`response body truncated: ${got} of ${want} bytes`);
    this.name = "TruncatedBodyError";
  }
}

/** Our own per-request deadline passed. */
class RequestDeadlineError extends Error {
  constructor(ms: number) {
    super(`no answer within ${ms} ms`);
    this.name = "RequestDeadlineError";
  }
}

/**
 * Reads a GetObject body and checks it against the asked range: the bytes, or "past-end" when
 * the range starts at or reaches beyond the object's end.
 * @throws {TruncatedBodyError} when fewer bytes arrived than the response announced.
 */
async function readBody(
  out: GetObjectCommandOutput,
  start: number,
  length: number | undefined,
): Promise<Uint8Array | "past-end"> {
  const body = out.Body ? await out.Body.transformToByteArray() : new Uint8Array(0);
  if (out.ContentLength !== undefined && body.length !== out.ContentLength) {
    throw new TruncatedBodyError(body.length, out.ContentLength);
  }
  const status = out.$metadata.httpStatusCode;
  if (status === 206) {
    const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(out.ContentRange ?? "");
    if (!m || Number(m[1]) !== start) {
      throw new StorageError(`unexpected Content-Range ${describeValue(out.ContentRange)}`);
    }
    if (Number(m[2]) - Number(m[1]) + 1 !== body.length) {
      throw new TruncatedBodyError(body.length, Number(m[2]) - Number(m[1]) + 1);
    }
    if (length !== undefined && body.length < length) return "past-end";
    return body;
  }
  // 200: the whole object (asked for, or a server that ignores Range).
  const end = length === undefined ? body.length : start + length;
  if (start > body.length || end > body.length) return "past-end";
  return start === 0 && end === body.length ? body : body.slice(start, end);
}

/** Runs `fn` with an AbortSignal that fires after `ms`; rejects then even if `fn` ignores it. */
async function withDeadline<T>(ms: number, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      // Rejected before the abort, so the race settles with the deadline, not an AbortError.
      reject(new RequestDeadlineError(ms));
      controller.abort();
    }, ms);
  });
  const work = fn(controller.signal);
  // After the deadline, `work`'s own failure (an AbortError) is moot; do not let it go unhandled.
  work.catch(() => {});
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Network error codes worth another try: the server may be restarting or overloaded. */
const TRANSIENT_NETWORK_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "EAI_AGAIN",
  "ENOTFOUND",
  "EADDRNOTAVAIL",
]);

/** S3 error codes worth another try (throttling and server-side trouble). */
const TRANSIENT_S3_CODES = new Set([
  "SlowDown",
  "RequestTimeout",
  "InternalError",
  "ServiceUnavailable",
  "Throttling",
  "ThrottlingException",
  "RequestLimitExceeded",
  "TooManyRequests",
  "ConditionalRequestConflict",
  "OperationAborted",
]);

/**
 * Whether a failed request may succeed when tried again: throttling (503 SlowDown, 429), any
 * 5xx, request timeouts, truncated bodies and network failures. Not: 4xx answers such as 403
 * (denied) or 404 (missing), which no retry changes.
 */
function isTransient(err: unknown): boolean {
  if (err instanceof TruncatedBodyError || err instanceof RequestDeadlineError) return true;
  if (err instanceof LocketError) return false;
  const status = httpStatus(err);
  const code = s3Code(err);
  if (code !== undefined && TRANSIENT_S3_CODES.has(code)) return true;
  if (status !== undefined) return status >= 500 || status === 429 || status === 408;
  if (isCredentialsError(err)) return false;
  const errno = errorCode(err);
  if (errno !== undefined && (TRANSIENT_NETWORK_CODES.has(errno) || errno.startsWith("UND_ERR"))) {
    return true;
  }
  const name = err instanceof Error ? err.name : "";
  const message = err instanceof Error ? err.message : "";
  // Browsers' fetch reports every network failure as a TypeError ("Failed to fetch").
  return (
    name === "TimeoutError" ||
    /socket hang up|network|fetch failed|failed to fetch|aborted|premature close/i.test(message)
  );
}

/**
 * A failure of a browser's fetch: a TypeError with no errno code ("Failed to fetch" in Chromium,
 * "NetworkError when attempting to fetch resource." in Firefox, "Load failed" in Safari). The
 * page cannot tell a network failure from an answer its CORS rules hide.
 */
function isBrowserFetchFailure(err: unknown): boolean {
  return (
    err instanceof TypeError && errorCode(err) === "TypeError" && httpStatus(err) === undefined
  );
}

/** The SDK error behind a StorageError made by `#request` (its cause), or `err` itself. */
function rawError(err: unknown): unknown {
  return err instanceof StorageError && err.cause !== undefined ? err.cause : err;
}

/** The HTTP status of an SDK error that got a response. */
function httpStatus(err: unknown): number | undefined {
  if (typeof err !== "object" || err === null || !("$metadata" in err)) return undefined;
  const meta = (err as { $metadata?: { httpStatusCode?: number } }).$metadata;
  return meta?.httpStatusCode;
}

/** The S3 error code (`NoSuchBucket`, `SlowDown`, ...) of an SDK error. */
function s3Code(err: unknown): string | undefined {
  if (httpStatus(err) === undefined) return undefined;
  const e = err as { Code?: unknown; name?: unknown };
  if (typeof e.Code === "string") return e.Code;
  return typeof e.name === "string" ? e.name : undefined;
}

/** The errno-style code of a network error (`ECONNREFUSED`). */
function errorCode(err: unknown): string | undefined {
  if (typeof err === "object" && err !== null && "code" in err && typeof err.code === "string") {
    return err.code;
  }
  if (err instanceof Error && err.name !== "Error") return err.name;
  return undefined;
}

/** Whether the SDK's credential chain found nothing. */
function isCredentialsError(err: unknown): boolean {
  return err instanceof Error && err.name === "CredentialsProviderError";
}

/**
 * `value` when it is a positive whole number.
 * @throws {StorageError} otherwise.
 */
function positiveInt(what: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new StorageError(`S3 option ${what} must be a positive whole number, got ${value}`);
  }
  return value;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A counting semaphore: at most `limit` holders; waiters are served in arrival order. */
class Semaphore {
  #free: number;
  readonly #waiting: (() => void)[] = [];

  constructor(limit: number) {
    this.#free = limit;
  }

  async acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return;
    }
    await new Promise<void>((resolve) => this.#waiting.push(resolve));
  }

  release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#free++;
  }
}
