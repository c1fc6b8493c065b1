import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";

/** SHA-256 (hex) of every regular file under `root`, keyed by relative path. */
export async function hashTree(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const visit = async (abs: string, rel: string): Promise<void> => {
    const st = await lstat(abs);
    if (st.isDirectory()) {
      for (const c of (await readdir(abs)).sort())
        await visit(join(abs, c), rel ? `${rel}/${c}` : c);
    } else if (st.isFile()) {
      const h = createHash("sha256");
      for await (const b of createReadStream(abs)) h.update(b as Buffer);
      out.set(rel, h.digest("hex"));
    }
  };
  await visit(root, "");
  return out;
}

/** Paths that differ between two trees (missing on either side or with other content). */
export async function diffTrees(a: string, b: string): Promise<string[]> {
  const [ha, hb] = await Promise.all([hashTree(a), hashTree(b)]);
  const diff: string[] = [];
  for (const [p, h] of ha) if (hb.get(p) !== h) diff.push(p);
  for (const p of hb.keys()) if (!ha.has(p)) diff.push(p);
  return diff.sort();
}
