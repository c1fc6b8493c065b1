/**
 * A small HTTP proxy on 127.0.0.1 between an S3 client and the real server, for tests and
 * benchmarks: it counts requests and bytes each way, and can inject faults (error answers,
 * connection resets, hangs, lost answers, truncated bodies) into chosen requests.
 *
 * The client signs requests for the proxy's host:port, and the proxy forwards the Host header
 * unchanged, so signatures stay valid (S3 servers check them against the Host they receive).
 */

import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import type { AddressInfo, Socket } from "node:net";

/** What to do with one request instead of forwarding it normally. */
export type Fault =
  /** Answer with this status and an S3 error body; the server never sees the request. */
  | { readonly kind: "status"; readonly status: number; readonly code: string }
  /** Destroy the client's connection before forwarding anything. */
  | { readonly kind: "reset" }
  /** Read the request and never answer (until the proxy closes). */
  | { readonly kind: "hang" }
  /** Forward the request, let the server act on it, then drop the answer (reset the client). */
  | { readonly kind: "lose-answer" }
  /** Forward; pass the answer's headers but only half its body, then reset the client. */
  | { readonly kind: "truncate" };

/** One request seen by the proxy. */
export interface ProxiedRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingMessage["headers"];
  /** 1-based number of this request since the proxy started. */
  readonly n: number;
}

/** Per-method counts and bytes moved. */
export interface ProxyStats {
  requests: number;
  byMethod: Record<string, number>;
  /** Request body bytes sent to the server. */
  bytesUp: number;
  /** Response body bytes sent back to the client. */
  bytesDown: number;
  /** Requests received and not yet answered (or dropped). */
  inFlight: number;
  /** Highest `inFlight` since the last reset. */
  peakInFlight: number;
}

export interface S3Proxy {
  /** `http://127.0.0.1:PORT`. */
  readonly url: string;
  readonly stats: ProxyStats;
  /** Decides a fault per request (undefined: forward normally). Replaceable at any time. */
  plan: (req: ProxiedRequest) => Fault | undefined;
  /** Zeroes the counters. */
  reset(): void;
  /** Stops listening and destroys every open connection. */
  close(): Promise<void>;
}

/**
 * Starts a proxy to `target` (`http://HOST:PORT`) on a free port of 127.0.0.1.
 * @throws Error when it cannot listen.
 */
export async function startS3Proxy(target: string): Promise<S3Proxy> {
  const to = new URL(target);
  const sockets = new Set<Socket>();
  const stats: ProxyStats = {
    requests: 0,
    byMethod: {},
    bytesUp: 0,
    bytesDown: 0,
    inFlight: 0,
    peakInFlight: 0,
  };
  let n = 0;

  const proxy: S3Proxy = {
    url: "",
    stats,
    plan: () => undefined,
    reset() {
      stats.requests = 0;
      stats.byMethod = {};
      stats.bytesUp = 0;
      stats.bytesDown = 0;
      stats.peakInFlight = stats.inFlight;
    },
    close: async () => {},
  };

  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    n++;
    const method = req.method ?? "GET";
    stats.requests++;
    stats.byMethod[method] = (stats.byMethod[method] ?? 0) + 1;
    stats.inFlight++;
    stats.peakInFlight = Math.max(stats.peakInFlight, stats.inFlight);
    res.on("close", () => stats.inFlight--);
    const fault = proxy.plan({ method, url: req.url ?? "/", headers: req.headers, n });
    if (fault?.kind === "reset") {
      req.socket.destroy();
      return;
    }
    if (fault?.kind === "hang") {
      req.resume();
      return;
    }
    if (fault?.kind === "status") {
      req.resume();
      req.on("end", () => {
        const body = `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${fault.code}</Code><Message>injected by the test proxy</Message></Error>`;
        res.writeHead(fault.status, {
          "content-type": "application/xml",
          "content-length": Buffer.byteLength(body),
        });
        res.end(method === "HEAD" ? undefined : body);
      });
      return;
    }
    const upstream = httpRequest(
      {
        host: to.hostname,
        port: to.port,
        method,
        path: req.url,
        headers: req.headers,
      },
      (up) => {
        if (fault?.kind === "lose-answer") {
          up.resume();
          up.on("end", () => req.socket.destroy());
          return;
        }
        const length = Number(up.headers["content-length"] ?? "0");
        res.writeHead(up.statusCode ?? 502, up.headers);
        if (fault?.kind === "truncate" && length > 1 && method !== "HEAD") {
          let sent = 0;
          up.on("data", (chunk: Buffer) => {
            const room = Math.floor(length / 2) - sent;
            if (room > 0) {
              const part = chunk.subarray(0, room);
              sent += part.length;
              stats.bytesDown += part.length;
              res.write(part);
            }
            if (sent >= Math.floor(length / 2)) {
              up.destroy();
              // Let the half body reach the client before the reset.
              setTimeout(() => req.socket.destroy(), 20);
            }
          });
          return;
        }
        up.on("data", (chunk: Buffer) => {
          stats.bytesDown += chunk.length;
        });
        up.pipe(res);
      },
    );
    upstream.on("error", () => req.socket.destroy());
    req.on("data", (chunk: Buffer) => {
      stats.bytesUp += chunk.length;
    });
    req.pipe(upstream);
  });
  server.keepAliveTimeout = 60_000;
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  Object.assign(proxy, {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  });
  return proxy;
}
