import { UsageError } from "@locket/core";

/**
 * Reads a password: from `LOCKET_PASSWORD`, from standard input (`--password-stdin`, one line),
 * or at a no-echo prompt on the terminal. Never logged, never echoed.
 * @throws {UsageError} when no source is available (no terminal and neither option).
 */
export async function readPassword(opts: {
  env: NodeJS.ProcessEnv;
  stdin: boolean;
  prompt: string;
  confirm?: boolean;
}): Promise<string> {
  if (opts.env.LOCKET_PASSWORD !== undefined) return opts.env.LOCKET_PASSWORD;
  if (opts.stdin) {
    let data = "";
    for await (const chunk of process.stdin) data += chunk;
    const line = data.replace(/\r?\n$/, "");
    if (line.includes("\n")) throw new UsageError("--password-stdin expects exactly one line");
    return line;
  }
  if (!process.stdin.isTTY) {
    throw new UsageError(
      "no password: set LOCKET_PASSWORD, pass --password-stdin, or run on a terminal",
    );
  }
  const first = await prompt(opts.prompt);
  if (opts.confirm && (await prompt("Repeat the password: ")) !== first) {
    throw new UsageError("the two passwords differ");
  }
  return first;
}

function prompt(text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdin = process.stdin;
    process.stderr.write(text);
    stdin.setRawMode(true);
    stdin.resume();
    stdin.setEncoding("utf8");
    let value = "";
    const done = (err?: Error) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off("data", onData);
      process.stderr.write("\n");
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (s: string) => {
      for (const ch of s) {
        if (ch === "\r" || ch === "\n") return done();
        if (ch === "\u0003") return done(new UsageError("cancelled"));
        if (ch === "\u007f" || ch === "\b") value = value.slice(0, -1);
        else if (ch >= " ") value += ch;
      }
    };
    stdin.on("data", onData);
  });
}
