// zstd through node:zlib for node's primitives (primitives.ts): the settings, and compressors on
// libuv's threadpool used again from call to call. Not part of the package's exports.
import { constants, createZstdCompress, type ZstdCompress } from "node:zlib";

/**
 * zstd level for segments and metadata. Level 1, not zstd's default 3: a first backup is held
 * back by CPU, and zstd of the database was its largest share. On the benchmark's set (2 cores,
 * cold, 3 rounds of levels 3 / 2 / 1 in turn) the first backup took 15.7-20.4 / 13.5-17.9 /
 * 13.2-16.6 s for ~17.5 / ~15.3 / ~14.5 s of user CPU; the database is stored 8.6 % larger
 * (224 against 206 MB; the whole first backup +1.0 %), a day adds 27.8 against 27.6 MiB (its
 * changed pages are mostly XOR deltas and new rows), and level-1 frames decompress faster.
 */
const ZSTD_LEVEL = 1;
// node:zlib hands output back in `chunkSize` pieces (16 KiB by default), one callback and one
// copy on the calling thread each: a 512 KiB segment made dozens. One piece per segment instead.
export const ZSTD_CHUNK_BYTES = 1024 * 1024;
export const ZSTD_OPTIONS = {
  chunkSize: ZSTD_CHUNK_BYTES,
  params: { [constants.ZSTD_c_compressionLevel]: ZSTD_LEVEL },
};

/**
 * A zstd compressor on libuv's threadpool that makes one frame per call and is then used again.
 * node:zlib's `zstdCompress` builds a compressor for every call (a zstd context and a 1 MiB
 * output buffer, set up and torn down on the calling thread) and copies its output once more:
 * a backup compresses a database in ~750 segments of 512 KiB. Ending each frame with
 * `flush(ZSTD_e_end)` gives a fresh compressor's bytes (test) for ~30 % less of the calling
 * thread's time (600 segments of the benchmark's database, 4 at once: 283-574 -> 198-267 ms
 * active). One exception, harmless: where a frame ends exactly at the end of node:zlib's output
 * buffer, node:zlib asks for the frame's end again and an empty frame follows it (a payload may
 * hold several frames, SPEC §4; both decoders take them). The output is a view of the stream's
 * output buffer, which node:zlib never writes twice. A compressor that fails is dropped.
 */
export class ReusedCompressor {
  private readonly stream: ZstdCompress = createZstdCompress(ZSTD_OPTIONS);
  private readonly out: Buffer[] = [];
  private failure: Error | undefined;
  private waiting: ((err: Error) => void) | undefined;

  constructor() {
    this.stream.on("data", (d: Buffer) => this.out.push(d));
    this.stream.on("error", (err: Error) => {
      this.failure = err;
      this.waiting?.(err);
    });
  }

  get usable(): boolean {
    return this.failure === undefined && !this.stream.destroyed;
  }

  compress(data: Uint8Array): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      this.waiting = reject;
      this.stream.write(data);
      this.stream.flush(constants.ZSTD_e_end, (err?: Error | null) => {
        this.waiting = undefined;
        // A stream destroyed without an error calls back with one, and has no output to give.
        this.failure ??= err ?? undefined;
        if (this.failure) return reject(this.failure);
        const parts = this.out.splice(0);
        resolve(parts.length === 1 ? parts[0] : Buffer.concat(parts));
      });
    });
  }

  close(): void {
    this.stream.destroy();
  }
}

// Compressors not in use, at most as many as a packer compresses segments at once (packer.ts:
// four in flight, and a fifth queued before it waits for the oldest), and closed after a second
// unused so that an idle process does not keep their ~4 MB each.
const MAX_IDLE_COMPRESSORS = 5;
const IDLE_COMPRESSOR_MS = 1000;
const idleCompressors: ReusedCompressor[] = [];
let closeIdle: ReturnType<typeof setTimeout> | undefined;

function releaseCompressor(c: ReusedCompressor): void {
  if (!c.usable || idleCompressors.length >= MAX_IDLE_COMPRESSORS) {
    c.close();
    return;
  }
  idleCompressors.push(c);
  if (closeIdle) closeIdle.refresh();
  else {
    closeIdle = setTimeout(() => {
      closeIdle = undefined;
      for (const idle of idleCompressors.splice(0)) idle.close();
    }, IDLE_COMPRESSOR_MS);
    closeIdle.unref();
  }
}

/** Compresses `data` into one zstd frame (or, rarely, two: see ReusedCompressor) off this thread. */
export async function zstdCompressReused(data: Uint8Array): Promise<Buffer> {
  const c = idleCompressors.pop() ?? new ReusedCompressor();
  try {
    return await c.compress(data);
  } finally {
    releaseCompressor(c);
  }
}
