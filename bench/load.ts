import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import autocannon from "autocannon";

/**
 * The load generators the benches drive HTTPS targets with. Every side of a comparison uses the
 * same one in the same rounds. `lean` (the default, bench/load-client.mjs): keep-alive node:tls
 * connections sending precomputed bytes, parsing only the status and the body's end; `autocannon`:
 * the generator used until the seventh session (its throughput mode; the open loop then used
 * node's https.Agent). Chosen with BENCH_LOAD_GENERATOR; what each costs per request:
 * docs/records.md, "Levers, seventh session".
 */
export type Generator = "lean" | "autocannon";
export type Target = { url: string; method: "GET" | "POST"; headers: Record<string, string>; body?: string };
export type Measure = { p50: number; p99: number; rps: number; non2xx: number; errors: number; latencies?: number[] };

export function generatorOf(name: string | undefined): Generator {
  const g = name ?? "lean";
  if (g !== "lean" && g !== "autocannon") throw new Error(`BENCH_LOAD_GENERATOR: unknown generator ${g} (known: lean, autocannon)`);
  return g;
}
export const GENERATOR: Generator = generatorOf(process.env.BENCH_LOAD_GENERATOR);

const here = path.dirname(fileURLToPath(import.meta.url));

function inWorker<T>(file: string, workerData: unknown): Promise<T> {
  const worker = new Worker(path.join(here, file), { workerData });
  return new Promise((resolve, reject) => {
    worker.once("message", (m: T) => {
      resolve(m);
      void worker.terminate();
    });
    worker.once("error", reject);
  });
}

/** Closed loop for `seconds` with `connections` connections, generated in a worker thread of this process. */
export async function drive(target: Target, opts: { connections: number; seconds: number }, generator: Generator = GENERATOR): Promise<Measure> {
  if (generator === "lean") {
    const r = await inWorker<Measure & { requests: number }>("load-worker.mjs", { mode: "closed", target, opts });
    return { p50: r.p50, p99: r.p99, rps: r.rps, non2xx: r.non2xx, errors: r.errors };
  }
  const result = await autocannon({
    url: target.url,
    method: target.method,
    headers: target.headers,
    ...(target.body ? { body: target.body } : {}),
    connections: opts.connections,
    duration: opts.seconds,
    // Load is generated in a worker thread, so the event loop measured is the server's alone.
    workers: 1,
  });
  return { p50: result.latency.p50, p99: result.latency.p99, rps: result.requests.average, non2xx: result.non2xx, errors: result.errors + result.timeouts };
}

/**
 * Closed loop from a child process, so that this process's CPU time is the server's alone and
 * the generator's is counted apart (its reaped children). Resolves to the answers counted.
 */
export function driveFromChild(target: Target, opts: { connections: number; seconds: number }, generator: Generator = GENERATOR): Promise<{ ok: number; total: number }> {
  let command: string;
  let args: string[];
  if (generator === "lean") {
    command = process.execPath;
    args = [path.join(here, "load-client.mjs"), JSON.stringify({ target, ...opts })];
  } else {
    command = path.join(process.cwd(), "node_modules", ".bin", "autocannon");
    args = ["-j", "-c", String(opts.connections), "-d", String(opts.seconds), "-m", target.method];
    for (const [k, v] of Object.entries(target.headers)) args.push("-H", `${k}=${v}`);
    if (target.body) args.push("-b", target.body);
    args.push(target.url);
  }
  return new Promise((resolve, reject) => {
    // The generator runs with node's defaults whatever flags the process measured was given (bench/records-processes.ts).
    const env: NodeJS.ProcessEnv = { ...process.env, ...(generator === "autocannon" ? { NODE_TLS_REJECT_UNAUTHORIZED: "0" } : {}) };
    delete env.NODE_OPTIONS;
    const child = spawn(command, args, { env, stdio: ["ignore", "pipe", generator === "lean" ? "inherit" : "ignore"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.on("error", reject);
    child.on("close", () => {
      try {
        if (generator === "lean") {
          const r = JSON.parse(out) as { requests: number; non2xx: number; errors: number };
          resolve({ ok: r.requests - r.non2xx, total: r.requests + r.errors });
        } else {
          const r = JSON.parse(out) as { requests: { total: number }; non2xx: number };
          resolve({ ok: r.requests.total - r.non2xx, total: r.requests.total });
        }
      } catch (err) {
        reject(err as Error);
      }
    });
  });
}

/** Open loop at `rate` requests/s (bench/open-loop.ts), generated in a worker thread of this process. */
export function openLoopIn(
  target: Target,
  opts: { rate: number; seconds: number; connections: number; warmupSeconds?: number },
  generator: Generator = GENERATOR,
): Promise<Measure> {
  return generator === "lean" ? inWorker("load-worker.mjs", { mode: "open", target, opts }) : inWorker("open-loop-worker.mjs", { ...target, ...opts });
}
