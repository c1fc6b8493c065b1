// A worker thread of WorkerSegmentOpener (segment-workers.ts): opens data segments and checks
// blobs against their keyed IDs, off the main thread. It derives the repository keys from the
// root key it is started with; it logs nothing and keeps nothing between jobs.
import { parentPort, workerData } from "node:worker_threads";
import { deriveKeys, LocketError, openAndCheck } from "@locket/core";
import { workerPrimitives } from "./primitives.ts";
import type { JobMessage, ResultMessage } from "./segment-workers.ts";

const port = parentPort!;
const keys = await deriveKeys(workerPrimitives, workerData.rootKey as Uint8Array);

/** A buffer that may be moved (not copied) to the main thread: it owns its whole ArrayBuffer. */
function movable(b: Uint8Array): Uint8Array {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? b : new Uint8Array(b);
}

port.on("message", async (m: JobMessage) => {
  for (let i = 0; i < m.segments.length; i++) {
    const s = m.segments[i];
    let reply: ResultMessage;
    try {
      const { payload, matches } = await openAndCheck(
        workerPrimitives,
        keys,
        m.bytes.subarray(s.start, s.start + s.length),
        s.blobs,
        m.objectName,
      );
      reply = { job: m.job, index: i, payload: m.payloads ? movable(payload) : undefined, matches };
    } catch (err) {
      const e = err as LocketError;
      reply = {
        job: m.job,
        index: i,
        error: {
          code: e instanceof LocketError ? e.code : "failure",
          message: String(e?.message ?? e),
          object: (e as { object?: string }).object,
        },
      };
    }
    port.postMessage(reply, reply.payload ? [reply.payload.buffer as ArrayBuffer] : []);
  }
});
