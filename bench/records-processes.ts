import { spawn } from "node:child_process";
import path from "node:path";
import type { BenchRow } from "./run.js";

/**
 * records-cpu in processes of their own (`npm run bench -- records-processes`), for what cannot
 * be switched inside one process: node's own flags (`--max-semi-space-size`), or another checkout
 * of the code (the commit before a change). Each variant runs `npm run bench -- records-cpu` as a
 * process of its own, one records-cpu round per run, in alternating rounds (round i runs the
 * variants in an order rotated by i). BENCH_PROCESS_VARIANTS, `;` between variants: NODE_OPTIONS
 * for the daemon's process (its load generator runs without them, bench/load.ts), then optionally
 * `@` and the directory of another checkout (with its node_modules) to run instead of this one;
 * default `;--max-semi-space-size=64` (node's defaults against a larger young generation). Per
 * variant: the daemon's, PostgreSQL's and the load generator's CPU per request and the
 * throughput, the median of the rounds, and each round's ratio to the first variant on stderr.
 */
const VARIANTS = (process.env.BENCH_PROCESS_VARIANTS ?? ";--max-semi-space-size=64").split(";").map((v) => {
  const [flags, checkout] = v.split("@").map((x) => x.trim());
  return { flags: flags ?? "", checkout: checkout || process.cwd(), label: v.trim() || "node's defaults, this checkout" };
});
const ROUNDS = Number(process.env.BENCH_PROCESS_ROUNDS ?? 3);
const SECONDS = process.env.BENCH_CPU_SECONDS ?? "5";

/** One records-cpu run with `flags`: its rows, by measure. */
function runWith({ flags, checkout }: { flags: string; checkout: string }): Promise<Map<string, number>> {
  const tsx = path.join(checkout, "node_modules", ".bin", "tsx");
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: flags, BENCH_CPU_ROUNDS: "1", BENCH_CPU_SECONDS: SECONDS };
  delete env.BENCH_CPU_AB;
  return new Promise((resolve, reject) => {
    const child = spawn(tsx, [path.join("bench", "run.ts"), "records-cpu"], { cwd: checkout, env, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) return reject(new Error(`records-cpu with NODE_OPTIONS="${flags}" in ${checkout} exited with ${code}`));
      const rows = new Map<string, number>();
      for (const line of out.split("\n")) {
        const [bench, measure, value] = line.split("\t");
        if (bench === "records-cpu" && measure && value) rows.set(measure.replace(/ \(median of 1\)/, ""), Number(value));
      }
      resolve(rows);
    });
  });
}

export async function run(): Promise<BenchRow[]> {
  const rounds: Map<string, number>[][] = VARIANTS.map(() => []);
  for (let i = 0; i < ROUNDS; i++) {
    for (let k = 0; k < VARIANTS.length; k++) {
      const v = (k + i) % VARIANTS.length;
      process.stderr.write(`records-processes round ${i + 1}: ${VARIANTS[v]!.label}\n`);
      rounds[v]!.push(await runWith(VARIANTS[v]!));
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const measures = [...rounds[0]![0]!.keys()];
  const rows: BenchRow[] = [];
  VARIANTS.forEach(({ label }, v) => {
    for (const m of measures) {
      const values = rounds[v]!.map((r) => r.get(m)!);
      const base = rounds[0]!.map((r) => r.get(m)!);
      rows.push({
        name: `${m} [${label}]`,
        value: median(values),
        unit: m.includes("throughput") ? "req/s" : "µs",
        ...(v > 0 ? { baseline: median(base), ratio: median(values) / median(base) } : {}),
      });
      if (v > 0) process.stderr.write(`records-processes ${m}, ${label} ÷ ${VARIANTS[0]!.label} by round: ${values.map((x, i) => (x / base[i]!).toFixed(2)).join(", ")}\n`);
    }
  });
  return rows;
}
