/**
 * Backup benchmark (`npm run bench -- backup`): on a generated database of at least 1 GB
 * (BENCH_BACKUP_MB to change it) in its own embedded PostgreSQL, measures
 * - snapshot throughput (COPY → gzip-1 → AES-256-GCM segments → directory target),
 * - raw `COPY TO` read speed of the same tables (the floor any logical backup pays),
 * - `pg_dump -Fc` / `pg_restore` of the same database when a pg_dump matching the server's major
 *   version is installed (Debian 12 ships 15; the embedded server is 18, which pg_dump 15 refuses:
 *   the row says so and the raw COPY speed is the comparison instead),
 * - restore throughput and the time of a 1 GB recovery drill (target: under 5 minutes),
 * - where the time goes: gzip levels and brotli on a sample of the data, AES-GCM, SHA-256.
 * Rows carry "field-encrypted-looking" data: random bytes, base64 text, as PHI columns hold.
 */
import { execFileSync } from "node:child_process";
import { createCipheriv, createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { brotliCompressSync, constants as zc, gzipSync } from "node:zlib";
import pg from "pg";
import { from as copyFrom, to as copyTo } from "pg-copy-streams";
import { restoreSnapshot } from "../backup/restore.js";
import { takeSnapshot } from "../backup/snapshot.js";
import { FsTarget } from "../backup/targets/fs.js";
import { applyMigrationList } from "../backup/schema.js";
import { startEmbeddedPostgres } from "../daemon/db/embedded.js";
import { migrations } from "../daemon/db/migrations/index.js";
import { APP_ROLE, OWNER_ROLE } from "../daemon/db/roles.js";
import { SNAPSHOT_EXCLUDED_SCHEMAS } from "../daemon/keys/keystore.js";
import { generateRecoveryKeyPair, rawPublicKey } from "../daemon/keys/recovery-crypto.js";
import type { BenchRow } from "./run.js";

const MB = 1024 * 1024;

async function client(url: string) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  return c;
}

async function generate(url: string, targetBytes: number): Promise<number> {
  const c = await client(url);
  try {
    await c.query("SELECT set_config('wardkeep.scope', 'appliance', false)");
    await c.query("ALTER TABLE users NO FORCE ROW LEVEL SECURITY");
    const tenant = (await c.query("INSERT INTO tenants (name, slug) VALUES ('Bench', 'bench') RETURNING id")).rows[0].id as string;
    const perRow = 6000; // random bytes per row → 8000 base64 characters, stored out of line (TOAST)
    const rows = Math.ceil(targetBytes / (perRow * 4 / 3));
    let i = 0;
    const source = new Readable({
      read() {
        for (let n = 0; n < 64 && i < rows; n++, i++) this.push(`${tenant}\tu${i}@bench.example\t${randomBytes(perRow).toString("base64")}\tpractitioner\n`);
        if (i >= rows) this.push(null);
      },
    });
    await pipeline(source, c.query(copyFrom("COPY users (tenant_id, email, password_hash, role) FROM STDIN")));
    await c.query("ALTER TABLE users FORCE ROW LEVEL SECURITY");
    await c.query("VACUUM ANALYZE users");
    return Number((await c.query("SELECT pg_database_size(current_database()) AS n")).rows[0].n);
  } finally {
    await c.end();
  }
}

async function rawCopySeconds(url: string): Promise<{ seconds: number; bytes: number }> {
  const c = await client(url);
  try {
    await c.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    await c.query("SELECT set_config('wardkeep.scope', 'appliance', true)");
    let bytes = 0;
    const t = performance.now();
    const tables = (await c.query(`SELECT format('%I.%I', schemaname, tablename) AS t FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'`)).rows;
    for (const { t: table } of tables) {
      await pipeline(
        c.query(copyTo(`COPY ${table} TO STDOUT`)),
        new Writable({
          write(chunk: Buffer, _e, done) {
            bytes += chunk.length;
            done();
          },
        }),
      );
    }
    await c.query("COMMIT");
    return { seconds: (performance.now() - t) / 1000, bytes };
  } finally {
    await c.end();
  }
}

function timeIt(fn: () => void): number {
  const t = performance.now();
  fn();
  return (performance.now() - t) / 1000;
}

export async function run(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const sizeMb = Number(process.env.BENCH_BACKUP_MB ?? 1100);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wardkeep-bench-backup-"));
  fs.chmodSync(dir, 0o711);
  const port = 20000 + Math.floor(Math.random() * 20000);
  const pgServer = await startEmbeddedPostgres({ dataDir: path.join(dir, "pg"), port, passwordFile: path.join(dir, "pw") });
  try {
    const su = await client(pgServer.superuserUrl);
    const pw = randomBytes(12).toString("hex");
    await su.query(`CREATE ROLE ${OWNER_ROLE} LOGIN PASSWORD '${pw}'`);
    await su.query(`CREATE ROLE ${APP_ROLE} LOGIN PASSWORD '${pw}'`);
    for (const db of ["bench_src", "bench_restore", "bench_pgrestore"]) await su.query(`CREATE DATABASE ${db} OWNER ${OWNER_ROLE}`);
    const serverMajor = Math.floor(Number((await su.query("SHOW server_version_num")).rows[0].server_version_num) / 10000);
    await su.end();
    const url = (db: string) => `postgres://${OWNER_ROLE}:${pw}@127.0.0.1:${port}/${db}`;
    await applyMigrationList(url("bench_src"), APP_ROLE, migrations);
    process.stderr.write(`  generating ${sizeMb} MB of field-encrypted-looking rows...\n`);
    const dbBytes = await generate(url("bench_src"), sizeMb * MB);
    rows.push({ name: "database size", value: dbBytes / MB, unit: "MB", target: ">= 1024 MB", met: dbBytes >= 1024 * MB });

    const raw = await rawCopySeconds(url("bench_src"));
    const rawMBs = raw.bytes / MB / raw.seconds;
    rows.push({ name: "raw COPY TO read (baseline)", value: rawMBs, unit: "MB/s" });

    const secret = randomBytes(32);
    const pair = generateRecoveryKeyPair();
    const target = new FsTarget({ name: "bench", path: path.join(dir, "target") });
    const snap = await takeSnapshot({
      connect: () => client(url("bench_src")),
      targets: [target],
      applianceSecret: secret,
      recoveryPublicKey: rawPublicKey(pair.publicKey),
      excludedSchemas: SNAPSHOT_EXCLUDED_SCHEMAS,
      appVersion: "bench",
      trigger: "cli",
    });
    const snapSeconds = snap.durationMs / 1000;
    const snapMBs = snap.plainBytes / MB / snapSeconds;
    rows.push({ name: "snapshot (brotli-1 + AES-256-GCM, to a directory)", value: snapMBs, unit: "MB/s", baseline: rawMBs, ratio: snapMBs / rawMBs });
    rows.push({ name: "snapshot stored/plain size", value: snap.storedBytes / snap.plainBytes, unit: "ratio" });
    rows.push({ name: "snapshot AES-GCM CPU share", value: (100 * snap.phases.encryptCpuMs) / snap.durationMs, unit: "% of wall" });

    let dumpRow: BenchRow | undefined;
    let dumpSeconds: number | undefined;
    try {
      const version = execFileSync("pg_dump", ["--version"]).toString().trim();
      const major = Number(/(\d+)\.\d+/.exec(version)?.[1]);
      if (major < serverMajor) {
        dumpRow = { name: `pg_dump -Fc: not comparable (${version}; server is ${serverMajor}, pg_dump refuses newer servers) — compared with raw COPY instead`, value: 0, unit: "n/a" };
      } else {
        const out = path.join(dir, "dump.pgdump");
        dumpSeconds = timeIt(() => execFileSync("pg_dump", ["-Fc", "-f", out, url("bench_src")]));
        const dumpMBs = raw.bytes / MB / dumpSeconds;
        dumpRow = { name: "pg_dump -Fc", value: dumpMBs, unit: "MB/s" };
        rows.push({ name: "snapshot vs pg_dump -Fc", value: snapMBs, unit: "MB/s", baseline: dumpMBs, ratio: snapMBs / dumpMBs, target: "no slower than pg_dump -Fc", met: snapMBs >= dumpMBs });
        const restoreSeconds = timeIt(() => execFileSync("pg_restore", ["-d", url("bench_pgrestore"), out]));
        rows.push({ name: "pg_restore", value: raw.bytes / MB / restoreSeconds, unit: "MB/s" });
      }
    } catch (err) {
      dumpRow = { name: `pg_dump -Fc: failed (${(err as Error).message.split("\n")[0]!.slice(0, 120)})`, value: 0, unit: "n/a" };
    }
    if (dumpRow) rows.push(dumpRow);

    const restored = await restoreSnapshot({ target, snapshotId: snap.snapshotId, intoUrl: url("bench_restore"), appRole: APP_ROLE, opener: { recoveryPrivateKey: pair.privateKey } });
    const restoreSeconds = restored.phases.totalMs / 1000;
    rows.push({ name: "restore (download+decrypt+decompress+COPY FROM)", value: restored.plainBytes / MB / restoreSeconds, unit: "MB/s" });
    for (const [k, v] of Object.entries(restored.phases)) rows.push({ name: `restore phase ${k}`, value: v / 1000, unit: "s" });
    const perGb = restoreSeconds * (1024 * MB) / Math.max(dbBytes, 1);
    rows.push({ name: "restore drill time per 1 GB of database", value: perGb, unit: "s", target: "< 300 s", met: perGb < 300 });

    // Where the time goes, on a 64 MB sample of the same kind of data.
    const sample = Buffer.from(Array.from({ length: 64 }, () => randomBytes(786_432).toString("base64") + "\n").join(""));
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
    await pgServer.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
