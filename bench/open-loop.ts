import { openLoopIn, type Target } from "./load.js";

/**
 * Latency at a fixed arrival rate, measured open-loop: request i is due at start + i / rate,
 * whether or not earlier ones have been answered, and its latency counts from when it was due.
 * (autocannon's `overallRate` sends each second's quota in a burst at the top of the second and
 * then pads its histogram, so its p99 at a fixed rate measures the bursts, not the server.)
 * Generated in a worker thread by the benches' load generator (bench/load.ts).
 */
export type OpenLoopTarget = Target;
export type OpenLoopResult = { p50: number; p99: number; rps: number; non2xx: number; errors: number };

export function openLoop(target: OpenLoopTarget, opts: { rate: number; seconds: number; connections: number; warmupSeconds?: number }): Promise<OpenLoopResult> {
  return openLoopIn(target, opts);
}
