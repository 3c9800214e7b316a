import cluster, { type Worker } from "node:cluster";
import fs from "node:fs";
import { ConfigError } from "./config/load.js";
import type { Config } from "./config/schema.js";
import { prepareDatabase } from "./db/roles.js";
import type { EmbeddedPostgres } from "./db/embedded.js";
import type { Logger } from "./log/logger.js";

/**
 * `server.workers` above 1: several daemon processes on one HTTPS port (node:cluster). The primary
 * serves nothing itself: it owns the embedded PostgreSQL (started and supervised here, so a worker
 * that dies does not take the database with it) and forks the workers. Each worker is a whole
 * appliance, exactly a replica behind a load balancer (docs/scale-out.md): it attaches to the
 * embedded server (db/embedded.ts), and sessions, limits, jobs and the audit chain are shared
 * through PostgreSQL. Worker 1 starts alone first (migrations, TLS material, a first unseal), the
 * others after it. A worker that exits unexpectedly is replaced.
 */

/** What a worker tells the primary once it listens. */
type Ready = { type: "wardkeep-ready"; url: string; port: number };
/** What the primary tells a worker to drain and stop (a message, not a signal: after Ctrl-C a worker already has one). */
const STOP = { type: "wardkeep-stop" } as const;

export type WorkerPool = {
  url: string;
  port: number;
  /** The process ids of the running workers. */
  pids(): number[];
  stop(): Promise<{ drained: boolean }>;
};

/** True in a process that `startWorkers` forked: it runs the appliance and reports with `reportReady`. */
export const isWorker = (): boolean => cluster.isWorker;

export function reportReady(url: string, port: number): void {
  process.send?.({ type: "wardkeep-ready", url, port } satisfies Ready);
}

/** In a worker: calls `stop` when the primary asks it to stop. */
export function onStopRequest(stop: () => void): void {
  process.on("message", (m: { type?: string }) => {
    if (m?.type === STOP.type) stop();
  });
}

/** In a worker, once stopped: closes the channel to the primary, which otherwise keeps the process alive. */
export function leavePrimary(): void {
  if (cluster.isWorker) process.disconnect?.();
}

/**
 * Unseal modes that need a person (a typed passphrase, custodians' shares) would have to be
 * repeated in each worker, and `wardkeep unseal` reaches only the one the connection lands on.
 */
export function workersRefusal(config: Config): string | undefined {
  if (config.server.workers <= 1) return undefined;
  if (config.keys.unseal === "shamir" || (config.keys.unseal === "passphrase" && !config.keys.passphraseFile))
    return `server.workers is ${config.server.workers} but keys.unseal ${config.keys.unseal} needs a person to unseal each process: use 1 worker, or an unseal every worker can do alone (keyfile, pkcs11, passphrase with keys.passphraseFile)`;
  return undefined;
}

/** In the primary: the database, then the workers; resolves once every worker listens. */
export async function startWorkers(config: Config, log: Logger): Promise<WorkerPool> {
  const refusal = workersRefusal(config);
  if (refusal) throw new ConfigError(refusal);
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o711 });
  const targets = await prepareDatabase(config);
  for (const line of targets.created) log.info(line);
  superviseEmbedded(targets.embedded, log);

  const running = new Map<number, Worker>();
  /** Slots whose worker has said it listens (and so has its stop listener in place). */
  const ready = new Set<number>();
  let stopping = false;
  let listening: Ready | undefined;

  const fork = (slot: number): Promise<Ready> =>
    new Promise((resolve, reject) => {
      const worker = cluster.fork({ WARDKEEP_WORKER_SLOT: String(slot) });
      running.set(slot, worker);
      // A message to a worker whose channel just closed fails here; its exit is handled below.
      worker.on("error", (err) => log.warn("a worker's channel failed", { slot, error: err.message }));
      worker.on("message", (m: Ready) => {
        if (m?.type !== "wardkeep-ready") return;
        ready.add(slot);
        // A worker still starting when the stop came could not hear it yet: it is told now.
        if (stopping) worker.send(STOP);
        resolve(m);
      });
      worker.on("exit", (code, signal) => {
        const started = running.get(slot) === worker && ready.has(slot);
        if (running.get(slot) === worker) {
          running.delete(slot);
          ready.delete(slot);
        }
        if (!started) return reject(new Error(`worker ${slot} exited during start-up (${signal ?? `code ${code}`})`));
        if (stopping) return;
        log.error("a worker exited unexpectedly; starting another", { slot, code, signal });
        // A worker that dies at once again (a broken configuration) is not restarted in a tight loop.
        setTimeout(() => {
          if (!stopping) fork(slot).catch((err: Error) => log.error("a replacement worker did not start", { slot, error: err.message }));
        }, 1_000).unref();
      });
    });

  const stop = async (): Promise<{ drained: boolean }> => {
    stopping = true;
    const exits = [...running.values()].map(
      (w) => new Promise<number | null>((resolve) => (w.isDead() ? resolve(w.process.exitCode ?? null) : w.once("exit", (code) => resolve(code)))),
    );
    for (const [slot, w] of running) if (ready.has(slot) && w.isConnected()) w.send(STOP);
    const codes = await Promise.all(exits);
    await targets.embedded?.stop();
    return { drained: codes.every((c) => c === 0) };
  };

  try {
    listening = await fork(1);
    await Promise.all(Array.from({ length: config.server.workers - 1 }, (_, i) => fork(i + 2)));
  } catch (err) {
    await stop();
    throw err;
  }
  log.info(`${config.server.workers} workers listening on ${listening.url}`);
  return { url: listening.url, port: listening.port, pids: () => [...running.values()].map((w) => w.process.pid!).filter(Boolean), stop };
}

/** The primary restarts the embedded server it owns; the workers' database circuits answer 503 meanwhile. */
function superviseEmbedded(embedded: EmbeddedPostgres | undefined, log: Logger): void {
  embedded?.supervise({
    exited: (reason) => log.error("embedded PostgreSQL exited unexpectedly; restarting it", { reason }),
    restarted: (attempt) => log.warn("embedded PostgreSQL restarted", { attempt }),
    restartFailed: (attempt, reason) => log.error("embedded PostgreSQL did not start again; retrying with backoff", { attempt, reason }),
  });
}
