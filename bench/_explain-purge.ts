/**
 * Diagnostic, not a benchmark (bench/run.ts skips files starting with "_"): seeds N expired notes
 * (default 60,000; creation times one millisecond apart, as notes are written) like
 * bench/retention.ts, captures the purge's note batch statement, then runs B batches of 2,000
 * (default 30) under `EXPLAIN (ANALYZE, BUFFERS)` as the app role in the tenant's scope,
 * alternating the product's id order with creation order, and prints each batch's buffers,
 * trigger times and duration (docs/retention.md, "Session 6").
 *   N=300000 B=30 npx tsx bench/_explain-purge.ts
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { SYSTEM_META } from "../daemon/kernel/request-meta.js";
import { createPatient } from "../daemon/records/patients/service.js";
import { purgeTenant } from "../daemon/retention/index.js";
import { setUp } from "./records.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wk-explain-"));
const env = await setUp(dir);
const su = new pg.Client({ connectionString: env.superuserUrl });
await su.connect();
const retired = await createPatient(env.ctx, env.practitioner, { name: "Retired Patient", birthDate: "1940-03-04" }, SYSTEM_META);
await su.query("INSERT INTO retention_rules (tenant_id, record_class, trigger, period_days, updated_at) VALUES ($1, 'patient', 'last_encounter', 36500, now())", [env.tenantId]);
const N = Number(process.env.N ?? 60000);
await su.query(
  `WITH made AS (INSERT INTO notes (tenant_id, patient_id, kind, created_at, created_by, updated_at)
                 SELECT $1, $2, 'note', $4::timestamptz + g * interval '1 ms', $5, $4 FROM generate_series(1, $3) g RETURNING id, created_at)
   INSERT INTO note_versions (tenant_id, patient_id, note_id, version, change, body_enc, created_at, created_by)
   SELECT $1, $2, id, 1, 'original', $6, created_at, $5 FROM made`,
  [env.tenantId, retired.id, N, new Date(Date.now() - 10 * 365 * 86_400_000), env.practitioner.userId, Buffer.alloc(700, 0xab)],
);
await su.query("VACUUM ANALYZE notes, note_versions");
const texts: string[] = [];
env.ctx.db.app.onStatement = (t) => texts.push(t);
await purgeTenant(env.ctx, env.tenantId, { maxBatches: 1, db: env.ctx.db.app }); // the request pool, whose statements onStatement sees
env.ctx.db.app.onStatement = undefined;
const stmt = texts.find((t) => t.includes("victims"))!;
const [{ cutoff }] = (await su.query("SELECT rules->'note'->>'cutoff' AS cutoff FROM retention_runs WHERE status = 'running'")).rows;
const byTime = stmt.replace("ORDER BY n.id", "ORDER BY n.created_at, n.id");
if (byTime === stmt) throw new Error("no ORDER BY n.id");
const res: Record<string, number[]> = { id: [], time: [] };
for (let i = 0; i < Number(process.env.B ?? 30); i++) {
  const kind = i % 2 ? "time" : "id";
  await su.query("BEGIN");
  await su.query(`SET LOCAL ROLE ${env.ctx.db.appRole}`);
  await su.query("SELECT set_config('wardkeep.tenant_id', $1, true), set_config('wardkeep.scope', 'tenant', true), set_config('wardkeep.purge_tenant', $1, true)", [env.tenantId]);
  const w0 = (await su.query("SELECT wal_bytes::float8 b, wal_fpi::float8 f FROM pg_stat_wal")).rows[0];
  const t0 = performance.now();
  const r = await su.query(`EXPLAIN (ANALYZE, BUFFERS) ${kind === "id" ? stmt : byTime}`, [env.tenantId, new Date(cutoff), 2000]);
  await su.query("COMMIT");
  const ms = performance.now() - t0;
  const w1 = (await su.query("SELECT wal_bytes::float8 b, wal_fpi::float8 f FROM pg_stat_wal")).rows[0];
  res[kind]!.push(ms);
  if (i >= 2)
    console.log(
      r.rows
        .map((x) => x["QUERY PLAN"])
        .filter((l: string) => /Trigger|Execution|actual time/.test(l))
        .join("\n"),
    );
  console.log(kind, ms.toFixed(0), "ms", r.rows[1]["QUERY PLAN"].trim(), "wal KiB", ((w1.b - w0.b) / 1024).toFixed(0), "fpi", w1.f - w0.f);
}
for (const k of ["id", "time"]) console.log(k, "median ms", res[k]!.sort((a, b) => a - b)[Math.floor(res[k]!.length / 2)]!.toFixed(0));
await su.end();
await env.close();
fs.rmSync(dir, { recursive: true, force: true });
