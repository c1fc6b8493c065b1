// Runs in a real browser (Chromium, headless), loaded by scripts/test-browser.ts: @locket/core
// as a browser gets it (its own .ts files with the types stripped, @noble/hashes and fzstd as
// ES modules, no Node module, no bundler), on the browser's primitives (WebCrypto, @noble/hashes,
// fzstd). Each step's outcome goes back to the runner, which fails unless every step passed.

import { VaultClient } from "../../../vault/src/client.ts";
import {
  backup,
  check,
  formatRecoveryKey,
  LocketError,
  MemoryStorage,
  OBJECT_KINDS,
  type ObjectKind,
  type Primitives,
  parseRecoveryKey,
  Repository,
  toHex,
  webPrimitives,
} from "../../src/index.ts";
import {
  check1,
  database,
  type Files,
  noise,
  restore,
  runAndReport,
  sameBytes,
  source,
  step,
} from "./harness.ts";

/** What the runner serves at /fixture.json: a repository a Node device wrote. */
interface Fixture {
  readonly rootKey: string;
  /** SHA-256 (hex) of each file of its latest snapshot, by path. */
  readonly files: Record<string, string>;
  readonly objects: Record<string, Record<string, string>>;
  /** A key vault on another origin (so CORS is exercised) and an account token for it. */
  readonly vault: { readonly url: string; readonly token: string };
}

const p = webPrimitives();

async function run(): Promise<void> {
  await step("a real browser, without Node", async () => {
    check1(typeof (globalThis as { process?: unknown }).process === "undefined", "process exists");
    check1(typeof globalThis.crypto?.subtle?.encrypt === "function", "no WebCrypto");
    return navigator.userAgent;
  });

  const rootKey = p.randomBytes(32);
  await step("recovery key: format and parse", async () => {
    const text = formatRecoveryKey(rootKey);
    check1(toHex(parseRecoveryKey(text)) === toHex(rootKey), "round trip differs");
    return `${text.split(" ").length} groups`;
  });

  const storage = new MemoryStorage();
  const files: Files = {
    "msgstore.db": database(96, 1),
    "photo.jpg": noise(700_000, 2),
    "notes.txt": new TextEncoder().encode("hello from a browser\n".repeat(2000)),
  };
  await step("init, back up, restore on a second device, check --read-data", async () => {
    const repo = await Repository.init(storage, p, rootKey);
    const first = await backup(repo, source(files), { host: "browser", paths: Object.keys(files) });
    const reader = await Repository.open(storage, p, rootKey);
    await reader.loadIndex();
    const back = await restore(reader);
    for (const [name, data] of Object.entries(files)) {
      check1(sameBytes(back.get(name), data), `${name} restored differently`);
    }
    const report = await check(reader, { readData: true });
    check1(report.errors.length === 0, `check: ${JSON.stringify(report.errors)}`);
    return `snapshot ${first.id.slice(0, 8)}, ${report.packsRead} packs read`;
  });

  await step("a day later: only the changed page is stored again", async () => {
    const before = await storedBytes(storage);
    const db = files["msgstore.db"].slice();
    db.set(noise(4096, 9), 40 * 4096);
    files["msgstore.db"] = db;
    const repo = await Repository.open(storage, p, rootKey);
    await backup(repo, source(files), { host: "browser", paths: Object.keys(files) });
    const added = (await storedBytes(storage)) - before;
    check1(added < 64 * 1024, `the second backup stored ${added} bytes`);
    const back = await restore(await Repository.open(storage, p, rootKey));
    check1(sameBytes(back.get("msgstore.db"), db), "the new database restored differently");
    return `${added} bytes added`;
  });

  await step("a wrong key is refused with a typed error", async () => {
    try {
      await Repository.open(storage, p, p.randomBytes(32));
    } catch (err) {
      check1(err instanceof LocketError && err.code === "wrong_key", `got ${err}`);
      return err.code;
    }
    throw new Error("opened with a wrong key");
  });

  const fixture = (await (await fetch("/fixture.json")).json()) as Fixture;
  const nodeStorage = new MemoryStorage();
  for (const [kind, objects] of Object.entries(fixture.objects)) {
    for (const [name, b64] of Object.entries(objects)) {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      await nodeStorage.save(kind as ObjectKind, name, bytes);
    }
  }
  const nodeKey = Uint8Array.from(fixture.rootKey.match(/../g)!, (h) => Number.parseInt(h, 16));
  await step("restore what a Node device backed up (zstd, decoded by fzstd)", async () => {
    let frames = 0;
    const counting: Primitives = {
      ...p,
      zstdDecompress: (data, max) => {
        frames++;
        return p.zstdDecompress(data, max);
      },
    };
    const repo = await Repository.open(nodeStorage, counting, nodeKey);
    await repo.loadIndex();
    const back = await restore(repo);
    for (const [path, sha] of Object.entries(fixture.files)) {
      const data = back.get(path);
      check1(data, `${path} missing`);
      check1(toHex(p.sha256(data)) === sha, `${path} restored differently`);
    }
    check1(back.size === Object.keys(fixture.files).length, "extra files restored");
    const report = await check(repo, { readData: true });
    check1(report.errors.length === 0, `check: ${JSON.stringify(report.errors)}`);
    check1(frames > 0, "nothing was zstd-compressed");
    return `${back.size} files, ${frames} zstd payloads decoded`;
  });

  await step(
    "password at the key vault: OPAQUE and Argon2id in the browser, over CORS",
    async () => {
      const client = new VaultClient({
        url: fixture.vault.url,
        token: fixture.vault.token,
        primitives: p,
        // Light stretching for a quick test; the default is 64 MiB and 3 passes.
        keyStretching: { "argon2id-custom": { memory: 8192, iterations: 1, parallelism: 1 } },
      });
      const repoId = (await Repository.open(nodeStorage, p, nodeKey)).config.id;
      await client.enroll("correct horse battery", { rootKey: nodeKey, repoId });
      try {
        await client.recover("wrong horse");
        throw new Error("a wrong password recovered the key");
      } catch (err) {
        check1(err instanceof LocketError && err.code === "wrong_password", `got ${err}`);
      }
      const { rootKey: recovered } = await client.recover("correct horse battery");
      check1(toHex(recovered) === toHex(nodeKey), "recovered a different key");
      await Repository.open(nodeStorage, p, recovered);
      const status = await client.status();
      return `recovered; ${status.guessesRemaining} of ${status.guessLimit} guesses left`;
    },
  );

  await step("a damaged pack fails the restore with an integrity error", async () => {
    const [pack] = await names(nodeStorage, "data");
    nodeStorage.corrupt("data", pack, (b) => {
      b[b.length >> 1] ^= 0x40;
      return b;
    });
    const repo = await Repository.open(nodeStorage, p, nodeKey);
    await repo.loadIndex();
    try {
      await restore(repo);
    } catch (err) {
      check1(err instanceof LocketError && err.code === "integrity", `got ${err}`);
      return (err as Error).message;
    }
    throw new Error("restored from a damaged pack");
  });
}

async function storedBytes(storage: MemoryStorage): Promise<number> {
  let n = 0;
  for (const kind of OBJECT_KINDS) for await (const o of storage.list(kind)) n += o.size;
  return n;
}

async function names(storage: MemoryStorage, kind: ObjectKind): Promise<string[]> {
  const out: string[] = [];
  for await (const o of storage.list(kind)) out.push(o.name);
  return out;
}

await runAndReport(run);
