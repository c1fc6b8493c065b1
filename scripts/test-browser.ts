// `npm run test:browser`: runs @locket/core and the vault client in a real browser. A Node device
// writes a repository (zstd segments and all) into memory and a key vault listens on another
// origin; headless Chromium loads the core from its own source files (no bundler; see
// packages/core/test/browser/chromium.ts) and runs packages/core/test/browser/story.ts, which
// posts each step's outcome back. Exit status 0 only when every step passed.
//
// S3 storage from a browser is tested by packages/node/test/s3/browser.test.ts (npm run test:s3).
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  backup,
  MemoryStorage,
  OBJECT_KINDS,
  Repository,
  toHex,
} from "../packages/core/src/index.ts";
import { printSteps, runInChromium } from "../packages/core/test/browser/chromium.ts";
import { chatFiles, source } from "../packages/core/test/browser/harness.ts";
import { nodePrimitives } from "../packages/node/src/primitives.ts";
import { issueToken, loadTokenSecret, serveVault } from "../packages/vault/src/server/index.ts";

function log(message: string): void {
  process.stderr.write(`test-browser: ${message}\n`);
}

function die(message: string): never {
  log(message);
  process.exit(1);
}

/** A repository written by a Node device: text compressed with zstd, a database, a photo. */
async function nodeFixture(vault: { url: string; token: string }): Promise<string> {
  const rootKey = nodePrimitives.randomBytes(32);
  const storage = new MemoryStorage();
  const repo = await Repository.init(storage, nodePrimitives, rootKey);
  const files = chatFiles(7);
  await backup(repo, source(files), { host: "node-device", paths: Object.keys(files) });
  const objects: Record<string, Record<string, string>> = {};
  for (const kind of OBJECT_KINDS) {
    objects[kind] = {};
    for await (const { name } of storage.list(kind)) {
      objects[kind][name] = Buffer.from(await storage.load(kind, name)).toString("base64");
    }
  }
  const sums: Record<string, string> = {};
  for (const [name, data] of Object.entries(files)) {
    sums[name] = createHash("sha256").update(data).digest("hex");
  }
  return JSON.stringify({ rootKey: toHex(rootKey), files: sums, objects, vault });
}

async function main(): Promise<void> {
  let vault: Awaited<ReturnType<typeof serveVault>> | undefined;
  let vaultDir = "";
  try {
    const report = await runInChromium({
      script: "/packages/core/test/browser/story.ts",
      log,
      // The vault on its own port: another origin, allowed by its CORS setting, as a web app's
      // would be.
      prepare: async (origin) => {
        vaultDir = mkdtempSync(join(tmpdir(), "locket-browser-vault-"));
        vault = await serveVault({
          dataDir: vaultDir,
          port: 0,
          config: { corsOrigins: [origin] },
          log: () => {},
        });
        const token = await issueToken(await loadTokenSecret(vaultDir), "browser-test");
        const fixture = await nodeFixture({ url: vault.url, token });
        return { "/fixture.json": { type: "application/json", body: fixture } };
      },
    });
    if (printSteps(report.steps, (t) => process.stdout.write(t)) > 0) process.exitCode = 1;
  } finally {
    await vault?.close();
    if (vaultDir) rmSync(vaultDir, { recursive: true, force: true });
  }
}

main().catch((err) => die((err as Error).stack ?? String(err)));
