/**
 * @locket/core: Locket's isomorphic core. Format, keys, chunking, crypto composition, snapshots
 * and the backup engine over a storage interface. No Node imports: Uint8Array and Web APIs only.
 */
export * from "./blob-index.ts";
export * from "./bytes.ts";
export * from "./chunker/chunk-stream.ts";
export * from "./chunker/fastcdc.ts";
export * from "./chunker/sqlite.ts";
export * from "./crypto/keys.ts";
export * from "./crypto/primitives.ts";
export * from "./crypto/recovery-key.ts";
export * from "./crypto/seal.ts";
export * from "./crypto/web.ts";
export * from "./engine/backup.ts";
export * from "./engine/check.ts";
export * from "./engine/chunker.ts";
export * from "./engine/diff.ts";
export * from "./engine/forget.ts";
export * from "./engine/freshness.ts";
export * from "./engine/packer.ts";
export * from "./engine/page-deltas.ts";
export * from "./engine/prune.ts";
export * from "./engine/restore.ts";
export * from "./engine/source.ts";
export * from "./engine/stats.ts";
export * from "./errors.ts";
export * from "./format/blob.ts";
export * from "./format/config.ts";
export * from "./format/index-file.ts";
export * from "./format/pack.ts";
export * from "./format/payload.ts";
export * from "./format/snapshot.ts";
export * from "./format/tree.ts";
export * from "./map-concurrent.ts";
export * from "./repository.ts";
export * from "./segment-opener.ts";
export * from "./storage/memory.ts";
export * from "./storage/object-writer.ts";
export * from "./storage/storage.ts";
