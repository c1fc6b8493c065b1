import { bytes, clock } from "./format.ts";

/** How progress is shown: a bar on a terminal, NDJSON events on stderr, or nothing. */
export type ProgressMode = "bar" | "json" | "none";

export interface ProgressState {
  readonly phase: string;
  readonly bytes: number;
  readonly totalBytes?: number;
  readonly files: number;
  readonly totalFiles?: number;
  /** What `files` counts (default "files"): packs, for check and prune. */
  readonly unit?: string;
  readonly current?: string;
}

/**
 * Renders progress at most ~8 times a second: a one-line bar with bytes, files, rate and ETA on a
 * terminal, or `{"event":"progress",...}` lines on stderr for scripts.
 */
export class Progress {
  private readonly mode: ProgressMode;
  private readonly out: NodeJS.WriteStream;
  private readonly started = Date.now();
  private last = 0;
  private drawn = false;

  constructor(mode: ProgressMode, out: NodeJS.WriteStream = process.stderr) {
    this.mode = mode;
    this.out = out;
  }

  /** Whether anything is shown (not `--progress none`). */
  get shown(): boolean {
    return this.mode !== "none";
  }

  update(s: ProgressState, force = false): void {
    if (this.mode === "none") return;
    const now = Date.now();
    if (!force && now - this.last < 125) return;
    this.last = now;
    const elapsed = (now - this.started) / 1000;
    const rate = elapsed > 0 ? s.bytes / elapsed : 0;
    if (this.mode === "json") {
      this.out.write(
        `${JSON.stringify({ event: "progress", ...s, elapsedMs: now - this.started, rate: Math.round(rate) })}\n`,
      );
      return;
    }
    // A phase whose bytes have no known total but whose items do (check's pack headers and
    // packs read, prune's phases, the demo data) shows its bar and ETA by items, and its bytes
    // and rate only when it counts any.
    const byItems = !s.totalBytes && (s.totalFiles ?? 0) > 0;
    const done = byItems ? s.files : s.bytes;
    const total = byItems ? s.totalFiles : s.totalBytes;
    const width = 24;
    const frac = total ? Math.min(1, done / total) : 0;
    const filled = Math.round(frac * width);
    const bar = total
      ? `[${"=".repeat(filled)}${filled < width ? ">" : ""}${" ".repeat(Math.max(0, width - filled - 1))}] ${(frac * 100).toFixed(0).padStart(3)}%`
      : "";
    const pace = elapsed > 0 ? done / elapsed : 0;
    const eta = total && pace > 0 ? clock((total - done) / pace) : "--:--";
    const unit = s.unit ?? "files";
    const showBytes = s.bytes > 0 || !byItems;
    const parts = [`${s.phase} ${bar}`];
    if (showBytes)
      parts[0] += ` ${bytes(s.bytes)}${s.totalBytes ? ` / ${bytes(s.totalBytes)}` : ""}`;
    if (s.totalFiles) parts.push(`${s.files}/${s.totalFiles} ${unit}`);
    else if (s.files > 0) parts.push(`${s.files} ${unit}`);
    if (showBytes) parts.push(`${bytes(rate)}/s`);
    parts.push(`ETA ${eta}`);
    let line = parts.join("  ");
    const cols = this.out.columns ?? 100;
    if (s.current && line.length + 3 < cols) line += `  ${s.current}`;
    this.out.write(`\r\x1b[K${line.slice(0, cols - 1)}`);
    this.drawn = true;
  }

  /** Clears the bar so the result can be printed. */
  done(): void {
    if (this.mode === "bar" && this.drawn) this.out.write("\r\x1b[K");
    this.drawn = false;
  }
}
