// Node's primitives where they do more than call node:crypto or node:zlib once: the zstd
// compressors that zstdCompressAsync uses again from call to call.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { zstdCompress, zstdDecompressSync } from "node:zlib";
import { nodePrimitives as p } from "../src/primitives.ts";
import { ReusedCompressor, ZSTD_OPTIONS } from "../src/zstd.ts";

/** A fresh compressor with the same settings, for each call: node:zlib's own zstdCompress. */
const fresh = (data: Uint8Array) =>
  new Promise<Buffer>((resolve, reject) =>
    zstdCompress(data, ZSTD_OPTIONS, (err, out) => (err ? reject(err) : resolve(out))),
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
  it("gives, call after call, a fresh compressor's bytes: one whole frame per call", async () => {
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

  it("a frame that ends exactly at the end of node:zlib's output buffer still decodes", async () => {
    // After a small frame, random input of one of these lengths fills node:zlib's 1 MiB output
    // buffer exactly: node:zlib then asks for the frame's end again, and an empty frame follows
    // (the one way the output differs from a fresh compressor's).
    const src = randomBytes(1024 * 1024);
    let longer = 0;
    for (let length = 1_048_500; length < 1_048_560; length++) {
      const c = new ReusedCompressor();
      try {
        await c.compress(Buffer.alloc(5000, 1));
        const data = src.subarray(0, length);
        const got = await c.compress(data);
        assert.deepEqual(zstdDecompressSync(got), data, `${length} bytes`);
        if (got.length > (await fresh(data)).length) longer++;
      } finally {
        c.close();
      }
    }
    assert.ok(longer > 0, "some length ends a frame at the end of the output buffer");
  });

  it("a compressor whose stream is destroyed mid-call rejects the call and is not used again", async () => {
    const c = new ReusedCompressor();
    const pending = c.compress(randomBytes(512 * 1024));
    (c as unknown as { stream: { destroy(): void } }).stream.destroy(); // no error given
    await assert.rejects(pending);
    assert.equal(c.usable, false);
    await assert.rejects(c.compress(Buffer.from("abc")));
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
