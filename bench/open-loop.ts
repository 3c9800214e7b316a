import { Worker } from "node:worker_threads";

/**
 * Latency at a fixed arrival rate, measured open-loop: request i is due at start + i / rate,
 * whether or not earlier ones have been answered, and its latency counts from when it was due.
 * (autocannon's `overallRate` sends each second's quota in a burst at the top of the second and
 * then pads its histogram, so its p99 at a fixed rate measures the bursts, not the server.)
 */
export type OpenLoopTarget = { url: string; method: "GET" | "POST"; headers: Record<string, string>; body?: string };
export type OpenLoopResult = { p50: number; p99: number; rps: number; non2xx: number; errors: number };

export function openLoop(target: OpenLoopTarget, opts: { rate: number; seconds: number; connections: number; warmupSeconds?: number }): Promise<OpenLoopResult> {
  const worker = new Worker(new URL("./open-loop-worker.mjs", import.meta.url), { workerData: { ...target, ...opts } });
  return new Promise((resolve, reject) => {
    worker.once("message", (m: OpenLoopResult) => {
      resolve(m);
      void worker.terminate();
    });
    worker.once("error", reject);
  });
}
