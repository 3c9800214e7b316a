/**
 * Backup benchmark (`npm run bench -- backup`, issue 14): the recovery of a whole appliance of
 * about 1 GB (BENCH_BACKUP_MB, default 1024: database rows plus attachment files) onto a fresh,
 * empty database, as `wardkeep recover` does it (its library function, recoverAppliance: data
 * snapshot + key-store backup + attachments + new unseal source), against a plain `COPY FROM` of
 * the same rows into the same schema in the same run. The two alternate (COPY, recover, COPY, ...:
 * BENCH_BACKUP_ROUNDS recoveries, default 2, and one more COPY round than that), so a drift in
 * machine load weighs on both; one more COPY round measures building secondary indexes after the
 * load instead of during it (a lever for the restore). Targets: the whole recovery under 5 minutes, and the restore's load rate at
 * least half the raw COPY load rate. Also measured:
 * - snapshot throughput (COPY → brotli-1 → AES-256-GCM segments → directory target) and a raw
 *   `COPY TO` of the same tables into local files (the floor any logical backup pays; those files
 *   are what the raw COPY FROM loads),
 * - `pg_dump -Fc` when a pg_dump matching the server's major version is installed (Debian 12
 *   ships 15; the embedded server is 18, which pg_dump 15 refuses: the row says so),
 * - where the time goes: compressors, AES-GCM and SHA-256 on one core.
 *
 * The appliance is made as a hospital's would be, but in bulk: people, patients and attachments
 * through the service layer (real data keys, real encrypted files), then clinical notes of a few
 * KB of ciphertext each and audit events (chained by the appliance's own chainer) loaded with COPY
 * until the database reaches its share of the size. docs/backups.md "Performance" has the figures.
 */
import { execFileSync } from "node:child_process";
import { createCipheriv, createHash, randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { brotliCompressSync, constants as zc, gzipSync } from "node:zlib";
import pg from "pg";
import { from as copyFrom, to as copyTo } from "pg-copy-streams";
import { openSnapshot } from "../backup/restore.js";
import { applyMigrationList } from "../backup/schema.js";
import { openTarget } from "../backup/targets/index.js";
import { layout, type ManifestBody } from "../backup/manifest.js";
import { quoteIdent } from "../backup/pg-layout.js";
import { createTenant } from "../daemon/access/tenants.js";
import { startAppliance } from "../daemon/appliance.js";
import { chainPendingEvents } from "../daemon/audit/chainer.js";
import { createApiToken } from "../daemon/auth/api-tokens.js";
import { acceptInvite, createInvite } from "../daemon/auth/invites.js";
import { createFirstSuperAdmin } from "../daemon/auth/setup.js";
import { writePolicy } from "../daemon/backups/policy.js";
import { runSnapshot } from "../daemon/backups/service.js";
import { recoverAppliance, type RecoveryOutcome } from "../daemon/cli/commands/recover.js";
import { loadConfig } from "../daemon/config/load.js";
import { embeddedDatabaseUrl, startEmbeddedPostgres, type EmbeddedPostgres } from "../daemon/db/embedded.js";
import { migrations } from "../daemon/db/migrations/index.js";
import { APP_ROLE, ensureLoginRole, OWNER_ROLE } from "../daemon/db/roles.js";
import { inScope } from "../daemon/db/sql.js";
import type { Actor } from "../daemon/kernel/actor.js";
import { SYSTEM_META } from "../daemon/kernel/request-meta.js";
import { fieldCrypto, issueRecoveryKit, loadRecoveryPrivateKey } from "../daemon/keys/index.js";
import { silentLogger } from "../daemon/log/logger.js";
import { uploadAttachment } from "../daemon/records/attachments/service.js";
import { createPatient } from "../daemon/records/patients/service.js";
import type { BenchRow } from "./run.js";

const MB = 1024 * 1024;
const SIZE_MB = Number(process.env.BENCH_BACKUP_MB ?? 1024);
/** Share of the appliance's bytes that are attachment files (the rest is the database). */
const ATTACHMENT_SHARE = Number(process.env.BENCH_BACKUP_ATTACHMENT_SHARE ?? 0.25);
const ROUNDS = Math.max(1, Number(process.env.BENCH_BACKUP_ROUNDS ?? 2));
const ATTACHMENT_BYTES = 4 * MB;
const NOTE_BYTES = 3000; // ciphertext of a clinical note of a few KB: stored out of line (TOAST)
const PATIENTS = 200;
const AUDIT_EVENTS_PER_MB = 400; // about 15 % of the database: a year of reads on a busy ward

type Cluster = { embedded: EmbeddedPostgres; ownerPw: string; appPw: string };
// Every side connects as the daemon does to its embedded server: through the private Unix socket.
const dbUrl = (c: Cluster, db: string, who: "owner" | "app" | "su") =>
  embeddedDatabaseUrl(
    c.embedded,
    db,
    who === "su"
      ? { user: "postgres", password: decodeURIComponent(new URL(c.embedded.superuserUrl).password) }
      : who === "owner"
        ? { user: OWNER_ROLE, password: c.ownerPw }
        : { user: APP_ROLE, password: c.appPw },
  );

async function client(url: string) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  return c;
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = await client(url);
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function createDatabase(c: Cluster, name: string) {
  await withClient(c.embedded.superuserUrl, async (su) => {
    await su.query(`CREATE DATABASE ${name} OWNER ${OWNER_ROLE}`);
    await su.query(`GRANT CONNECT, TEMPORARY ON DATABASE ${name} TO ${APP_ROLE}`);
  });
}

async function dropDatabase(c: Cluster, name: string) {
  await withClient(c.embedded.superuserUrl, (su) => su.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
}

function applianceEnv(c: Cluster, db: string, dataDir: string): Record<string, string> {
  return {
    WARDKEEP_DATA_DIR: dataDir,
    WARDKEEP_DATABASE_URL: dbUrl(c, db, "owner"),
    WARDKEEP_DATABASE_APP_URL: dbUrl(c, db, "app"),
    WARDKEEP_PORT: "0",
    WARDKEEP_SERVER_REDIRECT_PORT: "0",
    WARDKEEP_SERVER_HOST: "127.0.0.1",
    WARDKEEP_LOG_LEVEL: "error",
    WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false",
  };
}

/** Streams rows of COPY text made by `line(i)` into `sql` until `count` rows are written. */
async function copyRows(c: pg.Client, sql: string, count: number, line: (i: number) => string) {
  let i = 0;
  const source = new Readable({
    read() {
      let chunk = "";
      for (let n = 0; n < 64 && i < count; n++, i++) chunk += line(i);
      if (chunk) this.push(chunk);
      if (i >= count) this.push(null);
    },
  });
  await pipeline(source, c.query(copyFrom(sql)));
}

/**
 * Appliance A: people, patients and attachments through the service layer, then notes and audit
 * events in bulk until the database holds its share. Returns where A's data lives.
 */
async function buildAppliance(c: Cluster, dir: string, targetPath: string) {
  const dataDir = path.join(dir, "appliance-a");
  await createDatabase(c, "wk_a");
  // Bulk chaining and the snapshot of a large database outlast a request's statement timeout.
  const config = loadConfig({ env: { ...applianceEnv(c, "wk_a", dataDir), WARDKEEP_DATABASE_STATEMENT_TIMEOUT_MS: "0" } });
  const appliance = await startAppliance(config, { log: silentLogger(), announce: () => undefined });
  const { ctx } = appliance;
  try {
    const rootUser = await createFirstSuperAdmin(ctx, { email: "bench.root@hospital.example", password: `bench-${randomBytes(9).toString("hex")}` });
    const root: Actor = { userId: rootUser.id, role: "super_admin", tenantId: null, via: "session", mfaVerifiedAt: new Date() };
    const tenant = await createTenant(ctx, root, { name: "Bench Hospital", slug: "bench-hospital", mfaRequired: false }, SYSTEM_META);
    const { token: inviteToken } = await createInvite(ctx, root, { email: "bench.admin@hospital.example", role: "admin", tenantId: tenant.id }, SYSTEM_META);
    const accepted = await acceptInvite(ctx, { token: inviteToken, password: `bench-${randomBytes(9).toString("hex")}` }, SYSTEM_META);
    const admin: Actor = { userId: accepted.userId, role: "admin", tenantId: tenant.id, via: "session", mfaVerifiedAt: new Date() };
    const { apiToken } = await createApiToken(ctx, admin, { name: "EHR bridge", role: "practitioner", scopes: ["*"], expiresInDays: 1 }, SYSTEM_META);
    const practitioner: Actor = { userId: apiToken.serviceAccountId, role: "practitioner", tenantId: tenant.id, via: "api-token", scopes: ["*"] };
    const patients: string[] = [];
    for (let i = 0; i < PATIENTS; i++) {
      const p = await createPatient(
        ctx,
        practitioner,
        {
          name: `Bench Patient ${i}`,
          birthDate: "1970-01-02",
          mrn: `MRN-${String(i).padStart(6, "0")}`,
          phone: "+44 20 7946 0000",
          email: `p${i}@example.org`,
          address: "1 Example Street\nLondon",
        },
        SYSTEM_META,
      );
      patients.push(p.id);
    }
    const attachmentCount = Math.max(1, Math.round((SIZE_MB * MB * ATTACHMENT_SHARE) / ATTACHMENT_BYTES));
    for (let i = 0; i < attachmentCount; i++) {
      await uploadAttachment(
        ctx,
        practitioner,
        patients[i % patients.length]!,
        { kind: "document", mediaType: "application/pdf", filename: `scan-${i}.pdf` },
        Readable.from([randomBytes(ATTACHMENT_BYTES)]),
        SYSTEM_META,
      );
    }

    process.stderr.write(`  ${patients.length} patients and ${attachmentCount} attachments written through the service layer; notes and audit events...\n`);
    await withClient(dbUrl(c, "wk_a", "su"), async (su) => {
      await su.query("SELECT set_config('wardkeep.scope', 'appliance', false)");
      const events = Math.round(SIZE_MB * AUDIT_EVENTS_PER_MB);
      // Statistics in the same transaction: the chainer picks the batch up at once, and with the
      // table still "empty" to the planner its batched DELETE took minutes instead of seconds.
      await su.query("BEGIN");
      await su.query(
        `INSERT INTO audit_intake (event_id, occurred_at, tenant_id, actor_user_id, actor_role, action, resource_type, resource_id, patient_id, outcome, source_ip, user_agent, request_id)
         SELECT gen_random_uuid(), now(), $1::uuid, $2, 'practitioner', 'patient.read', 'patient', p, p, 'success', '10.20.30.40', 'Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0', gen_random_uuid()::text
           FROM generate_series(1, $3::int) AS g, LATERAL (SELECT ($4::text[])[1 + g % $5] AS p) AS x`,
        [tenant.id, practitioner.userId, events, patients, patients.length],
      );
      await su.query("ANALYZE audit_intake");
      await su.query("COMMIT");
      await chainPendingEvents(ctx);
      // Chained events leave the intake table: its dead rows would otherwise count towards the size.
      await su.query("VACUUM audit_intake");
      const dbTarget = SIZE_MB * MB * (1 - ATTACHMENT_SHARE);
      const size = async () => Number((await su.query("SELECT pg_database_size(current_database()) AS n")).rows[0].n);
      const now = new Date().toISOString();
      // Each note body is real field ciphertext under its patient's data key, bound to its row,
      // so the recovery's checks (every value names a key the store holds, samples decrypt) pass.
      const keys = await inScope(ctx.db.app, { kind: "tenant", tenantId: tenant.id }, async (t) => {
        const out: Awaited<ReturnType<typeof fieldCrypto.dataKeyFor>>[] = [];
        for (const patientId of patients) out.push(await fieldCrypto.dataKeyFor(ctx, t, { kind: "patient", tenantId: tenant.id, patientId }));
        return out;
      });
      const text = randomBytes((NOTE_BYTES * 3) / 4).toString("base64");
      while ((await size()) < dbTarget) {
        const batch = Math.max(1000, Math.min(40_000, Math.ceil((dbTarget - (await size())) / (NOTE_BYTES + 500))));
        const ids = Array.from({ length: batch }, () => randomUUID());
        const patientOf = (i: number) => patients[i % patients.length]!;
        await su.query("BEGIN");
        await copyRows(
          su,
          "COPY notes (id, tenant_id, patient_id, kind, created_at, created_by, updated_at) FROM STDIN",
          batch,
          (i) => `${ids[i]}\t${tenant.id}\t${patientOf(i)}\tnote\t${now}\t${practitioner.userId}\t${now}\n`,
        );
        await copyRows(su, "COPY note_versions (id, tenant_id, patient_id, note_id, version, change, body_enc, created_at, created_by) FROM STDIN", batch, (i) => {
          const id = randomUUID();
          const body = fieldCrypto.encryptField(keys[i % patients.length]!, { tenantId: tenant.id, table: "note_versions", column: "body_enc", rowId: id }, `${i} ${text}`);
          return `${id}\t${tenant.id}\t${patientOf(i)}\t${ids[i]}\t1\toriginal\t\\\\x${body.toString("hex")}\t${now}\t${practitioner.userId}\n`;
        });
        await su.query("COMMIT");
      }
      await su.query("VACUUM ANALYZE");
    });
    const dbBytes = await withClient(dbUrl(c, "wk_a", "su"), async (su) => Number((await su.query("SELECT pg_database_size(current_database()) AS n")).rows[0].n));

    const target = { kind: "fs" as const, name: "bench", path: targetPath };
    await inScope(ctx.db.app, { kind: "appliance" }, (t) => writePolicy(ctx, t, { targets: [target] }, null));
    process.stderr.write(`  database ${(dbBytes / MB).toFixed(0)} MB; snapshot...\n`);
    const kit = path.join(dir, "recovery-kit.pem");
    await issueRecoveryKit(ctx, { out: kit });
    const snap = await runSnapshot(ctx, { trigger: "manual" });
    if (snap.status !== "complete") throw new Error(`bench snapshot ${snap.status}: ${snap.error}`);
    return { target, kit, snap, dbBytes, attachmentCount, attachmentsDir: path.join(dataDir, config.records.attachmentsDir) };
  } finally {
    await appliance.stop();
  }
}

/** The same rows the snapshot holds, as COPY text files: what the raw COPY FROM loads. */
async function dumpRows(c: Cluster, manifest: ManifestBody, outDir: string): Promise<{ seconds: number; bytes: number; files: Map<string, string> }> {
  fs.mkdirSync(outDir, { recursive: true });
  const files = new Map<string, string>();
  let bytes = 0;
  const t = performance.now();
  await withClient(dbUrl(c, "wk_a", "su"), async (su) => {
    await su.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    for (const obj of manifest.objects) {
      const file = path.join(outDir, `${obj.name}.copy`);
      await pipeline(su.query(copyTo(`COPY ${quoteIdent(obj.schema)}.${quoteIdent(obj.table)} (${obj.columns.map(quoteIdent).join(", ")}) TO STDOUT`)), fs.createWriteStream(file));
      bytes += fs.statSync(file).size;
      files.set(obj.name, file);
    }
    await su.query("COMMIT");
  });
  return { seconds: (performance.now() - t) / 1000, bytes, files };
}

type CopyRound = { copySeconds: number; commitSeconds: number; indexSeconds: number; bytes: number };

/**
 * Raw COPY FROM of the same rows into a freshly migrated database, the way a DBA would bulk load
 * it: as superuser with session_replication_role = replica (no triggers, no foreign-key checks,
 * no row-level security), one transaction, indexes in place — or, with `indexAfter`, secondary
 * indexes dropped first and built after the load (the lever pg_restore uses).
 */
async function rawCopyRound(c: Cluster, name: string, manifest: ManifestBody, files: Map<string, string>, indexAfter: boolean): Promise<CopyRound> {
  await createDatabase(c, name);
  try {
    await applyMigrationList(dbUrl(c, name, "owner"), APP_ROLE, migrations);
    return await withClient(dbUrl(c, name, "su"), async (su) => {
      for (const p of manifest.partitions) {
        const exists = await su.query("SELECT to_regclass($1) AS r", [`${quoteIdent(p.schema)}.${quoteIdent(p.table)}`]);
        if (!exists.rows[0].r)
          await su.query(`CREATE TABLE ${quoteIdent(p.schema)}.${quoteIdent(p.table)} PARTITION OF ${quoteIdent(p.parentSchema)}.${quoteIdent(p.parent)} ${p.bound}`);
      }
      await su.query("BEGIN");
      await su.query("SET LOCAL session_replication_role = replica");
      for (const obj of manifest.objects) await su.query(`DELETE FROM ONLY ${quoteIdent(obj.schema)}.${quoteIdent(obj.table)}`);
      const tables = manifest.objects.map((o) => `${quoteIdent(o.schema)}.${quoteIdent(o.table)}`);
      const indexes = indexAfter
        ? (
            await su.query<{ name: string; def: string }>(
              `SELECT format('%I.%I', n.nspname, ic.relname) AS name, pg_get_indexdef(i.indexrelid) AS def
                 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
                 JOIN pg_class t ON t.oid = i.indrelid
                WHERE (t.oid = ANY (SELECT to_regclass(x) FROM unnest($1::text[]) AS x)
                       OR t.oid IN (SELECT inhparent FROM pg_inherits WHERE inhrelid = ANY (SELECT to_regclass(x) FROM unnest($1::text[]) AS x)))
                  AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid)
                  -- a partition's index goes with its parent's (and comes back with it)
                  AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)`,
              [tables],
            )
          ).rows
        : [];
      for (const ix of indexes) await su.query(`DROP INDEX ${ix.name}`);
      let bytes = 0;
      let t = performance.now();
      for (const obj of manifest.objects) {
        const file = files.get(obj.name)!;
        await pipeline(
          fs.createReadStream(file, { highWaterMark: 1 << 20 }),
          su.query(copyFrom(`COPY ${quoteIdent(obj.schema)}.${quoteIdent(obj.table)} (${obj.columns.map(quoteIdent).join(", ")}) FROM STDIN`)),
        );
        bytes += fs.statSync(file).size;
      }
      const copySeconds = (performance.now() - t) / 1000;
      t = performance.now();
      for (const ix of indexes) await su.query(ix.def);
      const indexSeconds = (performance.now() - t) / 1000;
      t = performance.now();
      await su.query("COMMIT");
      return { copySeconds, commitSeconds: (performance.now() - t) / 1000, indexSeconds, bytes };
    });
  } finally {
    await dropDatabase(c, name);
  }
}

/** `wardkeep recover` onto a brand-new appliance: an empty database and an empty data directory. */
async function recoverRound(
  c: Cluster,
  dir: string,
  name: string,
  target: { kind: "fs"; name: string; path: string },
  kitPem: string,
): Promise<{ outcome: RecoveryOutcome; seconds: number }> {
  await createDatabase(c, name);
  const dataDir = path.join(dir, name);
  try {
    const config = loadConfig({ env: { ...applianceEnv(c, name, dataDir), WARDKEEP_KEYS_UNSEAL: "keyfile" } });
    const t = performance.now();
    const privateKey = await loadRecoveryPrivateKey({ pem: kitPem });
    const outcome = await recoverAppliance(config, { target: openTarget(target), privateKey, mode: "keyfile", input: {} });
    return { outcome, seconds: (performance.now() - t) / 1000 };
  } finally {
    await dropDatabase(c, name);
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Reads every stored object of the snapshot (data and attachments) and discards it: the download alone. */
async function downloadAlone(
  target: { kind: "fs"; name: string; path: string },
  manifest: ManifestBody,
): Promise<{ dataSeconds: number; attachmentSeconds: number; bytes: number }> {
  const t0 = performance.now();
  const tgt = openTarget(target);
  let bytes = 0;
  let dataSeconds: number;
  const sink = () =>
    new Writable({
      highWaterMark: 1 << 20,
      write(chunk: Buffer, _e, done) {
        bytes += chunk.length;
        done();
      },
    });
  try {
    for (const obj of manifest.objects) await pipeline(await tgt.get(layout.object(manifest.snapshotId, obj.path)), sink());
    dataSeconds = (performance.now() - t0) / 1000;
    for (const a of manifest.attachments?.entries ?? []) await pipeline(await tgt.get(a.key), sink());
  } finally {
    await tgt.close();
  }
  return { dataSeconds, attachmentSeconds: (performance.now() - t0) / 1000 - dataSeconds, bytes };
}

function timeIt(fn: () => void): number {
  const t = performance.now();
  fn();
  return (performance.now() - t) / 1000;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

export async function run(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wardkeep-bench-backup-"));
  fs.chmodSync(dir, 0o711);
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const embedded = await startEmbeddedPostgres({ dataDir: path.join(dir, "pg"), port, passwordFile: path.join(dir, "su-password") });
  const cluster: Cluster = { embedded, ownerPw: randomBytes(12).toString("hex"), appPw: randomBytes(12).toString("hex") };
  try {
    let serverMajor = 0;
    await withClient(embedded.superuserUrl, async (su) => {
      await ensureLoginRole(su, OWNER_ROLE, cluster.ownerPw);
      await ensureLoginRole(su, APP_ROLE, cluster.appPw);
      serverMajor = Math.floor(Number((await su.query("SHOW server_version_num")).rows[0].server_version_num) / 10000);
    });

    process.stderr.write(`  building a ${SIZE_MB} MB appliance (database + attachments)...\n`);
    const a = await buildAppliance(cluster, dir, path.join(dir, "target"));
    const attachmentBytes = a.attachmentCount * ATTACHMENT_BYTES;
    const applianceMb = (a.dbBytes + attachmentBytes) / MB;
    rows.push({
      name: `appliance size (database ${(a.dbBytes / MB).toFixed(0)} MB + ${a.attachmentCount} attachments ${(attachmentBytes / MB).toFixed(0)} MB)`,
      value: applianceMb,
      unit: "MB",
      target: `>= ${SIZE_MB} MB`,
      met: applianceMb >= SIZE_MB * 0.98,
    });

    const kitPem = fs.readFileSync(a.kit, "utf8");
    const opened = await openSnapshot(openTarget(a.target), a.snap.id, { recoveryPrivateKey: await loadRecoveryPrivateKey({ pem: kitPem }) });
    opened.key.fill(0);
    const manifest = opened.manifest;

    const dump = await dumpRows(cluster, manifest, path.join(dir, "copy"));
    const rawReadMBs = dump.bytes / MB / dump.seconds;
    rows.push({ name: "raw COPY TO a local file (baseline)", value: rawReadMBs, unit: "MB/s" });
    const snapSeconds = a.snap.durationMs! / 1000;
    const snapMBs = a.snap.plainBytes! / MB / snapSeconds;
    rows.push({ name: "snapshot, data + key store + attachments (brotli-1 + AES-256-GCM, to a directory)", value: snapSeconds, unit: "s" });
    rows.push({ name: "snapshot table data rate", value: snapMBs, unit: "MB/s", baseline: rawReadMBs, ratio: snapMBs / rawReadMBs });
    rows.push({ name: "snapshot stored/plain size (table data)", value: a.snap.storedBytes! / a.snap.plainBytes!, unit: "ratio" });

    try {
      const version = execFileSync("pg_dump", ["--version"]).toString().trim();
      const major = Number(/(\d+)\.\d+/.exec(version)?.[1]);
      if (major < serverMajor) {
        rows.push({
          name: `pg_dump -Fc: not comparable (${version}; server is ${serverMajor}, pg_dump refuses newer servers) — compared with raw COPY instead`,
          value: 0,
          unit: "n/a",
        });
      } else {
        const out = path.join(dir, "dump.pgdump");
        const s = timeIt(() => execFileSync("pg_dump", ["-Fc", "-f", out, dbUrl(cluster, "wk_a", "su")]));
        rows.push({ name: "pg_dump -Fc", value: dump.bytes / MB / s, unit: "MB/s", baseline: snapMBs, ratio: dump.bytes / MB / s / snapMBs });
      }
    } catch (err) {
      rows.push({ name: `pg_dump -Fc: failed (${(err as Error).message.split("\n")[0]!.slice(0, 120)})`, value: 0, unit: "n/a" });
    }

    // COPY, recover, COPY, ...: each recovery sits between two COPY rounds.
    const copies: CopyRound[] = [];
    const recoveries: { outcome: RecoveryOutcome; seconds: number }[] = [];
    for (let i = 0; i <= ROUNDS; i++) {
      process.stderr.write(`  round ${i + 1}: raw COPY FROM...\n`);
      copies.push(await rawCopyRound(cluster, `wk_copy_${i}`, manifest, dump.files, false));
      if (i === ROUNDS) break;
      process.stderr.write(`  round ${i + 1}: wardkeep recover...\n`);
      recoveries.push(await recoverRound(cluster, dir, `wk_b_${i}`, a.target, kitPem));
    }
    const indexAfter = await rawCopyRound(cluster, "wk_copy_ix", manifest, dump.files, true);
    const download = await downloadAlone(a.target, manifest);

    const plainBytes = manifest.objects.reduce((n, o) => n + o.plainBytes, 0);
    const copyMBs = mean(copies.map((r) => r.bytes / MB / r.copySeconds));
    const rec = recoveries.map((r) => r.outcome);
    const restoreLoadMBs = mean(rec.map((o) => plainBytes / MB / (o.restore.phases.loadMs / 1000)));
    const rto = mean(recoveries.map((r) => r.seconds));
    const ms = (f: (o: RecoveryOutcome) => number) => mean(rec.map(f)) / 1000;
    rows.push({
      name: `table data (COPY text, ${manifest.objects.reduce((n, o) => n + o.rows, 0)} rows; the raw COPY loads the same ${(dump.bytes / MB).toFixed(0)} MB)`,
      value: plainBytes / MB,
      unit: "MB",
    });
    rows.push({ name: `raw COPY FROM, same rows, indexes in place (mean of ${copies.length} rounds)`, value: copyMBs, unit: "MB/s" });
    rows.push({ name: "raw COPY FROM rounds", value: copies.length, unit: copies.map((r) => `${(r.bytes / MB / r.copySeconds).toFixed(1)}`).join(" / ") + " MB/s" });
    rows.push({
      name: "raw COPY FROM, then secondary indexes built (lever: index after load)",
      value: indexAfter.bytes / MB / (indexAfter.copySeconds + indexAfter.indexSeconds),
      unit: "MB/s",
      baseline: copyMBs,
      ratio: indexAfter.bytes / MB / (indexAfter.copySeconds + indexAfter.indexSeconds) / copyMBs,
    });
    rows.push({ name: "  of which index build", value: indexAfter.indexSeconds, unit: "s" });
    rows.push({
      name: "restore load rate (download + decrypt + decompress + COPY FROM, streamed)",
      value: restoreLoadMBs,
      unit: "MB/s",
      baseline: copyMBs,
      ratio: restoreLoadMBs / copyMBs,
      target: ">= 0.5x raw COPY FROM",
      met: restoreLoadMBs / copyMBs >= 0.5,
    });
    rows.push({
      name: `recovery of the ${applianceMb.toFixed(0)} MB appliance, wardkeep recover (RTO, mean of ${recoveries.length})`,
      value: rto,
      unit: "s",
      target: "< 300 s",
      met: rto < 300,
    });
    rows.push({ name: "  locate snapshot, open + authenticate key-store backup and manifest", value: ms((o) => o.phases.locateMs + o.phases.keyStoreMs), unit: "s" });
    rows.push({ name: "  schema (migrations)", value: ms((o) => o.restore.phases.openMs + o.restore.phases.schemaMs), unit: "s" });
    rows.push({ name: "  load: download + decrypt + decompress + COPY FROM (streamed)", value: ms((o) => o.restore.phases.loadMs), unit: "s" });
    rows.push({ name: "    download alone (same objects read and discarded, separate pass)", value: download.dataSeconds, unit: "s" });
    rows.push({ name: "    decrypt (AES-256-GCM CPU inside the load)", value: ms((o) => o.restore.phases.decryptCpuMs), unit: "s" });
    rows.push({ name: "  index: foreign keys re-added and validated, sequences", value: ms((o) => o.restore.phases.constraintsMs), unit: "s" });
    rows.push({ name: "  verify: row counts, key store installed, encrypted values checked, commit, audit chain", value: ms((o) => o.restore.phases.verifyMs), unit: "s" });
    rows.push({ name: "    key store installed, every stored value's key checked, samples decrypted", value: ms((o) => o.restore.phases.beforeCommitMs), unit: "s" });
    rows.push({ name: "    audit chain verified against the manifest's head", value: ms((o) => o.restore.phases.auditChainMs), unit: "s" });
    rows.push({ name: "  attachments: download + SHA-256 + write", value: ms((o) => o.phases.attachmentsMs), unit: "s" });
    rows.push({ name: "    download alone (same files read and discarded, separate pass)", value: download.attachmentSeconds, unit: "s" });
    rows.push({ name: "  finish: unseal, shredding list, audit event", value: ms((o) => o.phases.finishMs), unit: "s" });
    for (const o of rec) {
      if (o.restore.rows !== manifest.objects.reduce((n, x) => n + x.rows, 0) || o.attachments.restored !== a.attachmentCount) {
        throw new Error(`bench recovery incomplete: ${o.restore.rows} rows, ${o.attachments.restored} attachments`);
      }
    }

    // Where the time goes, on a 64 MB sample of the same kind of data.
    const sample = Buffer.from(Array.from({ length: 64 }, () => randomBytes(393_216).toString("hex") + "\n").join(""));
    for (const [name, fn] of [
      ["gzip level 1", () => gzipSync(sample, { level: 1 })],
      ["gzip level 6 (pg_dump -Fc default)", () => gzipSync(sample, { level: 6 })],
      ["brotli quality 1", () => brotliCompressSync(sample, { params: { [zc.BROTLI_PARAM_QUALITY]: 1 } })],
    ] as const) {
      let out: Buffer = Buffer.alloc(0);
      const s = timeIt(() => {
        out = fn();
      });
      rows.push({ name: `${name} (one core)`, value: sample.length / MB / s, unit: "MB/s" });
      rows.push({ name: `${name} size ratio`, value: out.length / sample.length, unit: "ratio" });
    }
    const key = randomBytes(32);
    rows.push({
      name: "AES-256-GCM (one core)",
      value:
        sample.length /
        MB /
        timeIt(() => {
          const c = createCipheriv("aes-256-gcm", key, randomBytes(12));
          c.update(sample);
          c.final();
        }),
      unit: "MB/s",
    });
    rows.push({ name: "SHA-256 (one core)", value: sample.length / MB / timeIt(() => createHash("sha256").update(sample).digest()), unit: "MB/s" });
    return rows;
  } finally {
    await embedded.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
