import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { setUp } from "./records.js";
import type { BenchRow } from "./run.js";

/**
 * `server.workers` (daemon/workers.ts) against one process (`npm run bench -- records-workers`):
 * two `wardkeep start` daemons on the records bench's database and data directory, one with
 * 1 worker and one with BENCH_WORKERS (2), and the peer (bench/records-peer.ts), driven in
 * alternating rounds by autocannon's CLI in a separate process. Per side: throughput and the
 * daemons' CPU per request (every process of the side: primary and workers, from /proc), so the
 * cost of a second event loop shows beside what it buys.
 */
const SECONDS = Number(process.env.BENCH_WORKERS_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_WORKERS_ROUNDS ?? 3);
const CONNECTIONS = Number(process.env.BENCH_WORKERS_CONNECTIONS ?? 16);
const WORKERS = Number(process.env.BENCH_WORKERS ?? 2);

type Target = { url: string; method: "GET" | "POST"; headers: Record<string, string>; body?: string };

function drive(target: Target): Promise<number> {
  const bin = path.join(process.cwd(), "node_modules", ".bin", "autocannon");
  const args = ["-j", "-c", String(CONNECTIONS), "-d", String(SECONDS), "-m", target.method];
  for (const [k, v] of Object.entries(target.headers)) args.push("-H", `${k}=${v}`);
  if (target.body) args.push("-b", target.body);
  args.push(target.url);
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { env: { ...process.env, NODE_TLS_REJECT_UNAUTHORIZED: "0" }, stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.on("error", reject);
    child.on("close", () => {
      try {
        const r = JSON.parse(out) as { requests: { total: number }; non2xx: number };
        if (r.non2xx) reject(new Error(`${target.url}: ${r.non2xx} non-2xx answers`));
        else resolve(r.requests.total);
      } catch (err) {
        reject(err as Error);
      }
    });
  });
}

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });

/** CPU seconds (user + system) of `pid` and its child processes (a primary's workers). */
function treeCpu(pid: number): number {
  const ticks = (p: number) => {
    try {
      const fields = fs.readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1]!.split(" ");
      return Number(fields[11]) + Number(fields[12]);
    } catch {
      return 0;
    }
  };
  let children: number[] = [];
  try {
    children = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    /* gone */
  }
  return (ticks(pid) + children.reduce((n, c) => n + ticks(c), 0)) / 100;
}

/** `wardkeep start` with `workers` workers on `port`; resolves once it says it listens. */
async function startDaemon(env: Record<string, string>, workers: number, port: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", "daemon/cli/main.ts", "--json", "start"], {
    env: { ...process.env, ...env, WARDKEEP_PORT: String(port), WARDKEEP_SERVER_WORKERS: String(workers), WARDKEEP_LOG_LEVEL: "error" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes('"ok":true')) resolve();
    });
    child.on("exit", (code) => reject(new Error(`daemon with ${workers} worker(s) exited (${code})`)));
  });
  return child;
}

export async function run(): Promise<BenchRow[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wardkeep-bench-workers-"));
  const env = {
    WARDKEEP_DATA_DIR: path.join(dir, "data"),
    WARDKEEP_SERVER_REDIRECT_PORT: "0",
    WARDKEEP_SERVER_HOST: "127.0.0.1",
  };
  const s = await setUp(dir);
  const daemons: ChildProcess[] = [];
  const rows: BenchRow[] = [];
  try {
    // The bench's own appliance made the data directory, the key file and the people; these are its replicas.
    const config = s.ctx.config;
    const databaseEnv = { WARDKEEP_DATABASE_URL: s.ctx.db.owner.url(), WARDKEEP_DATABASE_APP_URL: s.ctx.db.app.url(), WARDKEEP_DATA_DIR: config.dataDir };
    const sides: Record<string, { port: number; pid?: number }> = { "1 worker": { port: await freePort() }, [`${WORKERS} workers`]: { port: await freePort() } };
    for (const [name, side] of Object.entries(sides)) {
      const child = await startDaemon({ ...env, ...databaseEnv }, name === "1 worker" ? 1 : WORKERS, side.port);
      daemons.push(child);
      side.pid = child.pid;
    }
    const retarget = (t: Target, port: number): Target => ({ ...t, url: t.url.replace(/:\d+\//, `:${port}/`) });
    for (const kind of ["read", "write"] as const) {
      const targets: Record<string, Target> = {};
      for (const [name, side] of Object.entries(sides)) targets[name] = retarget(s.product[kind], side.port);
      targets.peer = s.peer[kind];
      const names = Object.keys(targets);
      for (const t of Object.values(targets)) await drive({ ...t }).catch(() => 0); // warm: keys cached, statements prepared
      const rate: Record<string, number[]> = {};
      const cpu: Record<string, number[]> = {};
      for (let i = 0; i < ROUNDS; i++) {
        for (let k = 0; k < names.length; k++) {
          const name = names[(k + i) % names.length]!;
          const pid = sides[name]?.pid;
          const before = pid ? treeCpu(pid) : 0;
          const started = performance.now();
          const n = await drive(targets[name]!);
          (rate[name] ??= []).push(n / ((performance.now() - started) / 1000));
          if (pid) (cpu[name] ??= []).push(((treeCpu(pid) - before) * 1e6) / n);
          if (name === "peer") await s.settlePeer();
        }
        process.stderr.write(
          `records-workers ${kind} round ${i + 1}: ${names.map((n) => `${n} ${rate[n]!.at(-1)!.toFixed(0)}/s${cpu[n] ? ` ${cpu[n]!.at(-1)!.toFixed(0)} µs CPU` : ""}`).join(", ")}\n`,
        );
      }
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      const one = mean(rate["1 worker"]!);
      const peer = mean(rate.peer!);
      for (const name of names) {
        const r = mean(rate[name]!);
        rows.push({ name: `${kind} throughput, ${name}`, value: r, unit: "req/s", baseline: peer, ratio: r / peer, target: "÷ peer" });
        if (cpu[name]) rows.push({ name: `${kind} daemon CPU per request, ${name}`, value: mean(cpu[name]!), unit: "µs" });
      }
      rows.push({ name: `${kind} throughput, ${WORKERS} workers ÷ 1`, value: mean(rate[`${WORKERS} workers`]!) / one, unit: "x" });
    }
  } finally {
    for (const d of daemons) d.kill("SIGTERM");
    await Promise.all(daemons.map((d) => new Promise((resolve) => (d.exitCode !== null ? resolve(null) : d.once("exit", resolve)))));
    await s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}
