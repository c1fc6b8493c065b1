// Node's primitives where they do more than call node:crypto or node:zlib once: the zstd
// compressors that zstdCompressAsync uses again from call to call.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { constants, zstdCompress, zstdDecompressSync } from "node:zlib";
import { nodePrimitives as p } from "../src/primitives.ts";

const OPTIONS = {
  chunkSize: 1024 * 1024,
  params: { [constants.ZSTD_c_compressionLevel]: 3 },
};
const fresh = (data: Uint8Array) =>
  new Promise<Buffer>((resolve, reject) =>
    zstdCompress(data, OPTIONS, (err, out) => (err ? reject(err) : resolve(out))),
  );

// Compressible and not: database-like pages (repeated structure), random bytes, and sizes around
// zstd's 128 KiB block and node:zlib's 1 MiB output buffer.
function inputs(): Uint8Array[] {
  const page = (i: number) =>
    Buffer.from(`row ${i} status=read ts=${1_700_000_000 + i};`.repeat(90));
  return [
    new Uint8Array(0),
    Buffer.from("abc"),
    Buffer.concat(Array.from({ length: 128 }, (_, i) => page(i))),
    randomBytes(128 * 1024),
    randomBytes(512 * 1024 + 7),
    Buffer.concat([randomBytes(700 * 1024), Buffer.alloc(900 * 1024)]),
    randomBytes(1024 * 1024 + 1),
  ];
}

describe("nodePrimitives.zstdCompressAsync (compressors used again)", () => {
  it("gives, call after call, the bytes of a fresh compressor: one whole frame per call", async () => {
    const all = inputs();
    // Twice over, so that every size follows every other in the same compressor.
    for (const data of [...all, ...all.reverse()]) {
      const got = await p.zstdCompressAsync?.(data);
      assert.ok(got);
      assert.deepEqual(Buffer.from(got), await fresh(data), `${data.length} bytes`);
      assert.deepEqual(zstdDecompressSync(got), Buffer.from(data));
    }
  });

  it("many calls at once each get their own input's frame", async () => {
    const all = Array.from({ length: 3 }, inputs).flat();
    const outs = await Promise.all(all.map((data) => p.zstdCompressAsync?.(data)));
    for (const [k, out] of outs.entries()) {
      assert.ok(out);
      assert.deepEqual(zstdDecompressSync(out), Buffer.from(all[k]), `call ${k}`);
    }
  });

  it("an output stays intact while later calls run (views of node:zlib's buffer)", async () => {
    const a = Buffer.concat([randomBytes(4096), Buffer.alloc(60_000)]);
    const first = await p.zstdCompressAsync?.(a);
    assert.ok(first);
    const copy = Buffer.from(first);
    for (let i = 0; i < 40; i++) await p.zstdCompressAsync?.(randomBytes(64 * 1024));
    assert.deepEqual(Buffer.from(first), copy);
  });
});
