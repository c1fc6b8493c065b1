/**
 * S3 storage from a browser, on a real S3 server: headless Chromium runs browser-story.ts, which
 * restores a repository a Node device backed up to Ceph RGW, backs up one of its own (with a
 * multipart upload), and meets the errors; then Node restores and checks what the browser wrote.
 *
 * The page and the server are different origins, so every request is a CORS request: the bucket
 * gets the CORS policy exactly as docs/operations.md prints it (only the origin replaced), and a
 * header that policy forgets to allow or expose fails this test. s3.ts and the AWS SDK are
 * bundled for browsers with esbuild (the core is not bundled: the page loads it from source).
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { relative, resolve } from "node:path";
import { test } from "node:test";
import { type CORSConfiguration, PutBucketCorsCommand, type S3Client } from "@aws-sdk/client-s3";
import * as esbuild from "esbuild";
import { backup, check, fromHex, Repository, toHex } from "../../../core/src/index.ts";
import { printSteps, ROOT, runInChromium } from "../../../core/test/browser/chromium.ts";
import { chatFiles, restore, source } from "../../../core/test/browser/harness.ts";
import { nodePrimitives } from "../../src/primitives.ts";
import { S3Storage, type S3StorageOptions } from "../../src/storage/s3.ts";
import { type S3Env, useTestBucket } from "./ceph.ts";

let env: S3Env;
let admin: S3Client;
let bucket: string;
useTestBucket("locket-browser", (b) => ({ env, admin, bucket } = b));

function options(): S3StorageOptions {
  return {
    endpoint: env.endpoint,
    region: env.region,
    credentials: { accessKeyId: env.accessKey, secretAccessKey: env.secretKey },
  };
}

/** The CORS policy printed in docs/operations.md ("S3 from a browser"). */
function documentedCors(): CORSConfiguration {
  const doc = readFileSync(resolve(ROOT, "docs/operations.md"), "utf8");
  const section = doc.slice(doc.indexOf("### S3 from a browser"));
  const json = /```json\n([\s\S]*?)```/.exec(section);
  assert.ok(json, "docs/operations.md has no CORS policy under 'S3 from a browser'");
  return JSON.parse(json[1]);
}

/** browser-story.ts for browsers: the SDK and s3.ts in one module, the core left to the page. */
async function bundleStory(): Promise<string> {
  const coreDir = resolve(ROOT, "packages/core");
  const out = await esbuild.build({
    entryPoints: [resolve(import.meta.dirname, "browser-story.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "chrome120",
    write: false,
    logLevel: "silent",
    plugins: [
      {
        name: "core-from-source",
        setup(build) {
          // One copy of the core on the page (the import map's), so instanceof holds across it.
          build.onResolve({ filter: /^@locket\/core$/ }, () => ({
            path: "/packages/core/src/index.ts",
            external: true,
          }));
          build.onResolve({ filter: /^\./ }, (args) => {
            const path = resolve(args.resolveDir, args.path);
            if (!path.startsWith(`${coreDir}/`)) return undefined;
            return { path: `/${relative(ROOT, path)}`, external: true };
          });
        },
      },
    ],
  });
  return out.outputFiles[0].text;
}

const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");

test("S3 storage in Chromium, across origins, with the documented CORS policy", async (t) => {
  const fromNode = `s3://${bucket}/from-node`;
  const files = chatFiles(5);
  const nodeKey = nodePrimitives.randomBytes(32);
  const repo = await Repository.init(
    await S3Storage.create(fromNode, options()),
    nodePrimitives,
    nodeKey,
  );
  await backup(repo, source(files), { host: "node-device", paths: Object.keys(files) });

  const script = await bundleStory();
  const report = await runInChromium({
    script: "/s3-story.js",
    log: (m) => t.diagnostic(m),
    prepare: async (origin) => {
      const cors = documentedCors();
      for (const rule of cors.CORSRules ?? []) rule.AllowedOrigins = [origin];
      await admin.send(new PutBucketCorsCommand({ Bucket: bucket, CORSConfiguration: cors }));
      const fixture = {
        endpoint: env.endpoint,
        region: env.region,
        accessKeyId: env.accessKey,
        secretAccessKey: env.secretKey,
        bucket,
        fromNode: {
          url: fromNode,
          rootKey: toHex(nodeKey),
          files: Object.fromEntries(Object.entries(files).map(([n, d]) => [n, sha256(d)])),
        },
      };
      return {
        "/s3-story.js": { type: "text/javascript", body: script },
        "/s3.json": { type: "application/json", body: JSON.stringify(fixture) },
      };
    },
  });
  let printed = "";
  const failed = printSteps(report.steps, (text) => {
    printed += text;
  });
  t.diagnostic(printed);
  assert.equal(failed, 0, printed);

  // What the browser backed up, read back by Node.
  const {
    url,
    rootKey,
    files: sums,
  } = report.handoff as {
    url: string;
    rootKey: string;
    files: Record<string, string>;
  };
  const written = await Repository.open(
    await S3Storage.open(url, options()),
    nodePrimitives,
    fromHex(rootKey),
  );
  await written.loadIndex();
  const back = await restore(written);
  assert.deepEqual(Object.fromEntries([...back].map(([path, data]) => [path, sha256(data)])), sums);
  const checked = await check(written, { readData: true });
  assert.deepEqual(checked.errors, []);
});
