/**
 * @locket/node: Locket on Node. Local-folder and S3 storage, the file-system source with
 * consistent SQLite copies, restore into a folder, node:crypto primitives, and worker threads
 * for opening segments. The `locket` CLI is built from these.
 */
export * from "./page-bases.ts";
export * from "./primitives.ts";
export * from "./restore.ts";
export * from "./source.ts";
export * from "./storage/fs.ts";
export * from "./storage/s3.ts";
export * from "./workers/chunker.ts";
export * from "./workers/pool.ts";
export * from "./workers/segment-opener.ts";
