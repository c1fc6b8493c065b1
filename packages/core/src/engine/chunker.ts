import { chunkStream } from "../chunker/chunk-stream.ts";
import type { RepoKeys } from "../crypto/keys.ts";
import type { Primitives } from "../crypto/primitives.ts";
import { BLOB_DATA, blobId } from "../format/blob.ts";
import type { SourceFile } from "./source.ts";

/** Consecutive chunks of a file, with their data-blob IDs. */
export interface ChunkBatch {
  /** The chunks' bytes, one after the other. Valid until the next batch is requested. */
  readonly bytes: Uint8Array;
  /** Length of each chunk, in order. */
  readonly lengths: ArrayLike<number>;
  /** The chunks' keyed IDs (SPEC §6), 32 bytes each, in the same order. */
  readonly ids: Uint8Array;
  /**
   * Page deltas the chunker worked out against a base image (see ChunkOptions.baseImage), for
   * the PageDeltas of the engine to use instead of reading the image itself.
   */
  readonly deltas?: PageDeltaHints;
}

/**
 * Deltas of a batch's pages against the base image's bytes at the same offsets: computed for
 * each whole page that differs from the image in at most the share of words a delta may change
 * (`deltaPays`). The engine uses one only when `baseIds` matches the base it expects.
 */
export interface PageDeltaHints {
  /** For each chunk of the batch: the index of its delta below, or -1 for none. */
  readonly at: Int32Array;
  /** For each delta: the keyed data-blob ID of the image's page it was computed against. */
  readonly baseIds: Uint8Array;
  /** For each delta: its delta-blob ID. */
  readonly deltaIds: Uint8Array;
  /** For each delta: the page XOR the image's page, a page long. */
  readonly xors: Uint8Array;
  /**
   * For each chunk of the batch: 0 when it differs from the image's bytes at its offset (or
   * they could not be read), 1 when it equals them, 2 when it equals them and its ID is the one
   * `imagePages` gave for that page, taken without hashing the page. Optional.
   */
  readonly same?: Uint8Array;
}

/** What the engine tells a FileChunker about a file it starts. */
export interface ChunkOptions {
  /**
   * A local file holding, at each page's offset, a base for that page (a base image of
   * PageBaseStore): a chunker that reads files itself may then compute page deltas beside the
   * IDs (ChunkBatch.deltas). Optional to honour.
   */
  readonly baseImage?: string;
  /**
   * With `baseImage`: 32 bytes per page of the database, the data-blob ID each page had in the
   * parent snapshot where known, zeros elsewhere (ParentPages.known). A page that still has that
   * ID needs no delta worked out: the engine lists the parent's entry for it again. Asked for
   * only when the file is a database; optional to honour.
   */
  readonly knownPages?: () => Promise<Uint8Array>;
  /**
   * With `baseImage`, for a database cut into pages of `pageSize`: 32 bytes per page, the ID of
   * what the image holds at that page, when the image is certified to hold exactly the parent's
   * version (ParentPages.imageIds); undefined otherwise. A page whose bytes equal the image's
   * may then take that ID without being hashed (PageDeltaHints.same = 2). Optional to honour.
   */
  readonly imagePages?: (pageSize: number) => Promise<Uint8Array | undefined>;
}

/** A file being chunked: its batches in order, and a way to stop early. */
export interface ChunkJob extends AsyncIterable<ChunkBatch> {
  /** Stops the work and releases what it holds; batches not yet taken are dropped. Idempotent. */
  cancel(): void;
  /**
   * Optional: settles (never rejects) once the job has let go of what it held, such as a
   * database's read transaction, after its last batch was taken or after `cancel`. The backup
   * waits for it, so that a database is never left locked after `backup` has settled.
   */
  readonly released?: Promise<void>;
}

/**
 * Splits files into chunks (FastCDC, or one per SQLite page: `chunkStream`) and computes each
 * chunk's data-blob ID. This is most of a backup's CPU, so an implementation may do it off the
 * calling thread, and may start a file's work as soon as `start` is called, before its batches
 * are requested (the backup engine starts the next few files early). The Node package runs it on
 * worker threads (WorkerChunker).
 */
export interface FileChunker {
  /**
   * Chunks the file's bytes: what `file.open()` yields, or the file `file.localFile()` gives
   * when the chunker reads files itself (it then calls that file's `close` when done). `size`,
   * the size listed, lets it plan the file (the Node chunker splits a large SQLite database
   * between its workers, and reads a small file with blocking calls). Errors of the source (a VanishedError, say) surface from the
   * iteration, after the batches cut before them.
   */
  start(
    file: Pick<SourceFile, "open" | "localFile"> & { readonly size?: number },
    opts?: ChunkOptions,
  ): ChunkJob;
}

/** A FileChunker that does the work on the calling thread, lazily, one chunk per batch. */
export function localChunker(p: Primitives, keys: RepoKeys): FileChunker {
  return {
    start(file) {
      let stopped = false;
      return {
        cancel() {
          stopped = true;
        },
        async *[Symbol.asyncIterator]() {
          if (stopped) return;
          for await (const chunk of chunkStream(file.open(), keys.gear)) {
            yield {
              bytes: chunk,
              lengths: [chunk.length],
              ids: blobId(p, keys.id, BLOB_DATA, chunk),
            };
            if (stopped) return;
          }
        },
      };
    },
  };
}
