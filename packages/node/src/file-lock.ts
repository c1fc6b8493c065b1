import { DatabaseSync } from "node:sqlite";

// Locks that the operating system lets go of when the process holding them ends, however it
// ends: a backup's page-base image (page-bases.ts), a private copy of a live database (source.ts).

/** What takeLock gives when another connection holds the lock. */
export const BUSY = "held by another process or connection";

/**
 * Lock file `file` held: an open connection in an exclusive transaction; BUSY when another
 * connection (of this process or another) holds it, or why it cannot be taken. SQLite's locks
 * are the operating system's (fcntl, LockFileEx), released when the connection closes or the
 * process ends; SQLite also keeps two connections of one process apart, which fcntl alone does
 * not. The file stays: deleting a
 * lock file while another process may be opening it would let two hold locks on two files.
 */
export function takeLock(file: string): DatabaseSync | string {
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(file, { timeout: 0 });
    db.exec("BEGIN EXCLUSIVE");
    return db;
  } catch (err) {
    try {
      db?.close();
    } catch {}
    // SQLITE_BUSY (5): another connection holds it.
    return (err as { errcode?: number }).errcode === 5 ? BUSY : (err as Error).message;
  }
}
