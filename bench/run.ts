import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

/**
 * `npm run bench`: runs every bench/<name>.ts that exports `run()`, or only those named on the
 * command line (`npm run bench -- audit`). Each result is measured against a baseline taken in
 * the same run on the same machine, so figures are ratios, not absolute seconds.
 */
export type BenchRow = { name: string; value: number; unit: string; baseline?: number; ratio?: number; target?: string; met?: boolean };

const here = path.dirname(fileURLToPath(import.meta.url));
const only = process.argv.slice(2);
const files = fs
  .readdirSync(here)
  .filter((f) => f.endsWith(".ts") && f !== "run.ts" && !f.startsWith("_"))
  .filter((f) => only.length === 0 || only.includes(path.basename(f, ".ts")));

const all: (BenchRow & { bench: string })[] = [];
for (const file of files) {
  const mod = (await import(pathToFileURL(path.join(here, file)).href)) as { run?: () => Promise<BenchRow[]> };
  if (!mod.run) continue;
  const bench = path.basename(file, ".ts");
  process.stderr.write(`bench ${bench}...\n`);
  const rows = await mod.run();
  for (const row of rows) all.push({ bench, ...row });
}

const fmt = (n: number | undefined) => (n === undefined ? "" : n >= 100 ? n.toFixed(0) : n.toPrecision(3));
console.log(["bench", "measure", "value", "unit", "baseline", "ratio", "target", "met"].join("\t"));
for (const r of all) {
  console.log([r.bench, r.name, fmt(r.value), r.unit, fmt(r.baseline), fmt(r.ratio), r.target ?? "", r.met === undefined ? "" : r.met ? "yes" : "NO"].join("\t"));
}
fs.mkdirSync(path.join(here, "results"), { recursive: true });
fs.writeFileSync(path.join(here, "results", "latest.json"), JSON.stringify({ at: new Date().toISOString(), rows: all }, null, 2) + "\n");
