/**
 * The `locket` CLI with an s3:// repository on a real S3 server (Ceph RADOS Gateway from
 * scripts/ceph-s3.sh): the whole story (init, backup, restore on a new device with the recovery
 * key), and what goes wrong for real: a missing bucket, wrong credentials, and radosgw killed in
 * the middle of a backup, restarted, and the next backup resuming.
 */

import assert from "node:assert/strict";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, type TestContext, test } from "node:test";
import type { S3Client } from "@aws-sdk/client-s3";
import { diffTrees } from "../../src/compare.ts";
import {
  type CliResult,
  type ErrorJson,
  fails,
  cliEnv as harnessEnv,
  ok as harnessOk,
  type LocketOptions,
  parseJson,
  scratch,
  show,
  start,
} from "../harness.ts";
import { cephScript, listKeys, type S3Env, useTestBucket } from "./ceph.ts";
import { startS3Proxy } from "./proxy.ts";

/** How long one CLI run may take: backups of 200 MB against radosgw, retries after a kill. */
const RUN: LocketOptions = { timeoutMs: 180_000 };

let env: S3Env;
let admin: S3Client;
let bucket: string;
useTestBucket("locket-cli", (b) => ({ env, admin, bucket } = b));

/**
 * The environment of one CLI run: the harness's (no LOCKET_* from outside, the given home, Node 24
 * first on PATH), with no AWS_* from outside either, and the test server's endpoint and keys.
 * Instance metadata is off, so a missing key can never send the SDK to 169.254.169.254.
 */
function cliEnv(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return harnessEnv(
    home,
    {
      LOCKET_S3_ENDPOINT: env.endpoint,
      AWS_ACCESS_KEY_ID: env.accessKey,
      AWS_SECRET_ACCESS_KEY: env.secretKey,
      AWS_EC2_METADATA_DISABLED: "true",
      ...extra,
    },
    { dropPrefixes: ["AWS_"] },
  );
}

/** Runs a --json command that must succeed; returns its result. */
function ok<T>(args: readonly string[], childEnv: NodeJS.ProcessEnv): Promise<T & CliResult> {
  return harnessOk<T>(args, childEnv, RUN);
}

/** Runs a --json command that must fail with exit 1; returns its error and output. */
function failsWith1(
  args: readonly string[],
  childEnv: NodeJS.ProcessEnv,
): Promise<CliResult & { error: ErrorJson }> {
  return fails(args, childEnv, 1, RUN);
}

interface InitJson {
  readonly repository: string;
  readonly repositoryId: string;
  readonly recoveryKey: string;
}

interface BackupJson {
  readonly snapshot: string;
  readonly adoptedPacks: number;
  readonly summary: { files: number; bytes: number; addedBytes: number };
}

interface RestoreJson {
  readonly snapshot: string;
  readonly files: number;
  readonly bytes: number;
}

/** Restores `latest` of `repo` on a new device (fresh home) with only the recovery key. */
async function restoreOnNewDevice(
  t: TestContext,
  repo: string,
  recoveryKey: string,
): Promise<{ target: string; result: RestoreJson }> {
  const device = await scratch(t, "newdevice");
  const target = join(device, "restored");
  const result = await ok<RestoreJson>(
    ["restore", "latest", "--repo", repo, "--recovery-key", recoveryKey, "--target", target],
    cliEnv(join(device, "home")),
  );
  return { target, result };
}

describe("locket with an s3:// repository on Ceph RGW", () => {
  test("init, backup, and restore on a new device with the recovery key: byte-identical", async (t) => {
    const dir = await scratch(t, "story");
    const home = join(dir, "home");
    const data = join(dir, "chat");
    const repo = `s3://${bucket}/story`;
    const e = cliEnv(home);
    await ok(["demo-data", data, "--messages", "2000", "--media-mb", "5"], e);

    const init = await ok<InitJson>(["init", "--repo", repo], e);
    assert.equal(init.repository, repo);
    assert.match(init.recoveryKey, /^[0-9a-f]{4}( [0-9a-f]{4}){16}$/);
    const keys = (await listKeys(admin, bucket, "story/")).map((k) => k.key);
    assert.deepEqual(keys, ["story/config"], "init writes only the config");

    const again = await failsWith1(["init", "--repo", repo], cliEnv(join(dir, "home2")));
    assert.equal(again.error.code, "already_exists");
    assert.equal(again.error.message, `a repository already exists at ${repo}`);

    // The default repository is the S3 one now: no --repo needed.
    const first = await ok<BackupJson>(["backup", join(data, "chat.db"), join(data, "Media")], e);
    assert.ok(first.summary.addedBytes > 4_000_000, JSON.stringify(first.summary));
    const second = await ok<BackupJson>(["backup", join(data, "chat.db"), join(data, "Media")], e);
    assert.equal(second.summary.addedBytes, 0, "nothing new the second time");
    await ok(["check", "--read-data"], e);

    const { target, result } = await restoreOnNewDevice(t, repo, init.recoveryKey);
    assert.equal(result.snapshot, second.snapshot);
    assert.deepEqual(await diffTrees(data, target), [], "every file is byte-identical");

    // This device kept copies of the index files and snapshots it read or wrote (CachedStorage).
    const copies = join(home, "cache", "objects", init.repositoryId);
    const inBucket = async (kind: string) =>
      (await listKeys(admin, bucket, `story/${kind}/`)).map((k) => k.key.split("/").pop()).sort();
    assert.deepEqual(
      (await readdir(join(copies, "snapshots"))).sort(),
      await inBucket("snapshots"),
    );
    assert.deepEqual((await readdir(join(copies, "index"))).sort(), await inBucket("index"));
    // A snapshot damaged in the bucket: commands use the copy; check reads the bucket and says so.
    const { PutObjectCommand } = await import("@aws-sdk/client-s3");
    await admin.send(
      new PutObjectCommand({ Bucket: bucket, Key: `story/snapshots/${first.snapshot}`, Body: "x" }),
    );
    const listed = await ok<{ snapshots: unknown[] }>(["snapshots"], e);
    assert.equal(listed.snapshots.length, 2);
    const checked = await fails(["check"], e, 3, RUN);
    assert.match(show(checked), new RegExp(`snapshots/${first.snapshot}`));
  });

  test("--s3-endpoint and --s3-region work as flags too", async (t) => {
    const dir = await scratch(t, "flags");
    const e = cliEnv(join(dir, "home"), { LOCKET_S3_ENDPOINT: "" });
    const repo = `s3://${bucket}/flags`;
    const init = await ok<InitJson>(
      ["init", "--repo", repo, "--s3-endpoint", env.endpoint, "--s3-region", env.region],
      e,
    );
    assert.equal(init.repository, repo);
    const snaps = await ok<{ snapshots: unknown[] }>(
      ["snapshots", "--s3-endpoint", env.endpoint],
      e,
    );
    assert.deepEqual(snaps.snapshots, []);
    // init remembered the endpoint and region for this device's default repository.
    const data = join(dir, "data");
    await mkdir(data);
    await writeFile(join(data, "note.txt"), "remembered");
    await ok(["backup", data], e);
    const again = await ok<{ snapshots: unknown[] }>(["snapshots"], e);
    assert.equal(again.snapshots.length, 1);
  });

  test("check --read-data that cannot read a pack: exit 1 naming it, not 3 (nothing is known damaged)", async (t) => {
    const dir = await scratch(t, "unreadable");
    const data = join(dir, "data");
    await mkdir(data);
    await writeFile(join(data, "note.txt"), "x".repeat(100_000));
    const repo = `s3://${bucket}/unreadable`;
    const e = cliEnv(join(dir, "home"));
    await ok(["init", "--repo", repo], e);
    await ok(["backup", data], e);
    const packs = (await listKeys(admin, bucket, "unreadable/data/")).map((k) => k.key);
    assert.equal(packs.length, 1, "one pack");
    // Every read of the pack is refused, as a bucket policy or a broken network would.
    const proxy = await startS3Proxy(env.endpoint);
    t.after(() => proxy.close());
    proxy.plan = (req) =>
      req.method === "GET" && req.url.includes(packs[0])
        ? { kind: "status", status: 403, code: "AccessDenied" }
        : undefined;
    const r = await failsWith1(
      ["check", "--read-data", "--s3-endpoint", proxy.url],
      cliEnv(join(dir, "home")),
    );
    assert.equal(r.error.code, "storage");
    // The pack, and the snapshot whose tree is in it.
    assert.match(r.error.message, /could not read 2 object\(s\).*nothing damaged found/);
    assert.match(r.error.message, /access denied/);
    const details = r.error.details as { errors: unknown[]; unreadable: { object: string }[] };
    assert.deepEqual(details.errors, []);
    const objects = details.unreadable.map((u) => u.object).sort();
    assert.equal(objects.length, 2);
    assert.equal(objects[0], `data/${packs[0].split("/").pop()}`);
    assert.match(objects[1], /^snapshots\/[0-9a-f]{64}$/);
    // With the pack readable again the check passes.
    await ok(["check", "--read-data"], e);
  });

  test("init into a bucket that does not exist fails at once with exit 1, naming it", async (t) => {
    const dir = await scratch(t, "nobucket");
    const r = await failsWith1(
      ["init", "--repo", "s3://locket-no-such-bucket/x"],
      cliEnv(join(dir, "home")),
    );
    assert.equal(r.error.code, "storage");
    assert.match(r.error.message, /bucket "locket-no-such-bucket" does not exist at http:\/\//);
    assert.match(r.error.message, /Locket never creates buckets/);
    assert.ok(r.ms < 15_000, show(r));
  });

  test("a command on a repository in a bucket that does not exist fails at once, naming it", async (t) => {
    // The CLI does not check the bucket before it reads the config: that read must say it.
    const dir = await scratch(t, "nobucket-open");
    const r = await failsWith1(
      ["snapshots", "--repo", "s3://locket-no-such-bucket/x"],
      cliEnv(join(dir, "home")),
    );
    assert.equal(r.error.code, "storage");
    assert.match(r.error.message, /bucket "locket-no-such-bucket" does not exist at http:\/\//);
    assert.ok(r.ms < 15_000, show(r));
  });

  test("wrong credentials fail at once with exit 1, and no secret in any output", async (t) => {
    const dir = await scratch(t, "creds");
    const repo = `s3://${bucket}/creds`;
    const good = cliEnv(join(dir, "home"));
    const init = await ok<InitJson>(["init", "--repo", repo], good);
    const secret = "Wr0ngSecretKey/5f1d2e";
    for (const [label, bad] of [
      ["wrong secret", { AWS_SECRET_ACCESS_KEY: secret }],
      ["unknown key", { AWS_ACCESS_KEY_ID: "LOCKETNOSUCHKEY", AWS_SECRET_ACCESS_KEY: secret }],
    ] as const) {
      const badEnv = cliEnv(join(dir, "home"), bad);
      for (const args of [
        ["snapshots", "--repo", repo],
        ["restore", "latest", "--repo", repo, "--recovery-key", init.recoveryKey, "--target", dir],
      ]) {
        const r = await failsWith1(args, badEnv);
        assert.equal(r.error.code, "storage", label);
        assert.match(
          r.error.message,
          /S3 access denied \((SignatureDoesNotMatch|InvalidAccessKeyId)\)/,
        );
        assert.ok(r.error.message.includes(bucket), r.error.message);
        assert.ok(!`${r.stdout}${r.stderr}`.includes(secret), `no secret in output\n${show(r)}`);
        assert.ok(!`${r.stdout}${r.stderr}`.includes(env.secretKey), "nor the real one");
        assert.ok(r.ms < 15_000, show(r));
      }
    }
  });

  test("a repository that is not there: exit 1, no repository at s3://…", async (t) => {
    const dir = await scratch(t, "norepo");
    const r = await failsWith1(
      ["snapshots", "--repo", `s3://${bucket}/nothing-here`],
      cliEnv(join(dir, "home")),
    );
    assert.equal(r.error.code, "not_found");
    assert.equal(r.error.message, `no repository at s3://${bucket}/nothing-here`);
  });

  test("radosgw killed mid-backup: the backup fails clearly; after a restart the next one resumes and restores", async (t) => {
    const dir = await scratch(t, "crash");
    const home = join(dir, "home");
    const data = join(dir, "chat");
    const prefix = "crash";
    const repo = `s3://${bucket}/${prefix}`;
    const e = cliEnv(home);
    await ok(["demo-data", data, "--messages", "20000", "--media-mb", "200"], e);
    const init = await ok<InitJson>(["init", "--repo", repo], e);

    // Whatever happens below, radosgw runs again afterwards for the tests that follow.
    t.after(() => cephScript(env.dir, "rgw-start"));

    const paths = [join(data, "chat.db"), join(data, "Media")];
    const run = start(["backup", ...paths, "--json", "--progress", "none"], e, RUN);
    // Kill radosgw once a few packs are stored, well before the backup can end.
    const t0 = Date.now();
    let packs = 0;
    while (packs < 3) {
      assert.ok(Date.now() - t0 < 60_000, "packs appear within a minute");
      await new Promise((r) => setTimeout(r, 50));
      packs = (await listKeys(admin, bucket, `${prefix}/data/`)).length;
    }
    await cephScript(env.dir, "rgw-stop", { RGW_STOP_SIGNAL: "KILL" });
    const killedAt = Date.now();
    const failed = await run.done;
    const afterKillMs = Date.now() - killedAt;
    assert.notEqual(failed.status, 0, show(failed));
    assert.equal(failed.status, 1, show(failed));
    const error = parseJson(failed).error as ErrorJson;
    assert.equal(error.code, "storage", show(failed));
    assert.match(error.message, /^S3 \w+ s3:\/\/\S+ failed: (ECONNREFUSED|ECONNRESET|EPIPE)/);
    assert.match(error.message, /after \d+ attempts/);
    // Bounded: retries with backoff (8 tries, at most 8 s apart), then out; not a hang.
    assert.ok(afterKillMs < 90_000, `failed ${afterKillMs} ms after the kill`);
    t.diagnostic(`backup failed ${afterKillMs} ms after radosgw was killed: ${error.message}`);

    await cephScript(env.dir, "rgw-start");
    const resumed = await ok<BackupJson>(["backup", ...paths], e);
    assert.ok(resumed.adoptedPacks >= 1, `adopted ${resumed.adoptedPacks} packs`);
    assert.ok(
      resumed.summary.addedBytes < resumed.summary.bytes,
      `uploads less than the whole: ${JSON.stringify(resumed.summary)}`,
    );
    t.diagnostic(
      `resumed backup adopted ${resumed.adoptedPacks} packs, added ${resumed.summary.addedBytes} of ${resumed.summary.bytes} bytes`,
    );
    await ok(["check"], e);
    const { target } = await restoreOnNewDevice(t, repo, init.recoveryKey);
    assert.deepEqual(await diffTrees(data, target), [], "every file is byte-identical");
  });
});
