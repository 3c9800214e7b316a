/**
 * restoreSnapshot and verifySnapshot.
 *
 * Restore writes into an EMPTY database only: it runs this build's migrations up to the
 * snapshot's schema version, then loads every object in ONE transaction (foreign keys dropped
 * and re-added around the load, as pg_restore does, so cycles and self-references load in any
 * order; INSERT triggers paused so the rows come back exactly as they were), checks row counts,
 * resets sequences, commits, runs newer migrations, and verifies the audit chain against the
 * head in the signed manifest. Nothing is loaded from bytes that failed authentication: each
 * segment is checked before its rows reach COPY, and a failure anywhere rolls the load back.
 */
import { Writable, pipeline } from "node:stream";
import { createBrotliDecompress, createGunzip } from "node:zlib";
import pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
import { zeroize } from "../daemon/keys/index.js";
import { readManifest } from "./catalog.js";
import { RestoreRefused, SnapshotIntegrityError } from "./errors.js";
import { unwrapSnapshotKey, type SnapshotOpener } from "./keys.js";
import { layout, objectAssociatedData, verifyManifest, type ManifestBody, type ManifestTrust, type SnapshotObject } from "./manifest.js";
import { quoteIdent, SYSTEM_SCHEMA_SQL } from "./pg-layout.js";
import { applyMigrationList, planSchema } from "./schema.js";
import { SegmentDecryptStream } from "./stream-aead.js";
import { DigestStream } from "./streams.js";
import type { SnapshotTarget } from "./targets/target.js";

export type OpenedSnapshot = { manifest: ManifestBody; key: Buffer; trust: ManifestTrust };

/** Reads the manifest, unwraps the snapshot key, and authenticates the manifest with it. */
export async function openSnapshot(target: SnapshotTarget, snapshotId: string, opener: SnapshotOpener, trustedSigners: Buffer[] = []): Promise<OpenedSnapshot> {
  const file = await readManifest(target, snapshotId);
  const key = unwrapSnapshotKey(file.body.keyWraps, opener);
  try {
    const trust = verifyManifest(file, key, trustedSigners);
    return { manifest: file.body, key, trust };
  } catch (err) {
    zeroize(key);
    throw err;
  }
}

type ObjectCheck = { object: string; rows: number; plainBytes: number; storedBytes: number; decryptCpuMs: number };

/**
 * The stream of one object's authenticated plaintext: target → digest of stored bytes →
 * decrypt (tags) → gunzip → digest of COPY data and row count → `sink`. Throws
 * SnapshotIntegrityError on any mismatch with the manifest.
 */
async function streamObject(target: SnapshotTarget, opened: OpenedSnapshot, obj: SnapshotObject, sink: Writable): Promise<ObjectCheck> {
  const { manifest, key } = opened;
  const source = await target.get(layout.object(manifest.snapshotId, obj.path));
  const stored = new DigestStream(false);
  const decrypt = new SegmentDecryptStream(key, objectAssociatedData(manifest.snapshotId, obj.name), true);
  const plain = new DigestStream(true);
  const stages: NodeJS.ReadWriteStream[] = [stored, decrypt];
  if (manifest.compression.alg === "gzip") stages.push(createGunzip({ chunkSize: 256 * 1024 }));
  if (manifest.compression.alg === "brotli") stages.push(createBrotliDecompress({ chunkSize: 256 * 1024 }));
  stages.push(plain);
  await new Promise<void>((resolve, reject) => {
    (pipeline as unknown as (...a: unknown[]) => void)(source, ...stages, sink, (err: Error | null | undefined) => {
      if (!err) return resolve();
      // zlib complaining means bytes that authenticated but do not decompress: still corruption.
      if (/^(Z_|ERR_BROTLI|ERR__ERROR_FORMAT)/.test((err as { code?: string }).code ?? ""))
        reject(new SnapshotIntegrityError(`${obj.name}: the decrypted data does not decompress`));
      else reject(err);
    });
  });
  const mismatch = stored.sha256 !== obj.sha256 ? "stored bytes digest" : plain.sha256 !== obj.plainSha256 ? "data digest" : plain.rows !== obj.rows ? "row count" : undefined;
  if (mismatch) throw new SnapshotIntegrityError(`${obj.name}: ${mismatch} does not match the manifest`, { object: obj.name });
  return { object: obj.name, rows: plain.rows, plainBytes: plain.bytes, storedBytes: stored.bytes, decryptCpuMs: decrypt.stats.cryptoMs };
}

const discard = () =>
  new Writable({
    highWaterMark: 1 << 20,
    write(_chunk, _enc, done) {
      done();
    },
  });

export type VerifyResult = { snapshotId: string; ok: true; objects: number; rows: number; storedBytes: number; durationMs: number; signer: ManifestTrust };

/** Downloads and checks every digest, tag and row count without restoring (pgBackRest's `verify`). */
export async function verifySnapshot(opts: { target: SnapshotTarget; snapshotId: string; opener: SnapshotOpener; trustedSigners?: Buffer[] }): Promise<VerifyResult> {
  const started = performance.now();
  const opened = await openSnapshot(opts.target, opts.snapshotId, opts.opener, opts.trustedSigners);
  try {
    let rows = 0;
    let storedBytes = 0;
    for (const obj of opened.manifest.objects) {
      const r = await streamObject(opts.target, opened, obj, discard());
      rows += r.rows;
      storedBytes += r.storedBytes;
    }
    return {
      snapshotId: opts.snapshotId,
      ok: true,
      objects: opened.manifest.objects.length,
      rows,
      storedBytes,
      durationMs: Math.round(performance.now() - started),
      signer: opened.trust,
    };
  } finally {
    zeroize(opened.key);
  }
}

export type RestorePhases = {
  /** Manifest, key unwrap, emptiness check. */
  openMs: number;
  /** Migrations up to the snapshot's schema (and newer ones afterwards). */
  schemaMs: number;
  /** Download + decrypt + decompress + COPY, streamed together (wall time). */
  loadMs: number;
  /** CPU time inside that stream spent on AES-GCM (the rest is download, gunzip, COPY). */
  decryptCpuMs: number;
  /** Foreign keys re-validated, triggers, row-level security, sequences. */
  constraintsMs: number;
  /** Row counts, the beforeCommit hook, COMMIT and the audit chain. */
  verifyMs: number;
  /** Of verifyMs: the caller's beforeCommit hook (recovery: key store installed, every encrypted value checked). */
  beforeCommitMs: number;
  /** Of verifyMs: the audit chain verified against the manifest's head. */
  auditChainMs: number;
  totalMs: number;
};

/**
 * The audit capability's verifier, run against the restored database (daemon/backups wires in
 * daemon/audit/verify.ts, so there is one implementation of the canonical encoding).
 */
export type AuditChainVerifier = (intoUrl: string) => Promise<{ intact: boolean; head: { seq: string; hash: string } | null; detail?: string }>;

export type ChainCheck =
  | { checked: false; reason: string }
  | { checked: true; intact: boolean; head: { seq: string; hash: string } | null; expected: { seq: string; hash: string } | null; detail?: string };

/** Compares the restored chain with the head recorded outside the snapshot (the signed manifest). */
async function checkAuditChain(verify: AuditChainVerifier | undefined, intoUrl: string, expected: ManifestBody["auditHead"]): Promise<ChainCheck> {
  if (!verify) return { checked: false, reason: "no audit verifier was given" };
  const r = await verify(intoUrl);
  const want = expected ? { seq: expected.seq, hash: expected.hash } : null;
  if (!r.intact) return { checked: true, intact: false, head: r.head, expected: want, detail: r.detail ?? "the chain is broken" };
  const got = r.head && r.head.seq !== "0" ? r.head : null;
  const exp = want && want.seq !== "0" ? want : null;
  if ((got?.seq ?? "0") !== (exp?.seq ?? "0") || (exp && got?.hash !== exp.hash)) {
    return {
      checked: true,
      intact: false,
      head: r.head,
      expected: want,
      detail: `the restored chain ends at ${got?.seq ?? "0"}, the manifest recorded ${exp?.seq ?? "0"}${exp && got?.seq === exp.seq ? " with another hash" : ""}`,
    };
  }
  return { checked: true, intact: true, head: r.head, expected: want };
}

export type RestoreResult = {
  snapshotId: string;
  tables: number;
  rows: number;
  /** Rows per restored table, as the manifest records and the load confirmed. */
  tableRows: { schema: string; table: string; rows: number }[];
  storedBytes: number;
  plainBytes: number;
  schema: { snapshot: string; restoredTo: string; migratedAfterLoad: string[] };
  auditChain: ChainCheck;
  signer: ManifestTrust;
  phases: RestorePhases;
  /** What `beforeCommit` reported (the key store installed, shredded subjects purged), or null. */
  beforeCommit: Record<string, unknown> | null;
};

export type RestoreOptions = {
  target: SnapshotTarget;
  snapshotId: string;
  /** Owner connection to the EMPTY database to restore into. */
  intoUrl: string;
  /** The role requests run as; migrations grant to it, so it must exist in the cluster. */
  appRole: string;
  opener: SnapshotOpener;
  trustedSigners?: Buffer[];
  verifyAuditChain?: AuditChainVerifier;
  onProgress?: (p: { object: string; done: number; total: number }) => void;
  /**
   * Runs inside the load transaction once every row is in and counted, before COMMIT: recovery
   * installs the key store and purges crypto-shredded subjects here, so a restore either ends
   * with all of it or with nothing.
   */
  beforeCommit?: (client: pg.Client) => Promise<Record<string, unknown> | void>;
};

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  await client.connect();
  return client;
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return `${u.hostname}:${u.port || 5432}${u.pathname}`;
  } catch {
    return "(database)";
  }
}

/** Refuses a database that holds anything: a restore never merges into or overwrites data. */
export async function assertEmptyDatabase(client: pg.Client, url: string): Promise<void> {
  const r = await client.query<{ n: number; sample: string | null }>(
    `SELECT count(*)::int AS n, min(n.nspname || '.' || c.relname) AS sample
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND NOT ${SYSTEM_SCHEMA_SQL}`,
  );
  const { n, sample } = r.rows[0]!;
  if (n > 0) {
    throw new RestoreRefused(
      `the database ${redact(url)} is not empty (${n} relation${n === 1 ? "" : "s"}, e.g. ${sample}); restore writes only into an empty database — create a new one`,
      { relations: n },
    );
  }
}

type LoadPrep = { tables: string[]; fks: { rel: string; name: string; def: string }[]; forced: string[]; triggers: { rel: string; name: string }[] };
type LoadTotals = { rows: number; plainBytes: number; storedBytes: number };

/** Open manifest → prepare schema → load (download, decrypt, COPY) → index → verify, each phase timed in `phases`. */
export async function restoreSnapshot(opts: RestoreOptions): Promise<RestoreResult> {
  const t0 = performance.now();
  const opened = await openSnapshot(opts.target, opts.snapshotId, opts.opener, opts.trustedSigners);
  const { manifest } = opened;
  const phases: RestorePhases = { openMs: 0, schemaMs: 0, loadMs: 0, decryptCpuMs: 0, constraintsMs: 0, verifyMs: 0, beforeCommitMs: 0, auditChainMs: 0, totalMs: 0 };
  let client: pg.Client | undefined;
  try {
    const plan = planSchema(manifest.database.migrations);
    client = await connect(opts.intoUrl);
    await checkTarget(client, opts);
    phases.openMs = performance.now() - t0;

    phases.schemaMs = await timed(() => applyMigrationList(opts.intoUrl, opts.appRole, plan.before));

    let t = performance.now();
    const prep = await prepareLoad(client, manifest);
    const totals = await loadObjects(client, opts, opened, phases);
    phases.loadMs = performance.now() - t;

    phases.constraintsMs = await timed(() => rebuildIndexes(client!, manifest, prep));

    t = performance.now();
    const hooked = await verifyAndCommit(client, opts, manifest, prep, phases);
    let verifyMs = performance.now() - t;

    t = performance.now();
    const after = await applyMigrationList(opts.intoUrl, opts.appRole, plan.after);
    phases.schemaMs += performance.now() - t;

    t = performance.now();
    const auditChain = await checkAuditChain(opts.verifyAuditChain, opts.intoUrl, manifest.auditHead);
    phases.auditChainMs = performance.now() - t;
    verifyMs += performance.now() - t;
    phases.verifyMs = verifyMs;
    if (auditChain.checked && !auditChain.intact) {
      throw new SnapshotIntegrityError(`the restored audit trail does not verify: ${auditChain.detail}`, { auditChain });
    }
    phases.totalMs = performance.now() - t0;
    for (const k of Object.keys(phases) as (keyof RestorePhases)[]) phases[k] = Math.round(phases[k]);
    return {
      snapshotId: manifest.snapshotId,
      tables: manifest.objects.length,
      rows: totals.rows,
      tableRows: manifest.objects.map((o) => ({ schema: o.schema, table: o.table, rows: o.rows })),
      storedBytes: totals.storedBytes,
      plainBytes: totals.plainBytes,
      schema: { snapshot: manifest.database.schemaVersion, restoredTo: [...plan.before, ...plan.after].at(-1)!.name, migratedAfterLoad: after },
      auditChain,
      signer: opened.trust,
      phases,
      beforeCommit: hooked,
    };
  } catch (err) {
    await client?.query("ROLLBACK").catch(() => {});
    throw err;
  } finally {
    zeroize(opened.key);
    await client?.end().catch(() => {});
  }
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

/** Open: the target database must be empty and the app role must exist. */
async function checkTarget(client: pg.Client, opts: RestoreOptions): Promise<void> {
  await assertEmptyDatabase(client, opts.intoUrl);
  const role = await client.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [opts.appRole]);
  if (role.rowCount === 0) throw new RestoreRefused(`the app role ${opts.appRole} does not exist in this PostgreSQL cluster; create it (LOGIN NOBYPASSRLS) first`);
}

/**
 * Load, first part: opens the load transaction and clears the way for COPY (run-time partitions
 * recreated, foreign keys dropped, forced RLS lifted, INSERT triggers paused, seeded rows removed).
 */
async function prepareLoad(client: pg.Client, manifest: ManifestBody): Promise<LoadPrep> {
  await client.query("BEGIN");
  await client.query("SELECT set_config('statement_timeout', '0', true), set_config('wardkeep.scope', 'appliance', true), set_config('wardkeep.tenant_id', '', true)");
  const excluded = manifest.excludedSchemas;
  // Partitions made at run time (audit segments) do not come from migrations: recreate them.
  for (const p of manifest.partitions) {
    const exists = await client.query("SELECT to_regclass($1) AS r", [`${quoteIdent(p.schema)}.${quoteIdent(p.table)}`]);
    if (exists.rows[0].r) continue;
    await client.query(`CREATE TABLE ${quoteIdent(p.schema)}.${quoteIdent(p.table)} PARTITION OF ${quoteIdent(p.parentSchema)}.${quoteIdent(p.parent)} ${p.bound}`);
    for (const trg of p.triggers) await client.query(trg.definition);
    if (p.rowSecurity) await client.query(`ALTER TABLE ${quoteIdent(p.schema)}.${quoteIdent(p.table)} ENABLE ROW LEVEL SECURITY`);
    if (p.forceRowSecurity) await client.query(`ALTER TABLE ${quoteIdent(p.schema)}.${quoteIdent(p.table)} FORCE ROW LEVEL SECURITY`);
  }
  const tables = manifest.objects.map((o) => `${quoteIdent(o.schema)}.${quoteIdent(o.table)}`);
  const missing = await client.query<{ t: string }>("SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NULL", [tables]);
  if (missing.rowCount) throw new RestoreRefused(`the schema made by the migrations lacks table(s) the snapshot holds: ${missing.rows.map((r) => r.t).join(", ")}`);

  // Foreign keys among restored tables: dropped for the load, re-added (and so re-validated) after.
  const fks = (
    await client.query<{ rel: string; name: string; def: string }>(
      `SELECT con.conrelid::regclass::text AS rel, con.conname AS name, pg_get_constraintdef(con.oid) AS def
         FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_class rc ON rc.oid = con.confrelid JOIN pg_namespace rn ON rn.oid = rc.relnamespace
        WHERE con.contype = 'f' AND con.conparentid = 0 AND NOT ${SYSTEM_SCHEMA_SQL}
          AND NOT (n.nspname = ANY($1)) AND NOT (rn.nspname = ANY($1))
        ORDER BY 1, 2`,
      [excluded],
    )
  ).rows;
  for (const fk of fks) await client.query(`ALTER TABLE ${fk.rel} DROP CONSTRAINT ${quoteIdent(fk.name)}`);
  // Row-level security still binds the owner under FORCE, and COPY FROM refuses RLS tables:
  // lifted for this transaction only (nobody sees the gap: ALTER TABLE holds an exclusive lock).
  const forced = (
    await client.query<{ rel: string }>(
      `SELECT c.oid::regclass::text AS rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND c.relforcerowsecurity AND NOT ${SYSTEM_SCHEMA_SQL} AND NOT (n.nspname = ANY($1))`,
      [excluded],
    )
  ).rows.map((r) => r.rel);
  for (const rel of forced) await client.query(`ALTER TABLE ${rel} NO FORCE ROW LEVEL SECURITY`);
  // Enabled user triggers that fire on INSERT (bit 2 of tgtype) would rewrite restored rows.
  const triggers = (
    await client.query<{ rel: string; name: string }>(
      `SELECT t.tgrelid::regclass::text AS rel, t.tgname AS name FROM pg_trigger t
        WHERE t.tgrelid = ANY (SELECT to_regclass(x) FROM unnest($1::text[]) AS x)
          AND NOT t.tgisinternal AND t.tgenabled <> 'D' AND (t.tgtype & 4) <> 0`,
      [tables],
    )
  ).rows;
  for (const trg of triggers) await client.query(`ALTER TABLE ${trg.rel} DISABLE TRIGGER ${quoteIdent(trg.name)}`);
  // Rows the migrations seeded (singletons such as the audit chain head or the default backup
  // policy) are replaced by the snapshot's: the snapshot holds their real state. Append-only
  // guards (TRUNCATE triggers, bit 32 of tgtype) are paused for this one statement.
  for (const rel of tables) {
    const seeded = await client.query(`SELECT EXISTS (SELECT 1 FROM ONLY ${rel}) AS e`);
    if (!seeded.rows[0].e) continue;
    const guards = (
      await client.query<{ name: string }>(
        `SELECT tgname AS name FROM pg_trigger WHERE tgrelid = to_regclass($1) AND NOT tgisinternal AND tgenabled <> 'D' AND (tgtype & 32) <> 0`,
        [rel],
      )
    ).rows;
    for (const g of guards) await client.query(`ALTER TABLE ${rel} DISABLE TRIGGER ${quoteIdent(g.name)}`);
    await client.query(`TRUNCATE ONLY ${rel}`);
    for (const g of guards) await client.query(`ALTER TABLE ${rel} ENABLE TRIGGER ${quoteIdent(g.name)}`);
  }
  return { tables, fks, forced, triggers };
}

/** Load, second part: every object downloaded, authenticated, decrypted and COPYed in, in manifest order. */
async function loadObjects(client: pg.Client, opts: RestoreOptions, opened: OpenedSnapshot, phases: RestorePhases): Promise<LoadTotals> {
  const { manifest } = opened;
  const totals: LoadTotals = { rows: 0, plainBytes: 0, storedBytes: 0 };
  for (const [i, obj] of manifest.objects.entries()) {
    const copy = client.query(copyFrom(`COPY ${quoteIdent(obj.schema)}.${quoteIdent(obj.table)} (${obj.columns.map(quoteIdent).join(", ")}) FROM STDIN`));
    const r = await streamObject(opts.target, opened, obj, copy);
    totals.rows += r.rows;
    totals.plainBytes += r.plainBytes;
    totals.storedBytes += r.storedBytes;
    phases.decryptCpuMs += r.decryptCpuMs;
    opts.onProgress?.({ object: obj.name, done: i + 1, total: manifest.objects.length });
  }
  return totals;
}

/** Index: triggers back on, foreign keys re-added (re-validated), sequences set to the snapshot's values. */
async function rebuildIndexes(client: pg.Client, manifest: ManifestBody, prep: LoadPrep): Promise<void> {
  for (const trg of prep.triggers) await client.query(`ALTER TABLE ${trg.rel} ENABLE TRIGGER ${quoteIdent(trg.name)}`);
  for (const fk of prep.fks) await client.query(`ALTER TABLE ${fk.rel} ADD CONSTRAINT ${quoteIdent(fk.name)} ${fk.def}`);
  for (const s of manifest.sequences) {
    const exists = await client.query("SELECT to_regclass($1) AS r", [`${quoteIdent(s.schema)}.${quoteIdent(s.name)}`]);
    if (exists.rows[0].r) await client.query("SELECT setval($1::regclass, $2::bigint, $3)", [`${quoteIdent(s.schema)}.${quoteIdent(s.name)}`, s.lastValue, s.isCalled]);
  }
}

/** Verify, inside the transaction: row counts, the caller's beforeCommit hook, forced RLS back, COMMIT. */
async function verifyAndCommit(client: pg.Client, opts: RestoreOptions, manifest: ManifestBody, prep: LoadPrep, phases: RestorePhases): Promise<Record<string, unknown> | null> {
  for (const obj of manifest.objects) {
    const c = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM ONLY ${quoteIdent(obj.schema)}.${quoteIdent(obj.table)}`);
    if (Number(c.rows[0]!.n) !== obj.rows) throw new SnapshotIntegrityError(`${obj.name}: ${c.rows[0]!.n} rows loaded, the manifest says ${obj.rows}`);
  }
  // References the schema keeps by triggers rather than foreign keys (their triggers were paused for the load).
  const kept = await client.query<{ f: string | null }>("SELECT to_regprocedure('reference_violations()')::text AS f");
  if (kept.rows[0]!.f) {
    const broken = await client.query<{ reference: string; rows: string }>("SELECT reference, rows::text FROM reference_violations()");
    if (broken.rowCount) throw new SnapshotIntegrityError(`rows that break a reference: ${broken.rows.map((r) => `${r.reference} (${r.rows})`).join(", ")}`);
  }
  const hookStart = performance.now();
  const hooked = (await opts.beforeCommit?.(client)) ?? null;
  phases.beforeCommitMs = performance.now() - hookStart;
  for (const rel of prep.forced) await client.query(`ALTER TABLE ${rel} FORCE ROW LEVEL SECURITY`);
  await client.query("COMMIT");
  return hooked;
}
