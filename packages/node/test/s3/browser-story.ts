// Runs in headless Chromium, loaded by browser.test.ts: S3 storage (s3.ts and the AWS SDK,
// bundled for browsers by esbuild; the SDK sends its requests with fetch) against a real Ceph
// RADOS Gateway on another origin, allowed by the bucket's CORS rule from docs/operations.md.
// The core comes from its own source files, as in the core's browser story.

import {
  AlreadyExistsError,
  backup,
  check,
  fromHex,
  LocketError,
  Repository,
  toHex,
  webPrimitives,
} from "@locket/core";
import {
  check1,
  database,
  type Files,
  handoff,
  noise,
  restore,
  runAndReport,
  sameBytes,
  source,
  step,
} from "../../../core/test/browser/harness.ts";
import { S3Storage, type S3StorageOptions } from "../../src/storage/s3.ts";

/** What the runner serves at /s3.json. */
interface S3Fixture {
  readonly endpoint: string;
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly bucket: string;
  /** A repository a Node device backed up to the bucket. */
  readonly fromNode: {
    readonly url: string;
    readonly rootKey: string;
    /** SHA-256 (hex) of each file of its latest snapshot, by path. */
    readonly files: Record<string, string>;
  };
}

const p = webPrimitives();

async function run(): Promise<void> {
  const fx = (await (await fetch("/s3.json")).json()) as S3Fixture;
  const options: S3StorageOptions = {
    endpoint: fx.endpoint,
    region: fx.region,
    credentials: { accessKeyId: fx.accessKeyId, secretAccessKey: fx.secretAccessKey },
    // Small parts, so a 12 MiB pack goes up as a multipart upload (its parts' ETags must be
    // readable across origins).
    multipartThreshold: 5 * 1024 * 1024,
    partSize: 5 * 1024 * 1024,
    maxAttempts: 2,
  };

  await step("restore and check what a Node device backed up to S3 (ranged GETs)", async () => {
    const storage = await S3Storage.open(fx.fromNode.url, options);
    const repo = await Repository.open(storage, p, fromHex(fx.fromNode.rootKey));
    await repo.loadIndex();
    const back = await restore(repo);
    for (const [path, sha] of Object.entries(fx.fromNode.files)) {
      const data = back.get(path);
      check1(data, `${path} missing`);
      check1(toHex(p.sha256(data)) === sha, `${path} restored differently`);
    }
    check1(back.size === Object.keys(fx.fromNode.files).length, "extra files restored");
    const report = await check(repo, { readData: true });
    check1(report.errors.length === 0, `check: ${JSON.stringify(report.errors)}`);
    return `${back.size} files from ${storage.location}, ${report.packsRead} packs read`;
  });

  const url = `s3://${fx.bucket}/from-browser`;
  const rootKey = p.randomBytes(32);
  const files: Files = {
    "msgstore.db": database(256, 11),
    "video.mp4": noise(12 * 1024 * 1024, 12),
    "notes.txt": new TextEncoder().encode("written in a browser\n".repeat(5000)),
  };
  await step(
    "init and back up to S3 from the browser (a multipart upload), restore it",
    async () => {
      const requests = new Map<string, number>();
      const storage = await S3Storage.create(url, {
        ...options,
        onRequest: (e) => requests.set(e.op, (requests.get(e.op) ?? 0) + 1),
      });
      const repo = await Repository.init(storage, p, rootKey);
      const snap = await backup(repo, source(files), {
        host: "browser",
        paths: Object.keys(files),
      });
      check1((requests.get("UploadPart") ?? 0) >= 3, `requests: ${JSON.stringify([...requests])}`);
      const back = await restore(
        await Repository.open(await S3Storage.open(url, options), p, rootKey),
      );
      for (const [name, data] of Object.entries(files)) {
        check1(sameBytes(back.get(name), data), `${name} restored differently`);
      }
      handoff.url = url;
      handoff.rootKey = toHex(rootKey);
      handoff.files = Object.fromEntries(
        Object.entries(files).map(([name, data]) => [name, toHex(p.sha256(data))]),
      );
      const counts = [...requests].map(([op, n]) => `${op} ${n}`).join(", ");
      return `snapshot ${snap.id.slice(0, 8)}; requests: ${counts}`;
    },
  );

  await step(
    "a second init at the same place is refused (If-None-Match across origins)",
    async () => {
      // S3Storage.create sees the config first; the conditional PutObject is what stops two
      // inits racing, so save the config again as an exclusive write.
      const storage = await S3Storage.open(url, options);
      try {
        await storage.save("config", "config", new Uint8Array(8), { exclusive: true });
      } catch (err) {
        check1(err instanceof AlreadyExistsError, `got ${err}`);
        return (err as Error).message;
      }
      throw new Error("overwrote the repository's config");
    },
  );

  await step("wrong credentials: a storage error that names CORS and the credentials", async () => {
    // RGW answers 403 InvalidAccessKeyId without CORS headers, so the page only sees fetch fail.
    // The default retry budget (8 attempts, ~20 s): a server that never answered gets one retry.
    const attempts: number[] = [];
    const wrong: S3StorageOptions = {
      ...options,
      maxAttempts: undefined,
      credentials: { accessKeyId: "nobody", secretAccessKey: "wrong" },
      onRequest: (e) => attempts.push(e.attempt),
    };
    try {
      await S3Storage.open(url, wrong);
    } catch (err) {
      check1(err instanceof LocketError && err.code === "storage", `got ${err}`);
      check1(/CORS/.test(err.message) && /credentials/.test(err.message), err.message);
      check1(attempts.join() === "1,2", `attempts ${attempts.join()}`);
      return `${err.message} (attempts: ${attempts.join()})`;
    }
    throw new Error("opened with wrong credentials");
  });
}

await runAndReport(run);
