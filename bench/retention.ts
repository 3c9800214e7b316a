import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import type { ApplianceContext } from "../daemon/context.js";
import { SYSTEM_META } from "../daemon/kernel/request-meta.js";
import { createPatient } from "../daemon/records/patients/service.js";
import { purgeTenant } from "../daemon/retention/index.js";
import { openLoop, pooledPercentile, type OpenLoopResult } from "./open-loop.js";
import { describe, sampleWhile } from "./retention-sampler.js";
import { setUp } from "./records.js";
import type { BenchRow } from "./run.js";

/**
 * The retention purge (issue 17): ROWS expired clinical notes (each with its version row) are
 * destroyed by `purgeTenant` — batches of retention.batchSize in short transactions, `FOR UPDATE
 * SKIP LOCKED`, one set-based `DELETE … RETURNING` per table and one audit event per batch — while
 * the records read benchmark (an audited, decrypted patient read at RATE requests/s, open-loop)
 * runs against the same appliance. Its read p99 during the purge is compared with its p99 without
 * one, in alternating rounds (each round starts one step later), every round's reads taken together.
 *
 * A "row" is one expired record as the disposition certificate counts it: here a note, deleted with
 * its version row (two table rows; the table-row rate is printed beside it).
 * Targets: ≥ 20,000 rows/s purged, read p99 during the purge ≤ 2x the p99 without it.
 * Environment: BENCH_RETENTION_ROWS (expired notes purged over all rounds, default 1,500,000: 500,000 a round),
 * BENCH_RETENTION_ROUNDS (3), BENCH_RETENTION_READ_SECONDS (the read window, 10),
 * BENCH_RETENTION_BATCH (retention.batchSize, default the product's 500), BENCH_RETENTION_READ_RATE
 * (reads/s, 200 as in the records benchmark; lower it on a machine the reads alone saturate).
 */
const ROWS = Number(process.env.BENCH_RETENTION_ROWS ?? 1_500_000);
const ROUNDS = Number(process.env.BENCH_RETENTION_ROUNDS ?? 3);
const READ_SECONDS = Number(process.env.BENCH_RETENTION_READ_SECONDS ?? 10);
const BATCH = process.env.BENCH_RETENTION_BATCH;
const RATE = Number(process.env.BENCH_RETENTION_READ_RATE ?? 200);
const WARMUP = 2;
/**
 * BENCH_RETENTION_COMPARE: variants measured in the same process, each round alternating them with
 * the quiet window, e.g. `purgeConnections=0;purgeConnections=1;purgeConnections=1,dutyCycle=0.7`.
 * A variant is comma-separated `key=value` retention settings (batchSize, dutyCycle,
 * purgeConnections, purgeNice, victimOrder), and `fk=restrict` or `fk=noaction`: a foreign key from note
 * versions to notes as before migration 0291 (RESTRICT, 0290) or 0290 (NO ACTION), with the history
 * guard as it was, for that variant's purge only (default `fk=triggers`, the product's), and
 * `walWriterDelay=10ms`: the server's wal_writer_delay for that variant's purge. Empty: the product's
 * settings alone. ROWS is per variant.
 */
const VARIANTS = (process.env.BENCH_RETENTION_COMPARE ?? "").split(";").map((v) => v.trim());
/** BENCH_RETENTION_SAMPLE=1: wait events, WAL and CPU of each window on stderr (bench/retention-sampler.ts). */
const SAMPLE = process.env.BENCH_RETENTION_SAMPLE === "1";
const SETTINGS = ["batchSize", "dutyCycle", "purgeConnections", "purgeNice", "victimOrder", "fk", "walWriterDelay"] as const;
/** How note versions refer to their note: the product's statement-level triggers (migration 0291), or a foreign key as before it. */
const FK_ACTIONS = { triggers: null, restrict: "RESTRICT", noaction: "NO ACTION" } as const;
/**
 * The schema as the variant wants it: migration 0291's triggers (the product's), or a foreign key
 * and a history guard that runs on every delete, as before 0291 (0291's own triggers disabled).
 */
function referencesSql(fk: keyof typeof FK_ACTIONS): string {
  const action = FK_ACTIONS[fk];
  if (action === null)
    return `ALTER TABLE note_versions DROP CONSTRAINT IF EXISTS note_versions_tenant_id_note_id_fkey,
        ENABLE TRIGGER note_versions_have_notes, ENABLE TRIGGER note_versions_history_delete;
      DROP TRIGGER IF EXISTS bench_history_before_0291 ON note_versions;
      ALTER TABLE notes ENABLE TRIGGER notes_keep_versions;`;
  return `ALTER TABLE note_versions DISABLE TRIGGER note_versions_have_notes, DISABLE TRIGGER note_versions_history_delete,
      ADD CONSTRAINT note_versions_tenant_id_note_id_fkey FOREIGN KEY (tenant_id, note_id) REFERENCES notes (tenant_id, id) ON DELETE ${action};
    CREATE TRIGGER bench_history_before_0291 BEFORE DELETE ON note_versions FOR EACH ROW EXECUTE FUNCTION records_history_guard();
    ALTER TABLE notes DISABLE TRIGGER notes_keep_versions;`;
}

function variantOf(base: ApplianceContext, spec: string): { ctx: ApplianceContext; fk: keyof typeof FK_ACTIONS; walWriterDelay: string | null } {
  const settings = Object.fromEntries(
    spec
      .split(",")
      .filter(Boolean)
      .map((kv) => kv.split("=").map((x) => x.trim()) as [string, string]),
  );
  const retention = { ...base.config.retention };
  let fk: keyof typeof FK_ACTIONS = "triggers";
  let walWriterDelay: string | null = null;
  for (const [k, v] of Object.entries(settings)) {
    if (!(SETTINGS as readonly string[]).includes(k)) throw new Error(`BENCH_RETENTION_COMPARE: unknown setting ${k} (one of ${SETTINGS.join(", ")})`);
    if (k === "fk") {
      if (!(v in FK_ACTIONS)) throw new Error(`BENCH_RETENTION_COMPARE: fk=${v} (one of ${Object.keys(FK_ACTIONS).join(", ")})`);
      fk = v as keyof typeof FK_ACTIONS;
    } else if (k === "walWriterDelay") {
      if (!/^\d+ms$/.test(v)) throw new Error(`BENCH_RETENTION_COMPARE: walWriterDelay=${v} (e.g. 10ms)`);
      walWriterDelay = v;
    } else if (k === "victimOrder") {
      if (v !== "creation" && v !== "id") throw new Error(`BENCH_RETENTION_COMPARE: victimOrder=${v} (creation or id)`);
      retention.victimOrder = v;
    } else retention[k as "batchSize" | "dutyCycle" | "purgeConnections" | "purgeNice"] = Number(v);
  }
  return { ctx: { ...base, config: { ...base.config, retention } }, fk, walWriterDelay };
}

export async function run(): Promise<BenchRow[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wardkeep-bench-retention-"));
  const env = await setUp(dir, BATCH ? { WARDKEEP_RETENTION_BATCH_SIZE: BATCH } : {});
  const su = new pg.Client({ connectionString: env.superuserUrl });
  await su.connect();
  try {
    // The patient whose old notes expire (kept itself: its rule is a century).
    const retired = await createPatient(env.ctx, env.practitioner, { name: "Retired Patient", birthDate: "1940-03-04" }, SYSTEM_META);
    await su.query("INSERT INTO retention_rules (tenant_id, record_class, trigger, period_days, updated_at) VALUES ($1, 'patient', 'last_encounter', 36500, now())", [
      env.tenantId,
    ]);
    const body = Buffer.alloc(700, 0xab); // a note's size; never decrypted by the purge
    // Every window starts from a checkpoint: the seeding's hundreds of MiB of dirty pages and WAL are
    // the bench's, not the purge's, and would otherwise be written out during whichever window follows.
    const settle = () => su.query("CHECKPOINT");
    const perRound = Math.floor(ROWS / ROUNDS);
    // As a clinic writes them: one note after another (a second apart, ten years ago), each with its version.
    const seed = async () => {
      const old = new Date(Date.now() - 10 * 365 * 86_400_000);
      for (let done = 0; done < perRound; done += 100_000) {
        await su.query(
          `WITH made AS (INSERT INTO notes (tenant_id, patient_id, kind, created_at, created_by, updated_at)
                         SELECT $1, $2, 'note', $4::timestamptz + ($7 + g) * interval '1 second', $5, $4 FROM generate_series(1, $3) g RETURNING id, created_at)
           INSERT INTO note_versions (tenant_id, patient_id, note_id, version, change, body_enc, created_at, created_by)
           SELECT $1, $2, id, 1, 'original', $6, created_at, $5 FROM made`,
          [env.tenantId, retired.id, Math.min(100_000, perRound - done), old, env.practitioner.userId, body, done],
        );
      }
      await su.query("VACUUM ANALYZE notes, note_versions");
      await settle();
    };
    const setFk = (fk: keyof typeof FK_ACTIONS) => su.query(`BEGIN; ${referencesSql(fk)} COMMIT;`);
    const read = (seconds: number) => openLoop(env.product.read, { rate: RATE, seconds, connections: 32, warmupSeconds: WARMUP });

    const variants = VARIANTS.map((spec) => ({ spec, ...variantOf(env.ctx, spec) }));
    const quiet: OpenLoopResult[] = [];
    const byVariant = variants.map(() => ({ during: [] as OpenLoopResult[], rates: [] as number[], covered: [] as number[] }));
    for (let i = 0; i < ROUNDS; i++) {
      const steps = [
        async () => {
          await settle();
          if (!SAMPLE) return void quiet.push(await read(READ_SECONDS));
          const { result, sample } = await sampleWhile(env.superuserUrl, null, () => read(READ_SECONDS));
          quiet.push(result);
          process.stderr.write(describe(`round ${i + 1} quiet`, sample));
        },
        ...variants.map((v, k) => async () => {
          if (v.fk !== "triggers") await setFk(v.fk);
          // The server's WAL writer wakes this often (PostgreSQL's 200ms by default) for this variant's purge only.
          const walWriter = (delay: string | null) =>
            su.query(delay ? `ALTER SYSTEM SET wal_writer_delay = '${delay}'` : "ALTER SYSTEM RESET wal_writer_delay").then(() => su.query("SELECT pg_reload_conf()"));
          if (v.walWriterDelay) await walWriter(v.walWriterDelay);
          await seed();
          const reading = read(READ_SECONDS);
          await new Promise((r) => setTimeout(r, WARMUP * 1000)); // the purge starts as the measured window opens
          const start = performance.now();
          const purge = () => purgeTenant(v.ctx, env.tenantId);
          const { result, sample } = SAMPLE
            ? await sampleWhile(env.superuserUrl, v.ctx.config.retention.purgeConnections > 0 ? "wardkeep-purge" : null, purge)
            : { result: await purge(), sample: null };
          if (sample) process.stderr.write(describe(`round ${i + 1} ${v.spec || "product"} purge`, sample));
          const seconds = (performance.now() - start) / 1000;
          const during = await reading;
          if (v.fk !== "triggers") await setFk("triggers");
          if (v.walWriterDelay) await walWriter(null);
          const [{ n }] = (await su.query<{ n: string }>("SELECT count(*) AS n FROM notes WHERE patient_id = $1 AND created_at < now() - interval '1 year'", [retired.id]))
            .rows as [{ n: string }];
          if (Number(n) !== 0 || result.destroyed < perRound) throw new Error(`the purge left ${n} expired notes (destroyed ${result.destroyed} of ${perRound})`);
          const m = byVariant[k]!;
          m.during.push(during);
          m.rates.push(perRound / seconds);
          m.covered.push(Math.min(1, seconds / READ_SECONDS));
          process.stderr.write(
            `retention bench: round ${i + 1} ${v.spec || "product"}: ${Math.round(perRound / seconds)} rows/s (notes), read p99 ${during.p99.toFixed(1)} ms during (p50 ${during.p50.toFixed(1)}), purge covered ${Math.round(Math.min(1, seconds / READ_SECONDS) * 100)} % of the read window\n`,
          );
        }),
      ];
      // Alternating rounds: each round starts one step later, so no side always runs first.
      for (let s = 0; s < steps.length; s++) await steps[(s + i) % steps.length]!();
      process.stderr.write(`retention bench: round ${i + 1} quiet: read p99 ${quiet[i]!.p99.toFixed(1)} ms (p50 ${quiet[i]!.p50.toFixed(1)})\n`);
    }
    const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
    // Percentiles over every round's reads taken together: one window's p99 (its 20th-slowest read
    // at 10 s × 200/s) is decided by whether one stall of this machine fell into it, quiet or not.
    const p99Quiet = pooledPercentile(quiet, 0.99);
    const p50Quiet = pooledPercentile(quiet, 0.5);
    const rows: BenchRow[] = [];
    variants.forEach((v, k) => {
      const { during, rates, covered } = byVariant[k]!;
      const label = v.spec ? ` [${v.spec}]` : "";
      const r = v.ctx.config.retention;
      const rate = mean(rates);
      const p99During = pooledPercentile(during, 0.99);
      const p50During = pooledPercentile(during, 0.5);
      rows.push(
        {
          name: `purge rate${label} (a row: an expired note with its version row; ${perRound} per round, batch ${r.batchSize}, duty cycle ${r.dutyCycle}, purge connections ${r.purgeConnections}, ${r.victimOrder} order, fk ${v.fk})`,
          value: rate,
          unit: "rows/s",
          target: "≥ 20000",
          met: rate >= 20_000,
        },
        { name: `purge rate in table rows (notes and note versions)${label}`, value: rate * 2, unit: "table rows/s" },
        {
          name: `read p99 during the purge${label} (${RATE} req/s open-loop; every round's reads together, against the quiet windows' together)`,
          value: p99During,
          unit: "ms",
          baseline: p99Quiet,
          ratio: p99During / p99Quiet,
          target: "≤ 2x",
          met: p99During <= 2 * p99Quiet,
        },
        {
          name: `read p99 during / without the purge, mean of the rounds' ratios${label}`,
          value: mean(during.map((r, j) => r.p99 / quiet[j]!.p99)),
          unit: "x",
        },
        {
          name: `read p99 during / without the purge, worst round against worst quiet round${label}`,
          value: Math.max(...during.map((r) => r.p99)) / Math.max(...quiet.map((r) => r.p99)),
          unit: "x",
        },
        { name: `read p50 during / without the purge${label}`, value: p50During, unit: "ms", baseline: p50Quiet, ratio: p50During / p50Quiet },
        { name: `share of the read window the purge lasted (min over rounds)${label}`, value: Math.min(...covered) * 100, unit: "%" },
      );
    });
    const failures = [...byVariant.flatMap((v) => v.during), ...quiet].reduce((s, r) => s + r.non2xx + r.errors, 0);
    rows.push({ name: "reads failed (non-2xx or errors)", value: failures, unit: "requests", target: "0", met: failures === 0 });
    return rows;
  } finally {
    await su.end();
    await env.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
