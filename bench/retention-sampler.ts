import fs from "node:fs";
import pg from "pg";

/**
 * Why reads slow down during the purge (BENCH_RETENTION_SAMPLE=1 in bench/retention.ts): while a
 * window runs, pg_stat_activity is sampled every INTERVAL ms and each active backend's wait event
 * is counted per side — the requests (the app pool's backends that are not the purge's), the purge
 * (its statements or its own pool) and PostgreSQL's own processes (WAL writer, checkpointer,
 * autovacuum) — and the window's WAL (pg_stat_wal: records, full-page images, bytes, buffers full),
 * WAL fsyncs (pg_stat_io), checkpoints and the host's CPU use (/proc/stat) are taken as deltas.
 */
const INTERVAL = 10;
type Counts = Record<string, number>;
export type Sample = { requests: Counts; purge: Counts; server: Counts; wal: Record<string, number>; cpuBusy: number; samples: number };

function cpu(): { busy: number; total: number } {
  const [, ...f] = fs.readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/);
  const n = f.map(Number);
  const idle = n[3]! + (n[4] ?? 0);
  const total = n.reduce((s, x) => s + x, 0);
  return { busy: total - idle, total };
}

const WAL_SQL = `SELECT w.wal_records::float8 AS records, w.wal_fpi::float8 AS fpi, w.wal_bytes::float8 AS bytes, w.wal_buffers_full::float8 AS buffers_full,
  (SELECT coalesce(sum(fsyncs), 0)::float8 FROM pg_stat_io WHERE object = 'wal') AS fsyncs,
  (SELECT coalesce(sum(writes), 0)::float8 FROM pg_stat_io WHERE object = 'wal') AS writes,
  (SELECT num_timed + num_requested FROM pg_stat_checkpointer)::float8 AS checkpoints,
  (SELECT coalesce(sum(writes), 0)::float8 FROM pg_stat_io WHERE object = 'relation' AND backend_type = 'client backend') AS backend_buffer_writes
  FROM pg_stat_wal w`;

export async function sampleWhile<T>(url: string, purgeApp: string | null, work: () => Promise<T>): Promise<{ result: T; sample: Sample }> {
  const c = new pg.Client({ connectionString: url, application_name: "wardkeep-bench-sampler" });
  await c.connect();
  const s: Sample = { requests: {}, purge: {}, server: {}, wal: {}, cpuBusy: 0, samples: 0 };
  const add = (m: Counts, k: string) => (m[k] = (m[k] ?? 0) + 1);
  const [w0] = (await c.query<Record<string, number>>(WAL_SQL)).rows;
  const c0 = cpu();
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      const { rows } = await c.query<{ app: string; bt: string; q: string; wt: string | null; we: string | null }>(
        `SELECT application_name AS app, backend_type AS bt, left(query, 60) AS q, wait_event_type AS wt, wait_event AS we
           FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND (state = 'active' OR backend_type <> 'client backend')`,
      );
      s.samples++;
      for (const r of rows) {
        const ev = r.wt ? `${r.wt}:${r.we}` : "CPU";
        if (r.bt !== "client backend") {
          if (r.wt !== "Activity") add(s.server, `${r.bt} ${ev}`);
        } else if ((purgeApp && r.app === purgeApp) || /victims|retention_runs|audit_events.*retention/.test(r.q)) add(s.purge, ev);
        else if (r.app.startsWith("wardkeep") && !r.app.includes("sampler")) add(s.requests, ev);
      }
      await new Promise((res) => setTimeout(res, INTERVAL));
    }
  })();
  const result = await work();
  stop = true;
  await loop;
  const [w1] = (await c.query<Record<string, number>>(WAL_SQL)).rows;
  const c1 = cpu();
  s.cpuBusy = (c1.busy - c0.busy) / (c1.total - c0.total);
  for (const k of Object.keys(w0!)) s.wal[k] = w1![k]! - w0![k]!;
  await c.end();
  return { result, sample: s };
}

export function describe(label: string, s: Sample): string {
  const top = (m: Counts) =>
    Object.entries(m)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 6)
      .map(([k, v]) => `${k} ${(v / s.samples).toFixed(2)}`)
      .join(", ") || "-";
  const w = s.wal;
  return (
    `  ${label}: CPU busy ${(s.cpuBusy * 100).toFixed(0)} %; WAL ${(w.bytes! / 1048576).toFixed(0)} MiB, ${w.records} records, ${w.fpi} full-page images, ` +
    `${w.buffers_full} buffers-full, ${w.writes} writes, ${w.fsyncs} fsyncs, ${w.checkpoints} checkpoints, ${w.backend_buffer_writes} buffer writes by backends\n` +
    `    active backends per sample, by wait: requests [${top(s.requests)}]; purge [${top(s.purge)}]; server [${top(s.server)}]\n`
  );
}
