// `npm run test:browser`: runs @locket/core in a real browser. A Node device writes a repository
// (zstd segments and all) into memory; a local HTTP server serves it with the core's own source
// files, types stripped by Node (node:module stripTypeScriptTypes) and bare imports mapped to
// node_modules by an import map, so the browser loads exactly the modules a bundler would see,
// with no build step; headless Chromium runs packages/core/test/browser/story.ts, which posts
// each step's outcome back. Exit status 0 only when every step passed.
//
// Chromium comes from $LOCKET_CHROMIUM, else `chromium` (or `chromium-browser`, `google-chrome`)
// on PATH, else Debian's package, installed with apt-get when running as root.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { stripTypeScriptTypes } from "node:module";
import { tmpdir } from "node:os";
import { extname, join, relative, resolve } from "node:path";
import {
  backup,
  MemoryStorage,
  OBJECT_KINDS,
  Repository,
  type SourceEntry,
  toHex,
} from "../packages/core/src/index.ts";
import { nodePrimitives } from "../packages/node/src/primitives.ts";
import { issueToken, loadTokenSecret, serveVault } from "../packages/vault/src/server/index.ts";

const ROOT = resolve(import.meta.dirname, "..");
const TIMEOUT_MS = 120_000;

function log(message: string): void {
  process.stderr.write(`test-browser: ${message}\n`);
}

function die(message: string): never {
  log(message);
  process.exit(1);
}

function which(cmd: string): string | null {
  const r = spawnSync("sh", ["-c", `command -v ${cmd}`], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : null;
}

function findChromium(): string {
  const given = process.env.LOCKET_CHROMIUM;
  if (given) return given;
  for (const cmd of ["chromium", "chromium-browser", "google-chrome"]) {
    const path = which(cmd);
    if (path) return path;
  }
  const apt = "apt-get install -y --no-install-recommends chromium";
  if (process.getuid?.() !== 0 || !which("apt-get")) {
    die(`no Chromium found; install it (${apt}) or set LOCKET_CHROMIUM`);
  }
  log(`installing Chromium (${apt})`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const args = ["install", "-y", "--no-install-recommends", "chromium"];
  if (spawnSync("apt-get", args, { env, stdio: "ignore" }).status !== 0) {
    spawnSync("apt-get", ["update"], { env, stdio: "ignore" });
    if (spawnSync("apt-get", args, { env, stdio: "inherit" }).status !== 0) die(`${apt} failed`);
  }
  return which("chromium") ?? die("Chromium was installed but is not on PATH");
}

/** A repository written by a Node device: text compressed with zstd, a database, a photo. */
async function nodeFixture(vault: { url: string; token: string }): Promise<string> {
  const rootKey = nodePrimitives.randomBytes(32);
  const storage = new MemoryStorage();
  const repo = await Repository.init(storage, nodePrimitives, rootKey);
  const words = ["hello", "see", "you", "at", "eight", "ok", "photo", "lol", "where", "now"];
  const text = Array.from({ length: 60_000 }, (_, i) => words[(i * 7919) % 10]).join(" ");
  const db = nodePrimitives.randomBytes(64 * 4096);
  db.set(new TextEncoder().encode("SQLite format 3\0"), 0);
  db[16] = 0x10;
  db[17] = 0;
  // A database page that compresses too, so a database segment is zstd as well.
  db.set(new TextEncoder().encode(text.slice(0, 4096)), 4096);
  const files: Record<string, Uint8Array> = {
    "chat.txt": new TextEncoder().encode(text),
    "msgstore.db": db,
    "photo.jpg": nodePrimitives.randomBytes(300_000),
  };
  const roots: SourceEntry[] = Object.entries(files).map(([name, data]) => ({
    type: "file",
    name,
    mode: 0o644,
    mtimeMs: 1_700_000_000_000,
    size: data.length,
    compressible: name !== "photo.jpg",
    async *open() {
      yield data;
    },
  }));
  await backup(repo, roots, { host: "node-device", paths: Object.keys(files) });
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

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>Locket in a browser</title>
<script type="importmap">
{ "imports": {
  "@noble/hashes/": "/node_modules/@noble/hashes/",
  "fzstd": "/node_modules/fzstd/esm/index.mjs",
  "@locket/core": "/packages/core/src/index.ts",
  "@serenity-kit/opaque": "/node_modules/@serenity-kit/opaque/esm/index.js"
} }
</script>
<script type="module" src="/packages/core/test/browser/story.ts"></script>
`;

interface Step {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
  readonly ms: number;
}

function serveFile(url: string, res: ServerResponse): void {
  const path = resolve(ROOT, `.${decodeURIComponent(url)}`);
  const rel = relative(ROOT, path);
  const allowed = [
    "packages/core/",
    "packages/vault/src/client.ts",
    "packages/vault/src/protocol.ts",
    "node_modules/",
  ].some((p) => rel.startsWith(p));
  const type = { ".ts": "text/javascript", ".js": "text/javascript", ".mjs": "text/javascript" }[
    extname(path)
  ];
  if (!allowed || !type || rel.includes("..")) {
    res.writeHead(404).end();
    return;
  }
  let body: string;
  try {
    body = readFileSync(path, "utf8");
  } catch {
    res.writeHead(404).end();
    return;
  }
  if (extname(path) === ".ts") body = stripTypeScriptTypes(body);
  res.writeHead(200, { "content-type": type, "cache-control": "no-store" }).end(body);
}

async function main(): Promise<void> {
  const chromium = findChromium();
  let fixture = "";
  let settle: (steps: Step[]) => void = () => {};
  const result = new Promise<Step[]>((r) => {
    settle = r;
  });
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://x").pathname;
    if (req.method === "POST" && url === "/result") {
      const parts: Buffer[] = [];
      req.on("data", (c: Buffer) => parts.push(c));
      req.on("end", () => {
        res.writeHead(204).end();
        settle(JSON.parse(Buffer.concat(parts).toString("utf8")) as Step[]);
      });
      return;
    }
    if (url === "/") res.writeHead(200, { "content-type": "text/html" }).end(PAGE);
    else if (url === "/fixture.json")
      res.writeHead(200, { "content-type": "application/json" }).end(fixture);
    else serveFile(url, res);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  const profile = mkdtempSync(join(tmpdir(), "locket-chromium-"));
  // The vault on its own port: another origin, allowed by its CORS setting, as a web app's would be.
  const vaultDir = join(profile, "vault");
  const vault = await serveVault({
    dataDir: vaultDir,
    port: 0,
    config: { corsOrigins: [`http://127.0.0.1:${port}`] },
    log: () => {},
  });
  const token = await issueToken(await loadTokenSecret(vaultDir), "browser-test");
  fixture = await nodeFixture({ url: vault.url, token });
  const args = [
    "--headless=new",
    "--no-sandbox", // root in CI containers
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    `--user-data-dir=${profile}`,
    `http://127.0.0.1:${port}/`,
  ];
  log(`${chromium} (${spawnSync(chromium, ["--version"], { encoding: "utf8" }).stdout.trim()})`);
  const browser: ChildProcess = spawn(chromium, args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  browser.stderr?.on("data", (c: Buffer) => {
    stderr = (stderr + c.toString()).slice(-4000);
  });
  const exited = new Promise<never>((_, reject) =>
    browser.on("exit", (code) => reject(new Error(`Chromium exited (${code}): ${stderr}`))),
  );
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no result from the page after ${TIMEOUT_MS / 1000} s: ${stderr}`)),
      TIMEOUT_MS,
    );
  });
  let steps: Step[];
  try {
    steps = await Promise.race([result, exited, timeout]);
  } finally {
    clearTimeout(timer);
    browser.removeAllListeners("exit");
    const gone = new Promise((r) => browser.once("exit", r));
    if (browser.exitCode === null && browser.signalCode === null) {
      browser.kill("SIGKILL");
      await gone;
    }
    server.close();
    await vault.close();
    rmSync(profile, { recursive: true, force: true });
  }
  let failed = 0;
  for (const s of steps) {
    if (!s.ok) failed++;
    const mark = s.ok ? "ok" : "FAIL";
    process.stdout.write(
      `${mark}  ${s.name} (${s.ms} ms)\n      ${s.detail.replaceAll("\n", "\n      ")}\n`,
    );
  }
  process.stdout.write(`${steps.length - failed} of ${steps.length} steps passed in Chromium\n`);
  if (failed > 0 || steps.length === 0) process.exit(1);
}

main().catch((err) => die((err as Error).stack ?? String(err)));
