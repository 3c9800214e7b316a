/**
 * `wardkeep recover --at TIME | --at latest`: point-in-time recovery of the whole appliance onto a
 * brand-new one (docs/backups.md "Point-in-time recovery"). With only the target's details and
 * the recovery kit it: opens the newest key-store backup (the signer every object must carry),
 * picks the newest base backup that ended before the time, writes it into the embedded
 * PostgreSQL's empty data directory, replays WAL fetched and decrypted through restore_command up
 * to the time (backup/wal-restore.ts), and, inside the promoted server, replaces the key store with
 * the backup's KEKs under a NEW unseal source (keeping data keys made since the backup), re-applies
 * the backup's shredded list (rows of shredded patients purged, as recovery from a snapshot does),
 * and checks that every encrypted value can be read. Then the appliance opens as usual.
 */
import fs from "node:fs";
import { randomBytes, type KeyObject } from "node:crypto";
import path from "node:path";
import pg from "pg";
import { Registry } from "prom-client";
import { restoreBaseBackup } from "../../../backup/basebackup.js";
import { manifestSigner } from "../../../backup/keys.js";
import {
  checkEncryptedValues,
  describeUnreadable,
  latestKeyStoreBackup,
  openKeyStoreBackup,
  purgeShreddedSubjects,
  registeredEncryptedColumns,
  type PurgeResult,
} from "../../../backup/keystore-backup.js";
import type { SnapshotTarget } from "../../../backup/targets/index.js";
import { WalFetcher } from "../../../backup/wal-restore.js";
import {
  listBaseBackups,
  readObject,
  walLayout,
  walObjectHeader,
  listWal,
  openBaseBackupManifest,
  parseSegment,
  segmentName,
  WAL_SEGMENT,
  type BaseBackupBody,
} from "../../../backup/wal.js";
import { appendAuditEvent } from "../../audit/append.js";
import { auditVerifierFor } from "../../backups/index.js";
import { systemClock } from "../../clock.js";
import { inDataDir } from "../../config/load.js";
import type { Config } from "../../config/schema.js";
import type { ApplianceContext } from "../../context.js";
import { openDatabase } from "../../db/connection.js";
import { EmbeddedRecoveryError, runAs, runEmbeddedRecovery } from "../../db/embedded.js";
import { adoptAsEmbedded, clusterNames, type Adoption } from "../../db/adopt.js";
import { EMBEDDED_DATABASE, prepareDatabase } from "../../db/roles.js";
import { inScope } from "../../db/sql.js";
import {
  backupApplianceSecret,
  backupDataKeyLookup,
  clearRestoredKeyStore,
  installRecoveredKeyStore,
  KeyStoreBackupError,
  openWithUnsealKey,
  readDataKeyRows,
  reapplyShredList,
  RootKey,
  unsealSourceFor,
  unwrapBackupKeks,
  zeroize,
  type CreateSealInput,
  type SealCreation,
  type UnsealMode,
} from "../../keys/index.js";
import { silentLogger } from "../../log/logger.js";
import { CliError } from "../output.js";

/**
 * Where to stop: a time, the end of the archive, or just before an audit event's transaction
 * (`--before-event SEQ`: its time is read from the archived chain itself, see findAuditEvent).
 */
export type PointInTime = { kind: "time"; at: Date } | { kind: "latest" } | { kind: "event"; seq: string };

/** The audit event a `--before-event` recovery stops before, as the archived chain records it. */
export type ArchivedAuditEvent = { seq: string; eventId: string; occurredAt: string; action: string };

export type PitrRequest = {
  target: SnapshotTarget;
  privateKey: KeyObject;
  point: PointInTime;
  expectSigner?: Buffer;
  mode: UnsealMode;
  input: CreateSealInput;
  onProgress?: (p: { phase: string; done: number; total: number; detail?: string }) => void;
};

export type PitrPlan = {
  target: string;
  point: string;
  baseBackup: { id: string; completedAt: string; startWal: string; stopWal: string; storedBytes: number };
  keyStoreBackup: string;
  /** WAL files replay will ask for, in order (up to the first archived after the time; all of them for `latest`). */
  wal: { name: string; archivedAt: string; storedBytes: number }[];
  walStoredBytes: number;
  /** Segments the range needs that the target lacks (a restore would stop there). */
  missing: string[];
  /** The newest WAL file on the target and when it was archived, by the database's clock: the latest time a recovery can reach. */
  archive: { newestWal: string | null; archivedAt: string | null };
};

export type PitrOutcome = {
  target: string;
  point: string;
  baseBackup: string;
  keyStoreBackup: string;
  /** Time of the last transaction replayed: what the database now holds. */
  recoveredTo: string | null;
  replay: { walFiles: number; walBytes: number; storedBytes: number; lastSegment?: string };
  keyStore: { kekVersions: number; dataKeys: number; dataKeysSinceBackup: number; shreddedSubjects: number };
  purged: PurgeResult;
  readable: { values: number; sampled: number; columns: number; tenants: number };
  auditChain: { intact: boolean; head: string | null };
  /** A base backup of another PostgreSQL (the compose file's) made an embedded cluster: what was renamed and reassigned (db/adopt.ts). */
  adopted: Adoption;
  unseal: { mode: UnsealMode; keyFile?: string; shares?: string[]; threshold?: number };
  durationMs: number;
  /** `--before-event`: the event, and how much of the chain before it the recovered database holds. */
  beforeEvent?: ArchivedAuditEvent & {
    /** The recovered chain's head: every event up to it is present. */
    chainedThrough: string;
    /** Events committed before the stop but not yet chained then: the appliance chains them when it starts. */
    pendingInIntake: number;
    /** Events numbered below `seq` that the recovery could not keep (committed within the event's own request time); 0 normally. */
    missingBefore: number;
  };
  /** RTO by phase (`findEventMs`: the first replay that reads the event's time, for --before-event). */
  phases: { findEventMs: number; locateMs: number; keyStoreMs: number; baseMs: number; replayMs: number; keysMs: number; finishMs: number };
};

/** Phase 1: the newest key-store backup (it names the signer) and the base backup for the point. */
async function locate(req: PitrRequest) {
  const keyStoreId = await latestKeyStoreBackup(req.target);
  if (!keyStoreId) throw new CliError(`target ${req.target.name} holds no key-store backup: without one, no encrypted value can be decrypted`);
  const opener = { recoveryPrivateKey: req.privateKey };
  const keyStore = await openKeyStoreBackup(req.target, keyStoreId, opener, req.expectSigner ? [req.expectSigner] : []);
  const keks = unwrapBackupKeks(keyStore.contents, opener);
  const internal = backupApplianceSecret(keyStore.contents, keks);
  const signer = manifestSigner(internal);
  zeroize(internal);
  if (!signer.publicKeyRaw.equals(keyStore.signerPublicKey)) {
    throw new KeyStoreBackupError(`key-store backup ${keyStoreId} was not signed by the appliance whose keys it holds`);
  }
  // Times are the database's: commit timestamps, and when each WAL file was archived (the spool
  // file's time, written on the database's host). A base backup's `completedAt` is the daemon's
  // clock, so it reaches a time only once its last segment was archived too (as the drills pick).
  const available = await listWal(req.target);
  const trusted = [signer.publicKeyRaw];
  const archivedAt = async (name: string) =>
    available.has(name) ? Date.parse(walObjectHeader(name, await readObject(req.target, walLayout.object(name), 1 << 30, `WAL file ${name}`), trusted).archivedAt) : NaN;
  const newestWal = [...available.keys()]
    .filter((n) => WAL_SEGMENT.test(n))
    .sort()
    .at(-1);
  const archive = { newestWal: newestWal ?? null, archivedAt: newestWal ? new Date(await archivedAt(newestWal)).toISOString() : null };
  if (req.point.kind === "time" && archive.archivedAt && req.point.at.getTime() > Date.parse(archive.archivedAt)) {
    throw new CliError(
      `--at ${req.point.at.toISOString()} is after the newest WAL on target ${req.target.name} (${archive.newestWal}, archived ${archive.archivedAt} by the database's clock; this machine's clock says ${new Date().toISOString()}): nothing was archived for that time; give an earlier time or --at latest`,
    );
  }
  const { complete } = await listBaseBackups(req.target);
  let base: BaseBackupBody | undefined;
  let oldestReach: number | undefined;
  for (const id of [...complete].reverse()) {
    const m = await openBaseBackupManifest(req.target, id, opener, trusted);
    zeroize(m.key);
    if (req.point.kind !== "time") {
      base = m.body;
      break;
    }
    const reachesFrom = Math.max(Date.parse(m.body.completedAt), await archivedAt(m.body.stopWal));
    if (Number.isNaN(reachesFrom)) continue; // its last segment is not on the target: it cannot be restored
    oldestReach = reachesFrom;
    if (reachesFrom <= req.point.at.getTime()) {
      base = m.body;
      break;
    }
  }
  if (!base) {
    throw new CliError(
      complete.length === 0
        ? `target ${req.target.name} holds no base backup: point-in-time recovery needs one (wardkeep backup base-backup)`
        : oldestReach === undefined
          ? `no base backup on target ${req.target.name} has its last WAL segment there, so none can be restored`
          : `no base backup on target ${req.target.name} reaches ${describePoint(req.point)}: the oldest is consistent from ${new Date(oldestReach).toISOString()} by the database's clock; pick a later time`,
    );
  }
  return { keyStoreId, keyStore, keks, signer, base, opener, archive };
}

function describePoint(p: PointInTime): string {
  return p.kind === "latest" ? "latest" : p.kind === "event" ? `before audit event ${p.seq}` : p.at.toISOString();
}

/**
 * The WAL files replay needs, read from the target in order from the base backup's first segment:
 * for a time, up to the first segment archived after it (its headers say when); for latest, all.
 */
async function planWal(req: PitrRequest, base: BaseBackupBody, available: Map<string, number>, trusted: Buffer[]) {
  const wal: PitrPlan["wal"] = [];
  const missing: string[] = [];
  const segBytes = base.walSegmentBytes;
  const { timeline, segno: first } = parseSegment(base.startWal, segBytes);
  const last = [...available.keys()]
    .filter((n) => WAL_SEGMENT.test(n) && parseSegment(n, segBytes).timeline === timeline)
    .sort()
    .at(-1);
  if (!last) return { wal, missing: [base.startWal] };
  const end = parseSegment(last, segBytes).segno;
  for (let s = first; s <= end; s++) {
    const name = segmentName(timeline, s, segBytes);
    if (!available.has(name)) {
      missing.push(name);
      break;
    }
    const header = walObjectHeader(name, await readObject(req.target, walLayout.object(name), 1 << 30, `WAL file ${name}`), trusted);
    wal.push({ name, archivedAt: header.archivedAt, storedBytes: available.get(name)! });
    if (req.point.kind === "time" && Date.parse(header.archivedAt) >= req.point.at.getTime() && name >= base.stopWal) break;
  }
  return { wal, missing };
}

/** `--dry-run`: what a recovery to this point would use and fetch; nothing is written. */
export async function planPointInTimeRecovery(req: PitrRequest): Promise<PitrPlan> {
  const found = await locate(req);
  try {
    const available = await listWal(req.target);
    const { wal, missing } = await planWal(req, found.base, available, [found.signer.publicKeyRaw]);
    return {
      target: req.target.name,
      point: describePoint(req.point),
      baseBackup: {
        id: found.base.backupId,
        completedAt: found.base.completedAt,
        startWal: found.base.startWal,
        stopWal: found.base.stopWal,
        storedBytes: found.base.object.storedBytes,
      },
      keyStoreBackup: found.keyStoreId,
      wal,
      walStoredBytes: wal.reduce((n, w) => n + w.storedBytes, 0),
      missing,
      archive: found.archive,
    };
  } finally {
    for (const k of found.keks.values()) zeroize(k);
  }
}

function readOrCreateSecret(file: string): string {
  if (fs.existsSync(file)) return fs.readFileSync(file, "utf8").trim();
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const secret = randomBytes(24).toString("base64url");
  fs.writeFileSync(file, secret + "\n", { mode: 0o600, flag: "wx" });
  return secret;
}

/**
 * Phase 5, inside the promoted server, one transaction: the restored key store (that moment's,
 * sealed under the lost unseal key) is replaced by the backup's KEKs rewrapped under the new
 * unseal key plus every data key of that moment, minus the subjects the backup lists as shredded,
 * whose rows are purged; then every encrypted value must name a key the new store holds.
 */
async function installKeys(client: pg.Client, found: Awaited<ReturnType<typeof locate>>, seal: Parameters<typeof installRecoveredKeyStore>[3], now: Date) {
  await client.query("BEGIN");
  try {
    await client.query("SELECT set_config('wardkeep.scope', 'appliance', true), set_config('wardkeep.tenant_id', '', true)");
    const restored = await readDataKeyRows(client);
    const inBackup = new Set(found.keyStore.contents.dataKeys.map((d) => `${d.keyId}#${d.version}`));
    const since = restored.filter((d) => !inBackup.has(`${d.keyId}#${d.version}`) && found.keks.has(d.kekVersion));
    const contents = { ...found.keyStore.contents, dataKeys: [...found.keyStore.contents.dataKeys, ...since] };
    await clearRestoredKeyStore(client);
    const installed = await installRecoveredKeyStore(client, contents, found.keks, seal, now);
    const purged = await purgeShreddedSubjects(client, installed.shredded, now);
    const columns = await registeredEncryptedColumns();
    const gone = installed.shredded;
    const held = contents.dataKeys.filter((d) => !gone.some((x) => (x.kind === "tenant" ? d.tenantId === x.tenantId : d.keyId === x.subject)));
    const keys = backupDataKeyLookup(contents, found.keks);
    let readable;
    try {
      readable = await checkEncryptedValues(client, columns, keys.lookup, { perTenant: 2, keySlots: new Set(held.map((d) => `${d.keyId}#${d.version}`)) });
    } finally {
      keys.dispose();
    }
    if (!readable.ok) throw new CliError(`the recovered database cannot be read with the recovered keys (${describeUnreadable(readable, found.keyStoreId)}); nothing was opened`);
    await client.query("COMMIT");
    return { installed, purged, readable, since: since.length };
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    throw err;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Base backup to the data directory and a WAL fetcher for it: the start of every replay. */
async function restoreBaseForReplay(req: PitrRequest, found: Awaited<ReturnType<typeof locate>>, available: Map<string, number>, dataDir: string, phase: string) {
  const owner = runAs();
  fs.mkdirSync(path.dirname(path.resolve(dataDir)), { recursive: true, mode: 0o711 });
  if (owner) fs.chmodSync(path.dirname(path.resolve(dataDir)), fs.statSync(path.dirname(path.resolve(dataDir))).mode | 0o001);
  const trusted = [found.signer.publicKeyRaw];
  await restoreBaseBackup({
    target: req.target,
    id: found.base.backupId,
    opener: found.opener,
    trustedSigners: trusted,
    intoDir: dataDir,
    owner,
    onProgress: (done, total) => req.onProgress?.({ phase, done, total }),
  });
  return (onServed?: (stats: { files: number }) => void) =>
    new WalFetcher({
      target: req.target,
      available,
      opener: found.opener,
      trustedSigners: trusted,
      stagingDir: `${path.resolve(dataDir)}.walfetch`,
      owner,
      segmentBytes: found.base.walSegmentBytes,
      onServed: (_n, s) => onServed?.(s),
    });
}

/**
 * `--before-event SEQ`, first replay: the audit event's time is only in the archived database, so
 * the newest base backup is replayed as a read-only hot standby until the chain holds event SEQ
 * (or the archive ends without it), and the event's `occurred_at` is read. That time was taken in
 * the event's own transaction before it committed, so a recovery that stops before the first
 * commit at or after it leaves the event (and its work) out and keeps every transaction that
 * committed earlier. This data directory is then thrown away; the second replay does the rest.
 */
async function findAuditEvent(config: Config, req: PitrRequest, seq: string): Promise<ArchivedAuditEvent> {
  const dataDir = inDataDir(config, "pg");
  const found = await locate({ ...req, point: { kind: "latest" } });
  try {
    const available = await listWal(req.target);
    const fetcher = (await restoreBaseForReplay(req, found, available, dataDir, "find event"))((s) =>
      req.onProgress?.({ phase: "find event", done: s.files, total: available.size }),
    );
    fetcher.start();
    try {
      const names = clusterNames(found.base.server);
      return await runEmbeddedRecovery({
        dataDir,
        port: config.database.embeddedPort,
        settings: { restore_command: fetcher.restoreCommand, recovery_target_timeline: "latest" },
        standby: true,
        superuser: names.superuser,
        abort: {
          signal: fetcher.signal,
          get reason() {
            return fetcher.failure?.message;
          },
        },
        work: async (run) => {
          // A hot standby is read-only: the restored cluster's own names (adopted only by the recovery proper).
          const client = new pg.Client({ connectionString: run.superuserUrl(names.database) });
          await client.connect();
          try {
            let settled: string | undefined;
            for (;;) {
              // Read before the query: once the archive has ended and replay stands still, a miss is final.
              const ended = fetcher.stats.endOfArchive !== undefined;
              const lsn = (await client.query<{ lsn: string | null }>("SELECT pg_last_wal_replay_lsn()::text AS lsn")).rows[0]?.lsn ?? "";
              const hit = await client.query<{ canonical: string }>("SELECT canonical FROM audit_events WHERE seq = $1", [seq]);
              const row = hit.rows[0];
              if (row) {
                const ev = JSON.parse(row.canonical) as { event_id: string; occurred_at: string | number; action: string };
                return { seq, eventId: ev.event_id, occurredAt: new Date(ev.occurred_at).toISOString(), action: ev.action };
              }
              if (fetcher.failure) throw new CliError(`point-in-time recovery stopped: ${fetcher.failure.message}`);
              if (ended && settled === lsn) {
                const head = await client.query<{ seq: string | null }>("SELECT max(seq)::text AS seq FROM audit_events");
                throw new CliError(
                  `audit event ${seq} is not in the archived WAL on target ${req.target.name}: the newest event chained there is ${head.rows[0]?.seq ?? "none"}; pick an earlier event or --at latest`,
                );
              }
              settled = ended ? lsn : undefined;
              await sleep(ended ? 500 : 100);
            }
          } finally {
            await client.end().catch(() => {});
          }
        },
      });
    } catch (err) {
      if (fetcher.failure) throw new CliError(`point-in-time recovery stopped: ${fetcher.failure.message}`);
      if (err instanceof EmbeddedRecoveryError) throw new CliError(`point-in-time recovery stopped while reading audit event ${seq}: PostgreSQL: ${err.message}`);
      throw err;
    } finally {
      fetcher.dispose();
    }
  } finally {
    for (const k of found.keks.values()) zeroize(k);
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

/**
 * Locate → key store → base backup → replay → keys → finish (the appliance opened with its new
 * unseal source, the shredded list re-applied, the recovery audited). Each phase is timed (RTO).
 * `--before-event` first finds the event's time (findAuditEvent), then recovers to just before it.
 */
export async function recoverToPointInTime(config: Config, req: PitrRequest): Promise<PitrOutcome> {
  if (config.database.url) {
    throw new CliError(
      "point-in-time recovery restores a whole PostgreSQL cluster into the embedded PostgreSQL's data directory: unset database.url (for the compose PostgreSQL see docs/backups.md)",
    );
  }
  const dataDir = inDataDir(config, "pg");
  if (fs.existsSync(dataDir) && fs.readdirSync(dataDir).length)
    throw new CliError(`${dataDir} is not empty: point-in-time recovery needs a brand-new appliance (an empty data directory)`);
  if (req.point.kind !== "event") return recoverTo(config, req);
  const t0 = performance.now();
  const event = await findAuditEvent(config, req, req.point.seq);
  const findEventMs = performance.now() - t0;
  const out = await recoverTo(config, { ...req, point: { kind: "time", at: new Date(event.occurredAt) } }, event);
  return {
    ...out,
    point: describePoint(req.point),
    durationMs: Math.round(out.durationMs + findEventMs),
    phases: { ...out.phases, findEventMs: Math.round(findEventMs) },
  };
}

async function recoverTo(config: Config, req: PitrRequest, before?: ArchivedAuditEvent): Promise<PitrOutcome> {
  const dataDir = inDataDir(config, "pg");
  const started = performance.now();
  const mark = () => performance.now();
  let t = mark();
  req.onProgress?.({ phase: "locate", done: 0, total: 1 });
  const found = await locate(req);
  const locateMs = mark() - t;
  let creation: SealCreation | undefined;
  const staging = `${path.resolve(dataDir)}.walfetch`;
  try {
    t = mark();
    const available = await listWal(req.target);
    const trusted = [found.signer.publicKeyRaw];
    creation = await unsealSourceFor(config, req.mode).create(req.input);
    const keyStoreMs = mark() - t;

    t = mark();
    const owner = runAs();
    fs.mkdirSync(path.dirname(path.resolve(dataDir)), { recursive: true, mode: 0o711 });
    if (owner) fs.chmodSync(path.dirname(path.resolve(dataDir)), fs.statSync(path.dirname(path.resolve(dataDir))).mode | 0o001);
    await restoreBaseBackup({
      target: req.target,
      id: found.base.backupId,
      opener: found.opener,
      trustedSigners: trusted,
      intoDir: dataDir,
      owner,
      onProgress: (done, total) => req.onProgress?.({ phase: "base backup", done, total }),
    });
    const baseMs = mark() - t;

    t = mark();
    const fetcher = new WalFetcher({
      target: req.target,
      available,
      opener: found.opener,
      trustedSigners: trusted,
      stagingDir: staging,
      owner,
      segmentBytes: found.base.walSegmentBytes,
      onServed: (_n, s) => req.onProgress?.({ phase: "replay", done: s.files, total: available.size }),
    });
    const settings: Record<string, string> = {
      restore_command: fetcher.restoreCommand,
      recovery_target_action: "promote",
      recovery_target_timeline: "latest",
    };
    if (req.point.kind === "time") {
      // PostgreSQL's own timestamptz input form (it refuses the ISO "T...Z" spelling here).
      settings.recovery_target_time = req.point.at.toISOString().replace("T", " ").replace("Z", "+00");
      settings.recovery_target_inclusive = "off";
    }
    const superPassword = readOrCreateSecret(inDataDir(config, "secrets/pg-superuser-password"));
    const names = clusterNames(found.base.server);
    let adopted: Adoption = { objects: 0 };
    const now = new Date();
    const seal = { mode: req.mode, params: creation.params, unsealKey: creation.unsealKey };
    fetcher.start();
    let keysMs = 0;
    let replayMs = 0;
    const abort = {
      signal: fetcher.signal,
      get reason() {
        return fetcher.failure?.message;
      },
    };
    let result: {
      recoveredTo: string | null;
      keys: Awaited<ReturnType<typeof installKeys>>;
      audit: { intact: boolean; head: string | null };
      beforeEvent?: PitrOutcome["beforeEvent"];
    };
    try {
      result = await runEmbeddedRecovery({
        dataDir,
        port: config.database.embeddedPort,
        settings,
        abort,
        superuser: names.superuser,
        work: async (run) => {
          fetcher.stop();
          replayMs = mark() - t;
          t = mark();
          req.onProgress?.({ phase: "keys", done: 0, total: 1 });
          // A cluster of the compose PostgreSQL becomes an embedded one first (db/adopt.ts): from here on, postgres.
          adopted = await adoptAsEmbedded(run, names);
          const url = (database: string) => run.superuserUrl(database, "postgres");
          const client = new pg.Client({ connectionString: url(EMBEDDED_DATABASE) });
          await client.connect();
          try {
            const replayed = await client.query<{ at: Date | null }>("SELECT pg_last_xact_replay_timestamp() AS at");
            const beforeEvent = before ? await checkStoppedBefore(client, before) : undefined;
            const keys = await installKeys(client, found, seal, now);
            await client.query(`ALTER ROLE postgres PASSWORD ${client.escapeLiteral(superPassword)}`);
            const verify = auditVerifierFor({ config, log: silentLogger(), clock: systemClock, rootKey: new RootKey(config.keys.unseal), metrics: new Registry() }, "database");
            const audit = await verify(url(EMBEDDED_DATABASE));
            if (!audit.intact) throw new CliError(`the recovered audit trail does not verify: ${audit.detail ?? "broken"}`);
            keysMs = mark() - t;
            return { recoveredTo: replayed.rows[0]?.at?.toISOString() ?? null, keys, audit: { intact: audit.intact, head: audit.head?.seq ?? null }, beforeEvent };
          } finally {
            await client.end().catch(() => {});
          }
        },
      });
    } catch (err) {
      if (fetcher.failure) throw new CliError(`point-in-time recovery stopped: ${fetcher.failure.message}`);
      if (err instanceof EmbeddedRecoveryError) {
        const last = fetcher.stats.lastArchivedAt ? ` (the newest WAL replayed was archived at ${fetcher.stats.lastArchivedAt})` : "";
        throw new CliError(`point-in-time recovery stopped: PostgreSQL: ${err.message}${last}`);
      }
      throw err;
    } finally {
      fetcher.dispose();
    }

    t = mark();
    req.onProgress?.({ phase: "finish", done: 0, total: 1 });
    await openRecovered(config, req.mode, creation, found.base.backupId, describePoint(req.point), result.recoveredTo, found.keyStoreId, result.keys.installed.shredded.length);
    const finishMs = mark() - t;
    const { installed, purged, readable } = result.keys;
    const r = Math.round;
    return {
      target: req.target.name,
      point: describePoint(req.point),
      baseBackup: found.base.backupId,
      keyStoreBackup: found.keyStoreId,
      recoveredTo: result.recoveredTo,
      replay: { walFiles: fetcher.stats.files, walBytes: fetcher.stats.bytes, storedBytes: fetcher.stats.storedBytes, lastSegment: fetcher.stats.lastSegment },
      keyStore: { kekVersions: installed.kekVersions, dataKeys: installed.dataKeys, dataKeysSinceBackup: result.keys.since, shreddedSubjects: installed.shredded.length },
      purged,
      readable: { values: readable.values, sampled: readable.sampled, columns: readable.columns, tenants: readable.tenants },
      auditChain: result.audit,
      adopted,
      ...(result.beforeEvent ? { beforeEvent: result.beforeEvent } : {}),
      unseal: { mode: req.mode, keyFile: creation.createdFile, shares: creation.shares, threshold: req.input.threshold },
      durationMs: r(mark() - started),
      phases: { findEventMs: 0, locateMs: r(locateMs), keyStoreMs: r(keyStoreMs), baseMs: r(baseMs), replayMs: r(replayMs), keysMs: r(keysMs), finishMs: r(finishMs) },
    };
  } catch (err) {
    // A failed recovery leaves no half-restored cluster for the next attempt to trip over.
    fs.rmSync(dataDir, { recursive: true, force: true });
    if (creation?.createdFile) fs.rmSync(creation.createdFile, { force: true });
    throw err;
  } finally {
    for (const k of found.keks.values()) zeroize(k);
    if (creation) zeroize(creation.unsealKey);
  }
}

/**
 * `--before-event`: the replayed database must hold neither the event (chained or still in the
 * intake) nor anything chained after it; what it holds of the chain before it is reported. A
 * database and daemon whose clocks disagree could break the first rule: then nothing is opened.
 */
async function checkStoppedBefore(client: pg.Client, ev: ArchivedAuditEvent): Promise<NonNullable<PitrOutcome["beforeEvent"]>> {
  const { rows } = await client.query<{ present: number; head: string; pending: number }>(
    `SELECT (SELECT count(*) FROM audit_events WHERE (canonical::jsonb)->>'event_id' = $1)::int
          + (SELECT count(*) FROM audit_intake WHERE event_id = $1::uuid)::int AS present,
            (SELECT coalesce(max(seq), 0) FROM audit_events)::text AS head,
            (SELECT count(*) FROM audit_intake)::int AS pending`,
    [ev.eventId],
  );
  const r = rows[0]!;
  if (r.present > 0 || BigInt(r.head) >= BigInt(ev.seq)) {
    throw new CliError(
      `the replay did not stop before audit event ${ev.seq} (its time ${ev.occurredAt} is later than its commit: do the daemon's and PostgreSQL's clocks disagree?); nothing was opened`,
    );
  }
  const missing = BigInt(ev.seq) - 1n - BigInt(r.head) - BigInt(r.pending);
  return { ...ev, chainedThrough: r.head, pendingInIntake: r.pending, missingBefore: missing > 0n ? Number(missing) : 0 };
}

/** Phase 6: the embedded server started as usual (roles get this appliance's passwords), unsealed with the new source, shred list re-applied, recovery audited. */
async function openRecovered(
  config: Config,
  mode: UnsealMode,
  creation: SealCreation,
  baseBackup: string,
  point: string,
  recoveredTo: string | null,
  keyStoreId: string,
  shredded: number,
): Promise<void> {
  const db = await prepareDatabase(config);
  const pools = openDatabase(db, config);
  const ctx: ApplianceContext = { config, log: silentLogger(), db: pools, rootKey: new RootKey(mode), metrics: new Registry(), clock: systemClock };
  try {
    await openWithUnsealKey(ctx, mode, creation.unsealKey, 1);
    await reapplyShredList(ctx);
    await inScope(ctx.db.app, { kind: "appliance" }, (tx) =>
      appendAuditEvent(ctx, tx, {
        tenantId: null,
        actor: { userId: null, role: "host_operator" },
        action: "backup.recover",
        resourceType: "pitr_base_backup",
        resourceId: baseBackup,
        outcome: "success",
        userAgent: "wardkeep-cli",
        reason: `point-in-time recovery to ${point} (last transaction ${recoveredTo ?? "none replayed"}); key-store backup ${keyStoreId}; ${shredded} crypto-shredded subject(s) re-applied; new unseal mode ${mode}`,
      }),
    );
  } finally {
    ctx.rootKey.seal("recovery finished");
    await pools.close();
    await db.embedded?.stop();
  }
}
