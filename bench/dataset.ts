/**
 * The benchmark's chat data set: generated once with the project's own deterministic generator,
 * then kept as three folder states that every tool backs up at the same path in turn:
 *
 * - `base`: the data set as generated;
 * - `day1`: `base` plus a day of chat whose status updates hit random rows;
 * - `day2`: `day1` plus a second day whose status updates hit the newest rows.
 *
 * The states share their unchanged media files through hard links (made before any backup, so
 * every file keeps its inode, size, mtime and ctime), and each has its own copy of the database.
 * Switching states renames folders, so each tool sees exactly what a real device would: the same
 * paths, the same untouched media files, a changed database and a few new media files.
 */
import { copyFileSync, linkSync, mkdirSync, readdirSync, renameSync, statSync } from "node:fs";
import { join } from "node:path";
import { type DayResult, simulateDay, writeDemoData } from "../packages/node/src/demo-data.ts";
import { treeSize } from "./proc.ts";

export type SizeName = "small" | "medium" | "full";
export type StateName = "base" | "day1" | "day2";

/** One data set size: the base set and the shape of each simulated day. */
export interface SizeSpec {
  messages: number;
  mediaMb: number;
  day: { newMessages: number; statusUpdates: number; newMedia: number };
  /** Rough size on disk of the base set, for the free-space check. */
  estimatedBytes: number;
}

const MIB = 1024 * 1024;

function spec(messages: number, mediaMb: number, newMedia: number): SizeSpec {
  return {
    messages,
    mediaMb,
    // A day is 1% new messages and status updates on 1% of the rows, as in the issue (20 k new
    // messages and 20 k updated rows on a 2 M-row database, with 20 new media files).
    day: { newMessages: messages / 100, statusUpdates: 0.01, newMedia },
    estimatedBytes: messages * 240 + mediaMb * MIB,
  };
}

/** The sizes: `full` is the 2 GB set (447 MB database, 1.56 GB media). */
export const SIZES: Record<SizeName, SizeSpec> = {
  small: spec(20_000, 30, 1),
  medium: spec(200_000, 150, 2),
  full: spec(2_000_000, 1490, 20),
};

/** Seeds: the base set and each day, so a size always yields byte-identical states. */
export const SEEDS = { base: 1, day1: 2, day2: 3 } as const;

/** One folder state of the data set. */
export interface StateInfo {
  /** Total bytes of the files in the state (database plus media). */
  bytes: number;
  files: number;
  /** Database size in bytes. */
  dbBytes: number;
  /** What the simulated day changed (day states only). */
  day?: DayResult;
}

/** The generated data set and the state currently in place at {@link DataSet.live}. */
export class DataSet {
  /** The folder every tool backs up; it holds one state at a time. */
  readonly live: string;
  /** The paths given to each tool: the database and the media folder inside {@link live}. */
  readonly paths: readonly string[];
  readonly states: Record<StateName, StateInfo>;
  readonly root: string;
  current: StateName;

  constructor(root: string, states: Record<StateName, StateInfo>) {
    this.root = root;
    this.live = join(root, "chat");
    this.paths = [join(this.live, "chat.db"), join(this.live, "Media")];
    this.states = states;
    this.current = "base";
  }

  /** Puts `state` in place at {@link live} (two renames; no file is touched). */
  use(state: StateName): void {
    if (state === this.current) return;
    renameSync(this.live, join(this.root, this.current));
    renameSync(join(this.root, state), this.live);
    this.current = state;
  }
}

/**
 * Generates the data set under `root` (which must exist and be empty) and prepares its states.
 *
 * @param log Progress lines for the user.
 */
export async function prepareDataSet(
  root: string,
  size: SizeSpec,
  log: (line: string) => void,
): Promise<DataSet> {
  const live = join(root, "chat");
  const t0 = performance.now();
  const base = writeDemoData(live, {
    messages: size.messages,
    mediaMb: size.mediaMb,
    seed: SEEDS.base,
  });
  log(
    `  base: ${base.messages} messages, ${base.mediaFiles} media files, ` +
      `${mb(base.bytes)} (${secs(performance.now() - t0)})`,
  );
  // The day states are linked copies: a real copy of the database, hard links to the media.
  const day1Dir = join(root, "day1");
  linkCopy(live, day1Dir);
  const day1 = simulateDay(day1Dir, { ...size.day, recent: false, seed: SEEDS.day1 });
  log(`  day 1 (random rows): ${describeDay(day1)}`);
  const day2Dir = join(root, "day2");
  linkCopy(day1Dir, day2Dir);
  const day2 = simulateDay(day2Dir, { ...size.day, recent: true, seed: SEEDS.day2 });
  log(`  day 2 (newest rows): ${describeDay(day2)}`);
  const info = async (dir: string, day?: DayResult): Promise<StateInfo> => {
    const t = await treeSize(dir);
    const dbBytes = statSync(join(dir, "chat.db")).size;
    return { bytes: t.bytes, files: t.files, dbBytes, ...(day ? { day } : {}) };
  };
  return new DataSet(root, {
    base: await info(live),
    day1: await info(day1Dir, day1),
    day2: await info(day2Dir, day2),
  });
}

function describeDay(d: DayResult): string {
  return (
    `${d.newMessages} new messages, ${d.updatedRows} rows updated, ` +
    `${d.newMediaFiles} new media files (${mb(d.newMediaBytes)})`
  );
}

/** Copies `from` to `to`: `chat.db` (and any side file) for real, everything else as hard links. */
function linkCopy(from: string, to: string): void {
  mkdirSync(to);
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    const src = join(from, entry.name);
    const dst = join(to, entry.name);
    if (entry.isDirectory()) linkCopy(src, dst);
    else if (entry.name.startsWith("chat.db")) copyFileSync(src, dst);
    else linkSync(src, dst);
  }
}

function mb(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}

function secs(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}
