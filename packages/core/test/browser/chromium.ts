// Runs a browser story (a module that uses ./harness.ts and ends with runAndReport) in headless
// Chromium and returns its steps. Node side only; used by scripts/test-browser.ts (the core and
// the vault client) and packages/node/test/s3/browser.test.ts (S3 storage against Ceph RGW).
//
// A local HTTP server serves a page whose import map names the bare imports, the repository's
// own source files with their types stripped by Node (node:module stripTypeScriptTypes), so the
// browser loads exactly the modules a bundler would see, and any extra answers the caller gives
// (a fixture, a bundle). The page posts its steps to /result.
//
// LOCKET_BROWSER_LOG=1 copies Chromium's log to stderr (its console messages say why a request
// was refused: "blocked by CORS policy: ...").
//
// Chromium comes from $LOCKET_CHROMIUM, else `chromium` (or `chromium-browser`, `google-chrome`)
// on PATH, else Debian's package, installed with apt-get when running as root.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { stripTypeScriptTypes } from "node:module";
import { tmpdir } from "node:os";
import { extname, join, relative, resolve } from "node:path";
import type { Report, Step } from "./harness.ts";

/** The repository's root folder. */
export const ROOT = resolve(import.meta.dirname, "../../../..");

/** Bare imports of the core and the vault client, as a browser page maps them. */
export const IMPORT_MAP: Record<string, string> = {
  "@noble/hashes/": "/node_modules/@noble/hashes/",
  fzstd: "/node_modules/fzstd/esm/index.mjs",
  "@locket/core": "/packages/core/src/index.ts",
  "@serenity-kit/opaque": "/node_modules/@serenity-kit/opaque/esm/index.js",
};

/** Folders and files of the repository the server hands out (everything else is a 404). */
const SERVED = [
  "packages/core/",
  "packages/vault/src/client.ts",
  "packages/vault/src/protocol.ts",
  "node_modules/",
];

/** An answer the server gives at a path. */
export interface Asset {
  readonly type: string;
  readonly body: string | Uint8Array;
}

export interface ChromiumRun {
  /** URL path of the story module (a .ts file of the repository, or an asset). */
  readonly script: string;
  /**
   * Called once the server listens, with the page's origin (`http://127.0.0.1:PORT`), before the
   * browser starts: sets up what the story needs (a CORS rule for that origin, a fixture) and
   * returns extra answers by URL path.
   */
  readonly prepare?: (origin: string) => Promise<Record<string, Asset>>;
  /** Most time the story may take. Default: 120 s. */
  readonly timeoutMs?: number;
  readonly log?: (message: string) => void;
}

function which(cmd: string): string | null {
  const r = spawnSync("sh", ["-c", `command -v ${cmd}`], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : null;
}

/** Chromium's path: $LOCKET_CHROMIUM, PATH, or Debian's package (installed when root). */
export function findChromium(log: (message: string) => void): string {
  const given = process.env.LOCKET_CHROMIUM;
  if (given) return given;
  for (const cmd of ["chromium", "chromium-browser", "google-chrome"]) {
    const path = which(cmd);
    if (path) return path;
  }
  const apt = "apt-get install -y --no-install-recommends chromium";
  if (process.getuid?.() !== 0 || !which("apt-get")) {
    throw new Error(`no Chromium found; install it (${apt}) or set LOCKET_CHROMIUM`);
  }
  log(`installing Chromium (${apt})`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const args = ["install", "-y", "--no-install-recommends", "chromium"];
  if (spawnSync("apt-get", args, { env, stdio: "ignore" }).status !== 0) {
    spawnSync("apt-get", ["update"], { env, stdio: "ignore" });
    if (spawnSync("apt-get", args, { env, stdio: "inherit" }).status !== 0) {
      throw new Error(`${apt} failed`);
    }
  }
  const path = which("chromium");
  if (!path) throw new Error("Chromium was installed but is not on PATH");
  return path;
}

function page(script: string): string {
  return `<!doctype html>
<meta charset="utf-8">
<title>Locket in a browser</title>
<script type="importmap">
${JSON.stringify({ imports: IMPORT_MAP }, null, 2)}
</script>
<script type="module" src="${script}"></script>
`;
}

function serveFile(url: string, res: ServerResponse): void {
  const path = resolve(ROOT, `.${decodeURIComponent(url)}`);
  const rel = relative(ROOT, path);
  const type = { ".ts": "text/javascript", ".js": "text/javascript", ".mjs": "text/javascript" }[
    extname(path)
  ];
  if (!SERVED.some((p) => rel.startsWith(p)) || !type || rel.includes("..")) {
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

/** Runs the story in headless Chromium. @throws Error when Chromium fails or the story times out. */
export async function runInChromium(run: ChromiumRun): Promise<Report> {
  const log = run.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  const timeoutMs = run.timeoutMs ?? 120_000;
  const chromium = findChromium(log);
  let assets: Record<string, Asset> = {};
  let settle: (report: Report) => void = () => {};
  const result = new Promise<Report>((r) => {
    settle = r;
  });
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://x").pathname;
    if (req.method === "POST" && url === "/result") {
      const parts: Buffer[] = [];
      req.on("data", (c: Buffer) => parts.push(c));
      req.on("end", () => {
        res.writeHead(204).end();
        settle(JSON.parse(Buffer.concat(parts).toString("utf8")) as Report);
      });
      return;
    }
    const asset = assets[url];
    if (url === "/") res.writeHead(200, { "content-type": "text/html" }).end(page(run.script));
    else if (asset) res.writeHead(200, { "content-type": asset.type }).end(asset.body);
    else serveFile(url, res);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  const origin = `http://127.0.0.1:${port}`;
  const profile = mkdtempSync(join(tmpdir(), "locket-chromium-"));
  let browser: ChildProcess | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    assets = (await run.prepare?.(origin)) ?? {};
    const args = [
      "--headless=new",
      "--no-sandbox", // root in CI containers
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--no-first-run",
      "--no-default-browser-check",
      "--enable-logging=stderr", // the page's console too: CORS refusals are only said there
      `--user-data-dir=${profile}`,
      `${origin}/`,
    ];
    log(`${chromium} (${spawnSync(chromium, ["--version"], { encoding: "utf8" }).stdout.trim()})`);
    // Its own process group, so the renderers and the GPU process are killed with it.
    // TMPDIR in the profile, so Chromium's scratch folders go with it.
    const child = spawn(chromium, args, {
      stdio: ["ignore", "ignore", "pipe"],
      detached: true,
      env: { ...process.env, TMPDIR: profile },
    });
    browser = child;
    let stderr = "";
    child.stderr?.on("data", (c: Buffer) => {
      stderr = (stderr + c.toString()).slice(-4000);
      if (process.env.LOCKET_BROWSER_LOG) process.stderr.write(c);
    });
    const exited = new Promise<never>((_, reject) =>
      child.on("exit", (code) => reject(new Error(`Chromium exited (${code}): ${stderr}`))),
    );
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no result from the page after ${timeoutMs / 1000} s: ${stderr}`)),
        timeoutMs,
      );
    });
    return await Promise.race([result, exited, timeout]);
  } finally {
    clearTimeout(timer);
    if (browser) {
      browser.removeAllListeners("exit");
      if (browser.exitCode === null && browser.signalCode === null) {
        const gone = new Promise((r) => browser?.once("exit", r));
        try {
          process.kill(-(browser.pid ?? 0), "SIGKILL");
        } catch {
          browser.kill("SIGKILL");
        }
        await gone;
      }
    }
    server.close();
    rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  }
}

/** Writes each step's outcome; returns how many failed (a story with no step counts as one). */
export function printSteps(steps: readonly Step[], write: (text: string) => void): number {
  let failed = 0;
  for (const s of steps) {
    if (!s.ok) failed++;
    const mark = s.ok ? "ok" : "FAIL";
    write(`${mark}  ${s.name} (${s.ms} ms)\n      ${s.detail.replaceAll("\n", "\n      ")}\n`);
  }
  write(`${steps.length - failed} of ${steps.length} steps passed in Chromium\n`);
  return steps.length === 0 ? 1 : failed;
}
