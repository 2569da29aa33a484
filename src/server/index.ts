// Starts the OpenAI-compatible server on a loaded model; stopping drains the requests in flight.
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
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
  /** Where server errors go in full; default: stderr. */
  log?: (line: string) => void;
}

export interface RunningServer {
  url: string;
  scheduler: Scheduler;
  /** Stops accepting requests, lets the running ones finish, closes the socket. */
  stop(): Promise<void>;
}

export async function startServer(model: LayerwiseModel, o: ServeOptions): Promise<RunningServer> {
  const scheduler = new Scheduler(model, { maxBatch: o.maxBatch });
  let accepting = true;
  const { app } = createApp({ model, scheduler, modelName: o.modelName, apiKey: o.apiKey, maxBodyBytes: o.maxBodyBytes, requestTimeoutMs: o.requestTimeoutMs, accepting: () => accepting, log: o.log });
  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, hostname: o.host, port: o.port }, () => resolve(s));
    s.once("error", reject);
  });
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}`,
    scheduler,
    async stop() {
      accepting = false;
      await scheduler.drain();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
