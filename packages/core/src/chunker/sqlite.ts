/**
 * SQLite databases are chunked page by page: SQLite rewrites fixed-size pages in place, so one
 * chunk per page makes a day of chat activity cost only the pages it touched, where 1 MiB
 * content-defined chunks would store most of the database again.
 */

const MAGIC = "SQLite format 3\0";

/** Bytes of the header needed by `sqlitePageSize`. */
export const SQLITE_HEADER_BYTES = 100;

/**
 * The page size declared by a SQLite database header (https://sqlite.org/fileformat.html §1.3),
 * or null when `header` does not start a SQLite database with a valid page size.
 */
export function sqlitePageSize(header: Uint8Array): number | null {
  if (header.length < SQLITE_HEADER_BYTES) return null;
  for (let i = 0; i < MAGIC.length; i++) if (header[i] !== MAGIC.charCodeAt(i)) return null;
  const raw = (header[16] << 8) | header[17];
  const size = raw === 1 ? 65536 : raw;
  if (size < 512 || size > 65536 || (size & (size - 1)) !== 0) return null;
  return size;
}
