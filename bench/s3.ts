/**
 * Backup and restore to S3: Locket's S3 backend against restic's, on one real S3 server (Ceph
 * RADOS Gateway from scripts/ceph-s3.sh, memstore) and one generated chat data set.
 *
 *   node bench/s3.ts [--messages 200000] [--media-mb 300] [--runs 1] [--data DIR] [--json FILE] [--keep]
 *
 * Both tools talk to RGW through the same counting proxy on 127.0.0.1 (test/s3/proxy.ts), which
 * counts their requests and bytes each way. Phases per tool and run, each in a fresh repository
 * (a fresh prefix for Locket, a fresh bucket path for restic):
 *   backup     first backup of the data set (chat.db and Media)
 *   nochange   a second backup with nothing changed
 *   restore    restore of the latest snapshot on a "new device": Locket with a fresh LOCKET_HOME and
 *              the recovery key, restic with a fresh cache folder; then checked byte for byte
 *              against the data set (not timed)
 * Throughput is data set bytes per wall-clock second. Prints a Markdown table (medians over the
 * runs) with the ratio Locket/restic, and writes every sample as JSON with --json. Installs restic
 * (and Ceph, through the script) with apt-get when missing; tears Ceph down on every exit.
 */

import { execFileSync, spawn, spawnSync } from "node:child_process";
import {
  appendFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { diffTrees } from "../packages/node/src/compare.ts";
import {
  adminClient,
  CEPH_SCRIPT,
  cephScript,
  deletePrefix,
  listKeys,
} from "../packages/node/test/s3/ceph.ts";
import { startS3Proxy } from "../packages/node/test/s3/proxy.ts";

const LOCKET_JS = new URL("../packages/node/bin/locket.js", import.meta.url).pathname;
const PASSWORD = "locket-bench-password";
const GB = 1e9;

const { values } = parseArgs({
  options: {
    messages: { type: "string", default: "200000" },
    "media-mb": { type: "string", default: "300" },
    runs: { type: "string", default: "1" },
    data: { type: "string" },
    json: { type: "string" },
    trace: { type: "string" },
    keep: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  process.stdout.write(`Usage: node bench/s3.ts [options]

Backs up and restores one generated chat data set with Locket's S3 backend and restic's, both
against a local Ceph RADOS Gateway (scripts/ceph-s3.sh; installed with apt-get when missing and
torn down on exit) through a proxy that counts requests and bytes. Prints a Markdown table of
medians with the ratio Locket/restic; docs/benchmarks-s3.md holds the latest.

Options:
      --messages N     messages in the generated database (default 200000)
      --media-mb N     megabytes of generated media (default 300)
      --runs N         runs of every phase per tool (default 1)
      --data DIR       generate the data set in DIR (default: a temporary folder)
      --json FILE      write every sample as JSON to FILE
      --trace FILE     write every request of every phase (method, path, Range) to FILE
      --keep           keep the temporary folder
  -h, --help           this help
`);
  process.exit(0);
}
const runs = Number(values.runs);

function log(line: string): void {
  process.stderr.write(`[bench-s3] ${line}\n`);
}

/** An environment without the user's tool settings, plus `extra`. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^(LOCKET_|RESTIC_|AWS_)/.test(k)) env[k] = v;
  }
  return { ...env, AWS_EC2_METADATA_DISABLED: "true", ...extra };
}

/**
 * Runs a command to completion (asynchronously: the proxy lives on this process's event loop);
 * returns its wall time in ms and its stdout.
 * @throws Error on a non-zero exit.
 */
function runCmd(
  cmd: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<{ ms: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let stdout = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.on("error", reject);
    child.on("close", (status) => {
      const ms = performance.now() - t0;
      if (status === 0) resolve({ ms, stdout });
      else reject(new Error(`${cmd} ${args.join(" ")} exited ${status}:\n${out.slice(-2000)}`));
    });
  });
}

async function timed(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv) {
  return (await runCmd(cmd, args, env)).ms;
}

function treeBytes(dir: string): { bytes: number; files: number } {
  let bytes = 0;
  let files = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) {
      bytes += statSync(join(e.parentPath, e.name)).size;
      files++;
    }
  }
  return { bytes, files };
}

function version(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: "utf8" }).trim().split("\n")[0];
  } catch {
    return "unknown";
  }
}

function ensureRestic(): void {
  if (spawnSync("restic", ["version"]).status === 0) return;
  if (process.getuid?.() !== 0) throw new Error("restic is not installed and we are not root");
  log("installing restic with apt-get ...");
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  let r = spawnSync("apt-get", ["install", "-y", "-qq", "restic"], { env });
  if (r.status !== 0) {
    spawnSync("apt-get", ["update", "-qq"], { env });
    r = spawnSync("apt-get", ["install", "-y", "-qq", "restic"], { env });
  }
  if (r.status !== 0) throw new Error(`apt-get install restic failed: ${r.stderr}`);
}

interface Sample {
  tool: "locket" | "restic";
  phase: "backup" | "nochange" | "restore";
  run: number;
  ms: number;
  requests: number;
  byMethod: Record<string, number>;
  bytesUp: number;
  bytesDown: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// ---------------------------------------------------------------------------------------------

ensureRestic();
const tmp = mkdtempSync(join(process.env.BENCH_TMP ?? tmpdir(), "locket-bench-s3-"));
const cephDir = join(tmp, "ceph");
let cephUp = false;
const teardown = () => {
  if (cephUp)
    spawnSync("bash", [CEPH_SCRIPT, "down"], {
      env: { ...process.env, CEPH_S3_DIR: cephDir },
      stdio: "inherit",
    });
  cephUp = false;
  if (!values.keep) rmSync(tmp, { recursive: true, force: true });
};
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    teardown();
    process.exit(130);
  });
}

const samples: Sample[] = [];
let report = "";
try {
  const data = values.data ?? join(tmp, "data");
  if (!values.data) {
    log(`generating the data set: ${values.messages} messages, ${values["media-mb"]} MiB media`);
    await timed(
      process.execPath,
      [
        LOCKET_JS,
        "demo-data",
        data,
        "--messages",
        values.messages!,
        "--media-mb",
        values["media-mb"]!,
        "--progress",
        "none",
      ],
      cleanEnv({ LOCKET_HOME: join(tmp, "gen-home") }),
    );
  }
  const dataset = treeBytes(data);
  const paths = [join(data, "chat.db"), join(data, "Media")];
  log(`data set: ${(dataset.bytes / 1e6).toFixed(1)} MB in ${dataset.files} files`);

  log("starting Ceph RGW ...");
  cephUp = true;
  // Room for both tools' repositories with memstore (RAM ~2.1x what is stored).
  await cephScript(cephDir, "up", { STORE_BYTES: String(8 * 1024 ** 3) });
  const envFile = Object.fromEntries(
    readFileSync(join(cephDir, "s3.env"), "utf8")
      .split("\n")
      .filter((l) => l.includes("="))
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  );
  const s3 = {
    endpoint: envFile.S3_ENDPOINT,
    accessKey: envFile.S3_ACCESS_KEY,
    secretKey: envFile.S3_SECRET_KEY,
    region: envFile.S3_REGION,
    dir: cephDir,
    stop: async () => {},
  };
  const admin = adminClient(s3);
  const { CreateBucketCommand } = await import("@aws-sdk/client-s3");
  for (const b of ["bench-locket", "bench-restic"])
    await admin.send(new CreateBucketCommand({ Bucket: b }));
  const proxy = await startS3Proxy(s3.endpoint);
  const creds = { AWS_ACCESS_KEY_ID: s3.accessKey, AWS_SECRET_ACCESS_KEY: s3.secretKey };
  // With --trace, every request; a phase's are the last ones when it is recorded.
  const traced: string[] = [];
  if (values.trace) {
    writeFileSync(values.trace, "");
    proxy.plan = (req) => {
      traced.push(`${req.method} ${req.url}${req.headers.range ? ` ${req.headers.range}` : ""}`);
      return undefined;
    };
  }

  const record = (tool: Sample["tool"], phase: Sample["phase"], run: number, ms: number) => {
    const st = proxy.stats;
    samples.push({
      tool,
      phase,
      run,
      ms,
      requests: st.requests,
      byMethod: { ...st.byMethod },
      bytesUp: st.bytesUp,
      bytesDown: st.bytesDown,
    });
    log(
      `${tool} ${phase} run ${run}: ${(ms / 1000).toFixed(2)} s, ${st.requests} requests, ${(st.bytesUp / 1e6).toFixed(1)} MB up, ${(st.bytesDown / 1e6).toFixed(1)} MB down`,
    );
    if (values.trace) {
      const lines = traced.splice(0).slice(-st.requests);
      appendFileSync(values.trace, `## ${tool} ${phase} run ${run}\n${lines.join("\n")}\n`);
    }
  };

  const stored: Record<string, number> = {};

  async function benchLocket(run: number): Promise<void> {
    const prefix = `run${run}`;
    const repo = `s3://bench-locket/${prefix}`;
    const env = cleanEnv({
      ...creds,
      LOCKET_HOME: join(tmp, `locket-home-${run}`),
      LOCKET_S3_ENDPOINT: proxy.url,
    });
    const cli = (args: string[]) => [LOCKET_JS, ...args, "--progress", "none"];
    const init = await runCmd(process.execPath, cli(["init", "--repo", repo, "--json"]), env);
    const recoveryKey = JSON.parse(init.stdout).recoveryKey as string;
    proxy.reset();
    record("locket", "backup", run, await timed(process.execPath, cli(["backup", ...paths]), env));
    proxy.reset();
    record(
      "locket",
      "nochange",
      run,
      await timed(process.execPath, cli(["backup", ...paths]), env),
    );
    stored.locket = (await listKeys(admin, "bench-locket", `${prefix}/`)).reduce(
      (a, k) => a + k.size,
      0,
    );
    const target = join(tmp, `locket-restore-${run}`);
    const newDevice = cleanEnv({
      ...creds,
      LOCKET_HOME: join(tmp, `locket-new-${run}`),
      LOCKET_S3_ENDPOINT: proxy.url,
    });
    proxy.reset();
    const ms = await timed(
      process.execPath,
      cli(["restore", "latest", "--repo", repo, "--recovery-key", recoveryKey, "--target", target]),
      newDevice,
    );
    record("locket", "restore", run, ms);
    const diff = await diffTrees(data, target);
    if (diff.length) throw new Error(`locket restore differs: ${diff.slice(0, 5).join(", ")}`);
    rmSync(target, { recursive: true, force: true });
    await deletePrefix(admin, "bench-locket", `${prefix}/`);
  }

  async function benchRestic(run: number): Promise<void> {
    const prefix = `run${run}`;
    const repo = `s3:${proxy.url}/bench-restic/${prefix}`;
    const env = cleanEnv({
      ...creds,
      RESTIC_REPOSITORY: repo,
      RESTIC_PASSWORD: PASSWORD,
      RESTIC_CACHE_DIR: join(tmp, `restic-cache-${run}`),
    });
    await timed("restic", ["init", "--repository-version", "2"], env);
    proxy.reset();
    record("restic", "backup", run, await timed("restic", ["backup", "--quiet", ...paths], env));
    proxy.reset();
    record("restic", "nochange", run, await timed("restic", ["backup", "--quiet", ...paths], env));
    stored.restic = (await listKeys(admin, "bench-restic", `${prefix}/`)).reduce(
      (a, k) => a + k.size,
      0,
    );
    const target = join(tmp, `restic-restore-${run}`);
    const newDevice = { ...env, RESTIC_CACHE_DIR: join(tmp, `restic-cache-new-${run}`) };
    proxy.reset();
    record(
      "restic",
      "restore",
      run,
      await timed("restic", ["restore", "latest", "--quiet", "--target", target], newDevice),
    );
    // restic restores absolute paths under the target.
    const diff = await diffTrees(data, join(target, data));
    if (diff.length) throw new Error(`restic restore differs: ${diff.slice(0, 5).join(", ")}`);
    rmSync(target, { recursive: true, force: true });
    await deletePrefix(admin, "bench-restic", `${prefix}/`);
  }

  for (let run = 1; run <= runs; run++) {
    // Alternate who goes first, so neither always meets a fresher (or more loaded) server.
    if (run % 2) {
      await benchLocket(run);
      await benchRestic(run);
    } else {
      await benchRestic(run);
      await benchLocket(run);
    }
  }
  await proxy.close();
  admin.destroy();

  // ------------------------------------------------------------------------------------------
  const cpu = cpus();
  const machineLine = `${cpu[0]?.model ?? "unknown CPU"}, ${cpu.length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM; Node ${process.version}; ${version("restic", ["version"])}; ${version("radosgw", ["--version"])}`;
  const gb = dataset.bytes / GB;
  const rows: string[] = [];
  const ratio = (a: number, b: number) => (b === 0 ? "–" : `${(a / b).toFixed(2)}×`);
  const summary: Record<
    string,
    Record<
      string,
      { ms: number; requests: number; up: number; down: number; methods: Record<string, number> }
    >
  > = {};
  for (const phase of ["backup", "nochange", "restore"] as const) {
    summary[phase] = {};
    for (const tool of ["locket", "restic"] as const) {
      const xs = samples.filter((s) => s.tool === tool && s.phase === phase);
      const last = xs[xs.length - 1];
      summary[phase][tool] = {
        ms: median(xs.map((s) => s.ms)),
        requests: median(xs.map((s) => s.requests)),
        up: median(xs.map((s) => s.bytesUp)),
        down: median(xs.map((s) => s.bytesDown)),
        methods: last.byMethod,
      };
    }
  }
  const label = {
    backup: "first backup",
    nochange: "backup, nothing changed",
    restore: "restore (new device)",
  };
  rows.push(
    "| phase | Locket time | restic time | Locket MB/s | restic MB/s | throughput Locket/restic | Locket requests (per GB) | restic requests (per GB) | requests/GB Locket/restic | Locket MB up / down | restic MB up / down |",
  );
  rows.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
  for (const phase of ["backup", "nochange", "restore"] as const) {
    const l = summary[phase].locket;
    const r = summary[phase].restic;
    const mbps = (ms: number) => dataset.bytes / 1e6 / (ms / 1000);
    rows.push(
      `| ${label[phase]} | ${(l.ms / 1000).toFixed(2)} s | ${(r.ms / 1000).toFixed(2)} s | ${mbps(l.ms).toFixed(1)} | ${mbps(r.ms).toFixed(1)} | ${ratio(mbps(l.ms), mbps(r.ms))} | ${l.requests} (${(l.requests / gb).toFixed(0)}) | ${r.requests} (${(r.requests / gb).toFixed(0)}) | ${ratio(l.requests, r.requests)} | ${(l.up / 1e6).toFixed(1)} / ${(l.down / 1e6).toFixed(1)} | ${(r.up / 1e6).toFixed(1)} / ${(r.down / 1e6).toFixed(1)} |`,
    );
  }
  const methods = (m: Record<string, number>) =>
    Object.entries(m)
      .sort()
      .map(([k, v]) => `${k} ${v}`)
      .join(", ");
  report = [
    `Machine: ${machineLine}.`,
    `Data set: \`locket demo-data --messages ${values.messages} --media-mb ${values["media-mb"]}\`: ${(dataset.bytes / 1e6).toFixed(1)} MB in ${dataset.files} files (chat.db and Media). ${runs} run(s); medians.`,
    "",
    ...rows,
    "",
    `Stored after two backups: Locket ${(stored.locket / 1e6).toFixed(1)} MB, restic ${(stored.restic / 1e6).toFixed(1)} MB.`,
    "",
    "Requests by HTTP method (last run):",
    "",
    ...(["backup", "nochange", "restore"] as const).flatMap((p) => [
      `- ${label[p]}: Locket ${methods(summary[p].locket.methods)}; restic ${methods(summary[p].restic.methods)}`,
    ]),
  ].join("\n");
  process.stdout.write(`${report}\n`);
  if (values.json) {
    mkdirSync(join(values.json, ".."), { recursive: true });
    writeFileSync(
      values.json,
      `${JSON.stringify({ machine: machineLine, dataset, runs, samples, stored, report }, null, 2)}\n`,
    );
  }
} finally {
  teardown();
}
