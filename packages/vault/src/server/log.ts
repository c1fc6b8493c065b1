/**
 * Structured logs: one JSON object per line. Callers pass only non-secret fields: never a
 * request body, a token, an OPAQUE message or a wrapped key.
 */
export type Logger = (
  level: "info" | "warn" | "error",
  event: string,
  fields?: Record<string, unknown>,
) => void;

/** A logger writing JSON lines to `out` (default stderr). */
export function jsonLogger(out: { write(s: string): unknown } = process.stderr): Logger {
  return (level, event, fields = {}) => {
    out.write(`${JSON.stringify({ time: new Date().toISOString(), level, event, ...fields })}\n`);
  };
}

/** A logger that drops everything (tests). */
export const silentLogger: Logger = () => {};
