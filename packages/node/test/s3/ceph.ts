/**
 * The real S3 server for the S3 tests: Ceph RADOS Gateway from `scripts/ceph-s3.sh`.
 *
 * `npm run test:s3` brings the cluster up around the whole run (scripts/test-s3.sh) and points
 * CEPH_S3_DIR at it; a test file run on its own (`node --test packages/node/test/s3/x.test.ts`)
 * brings up a cluster of its own in `before` and tears it down in `after`.
 */

import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { after, before } from "node:test";
import { promisify } from "node:util";
import {
  CreateBucketCommand,
  DeleteObjectsCommand,
  ListObjectsV2Command,
  S3Client,
} from "@aws-sdk/client-s3";

const run = promisify(execFile);

/** scripts/ceph-s3.sh in this repository. */
export const CEPH_SCRIPT = new URL("../../../../scripts/ceph-s3.sh", import.meta.url).pathname;

/** What `ceph-s3.sh up` wrote to $CEPH_S3_DIR/s3.env. */
export interface S3Env {
  readonly endpoint: string;
  readonly accessKey: string;
  readonly secretKey: string;
  readonly region: string;
  /** The cluster's folder (CEPH_S3_DIR). */
  readonly dir: string;
  /** Stops the cluster when this process started it; does nothing otherwise. */
  readonly stop: () => Promise<void>;
}

function parseEnvFile(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(path, "utf8").split("\n")) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]] = m[2];
  }
  return out;
}

/** Runs `ceph-s3.sh ARG` for the cluster in `dir`. @throws Error with its log when it fails. */
export async function cephScript(dir: string, arg: string, extra: Record<string, string> = {}) {
  try {
    await run("bash", [CEPH_SCRIPT, arg], {
      env: { ...process.env, CEPH_S3_DIR: dir, ...extra },
      timeout: 600_000,
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`ceph-s3.sh ${arg} failed: ${e.message}\n${e.stderr ?? ""}`);
  }
}

/**
 * The running cluster named by CEPH_S3_DIR (default /tmp/ceph-s3), or a new one in a fresh
 * folder when there is none.
 * @throws Error when no cluster runs and one cannot be started.
 */
export async function s3Env(): Promise<S3Env> {
  const shared = process.env.CEPH_S3_DIR ?? "/tmp/ceph-s3";
  let dir = shared;
  let own = false;
  if (!existsSync(`${shared}/s3.env`)) {
    dir = `/tmp/ceph-s3-test-${process.pid}`;
    own = true;
    await cephScript(dir, "up");
  }
  const env = parseEnvFile(`${dir}/s3.env`);
  return {
    endpoint: env.S3_ENDPOINT,
    accessKey: env.S3_ACCESS_KEY,
    secretKey: env.S3_SECRET_KEY,
    region: env.S3_REGION,
    dir,
    stop: own ? () => cephScript(dir, "down") : async () => {},
  };
}

/** An S3 client with the test user's keys (for setting up buckets and looking at raw keys). */
export function adminClient(env: S3Env, endpoint = env.endpoint): S3Client {
  return new S3Client({
    endpoint,
    region: env.region,
    forcePathStyle: true,
    credentials: { accessKeyId: env.accessKey, secretAccessKey: env.secretKey },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
}

/** Creates a bucket with a random name starting with `label`, and returns the name. */
export async function newBucket(client: S3Client, label: string): Promise<string> {
  const name = `${label}-${randomBytes(4).toString("hex")}`;
  await client.send(new CreateBucketCommand({ Bucket: name }));
  return name;
}

/** Every key under `prefix`, in S3's order. */
export async function listKeys(client: S3Client, bucket: string, prefix: string) {
  const keys: { key: string; size: number }[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const o of page.Contents ?? []) keys.push({ key: o.Key ?? "", size: o.Size ?? 0 });
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

/** Deletes every object under `prefix`. */
export async function deletePrefix(client: S3Client, bucket: string, prefix: string) {
  const keys = await listKeys(client, bucket, prefix);
  for (let i = 0; i < keys.length; i += 1000) {
    await client.send(
      new DeleteObjectsCommand({
        Bucket: bucket,
        Delete: { Objects: keys.slice(i, i + 1000).map((k) => ({ Key: k.key })), Quiet: true },
      }),
    );
  }
}

/** What useTestBucket gives a test file. */
export interface TestBucket {
  readonly env: S3Env;
  readonly admin: S3Client;
  readonly bucket: string;
}

/**
 * Hooks for a test file on the real server: before its tests, the cluster (s3Env), an admin
 * client and a fresh bucket named `label-…`, handed to `use`; after them, the client closed and
 * a cluster this process started stopped.
 */
export function useTestBucket(label: string, use: (b: TestBucket) => void): void {
  let env: S3Env | undefined;
  let admin: S3Client | undefined;
  before(async () => {
    env = await s3Env();
    admin = adminClient(env);
    use({ env, admin, bucket: await newBucket(admin, label) });
  });
  after(async () => {
    admin?.destroy();
    await env?.stop();
  });
}
