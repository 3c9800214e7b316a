import { openLoopIn, type Target } from "./load.js";

/**
 * Latency at a fixed arrival rate, measured open-loop: request i is due at start + i / rate,
 * whether or not earlier ones have been answered, and its latency counts from when it was due.
 * (autocannon's `overallRate` sends each second's quota in a burst at the top of the second and
 * then pads its histogram, so its p99 at a fixed rate measures the bursts, not the server.)
 * Generated in a worker thread by the benches' load generator (bench/load.ts).
 */
export type OpenLoopTarget = Target;
/** `latencies` (ms, sorted): every counted request's, from the lean load generator only, for percentiles over several windows. */
export type OpenLoopResult = { p50: number; p99: number; rps: number; non2xx: number; errors: number; latencies?: number[] };

/** The q-quantile of several windows' requests taken together (each window's `latencies`). */
export function pooledPercentile(results: OpenLoopResult[], q: number): number {
  const all = results.flatMap((r) => {
    if (!r.latencies) throw new Error("pooled percentiles need each request's latency: run with the lean load generator (unset BENCH_LOAD_GENERATOR)");
    return r.latencies;
  });
  all.sort((a, b) => a - b);
  return all.length ? all[Math.min(all.length - 1, Math.ceil(q * all.length) - 1)]! : NaN;
}

export function openLoop(target: OpenLoopTarget, opts: { rate: number; seconds: number; connections: number; warmupSeconds?: number }): Promise<OpenLoopResult> {
  return openLoopIn(target, opts);
}
