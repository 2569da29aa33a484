// Starts the OpenAI-compatible server on a loaded model, with bounded connections and receive times; stopping drains
// the requests in flight for a bounded time and never waits on idle or slow clients.
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { serve, type HttpBindings } from "@hono/node-server";
import type { LayerwiseModel } from "../engine/model.js";
import { Scheduler } from "../engine/scheduler.js";
import { createApp } from "./app.js";

export interface ServeOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  modelName: string;
  apiKey?: string;
  /** Sequences decoded together. */
  maxBatch: number;
  maxBodyBytes: number;
  requestTimeoutMs: number;
  /** Most connections open at once; more are closed unanswered. */
  maxConnections?: number;
  /** Longest a client may take to send a request's headers, and the whole request: slower ones get 408 and are cut off. */
  headersTimeoutMs?: number;
  receiveTimeoutMs?: number;
  /** How long stop() lets generations in flight finish before cancelling them (their clients get 503). */
  drainTimeoutMs?: number;
  /** Where server errors go in full; default: stderr. */
  log?: (line: string) => void;
}

export const serveDefaults = {
  maxConnections: 256,
  headersTimeoutMs: 10_000,
  receiveTimeoutMs: 60_000,
  drainTimeoutMs: 30_000,
  // Longer than the idle timeouts of common clients and proxies (Node's agent and httpx 5 s, undici 4 s, nginx and load
  // balancers 60 s), so the client always drops an idle socket first and never sends a request on one being closed.
  keepAliveTimeoutMs: 65_000,
  // After the drain: how long answers already decided (503s, last stream events) get to go out.
  lingerMs: 2_000,
};

export interface RunningServer {
  url: string;
  scheduler: Scheduler;
  /** The node:http server, its timeouts and limits set from the options. */
  http: Server;
  /** Connections open now. */
  connections(): number;
  /**
   * Stops listening and closes every connection that has no fully received request (idle, kept alive, still sending);
   * requests already received are answered: generations get `drainTimeoutMs` to finish, then are cancelled (503).
   * Resolves once every connection is closed and the scheduler is idle.
   */
  stop(): Promise<void>;
}

export async function startServer(model: LayerwiseModel, o: ServeOptions): Promise<RunningServer> {
  const limits = { ...serveDefaults, ...stripUndefined(o) };
  const scheduler = new Scheduler(model, { maxBatch: o.maxBatch });
  let accepting = true;
  const shutdown = new AbortController();
  const { app } = createApp({
    model,
    scheduler,
    modelName: o.modelName,
    apiKey: o.apiKey,
    maxBodyBytes: o.maxBodyBytes,
    requestTimeoutMs: o.requestTimeoutMs,
    accepting: () => accepting,
    shutdown: shutdown.signal,
    log: o.log,
  });

  // The request each connection is on, from its headers until its answer has gone out.
  const inFlight = new Map<Socket, { incoming: IncomingMessage; outgoing: ServerResponse }>();
  const sockets = new Set<Socket>();
  let onIdle = () => {};
  const fetch = (request: Request, env: HttpBindings) => {
    const { incoming, outgoing } = env;
    const socket = incoming.socket;
    inFlight.set(socket, { incoming, outgoing });
    if (!accepting) outgoing.shouldKeepAlive = false;
    outgoing.once("close", () => {
      if (inFlight.get(socket)?.outgoing === outgoing) inFlight.delete(socket);
      if (!accepting) socket.end(); // answered during the drain: close the connection behind it
      if (inFlight.size === 0) onIdle();
    });
    return app.fetch(request, env);
  };
  const headersTimeout = Math.min(limits.headersTimeoutMs, limits.receiveTimeoutMs);
  const serverOptions = {
    headersTimeout,
    requestTimeout: limits.receiveTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: Math.min(1000, headersTimeout),
  };
  const server = await new Promise<Server>((resolve, reject) => {
    const s = serve(
      {
        fetch: fetch as (r: Request, env: unknown) => Promise<Response>,
        hostname: o.host,
        port: o.port,
        serverOptions,
      },
      () => resolve(s as Server),
    );
    s.once("error", reject);
  });
  server.maxConnections = limits.maxConnections;
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  const closed = new Promise<void>((resolve) => server.once("close", () => resolve()));
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;

  /** Resolves when every request in flight has been answered, or after `ms`. */
  function answered(ms: number): Promise<void> {
    if (inFlight.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => resolve(), ms);
      onIdle = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  let stopping: Promise<void> | undefined;
  async function drain(): Promise<void> {
    accepting = false;
    server.close(); // no new connections; node also stops its header and body timeouts here, so the rest is ours
    for (const s of sockets) {
      const r = inFlight.get(s);
      if (!r || !r.incoming.complete)
        s.destroy(); // idle, or a request not yet received: nothing is lost
      else r.outgoing.shouldKeepAlive = false;
    }
    await answered(limits.drainTimeoutMs);
    shutdown.abort(); // generations still running are cancelled, answered 503
    await scheduler.drain();
    await answered(limits.lingerMs); // the last events of a stream, the 503s
    for (const s of sockets) s.destroy();
    await closed;
  }

  return {
    url: `http://${host}:${address.port}`,
    scheduler,
    http: server,
    connections: () => sockets.size,
    stop: () => (stopping ??= drain()),
  };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
