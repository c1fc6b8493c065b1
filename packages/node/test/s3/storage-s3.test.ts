/**
 * S3Storage against a real S3 server (Ceph RADOS Gateway, scripts/ceph-s3.sh): the storage
 * conformance suite, unchanged, in three configurations, then what is particular to S3
 * (layout, multipart, errors) and injected faults (throttling, resets, hangs, lost answers,
 * truncated bodies) through a proxy in front of the real server.
 */

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { after, before, describe, it } from "node:test";
import { ListMultipartUploadsCommand, type S3Client } from "@aws-sdk/client-s3";
import { AlreadyExistsError, NotFoundError, StorageError } from "../../../core/src/errors.ts";
import {
  assertBytes,
  listAll,
  randomData,
  randomName,
  storageConformance,
} from "../../../core/test/storage-conformance.ts";
import {
  type S3ExclusiveMode,
  type S3RequestEvent,
  S3Storage,
  type S3StorageOptions,
} from "../../src/storage/s3.ts";
import { deletePrefix, listKeys, newBucket, type S3Env, useTestBucket } from "./ceph.ts";
import { type Fault, type S3Proxy, startS3Proxy } from "./proxy.ts";

const MiB = 1024 * 1024;

let env: S3Env;
let admin: S3Client;
let bucket: string;
useTestBucket("locket-storage", (b) => ({ env, admin, bucket } = b));

/** Options for an S3Storage on the test server (or `endpoint`, a proxy in front of it). */
function options(extra: S3StorageOptions = {}): S3StorageOptions {
  return {
    endpoint: env.endpoint,
    region: env.region,
    credentials: { accessKeyId: env.accessKey, secretAccessKey: env.secretKey },
    ...extra,
  };
}

/** A fresh prefix in the test bucket, as `s3://bucket/prefix`. */
function freshUrl(): { url: string; prefix: string } {
  const prefix = `t/${randomBytes(8).toString("hex")}`;
  return { url: `s3://${bucket}/${prefix}`, prefix };
}

/** A fixture for the conformance suite: a fresh prefix, emptied afterwards. */
async function fixture(extra: S3StorageOptions) {
  const { url, prefix } = freshUrl();
  const storage = await S3Storage.create(url, options(extra));
  return {
    storage,
    cleanup: async () => {
      storage.destroy();
      await deletePrefix(admin, bucket, `${prefix}/`);
    },
  };
}

storageConformance("S3Storage on Ceph RGW (If-None-Match exclusive saves)", () => fixture({}));
storageConformance("S3Storage on Ceph RGW (head-then-put exclusive saves)", () =>
  fixture({ exclusiveMode: "head-then-put" }),
);
// Every non-empty non-exclusive save goes through CreateMultipartUpload/UploadPart/Complete.
storageConformance("S3Storage on Ceph RGW (multipart for every save)", () =>
  fixture({ multipartThreshold: 1, partSize: 5 * MiB }),
);

/** Counts of request attempts by operation, and the events themselves. */
function recorder() {
  const events: S3RequestEvent[] = [];
  const count = (op: string) => events.filter((e) => e.op === op).length;
  return { events, count, onRequest: (e: S3RequestEvent) => events.push(e) };
}

async function multipartUploads(prefix: string): Promise<number> {
  const out = await admin.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }));
  return out.Uploads?.length ?? 0;
}

describe("S3Storage on Ceph RGW", () => {
  it("imports no Node module, so it bundles for browsers", async () => {
    const { readFile } = await import("node:fs/promises");
    const source = await readFile(new URL("../../src/storage/s3.ts", import.meta.url), "utf8");
    const imports = [...source.matchAll(/^import[^;]*?from "([^"]+)";/gms)].map((m) => m[1]);
    assert.deepEqual(imports.sort(), ["@aws-sdk/client-s3", "@locket/core"]);
    assert.doesNotMatch(source, /\b(process|Buffer|require)\b[.(]/, "no Node globals");
  });

  it("lays objects out like the local backend and restic: config, data/xx/, index/, snapshots/", async () => {
    const { url, prefix } = freshUrl();
    const s = await S3Storage.create(url, options());
    assert.equal(s.location, url);
    const data = randomName();
    const index = randomName();
    await s.save("config", "config", randomData(10));
    await s.save("data", data, randomData(20));
    await s.save("index", index, randomData(30));
    const keys = (await listKeys(admin, bucket, `${prefix}/`)).map((k) => k.key).sort();
    assert.deepEqual(keys, [
      `${prefix}/config`,
      `${prefix}/data/${data.slice(0, 2)}/${data}`,
      `${prefix}/index/${index}`,
    ]);
    s.destroy();
  });

  it("uploads a large object in parts, and reads ranges across part boundaries", async () => {
    const { url, prefix } = freshUrl();
    const rec = recorder();
    const s = await S3Storage.create(
      url,
      options({ multipartThreshold: 5 * MiB, partSize: 5 * MiB, onRequest: rec.onRequest }),
    );
    const n = randomName();
    const data = randomData(12 * MiB + 123);
    await s.save("data", n, data);
    assert.equal(rec.count("CreateMultipartUpload"), 1);
    assert.equal(rec.count("UploadPart"), 3);
    assert.equal(rec.count("CompleteMultipartUpload"), 1);
    assert.equal(rec.count("PutObject"), 0);
    assert.equal((await s.stat("data", n)).size, data.length);
    assertBytes(await s.load("data", n), data, "whole");
    const boundary = 5 * MiB;
    assertBytes(
      await s.load("data", n, boundary - 1000, 2000),
      data.subarray(boundary - 1000, boundary + 1000),
      "across parts 1-2",
    );
    assertBytes(await s.load("data", n, 10 * MiB), data.subarray(10 * MiB), "tail to end");
    assert.equal(await multipartUploads(`${prefix}/`), 0, "no upload left open");
    s.destroy();
  });

  it("saves at or below the threshold with one PutObject", async () => {
    const { url } = freshUrl();
    const rec = recorder();
    const s = await S3Storage.create(
      url,
      options({ multipartThreshold: 5 * MiB, partSize: 5 * MiB, onRequest: rec.onRequest }),
    );
    await s.save("data", randomName(), randomData(5 * MiB));
    assert.equal(rec.count("PutObject"), 1);
    assert.equal(rec.count("UploadPart"), 0);
    s.destroy();
  });

  it("makes large exclusive saves with one conditional PutObject (RGW ignores the condition on complete)", async () => {
    const { url } = freshUrl();
    const rec = recorder();
    const s = await S3Storage.create(
      url,
      options({ multipartThreshold: 5 * MiB, partSize: 5 * MiB, onRequest: rec.onRequest }),
    );
    const n = randomName();
    const data = randomData(6 * MiB);
    await s.save("snapshots", n, data, { exclusive: true });
    await assert.rejects(
      s.save("snapshots", n, randomData(6 * MiB), { exclusive: true }),
      AlreadyExistsError,
    );
    assertBytes(await s.load("snapshots", n), data);
    assert.equal(rec.count("UploadPart"), 0);
    s.destroy();
  });

  it("open finds an existing repository and create refuses it", async () => {
    const { url } = freshUrl();
    await assert.rejects(S3Storage.open(url, options()), (err: Error) => {
      assert.ok(err instanceof NotFoundError, String(err));
      assert.equal(err.message, `no repository at ${url}`);
      return true;
    });
    const s = await S3Storage.create(url, options());
    await s.save("config", "config", randomData(10), { exclusive: true });
    (await S3Storage.open(url, options())).destroy();
    await assert.rejects(S3Storage.create(url, options()), (err: Error) => {
      assert.ok(err instanceof AlreadyExistsError, String(err));
      assert.equal(err.message, `a repository already exists at ${url}`);
      return true;
    });
    s.destroy();
  });

  it("reports a missing bucket at once, naming it", async () => {
    const rec = recorder();
    const t0 = Date.now();
    await assert.rejects(
      S3Storage.open("s3://no-such-bucket-locket/x", options({ onRequest: rec.onRequest })),
      (err: Error) => {
        assert.ok(err instanceof StorageError, String(err));
        assert.match(err.message, /bucket "no-such-bucket-locket" does not exist/);
        return true;
      },
    );
    assert.equal(rec.events.length, 1, "not retried");
    assert.ok(Date.now() - t0 < 5000);
  });

  it("reports wrong credentials at once, without the secret", async () => {
    const secret = "wrong-secret-7f3a9c";
    for (const credentials of [
      { accessKeyId: env.accessKey, secretAccessKey: secret },
      { accessKeyId: "NOSUCHKEY", secretAccessKey: secret },
    ]) {
      const rec = recorder();
      await assert.rejects(
        S3Storage.open(`s3://${bucket}/x`, options({ credentials, onRequest: rec.onRequest })),
        (err: Error) => {
          assert.ok(err instanceof StorageError, String(err));
          assert.match(err.message, /access denied \((SignatureDoesNotMatch|InvalidAccessKeyId)\)/);
          assert.ok(err.message.includes(bucket), err.message);
          assert.ok(!err.message.includes(secret), "message holds no secret");
          return true;
        },
      );
      assert.equal(rec.events.length, 1, "not retried");
    }
  });

  it("rejects malformed locations", async () => {
    for (const url of ["s3://", "s3:///x", "s3://b/../x", "s3://b/a//c", "s3://ab/x"]) {
      await assert.rejects(S3Storage.open(url, options()), StorageError, url);
    }
  });

  it("treats a prefix's trailing slash and the bucket root alike", async () => {
    const { url, prefix } = freshUrl();
    const s = await S3Storage.create(`${url}/`, options());
    assert.equal(s.location, url);
    await s.save("config", "config", randomData(3));
    assert.deepEqual(
      (await listKeys(admin, bucket, `${prefix}/`)).map((k) => k.key),
      [`${prefix}/config`],
    );
    s.destroy();
    const rootBucket = await newBucket(admin, "locket-root");
    const r = await S3Storage.create(`s3://${rootBucket}`, options());
    assert.equal(r.location, `s3://${rootBucket}`);
    await r.save("config", "config", randomData(3));
    assert.deepEqual(
      (await listKeys(admin, rootBucket, "")).map((k) => k.key),
      ["config"],
    );
    assert.deepEqual(await listAll(r, "config"), [{ name: "config", size: 3 }]);
    r.destroy();
  });

  it("lists past one page of 1000 keys, each once", async () => {
    const { url } = freshUrl();
    const s = await S3Storage.create(url, options({ concurrency: 16 }));
    const names = Array.from({ length: 1203 }, () => randomName());
    await Promise.all(names.map((n) => s.save("index", n, new Uint8Array(1))));
    const listed = await listAll(s, "index");
    assert.equal(listed.length, names.length);
    assert.deepEqual(new Set(listed.map((o) => o.name)), new Set(names));
    s.destroy();
  });

  it("skips foreign keys under the prefix", async () => {
    const { url, prefix } = freshUrl();
    const s = await S3Storage.create(url, options());
    const n = randomName();
    await s.save("data", n, randomData(4));
    const { PutObjectCommand } = await import("@aws-sdk/client-s3");
    for (const key of [
      `${prefix}/data/${n}`,
      `${prefix}/data/zz/${n}`,
      `${prefix}/data/${n.slice(0, 2)}/${n}.tmp`,
      `${prefix}/configuration`,
      `${prefix}/index/x`,
    ]) {
      await admin.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: "x" }));
    }
    assert.deepEqual(await listAll(s, "data"), [{ name: n, size: 4 }]);
    assert.deepEqual(await listAll(s, "config"), []);
    assert.deepEqual(await listAll(s, "index"), []);
    s.destroy();
  });

  it("keeps at most `concurrency` requests in flight", async () => {
    const proxy = await startS3Proxy(env.endpoint);
    try {
      const { url } = freshUrl();
      const s = await S3Storage.create(url, options({ endpoint: proxy.url, concurrency: 3 }));
      proxy.reset();
      await Promise.all(
        Array.from({ length: 24 }, () => s.save("data", randomName(), randomData(100_000))),
      );
      assert.equal(proxy.stats.requests, 24);
      // The bound is reached (so the test can see it) and never passed.
      assert.equal(proxy.stats.peakInFlight, 3);
      s.destroy();
    } finally {
      await proxy.close();
    }
  });
});

describe("S3Storage faults (a proxy in front of Ceph RGW)", () => {
  let proxy: S3Proxy;

  before(async () => {
    proxy = await startS3Proxy(env.endpoint);
  });

  after(async () => {
    await proxy?.close();
  });

  /**
   * A storage through the proxy with short timeouts and backoff, and a plan that applies
   * `faults` in order to requests matching `method` (after the storage is created).
   */
  async function faulty(
    method: string,
    faults: Fault[],
    extra: S3StorageOptions = {},
  ): Promise<{ s: S3Storage; rec: ReturnType<typeof recorder> }> {
    proxy.plan = () => undefined;
    const rec = recorder();
    const { url } = freshUrl();
    const s = await S3Storage.create(
      url,
      options({
        endpoint: proxy.url,
        requestTimeoutMs: 1000,
        retryBaseDelayMs: 10,
        retryMaxDelayMs: 50,
        onRequest: rec.onRequest,
        ...extra,
      }),
    );
    const queue = [...faults];
    proxy.plan = (req) => (req.method === method ? queue.shift() : undefined);
    return { s, rec };
  }

  const slowDown: Fault = { kind: "status", status: 503, code: "SlowDown" };

  it("retries 503 SlowDown with backoff, then succeeds", async () => {
    const { s, rec } = await faulty("PUT", [slowDown, slowDown]);
    const n = randomName();
    const data = randomData(100);
    await s.save("data", n, data);
    assert.deepEqual(
      rec.events.filter((e) => e.op === "PutObject").map((e) => [e.attempt, e.status]),
      [
        [1, 503],
        [2, 503],
        [3, 200],
      ],
    );
    assertBytes(await s.load("data", n), data);
    s.destroy();
  });

  it("retries 500 and 502 on reads", async () => {
    const { s } = await faulty("GET", []);
    const n = randomName();
    const data = randomData(100);
    await s.save("data", n, data);
    proxy.plan = (() => {
      const q: Fault[] = [
        { kind: "status", status: 500, code: "InternalError" },
        { kind: "status", status: 502, code: "BadGateway" },
      ];
      return (req) => (req.method === "GET" ? q.shift() : undefined);
    })();
    assertBytes(await s.load("data", n, 10, 20), data.subarray(10, 30));
    s.destroy();
  });

  it("retries connection resets", async () => {
    const { s, rec } = await faulty("PUT", [{ kind: "reset" }, { kind: "reset" }]);
    const n = randomName();
    await s.save("index", n, randomData(10));
    assert.equal(rec.events.filter((e) => e.op === "PutObject").length, 3);
    assert.equal((await s.stat("index", n)).size, 10);
    s.destroy();
  });

  it("gives up on a request that hangs after its timeout, and retries it", async () => {
    const { s, rec } = await faulty("HEAD", [{ kind: "hang" }], { requestTimeoutMs: 300 });
    const n = randomName();
    await s.save("index", n, randomData(10));
    const t0 = Date.now();
    const before = rec.events.length;
    assert.equal((await s.stat("index", n)).size, 10);
    assert.ok(Date.now() - t0 < 3000, "did not wait long");
    const heads = rec.events.slice(before).filter((e) => e.op === "HeadObject");
    assert.equal(heads.length, 2);
    assert.equal(heads[0].error, "RequestDeadlineError");
    s.destroy();
  });

  it("gives up on a hanging read of the config in one request's time, not a part's", async () => {
    // The CLI's first request reads the config whole (size unknown); a whole read of anything
    // else may take as long as a 16 MiB part at the slowest rate allowed.
    const { s, rec } = await faulty("GET", [{ kind: "hang" }], { requestTimeoutMs: 300 });
    const data = randomData(200);
    await s.save("config", "config", data);
    const t0 = Date.now();
    const before = rec.events.length;
    assertBytes(await s.load("config", "config"), data);
    assert.ok(Date.now() - t0 < 3000, "did not wait long");
    const gets = rec.events.slice(before).filter((e) => e.op === "GetObject");
    assert.equal(gets.length, 2);
    assert.equal(gets[0].error, "RequestDeadlineError");
    s.destroy();
  });

  it("retries a truncated response body instead of returning a short read", async () => {
    const { s, rec } = await faulty("GET", []);
    const n = randomName();
    const data = randomData(200_000);
    await s.save("data", n, data);
    proxy.plan = (() => {
      const q: Fault[] = [{ kind: "truncate" }];
      return (req) => (req.method === "GET" ? q.shift() : undefined);
    })();
    assertBytes(await s.load("data", n), data);
    assert.equal(rec.events.filter((e) => e.op === "GetObject").length, 2);
    s.destroy();
  });

  it("takes a lost answer to its own exclusive save as success, and still refuses a real conflict", async () => {
    const { s, rec } = await faulty("PUT", [{ kind: "lose-answer" }]);
    const n = randomName();
    const data = randomData(500);
    await s.save("snapshots", n, data, { exclusive: true });
    const puts = rec.events.filter((e) => e.op === "PutObject");
    assert.equal(puts.length, 2, "retried after the lost answer");
    assert.equal(puts[1].status, 412, "the retry met its own object");
    assertBytes(await s.load("snapshots", n), data);
    // Another writer's object is there; our first try is lost before it reaches the server, so
    // the retry's 412 is a real conflict: the read-back differs.
    const m = randomName();
    const winner = randomData(50);
    await s.save("snapshots", m, winner, { exclusive: true });
    proxy.plan = (() => {
      const q: Fault[] = [{ kind: "reset" }];
      return (req) => (req.method === "PUT" ? q.shift() : undefined);
    })();
    const before = rec.events.length;
    await assert.rejects(
      s.save("snapshots", m, randomData(50), { exclusive: true }),
      AlreadyExistsError,
    );
    assert.deepEqual(
      rec.events
        .slice(before)
        .filter((e) => e.op === "PutObject")
        .map((e) => e.attempt),
      [1, 2],
    );
    assertBytes(await s.load("snapshots", m), winner);
    s.destroy();
  });

  it("aborts a multipart upload when a part fails for good, leaving nothing behind", async () => {
    const { s } = await faulty("PUT", [], { multipartThreshold: 5 * MiB, partSize: 5 * MiB });
    let parts = 0;
    proxy.plan = (req) => {
      if (req.method !== "PUT" || !req.url.includes("partNumber=")) return undefined;
      parts++;
      return parts === 2 ? { kind: "status", status: 403, code: "AccessDenied" } : undefined;
    };
    const n = randomName();
    await assert.rejects(s.save("data", n, randomData(11 * MiB)), (err: Error) => {
      assert.ok(err instanceof StorageError, String(err));
      assert.match(err.message, /access denied \(AccessDenied\) for UploadPart/);
      return true;
    });
    const prefix = s.keyPrefix;
    assert.equal(await multipartUploads(prefix), 0, "upload aborted");
    await assert.rejects(s.stat("data", n), NotFoundError);
    assert.deepEqual(await listAll(s, "data"), []);
    s.destroy();
  });

  it("surfaces 403 at once, naming bucket and key", async () => {
    const { s, rec } = await faulty("GET", [{ kind: "status", status: 403, code: "AccessDenied" }]);
    const n = randomName();
    await s.save("index", n, randomData(5));
    await assert.rejects(s.load("index", n), (err: Error) => {
      assert.ok(err instanceof StorageError, String(err));
      assert.ok(err.message.includes(`s3://${bucket}/${s.keyPrefix}index/${n}`), err.message);
      return true;
    });
    assert.equal(rec.events.filter((e) => e.op === "GetObject").length, 1);
    s.destroy();
  });

  it("fails after a bounded number of attempts when throttling never ends", async () => {
    const { s, rec } = await faulty("PUT", Array(10).fill(slowDown), { maxAttempts: 4 });
    await assert.rejects(s.save("index", randomName(), randomData(5)), (err: Error) => {
      assert.ok(err instanceof StorageError, String(err));
      assert.match(err.message, /HTTP 503 SlowDown after 4 attempts/);
      return true;
    });
    assert.equal(rec.events.filter((e) => e.op === "PutObject").length, 4);
    s.destroy();
  });

  it("fails clearly, not forever, when nothing listens at the endpoint", async () => {
    const port = await freePort();
    const t0 = Date.now();
    await assert.rejects(
      S3Storage.open(
        `s3://${bucket}/x`,
        options({
          endpoint: `http://127.0.0.1:${port}`,
          maxAttempts: 3,
          retryBaseDelayMs: 10,
        }),
      ),
      (err: Error) => {
        assert.ok(err instanceof StorageError, String(err));
        assert.match(err.message, /ECONNREFUSED .*after 3 attempts/);
        return true;
      },
    );
    assert.ok(Date.now() - t0 < 5000);
  });

  for (const mode of ["conditional", "head-then-put"] as S3ExclusiveMode[]) {
    it(`exclusive saves (${mode}) send no multipart upload`, async () => {
      const { s, rec } = await faulty("PUT", [], { exclusiveMode: mode, multipartThreshold: 1 });
      await s.save("config", "config", randomData(100), { exclusive: true });
      assert.equal(rec.count("CreateMultipartUpload"), 0);
      s.destroy();
    });
  }
});

/** A port on 127.0.0.1 with nothing listening (just released). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}
