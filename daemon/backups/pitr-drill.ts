/**
 * Point-in-time recovery drills (docs/backups.md "PITR drills"): a recovery that nobody has
 * rehearsed is a hope. On a schedule (`backup.pitrDrillCron`), one target at a time (the one
 * drilled longest ago), the drill picks a random time in that target's retained window (from the
 * end of its oldest base backup to the newest archived WAL), restores the newest base backup before
 * it into a scratch cluster under the data directory, replays the archived WAL to the time exactly
 * as `wardkeep recover --at` would (same fetcher, same refusals), and checks, in the scratch
 * cluster:
 * - the audit chain up to that time verifies, with checkpoint signatures checked against this
 *   appliance's keys;
 * - it matches the newest signed checkpoint this appliance recorded before the time (read from the
 *   live database, outside what was restored);
 * - every encrypted value names a key the newest key-store backup (plus the keys made since) holds,
 *   and a sample of every column decrypts, after the shredded list is applied as recovery does;
 * then records the achieved recovery point (the last replayed transaction), the RTO by phase and
 * each check in `pitr_drills`. A failure raises `pitr_drill_failed` naming the target and why (a
 * missing or tampered WAL segment by name). The scratch cluster is removed in every case.
 */
import fs from "node:fs";
import { randomInt } from "node:crypto";
import path from "node:path";
import pg from "pg";
import { restoreBaseBackup } from "../../backup/basebackup.js";
import { manifestSigner } from "../../backup/keys.js";
import {
  checkEncryptedValues,
  describeUnreadable,
  latestKeyStoreBackup,
  openKeyStoreBackup,
  purgeShreddedSubjects,
  registeredEncryptedColumns,
} from "../../backup/keystore-backup.js";
import type { SnapshotTarget } from "../../backup/targets/index.js";
import { WalFetcher } from "../../backup/wal-restore.js";
import { listBaseBackups, listWal, openBaseBackupManifest, readObject, walLayout, walObjectHeader, WAL_SEGMENT, type BaseBackupBody } from "../../backup/wal.js";
import { appendAuditEvent } from "../audit/append.js";
import { inDataDir } from "../config/load.js";
import type { ApplianceContext } from "../context.js";
import { EmbeddedRecoveryError, hasReplayBinaries, replayBinaries, runAs, runEmbeddedRecovery } from "../db/embedded.js";
import { clusterNames } from "../db/adopt.js";
import { inScope } from "../db/sql.js";
import { Conflict, Unavailable } from "../kernel/errors.js";
import { backupDataKeyLookup, readDataKeyRows, shreddedSubjects, unwrapBackupKeks, zeroize } from "../keys/index.js";
import { auditVerifierFor } from "./audit-check.js";
import { openPolicyTargets, readPolicyRow } from "./policy.js";
import { clearAlert, raiseAlert, tryJobLock } from "./service.js";
import { closeAndShipSegment } from "./pitr.js";
import type { PitrDrillRes } from "./schema.js";

export const PITR_DRILL_LOCK = 7301505;

/** The record's shape is the API's (schema.ts `pitrDrillRecord`). */
export type PitrDrillRecord = PitrDrillRes;
export type PitrDrillCheck = PitrDrillRecord["checks"][number];
export type PitrDrillPhases = Required<PitrDrillRecord["phases"]>;

export const AUDIT_CHAIN_CHECK = "audit chain verifies";
export const CHECKPOINT_CHECK = "matches the signed checkpoint before the time";
export const DECRYPT_CHECK = "encrypted columns decrypt";

/** Thrown inside the drill for a reason to record (not a crash): the message is the drill's error. */
class DrillStop extends Error {}

type Row = {
  id: string;
  status: PitrDrillRecord["status"];
  trigger: PitrDrillRecord["trigger"];
  target: string;
  started_at: Date;
  finished_at: Date | null;
  base_backup: string | null;
  target_time: Date | null;
  achieved_time: Date | null;
  rto_ms: number | null;
  phases: Partial<PitrDrillPhases>;
  checks: PitrDrillCheck[];
  error: string | null;
};

const toRecord = (r: Row): PitrDrillRecord => ({
  id: r.id,
  status: r.status,
  trigger: r.trigger,
  target: r.target,
  startedAt: r.started_at.toISOString(),
  finishedAt: r.finished_at?.toISOString() ?? null,
  baseBackup: r.base_backup,
  targetTime: r.target_time?.toISOString() ?? null,
  achievedTime: r.achieved_time?.toISOString() ?? null,
  rtoMs: r.rto_ms,
  phases: r.phases,
  checks: r.checks,
  error: r.error,
});

const SELECT = "SELECT id::text, status, trigger, target, started_at, finished_at, base_backup, target_time, achieved_time, rto_ms, phases, checks, error FROM pitr_drills";

export async function listPitrDrills(ctx: ApplianceContext, limit = 50): Promise<PitrDrillRecord[]> {
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => (await t.rows<Row>(`${SELECT} ORDER BY started_at DESC, id DESC LIMIT $1`, [limit])).map(toRecord));
}

/** The target drilled longest ago (never drilled first), so every target gets its turn. */
async function nextTarget(ctx: ApplianceContext, names: string[]): Promise<string> {
  const last = await inScope(ctx.db.app, { kind: "appliance" }, (t) =>
    t.rows<{ target: string; at: Date }>("SELECT target, max(started_at) AS at FROM pitr_drills GROUP BY target"),
  );
  const when = new Map(last.map((r) => [r.target, r.at.getTime()]));
  return [...names].sort((a, b) => (when.get(a) ?? 0) - (when.get(b) ?? 0))[0]!;
}

/**
 * The retained window of a target: from the earliest time its oldest complete base backup can
 * reach to the time the newest WAL segment there was archived. A base backup reaches times after
 * its end is replayed (the consistent point); its manifest's completion time comes from the
 * appliance clock, so the time its last segment (`stopWal`, archived only after pg_backup_stop)
 * was archived bounds it too: PostgreSQL refuses a stop before the consistent point.
 */
async function retainedWindow(target: SnapshotTarget, opener: { applianceSecret: Buffer }, trusted: Buffer[]) {
  const { complete } = await listBaseBackups(target);
  if (complete.length === 0) throw new DrillStop(`target ${target.name} holds no base backup: nothing to drill (wardkeep backup base-backup)`);
  const available = await listWal(target);
  const archivedAt = async (name: string) =>
    available.has(name) ? Date.parse(walObjectHeader(name, await readObject(target, walLayout.object(name), 1 << 30, `WAL file ${name}`), trusted).archivedAt) : NaN;
  const bases: (BaseBackupBody & { reachesFrom: number })[] = [];
  for (const id of complete) {
    const m = await openBaseBackupManifest(target, id, opener, trusted);
    zeroize(m.key);
    const stop = await archivedAt(m.body.stopWal);
    // Its last segment is not on the target (pruned, or never shipped): it cannot be restored.
    if (Number.isNaN(stop)) continue;
    bases.push({ ...m.body, reachesFrom: Math.max(Date.parse(m.body.completedAt), stop) });
  }
  if (bases.length === 0) throw new DrillStop(`no base backup on target ${target.name} has its last WAL segment there, so none can be restored`);
  bases.sort((a, b) => a.reachesFrom - b.reachesFrom);
  const newest = [...available.keys()]
    .filter((n) => WAL_SEGMENT.test(n))
    .sort()
    .at(-1);
  if (!newest) throw new DrillStop(`target ${target.name} holds no archived WAL`);
  return { bases, available, from: bases[0]!.reachesFrom, to: await archivedAt(newest) };
}

/** Runs one PITR drill now (the job, `POST`-less: the CLI and tests call it); the record says how it went. */
export async function runPitrDrill(
  ctx: ApplianceContext,
  opts: { trigger: PitrDrillRecord["trigger"]; target?: string; at?: Date } = { trigger: "manual" },
): Promise<PitrDrillRecord> {
  const binDir = ctx.config.backup.replayBinDir;
  if (!hasReplayBinaries(binDir)) {
    throw new Unavailable(
      "PITR drills replay with PostgreSQL 18 server binaries, and this install has neither the embedded package's nor backup.replayBinDir (WARDKEEP_BACKUP_REPLAY_BIN_DIR; the daemon image sets it) (docs/backups.md, PITR drills)",
    );
  }
  // A wrong directory fails now, in one line, before anything is fetched.
  await replayBinaries(binDir).catch((err: Error) => {
    throw new Unavailable(err.message);
  });
  const secret = ctx.rootKey.material();
  const policy = await inScope(ctx.db.app, { kind: "appliance" }, (t) => readPolicyRow(ctx, t));
  if (policy.targets.length === 0) throw new Conflict("no backup target is configured, so there is nothing to drill");
  const lock = await tryJobLock(ctx, PITR_DRILL_LOCK);
  if (!lock) throw new Conflict("a PITR drill is already running");
  const targets = openPolicyTargets(ctx, policy);
  const scratch = inDataDir(ctx.config, "pitr-drill");
  let id = "";
  let drillStart: Date | undefined;
  try {
    const name =
      opts.target ??
      (await nextTarget(
        ctx,
        targets.map((t) => t.name),
      ));
    const target = targets.find((t) => t.name === name);
    if (!target) throw new Conflict(`no backup target is named ${name}`);
    id = await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
      await t.exec("UPDATE pitr_drills SET status = 'failed', finished_at = $1, error = 'interrupted' WHERE status = 'running'", [ctx.clock.now()]);
      const [row] = await t.rows<{ id: string; at: Date }>(
        "INSERT INTO pitr_drills (status, trigger, target, started_at) VALUES ('running', $1, $2, $3) RETURNING id::text, now() AS at",
        [opts.trigger, name, ctx.clock.now()],
      );
      drillStart = row!.at;
      return row!.id;
    });
    // PostgreSQL's replay to a time stops at the first commit after it, and fails ("recovery ended
    // before configured recovery target was reached") when the archive holds none: a time drawn
    // after the archive's last commit (in a quiet segment closed by archive_timeout) would fail a
    // sound archive. This row's commit, after `drillStart` by the database's clock, is made a
    // commit the archive holds, and the random time is drawn before it.
    const closed = opts.at
      ? null
      : await closeAndShipSegment(ctx).catch((err: Error) => {
          ctx.log.warn(`backup: PITR drill could not close and ship the current WAL segment: ${err.message}`);
          return null;
        });
    const latest = closed ? drillStart : undefined;
    const outcome = await drill(ctx, target, secret, scratch, opts.at, latest);
    const passed = !outcome.error && outcome.checks.length > 0 && outcome.checks.every((c) => c.ok);
    const error =
      outcome.error ??
      (passed
        ? null
        : outcome.checks
            .filter((c) => !c.ok)
            .map((c) => `${c.name}: ${c.detail}`)
            .join("; "));
    const row = await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
      const [r] = await t.rows<Row>(
        `UPDATE pitr_drills SET status = $2, finished_at = $3, base_backup = $4, target_time = $5, achieved_time = $6, rto_ms = $7, phases = $8::jsonb, checks = $9::jsonb, error = $10
          WHERE id = $1::bigint RETURNING id::text, status, trigger, target, started_at, finished_at, base_backup, target_time, achieved_time, rto_ms, phases, checks, error`,
        [
          id,
          passed ? "passed" : "failed",
          ctx.clock.now(),
          outcome.baseBackup,
          outcome.targetTime,
          outcome.achievedTime,
          outcome.rtoMs,
          JSON.stringify(outcome.phases),
          JSON.stringify(outcome.checks),
          error?.slice(0, 1000) ?? null,
        ],
      );
      if (passed) await clearAlert(ctx, t, "pitr_drill_failed", name);
      else await raiseAlert(ctx, t, "pitr_drill_failed", `PITR drill ${id} on target ${name} failed: ${error}`.slice(0, 900), name);
      await appendAuditEvent(ctx, t, {
        tenantId: null,
        actor: { userId: null, role: "system" },
        action: "backup.pitr_drill",
        resourceType: "pitr_drill",
        resourceId: id,
        outcome: passed ? "success" : "failure",
      });
      return r!;
    });
    if (passed) ctx.log.info(`backup: PITR drill ${id} passed on ${name} (RTO ${outcome.rtoMs} ms)`);
    else ctx.log.warn(`backup: PITR drill ${id} failed on ${name}: ${error}`);
    return toRecord(row);
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
    fs.rmSync(`${scratch}.walfetch`, { recursive: true, force: true });
    await Promise.all(targets.map((t) => t.close().catch(() => {})));
    await lock.release();
  }
}

type Outcome = {
  baseBackup: string | null;
  targetTime: Date | null;
  achievedTime: Date | null;
  rtoMs: number | null;
  phases: Partial<PitrDrillPhases>;
  checks: PitrDrillCheck[];
  error: string | null;
};

async function drill(ctx: ApplianceContext, target: SnapshotTarget, secret: Buffer, scratch: string, at: Date | undefined, latest: Date | undefined): Promise<Outcome> {
  const out: Outcome = { baseBackup: null, targetTime: null, achievedTime: null, rtoMs: null, phases: {}, checks: [], error: null };
  const opener = { applianceSecret: secret };
  const trusted = [manifestSigner(secret).publicKeyRaw];
  const started = performance.now();
  let t = started;
  const lap = () => {
    const now = performance.now();
    const ms = Math.round(now - t);
    t = now;
    return ms;
  };
  fs.rmSync(scratch, { recursive: true, force: true });
  try {
    // Locate: the window, a random time in it, the newest base backup that ended before it.
    const window = await retainedWindow(target, opener, trusted);
    const to = latest ? Math.min(window.to, latest.getTime()) : window.to;
    const point = at ?? new Date(to > window.from ? window.from + randomInt(0, Math.min(to - window.from, 2 ** 47)) : window.from);
    out.targetTime = point;
    const base = [...window.bases].reverse().find((b) => b.reachesFrom <= point.getTime());
    if (!base) throw new DrillStop(`no base backup on target ${target.name} ended before ${point.toISOString()}`);
    out.baseBackup = base.backupId;
    out.phases.locateMs = lap();

    const owner = runAs();
    fs.mkdirSync(path.dirname(scratch), { recursive: true });
    await restoreBaseBackup({ target, id: base.backupId, opener, trustedSigners: trusted, intoDir: scratch, owner });
    out.phases.baseMs = lap();

    const fetcher = new WalFetcher({
      target,
      available: window.available,
      opener,
      trustedSigners: trusted,
      stagingDir: `${scratch}.walfetch`,
      owner,
      segmentBytes: base.walSegmentBytes,
    });
    fetcher.start();
    try {
      // A base backup of the compose PostgreSQL keeps its own names here: the scratch cluster is only read.
      const names = clusterNames(base.server);
      await runEmbeddedRecovery({
        dataDir: scratch,
        superuser: names.superuser,
        binDir: ctx.config.backup.replayBinDir,
        port: ctx.config.database.embeddedPort,
        settings: {
          restore_command: fetcher.restoreCommand,
          recovery_target_time: point.toISOString().replace("T", " ").replace("Z", "+00"),
          recovery_target_inclusive: "off",
          recovery_target_action: "promote",
          recovery_target_timeline: "latest",
        },
        abort: {
          signal: fetcher.signal,
          get reason() {
            return fetcher.failure?.message;
          },
        },
        work: async (run) => {
          fetcher.stop();
          out.phases.replayMs = lap();
          const url = run.superuserUrl(names.database);
          const client = new pg.Client({ connectionString: url });
          await client.connect();
          try {
            const replayed = await client.query<{ at: Date | null }>("SELECT pg_last_xact_replay_timestamp() AS at");
            // A time drawn just after the base backup may come before any commit after it: nothing
            // is replayed, and the data is as of the base backup's consistent point.
            out.achievedTime = replayed.rows[0]?.at ?? new Date(base.reachesFrom);
            out.checks.push(...(await verifyChain(ctx, client, url, point)));
            out.checks.push(await decryptSample(ctx, client, target, opener, trusted));
          } finally {
            await client.end().catch(() => {});
          }
          out.phases.verifyMs = lap();
        },
      });
    } catch (err) {
      if (fetcher.failure) throw new DrillStop(fetcher.failure.message);
      if (err instanceof EmbeddedRecoveryError) {
        const last = fetcher.stats.lastSegment ? ` (the last WAL segment replayed was ${fetcher.stats.lastSegment})` : "";
        throw new DrillStop(`PostgreSQL: ${err.message}${last}`);
      }
      throw err;
    } finally {
      fetcher.dispose();
    }
    out.rtoMs = Math.round(performance.now() - started);
  } catch (err) {
    out.error = err instanceof DrillStop ? err.message : `the drill could not run: ${(err as Error).message.split("\n")[0]!.slice(0, 400)}`;
  }
  return out;
}

/**
 * The restored chain verifies (signatures against this appliance's keys), and holds at the
 * sequence number of the newest checkpoint this appliance signed before the time the very hash
 * that checkpoint signed: the live database is the witness outside what was restored.
 */
async function verifyChain(ctx: ApplianceContext, client: pg.Client, url: string, point: Date): Promise<PitrDrillCheck[]> {
  const report = await auditVerifierFor(ctx, "appliance")(url);
  const chain: PitrDrillCheck = report.intact
    ? { name: AUDIT_CHAIN_CHECK, ok: true, detail: `intact up to event ${report.head?.seq ?? 0}` }
    : { name: AUDIT_CHAIN_CHECK, ok: false, detail: report.detail ?? "broken" };
  const [cp] = await inScope(ctx.db.owner, { kind: "appliance" }, (t) =>
    t.rows<{ id: string; seq: string; hash: string; signed_at: Date }>(
      "SELECT id::text, seq::text, encode(head_hash, 'hex') AS hash, signed_at FROM audit_checkpoints WHERE signed_at < $1 AND seq > 0 ORDER BY seq DESC, id DESC LIMIT 1",
      [point],
    ),
  );
  if (!cp) return [chain, { name: CHECKPOINT_CHECK, ok: true, detail: `this appliance signed no checkpoint before ${point.toISOString()}; the chain was checked on its own` }];
  const restored = await client.query<{ hash: string }>("SELECT encode(hash, 'hex') AS hash FROM audit_events WHERE seq = $1", [cp.seq]);
  const hash = restored.rows[0]?.hash;
  const checkpoint: PitrDrillCheck =
    hash === cp.hash
      ? { name: CHECKPOINT_CHECK, ok: true, detail: `event ${cp.seq} has the hash checkpoint ${cp.id} signed at ${cp.signed_at.toISOString()}` }
      : {
          name: CHECKPOINT_CHECK,
          ok: false,
          detail: hash
            ? `event ${cp.seq} in the restored chain does not have the hash checkpoint ${cp.id} signed at ${cp.signed_at.toISOString()}`
            : `the restored chain lacks event ${cp.seq}, which checkpoint ${cp.id} signed at ${cp.signed_at.toISOString()}`,
        };
  return [chain, checkpoint];
}

/**
 * As recovery does (recover-pitr.ts, installKeys): the newest key-store backup's keys plus the data
 * keys made since it, the shredded subjects' rows purged (in the scratch cluster, rolled back);
 * every encrypted value must name a held key, and two values per column and tenant must decrypt.
 */
async function decryptSample(ctx: ApplianceContext, client: pg.Client, target: SnapshotTarget, opener: { applianceSecret: Buffer }, trusted: Buffer[]): Promise<PitrDrillCheck> {
  const id = await latestKeyStoreBackup(target);
  if (!id) return { name: DECRYPT_CHECK, ok: false, detail: `target ${target.name} holds no key-store backup: nothing restored from it could be decrypted` };
  const opened = await openKeyStoreBackup(target, id, opener, trusted);
  const keks = unwrapBackupKeks(opened.contents, opener);
  await client.query("BEGIN");
  try {
    await client.query("SELECT set_config('wardkeep.scope', 'appliance', true), set_config('wardkeep.tenant_id', '', true)");
    const inBackup = new Set(opened.contents.dataKeys.map((d) => `${d.keyId}#${d.version}`));
    const since = (await readDataKeyRows(client)).filter((d) => !inBackup.has(`${d.keyId}#${d.version}`) && keks.has(d.kekVersion));
    const contents = { ...opened.contents, dataKeys: [...opened.contents.dataKeys, ...since] };
    const gone = shreddedSubjects(contents, ctx.clock.now());
    await purgeShreddedSubjects(client, gone, ctx.clock.now());
    const held = contents.dataKeys.filter((d) => !gone.some((x) => (x.kind === "tenant" ? d.tenantId === x.tenantId : d.keyId === x.subject)));
    const keys = backupDataKeyLookup(contents, keks);
    try {
      const check = await checkEncryptedValues(client, await registeredEncryptedColumns(), keys.lookup, {
        perTenant: 2,
        keySlots: new Set(held.map((d) => `${d.keyId}#${d.version}`)),
      });
      if (!check.ok) return { name: DECRYPT_CHECK, ok: false, detail: describeUnreadable(check, id) };
      return {
        name: DECRYPT_CHECK,
        ok: check.sampled > 0 || check.values === 0,
        detail:
          check.values === 0
            ? "the database at that time held no encrypted value yet"
            : `${check.sampled} value(s) of ${check.columns} encrypted column(s) across ${check.tenants} tenant(s) decrypted with key-store backup ${id} (+${since.length} key(s) made since); all ${check.values} stored value(s) name held keys`,
      };
    } finally {
      keys.dispose();
    }
  } finally {
    await client.query("ROLLBACK").catch(() => {});
    for (const k of keks.values()) zeroize(k);
  }
}
