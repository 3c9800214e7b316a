/**
 * Point-in-time recovery, the running appliance's side (docs/backups.md "Point-in-time recovery"):
 * - the WAL shipper: every WAL file PostgreSQL's archive_command put in the spool is encrypted
 *   once (backup/wal.ts), written to every target that does not hold it yet, recorded per target
 *   in `pitr_wal`, and removed from the spool only when every target has it;
 * - base backups (backup/basebackup.ts) with their WAL range in `pitr_base_backups`, and the
 *   retention that keeps every WAL file a retained base backup needs and no more;
 * - the recovery point per target (age of the newest WAL there) and pg_stat_archiver, for
 *   /metrics, the console and the alerts.
 */
import fs from "node:fs";
import path from "node:path";
import pg from "pg";
import { Gauge } from "prom-client";
import { takeBaseBackup, type BaseBackupResult } from "../../backup/basebackup.js";
import { manifestSigner } from "../../backup/keys.js";
import type { SnapshotTarget } from "../../backup/targets/index.js";
import { baseBackupLayout, listBaseBackups, listWal, openBaseBackupManifest, parseSegment, sealWalFile, WAL_FILE, WAL_SEGMENT, walLayout } from "../../backup/wal.js";
import { inDataDir } from "../config/load.js";
import type { ApplianceContext } from "../context.js";
import { EMBEDDED_DATABASE, OWNER_ROLE } from "../db/roles.js";
import { inScope } from "../db/sql.js";
import { wakeCheckpointer } from "../db/wal-archive.js";
import { Unavailable } from "../kernel/errors.js";
import { APP_VERSION } from "../version.js";
import { openPolicyTargets, readPolicyRow } from "./policy.js";
import { readWalPosition, RpoObjective, type ObjectiveDecision } from "./rpo-objective.js";
import { clearAlert, raiseAlert, recoveryPublicKey, tryJobLock } from "./service.js";

/** Advisory lock ids next to the snapshot (7301501) and drill (7301502) locks. */
export const WAL_SHIP_LOCK = 7301503;
export const BASE_BACKUP_LOCK = 7301504;

export function spoolDir(ctx: ApplianceContext): string {
  return inDataDir(ctx.config, ctx.config.backup.walSpoolDir);
}

/** WAL files waiting in the spool, oldest name first (history files before the segments that follow them). */
export function spooledFiles(dir: string): { name: string; bytes: number; archivedAt: Date }[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  const out: { name: string; bytes: number; archivedAt: Date }[] = [];
  for (const name of names) {
    if (!WAL_FILE.test(name)) continue; // dot-files are copies still in progress
    try {
      const st = fs.statSync(path.join(dir, name));
      out.push({ name, bytes: st.size, archivedAt: st.mtime });
    } catch {
      /* shipped by another pass meanwhile */
    }
  }
  return out.sort((a, b) => a.archivedAt.getTime() - b.archivedAt.getTime() || a.name.localeCompare(b.name));
}

/** `discarded`: files removed unshipped because no backup target is configured. */
export type ShipOutcome = { shipped: { name: string; targets: string[] }[]; failed: { target: string; error: string }[]; waiting: number; spoolBytes: number; discarded?: number };

/** Transaction ids of the shipper's `pitr_wal` inserts, not yet seen ended by the recovery point objective's bookkeeping. */
const ownXids = new WeakMap<ApplianceContext, Set<string>>();
function bookkeeping(ctx: ApplianceContext): Set<string> {
  let set = ownXids.get(ctx);
  if (!set) ownXids.set(ctx, (set = new Set()));
  return set;
}

/** Names each target is known to hold, so a file is written once per target (and a retry after a crash is not an error). */
const knownOnTarget = new WeakMap<ApplianceContext, Map<string, Set<string>>>();

async function namesOn(ctx: ApplianceContext, target: SnapshotTarget): Promise<Set<string>> {
  let byTarget = knownOnTarget.get(ctx);
  if (!byTarget) knownOnTarget.set(ctx, (byTarget = new Map()));
  let names = byTarget.get(target.name);
  if (!names) {
    names = new Set((await listWal(target)).keys());
    byTarget.set(target.name, names);
  }
  return names;
}

/**
 * One pass over the spool: each file sealed once, written to the targets lacking it, recorded,
 * and removed once every target holds it. A target that fails keeps its files in the spool
 * (raises `wal_ship_failed` for it); the others go on. Runs under an advisory lock.
 */
export async function shipSpool(ctx: ApplianceContext): Promise<ShipOutcome> {
  const dir = spoolDir(ctx);
  const out: ShipOutcome = { shipped: [], failed: [], waiting: 0, spoolBytes: 0 };
  let files = spooledFiles(dir);
  if (files.length === 0) return out;
  const lock = await tryJobLock(ctx, WAL_SHIP_LOCK);
  if (!lock) return { ...out, waiting: files.length, spoolBytes: files.reduce((n, f) => n + f.bytes, 0) };
  const secret = ctx.rootKey.material();
  let targets: SnapshotTarget[] = [];
  try {
    const policy = await inScope(ctx.db.app, { kind: "appliance" }, (t) => readPolicyRow(ctx, t));
    targets = openPolicyTargets(ctx, policy);
    if (targets.length === 0) {
      // No target: nothing could ever restore these files (a point-in-time recovery starts from a
      // base backup, and there is none without a target), and keeping them would fill the spool
      // and then pg_wal. Coverage starts with the first base backup once a target is saved.
      for (const file of files) fs.rmSync(path.join(dir, file.name), { force: true });
      return { ...out, discarded: files.length };
    }
    const recovery = await recoveryPublicKey(ctx);
    const retainUntil = policy.object_lock_days ? new Date(ctx.clock.now().getTime() + policy.object_lock_days * 86_400_000) : undefined;
    const broken = new Map<string, string>();
    files = spooledFiles(dir);
    for (const file of files) {
      const todo: SnapshotTarget[] = [];
      for (const t of targets) {
        if (broken.has(t.name)) continue;
        try {
          if (!(await namesOn(ctx, t)).has(file.name)) todo.push(t);
        } catch (err) {
          broken.set(t.name, `cannot list: ${(err as Error).message}`);
        }
      }
      const done: string[] = [];
      if (todo.length) {
        const bytes = fs.readFileSync(path.join(dir, file.name));
        const { object } = await sealWalFile({ name: file.name, bytes, archivedAt: file.archivedAt, applianceSecret: secret, recoveryPublicKey: recovery });
        await Promise.all(
          todo.map(async (t) => {
            try {
              await t.putOnce(walLayout.object(file.name), object, { retainUntil });
              (await namesOn(ctx, t)).add(file.name);
              done.push(t.name);
            } catch (err) {
              // Written by a pass that died before removing it from the spool: the target has it.
              const again = await listWal(t).catch(() => undefined);
              if (again?.has(file.name)) {
                (await namesOn(ctx, t)).add(file.name);
                return;
              }
              broken.set(t.name, `${file.name}: ${(err as Error).message}`);
            }
          }),
        );
        if (done.length) {
          const rows = await inScope(ctx.db.app, { kind: "appliance" }, (t) =>
            t.rows<{ xid: string }>(
              `INSERT INTO pitr_wal (name, target, archived_at, shipped_at, stored_bytes)
               SELECT $1, unnest($2::text[]), $3, $4, $5 ON CONFLICT (target, name) DO NOTHING
               RETURNING pg_current_xact_id()::text AS xid`,
              [file.name, done, file.archivedAt, ctx.clock.now(), object.length],
            ),
          );
          // The shipper's own record of a shipment is not a write to close a segment for (rpo-objective.ts).
          if (rows[0]) bookkeeping(ctx).add(rows[0].xid);
        }
      }
      if (targets.every((t) => !broken.has(t.name))) {
        fs.rmSync(path.join(dir, file.name), { force: true });
        out.shipped.push({ name: file.name, targets: done });
      }
    }
    const left = spooledFiles(dir);
    out.waiting = left.length;
    out.spoolBytes = left.reduce((n, f) => n + f.bytes, 0);
    out.failed = [...broken].map(([target, error]) => ({ target, error }));
    await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
      for (const target of targets) {
        const error = broken.get(target.name);
        if (error) await raiseAlert(ctx, t, "wal_ship_failed", `${out.waiting} WAL file(s) wait in the spool for this target: ${error}`.slice(0, 900), target.name);
        else await clearAlert(ctx, t, "wal_ship_failed", target.name);
      }
      const limit = ctx.config.backup.walSpoolLimitMiB * 1024 * 1024;
      if (out.spoolBytes >= limit * 0.9) {
        await raiseAlert(ctx, t, "wal_spool_full", `the WAL spool holds ${Math.round(out.spoolBytes / 1048576)} MiB of its ${ctx.config.backup.walSpoolLimitMiB} MiB limit`);
      } else await clearAlert(ctx, t, "wal_spool_full");
    });
    return out;
  } finally {
    await Promise.all(targets.map((t) => t.close().catch(() => {})));
    await lock.release();
  }
}

/**
 * An external PostgreSQL (the compose file's `db`) restarted on its own: its checkpointer again
 * ignores archive_timeout until its first checkpoint (db/wal-archive.ts wakeCheckpointer), so a
 * changed `pg_postmaster_start_time()` wakes it, as the daemon's own start does. `seen` carries
 * the start time between passes; the first pass only records it (the daemon's start woke it).
 */
export async function wakeAfterServerRestart(ctx: ApplianceContext, seen: { startedAt?: string }): Promise<"woken" | "unchanged" | "not-archiving" | "denied"> {
  const row = await ctx.db.owner.one<{ at: string }>("SELECT pg_postmaster_start_time()::text AS at");
  if (!row) return "unchanged";
  const before = seen.startedAt;
  seen.startedAt = row.at;
  if (before === undefined || before === row.at) return "unchanged";
  const woken = await wakeCheckpointer(ctx.db.owner.url());
  if (woken === "denied")
    ctx.log.warn(`PostgreSQL restarted (at ${row.at}) and this role may not reload its configuration: archive_timeout applies after its first checkpoint (docs/backups.md)`);
  else ctx.log.info(`PostgreSQL restarted (at ${row.at}): its checkpointer was woken, archive_timeout bounds the recovery point again`);
  return woken;
}

/** One pass of the shipper: what the recovery point objective decided, and what was shipped. */
export type ShipperPass = { objective?: ObjectiveDecision; switched?: string | null; ship?: ShipOutcome; shipMs: number };

/**
 * The WAL shipper's passes: each notices a restart of an external PostgreSQL (wakeAfterServerRestart),
 * keeps the recovery point objective (rpo-objective.ts: closes the segment holding the oldest write
 * not yet on every target once it is `rpoObjectiveSeconds` minus the lead old), and ships the spool.
 * `intervalMs` is the time between passes (the lead counts it).
 */
export function createWalShipper(ctx: ApplianceContext, opts: { intervalMs?: number } = {}): { pass(): Promise<ShipperPass>; readonly objective: RpoObjective } {
  const intervalMs = opts.intervalMs ?? ctx.config.backup.walShipIntervalMs;
  const objective = new RpoObjective(ctx.config.backup.rpoObjectiveSeconds * 1000, intervalMs);
  const server: { startedAt?: string } = {};
  let deniedLogged = false;
  let failing = new Set<string>();
  return {
    objective,
    async pass() {
      if (ctx.config.database.url) await wakeAfterServerRestart(ctx, server).catch(() => {}); // down: the circuit says so; next pass
      const out: ShipperPass = { shipMs: 0 };
      if (ctx.rootKey.isSealed) return out;
      const switchedAt = Date.now();
      out.objective = await keepObjective(ctx, objective, failing);
      if (out.objective?.kind === "switch") {
        out.switched = await closeSegment(ctx, 30_000);
        if (out.switched) objective.closed(out.switched);
        else if (!deniedLogged) {
          deniedLogged = true;
          ctx.log.warn("the database role may not call pg_switch_wal(): the recovery point rests on archive_timeout alone (docs/backups.md, Recovery point objective)");
        }
      }
      const t0 = Date.now();
      out.ship = await shipSpool(ctx);
      out.shipMs = Date.now() - t0;
      failing = new Set(out.ship.failed.map((f) => f.target));
      if (out.switched && out.ship.shipped.some((f) => f.name === out.switched)) objective.shipped(Date.now() - switchedAt);
      else if (out.ship.shipped.length) objective.shipped(out.shipMs);
      return out;
    },
  };
}

/** Reads the position and, while writes wait, the newest segment on every target; then decides. Undefined without a target or on a standby. */
async function keepObjective(ctx: ApplianceContext, objective: RpoObjective, failing: ReadonlySet<string>): Promise<ObjectiveDecision | undefined> {
  const position = await readWalPosition(ctx);
  if (!position) return undefined;
  const own = bookkeeping(ctx);
  objective.observe(position, own);
  for (const x of own) if (BigInt(x) < position.xmax && !position.inProgress.includes(x)) own.delete(x);
  if (!objective.waiting) return objective.decide(Date.now(), position.segment);
  // The newest WAL segment every configured target holds (shipped in order, so no gap below it).
  const covered = await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    // A target that failed the last pass cannot be kept within any objective (wal_ship_failed and
    // rpo_exceeded say so); the others still can.
    const names = (await readPolicyRow(ctx, t)).targets.map((d) => d.name).filter((n) => !failing.has(n));
    if (names.length === 0) return undefined;
    const rows = await t.rows<{ name: string | null }>(
      `SELECT (SELECT name FROM pitr_wal w WHERE w.target = n AND w.name ~ '^[0-9A-F]{24}$' AND w.pruned_at IS NULL ORDER BY name DESC LIMIT 1) AS name
         FROM unnest($1::text[]) n`,
      [names],
    );
    if (rows.some((r) => r.name === null)) return null;
    return rows.map((r) => r.name!).sort((a, b) => a.slice(8).localeCompare(b.slice(8)))[0]!;
  });
  // No target (the shipper discards the spool), or none reachable: no objective can be kept.
  if (covered === undefined) {
    objective.forget();
    return undefined;
  }
  objective.cover(covered);
  return objective.decide(Date.now(), position.segment);
}

/** Ships the spool every `walShipIntervalMs`, one pass at a time (createWalShipper); failures are alerts, not crashes. */
export function startWalShipper(ctx: ApplianceContext): { stop(): Promise<void> } {
  if (!ctx.config.backup.walArchiving) return { stop: async () => {} };
  const shipper = createWalShipper(ctx);
  let running: Promise<unknown> | undefined;
  let stopped = false;
  const tick = () => {
    if (running || stopped) return;
    running = shipper
      .pass()
      .catch((err: Error) => ctx.log.warn(`WAL shipping pass failed: ${err.message}`))
      .finally(() => (running = undefined));
  };
  const timer = setInterval(tick, ctx.config.backup.walShipIntervalMs);
  timer.unref();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}

// ---- base backups ----------------------------------------------------------------------------------

/**
 * Where a base backup reads the cluster: a superuser session and the data directory. The embedded
 * PostgreSQL's own; or, with an external one (the compose file's), the owner role's session (the
 * image's superuser) and `database.serverDataDir`, the server's data directory as this daemon sees
 * it (the compose file mounts the `db` volume read-only; docs/backups.md "Compose PostgreSQL").
 */
function baseBackupSource(ctx: ApplianceContext): { connect: () => Promise<pg.Client>; dataDir: string; app?: { database: string; owner: string } } {
  if (ctx.config.database.url) {
    const dataDir = ctx.config.database.serverDataDir;
    if (!dataDir) {
      throw new Unavailable(
        "base backups read the PostgreSQL data directory: set database.serverDataDir (WARDKEEP_DATABASE_SERVER_DATA_DIR) to the external server's data directory as this daemon sees it, mounted read-only (docs/backups.md, Compose PostgreSQL)",
      );
    }
    return { connect: () => ctx.db.owner.dedicatedClient("wardkeep-basebackup"), dataDir };
  }
  const password = fs.readFileSync(inDataDir(ctx.config, "secrets/pg-superuser-password"), "utf8").trim();
  const superuserUrl = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${ctx.config.database.embeddedPort}/postgres`;
  return {
    connect: async () => {
      const c = new pg.Client({ connectionString: superuserUrl, application_name: "wardkeep-basebackup" } as pg.ClientConfig);
      await c.connect();
      return c;
    },
    dataDir: inDataDir(ctx.config, "pg"),
    app: { database: EMBEDDED_DATABASE, owner: OWNER_ROLE },
  };
}

/**
 * The data directory must be the connected server's: its PG_VERSION is the server's major and its
 * pg_control (first 8 bytes: the system identifier, native byte order) names the same cluster. A
 * wrong or unreadable path fails here in one line instead of shipping a backup nothing can restore.
 */
async function checkDataDir(client: pg.Client, dataDir: string): Promise<void> {
  const { rows } = await client.query<{ sysid: string; major: string }>(
    "SELECT system_identifier::text AS sysid, current_setting('server_version_num')::int / 10000 || '' AS major FROM pg_control_system()",
  );
  const server = rows[0]!;
  let version: string;
  let sysid: string;
  try {
    version = fs.readFileSync(path.join(dataDir, "PG_VERSION"), "utf8").trim();
    const fd = fs.openSync(path.join(dataDir, "global", "pg_control"), "r");
    try {
      const head = Buffer.alloc(8);
      fs.readSync(fd, head, 0, 8, 0);
      sysid = head.readBigUInt64LE(0).toString();
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Unavailable(
      `database.serverDataDir ${dataDir} cannot be read (${e.code ?? e.message}): mount the server's data directory there, read-only, with group access (docs/backups.md, Compose PostgreSQL)`,
    );
  }
  if (version !== server.major || sysid !== server.sysid) {
    throw new Unavailable(
      `database.serverDataDir ${dataDir} is not the connected server's data directory (PostgreSQL ${version}, system identifier ${sysid}; the server is ${server.major}, ${server.sysid})`,
    );
  }
}

/**
 * Closes the WAL segment being written (`pg_switch_wal`, as a superuser: the embedded one, or the
 * compose PostgreSQL's owner role) and waits (up to `waitMs`) until PostgreSQL's archiver has put it
 * in the spool. Returns the segment's name, or null when the role may not switch.
 */
export async function closeSegment(ctx: ApplianceContext, waitMs = 30_000): Promise<string | null> {
  const client = ctx.config.database.url ? await ctx.db.owner.dedicatedClient("wardkeep-wal-switch") : await baseBackupSource(ctx).connect();
  try {
    let wal: string;
    try {
      wal = (await client.query<{ w: string }>("SELECT pg_walfile_name(pg_switch_wal()) AS w")).rows[0]!.w;
    } catch (err) {
      if ((err as { code?: string }).code === "42501") return null;
      throw err;
    }
    for (const deadline = Date.now() + waitMs; Date.now() < deadline; await new Promise((r) => setTimeout(r, 50))) {
      const [a] = (await client.query<{ last: string | null }>("SELECT last_archived_wal AS last FROM pg_stat_archiver")).rows;
      if (a?.last && a.last.slice(8) >= wal.slice(8)) break;
    }
    return wal;
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * Closes the segment being written (closeSegment) and ships the spool: every transaction committed
 * before this call is then on every reachable target. Returns the segment's name, or null when the
 * role may not switch (then nothing is shipped).
 */
export async function closeAndShipSegment(ctx: ApplianceContext): Promise<string | null> {
  const wal = await closeSegment(ctx);
  if (!wal) return null;
  // The background shipper may hold the shipping lock: wait (up to 10 s) until the segment has left the spool.
  const dir = spoolDir(ctx);
  for (const deadline = Date.now() + 10_000; Date.now() < deadline;) {
    await shipSpool(ctx);
    if (!spooledFiles(dir).some((f) => f.name === wal)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return wal;
}

export type BaseBackupRun = BaseBackupResult & { status: "complete" | "partial" | "failed" };

/** Takes a base backup to every target, records it (and its WAL range) and applies retention. */
export async function runBaseBackup(ctx: ApplianceContext, trigger: "schedule" | "manual" | "cli" = "manual"): Promise<BaseBackupRun> {
  const secret = ctx.rootKey.material();
  const source = baseBackupSource(ctx);
  if (ctx.config.database.url) {
    const c = await source.connect();
    try {
      await checkDataDir(c, source.dataDir);
    } finally {
      await c.end().catch(() => {});
    }
  }
  const lock = await tryJobLock(ctx, BASE_BACKUP_LOCK, 30_000);
  if (!lock) throw new Unavailable("another base backup is running");
  const targets = openPolicyTargets(ctx, await inScope(ctx.db.app, { kind: "appliance" }, (t) => readPolicyRow(ctx, t)));
  try {
    if (targets.length === 0) throw new Unavailable("no backup target is configured");
    const recovery = await recoveryPublicKey(ctx);
    const started = ctx.clock.now();
    let result: BaseBackupResult;
    try {
      result = await takeBaseBackup({
        connect: source.connect,
        dataDir: source.dataDir,
        app: source.app,
        targets,
        applianceSecret: secret,
        recoveryPublicKey: recovery,
        appVersion: APP_VERSION,
        now: () => ctx.clock.now(),
      });
    } catch (err) {
      await inScope(ctx.db.app, { kind: "appliance" }, (t) => raiseAlert(ctx, t, "base_backup_failed", `base backup failed: ${(err as Error).message}`));
      throw err;
    }
    const ok = result.outcomes.filter((o) => o.ok);
    const status = ok.length === targets.length ? "complete" : ok.length ? "partial" : "failed";
    const b = result.body;
    await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
      await t.exec(
        `INSERT INTO pitr_base_backups (id, status, trigger, started_at, finished_at, timeline, start_lsn, stop_lsn, start_wal, stop_wal, stored_bytes, targets, phases, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13::jsonb, $14)`,
        [
          result.id,
          status,
          trigger,
          started,
          ctx.clock.now(),
          b.timeline,
          b.startLsn,
          b.stopLsn,
          b.startWal,
          b.stopWal,
          b.object.storedBytes,
          JSON.stringify(result.outcomes),
          JSON.stringify(result.phases),
          status === "complete"
            ? null
            : result.outcomes
                .map((o) => `${o.target}: ${o.error ?? "ok"}`)
                .join("; ")
                .slice(0, 1000),
        ],
      );
      if (status === "complete") await clearAlert(ctx, t, "base_backup_failed");
      else
        await raiseAlert(
          ctx,
          t,
          "base_backup_failed",
          `base backup ${result.id} ${status}: ${result.outcomes
            .filter((o) => !o.ok)
            .map((o) => `${o.target}: ${o.error}`)
            .join("; ")}`,
        );
    });
    for (const t of targets) await applyPitrRetention(ctx, t).catch((err: Error) => ctx.log.warn(`PITR retention on ${t.name} failed: ${err.message}`));
    return { ...result, status };
  } finally {
    await Promise.all(targets.map((t) => t.close().catch(() => {})));
    await lock.release();
  }
}

export type PitrRetention = { target: string; baseBackupsPruned: string[]; walPruned: number; keptFrom?: string };

/**
 * Keeps the newest `baseBackupsKept` complete base backups on a target and every WAL file from
 * the oldest kept one's start segment on (whatever its timeline: a later timeline branches off a
 * kept one); deletes older base backups and the WAL only they needed. Nothing is deleted while
 * fewer base backups than that exist, and a delete a WORM lock refuses is left for a later pass.
 */
export async function applyPitrRetention(ctx: ApplianceContext, target: SnapshotTarget): Promise<PitrRetention> {
  const keep = ctx.config.backup.baseBackupsKept;
  const secret = ctx.rootKey.material();
  const { complete } = await listBaseBackups(target);
  const out: PitrRetention = { target: target.name, baseBackupsPruned: [], walPruned: 0 };
  if (complete.length <= keep) return out;
  const kept = complete.slice(-keep);
  const oldest = await openBaseBackupManifest(target, kept[0]!, { applianceSecret: secret }, [manifestSigner(secret).publicKeyRaw]);
  oldest.key.fill(0);
  const from = parseSegment(oldest.body.startWal, oldest.body.walSegmentBytes).segno;
  out.keptFrom = oldest.body.startWal;
  for (const id of complete.slice(0, -keep)) {
    try {
      await target.delete(baseBackupLayout.manifest(id));
      await target.delete(baseBackupLayout.object(id)).catch(() => {});
      out.baseBackupsPruned.push(id);
    } catch (err) {
      ctx.log.warn(`base backup ${id} on ${target.name} could not be pruned: ${(err as Error).message}`);
    }
  }
  const pruned: string[] = [];
  for (const name of (await listWal(target)).keys()) {
    const seg = name.slice(0, 24);
    if (!WAL_SEGMENT.test(seg) || parseSegment(seg, oldest.body.walSegmentBytes).segno >= from) continue;
    try {
      await target.delete(walLayout.object(name));
      pruned.push(name);
    } catch {
      /* WORM-locked until its retention ends; the next pass tries again */
    }
  }
  out.walPruned = pruned.length;
  knownOnTarget.get(ctx)?.delete(target.name);
  await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    if (pruned.length) await t.exec("UPDATE pitr_wal SET pruned_at = $3 WHERE target = $1 AND name = ANY($2::text[])", [target.name, pruned, ctx.clock.now()]);
    if (out.baseBackupsPruned.length) await t.exec("UPDATE pitr_base_backups SET status = 'pruned' WHERE id = ANY($1::text[])", [out.baseBackupsPruned]);
  });
  return out;
}

// ---- recovery point ------------------------------------------------------------------------------

export type PitrTargetStatus = {
  target: string;
  /** Newest WAL file shipped there, and when PostgreSQL archived it. */
  newestWal: string | null;
  newestArchivedAt: string | null;
  /** How old that newest file is now (seconds), whether or not newer WAL waits. */
  newestAgeSeconds: number | null;
  /** Seconds of committed work the target would lose now: 0 when it holds everything written so far. */
  rpoSeconds: number | null;
};

export type PitrStatus = {
  archiving: boolean;
  archiveTimeoutSeconds: number;
  rpoObjectiveSeconds: number;
  spool: { files: number; bytes: number; limitBytes: number };
  archiver: { archivedCount: number; failedCount: number; lastArchivedAt: string | null; lastFailedAt: string | null; lastFailedWal: string | null; failing: boolean };
  targets: PitrTargetStatus[];
  lastBaseBackup: { id: string; status: string; finishedAt: string | null } | null;
};

/** The recovery point of every configured target, the spool and PostgreSQL's archiver, as the console and /metrics show them. */
export async function pitrStatus(ctx: ApplianceContext): Promise<PitrStatus> {
  const files = ctx.config.backup.walArchiving ? spooledFiles(spoolDir(ctx)) : [];
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const policy = await readPolicyRow(ctx, t);
    const [a] = await t.rows<{
      archived_count: string;
      failed_count: string;
      last_archived_time: Date | null;
      last_failed_time: Date | null;
      last_failed_wal: string | null;
      current: string | null;
    }>(
      `SELECT archived_count::text, failed_count::text, last_archived_time, last_failed_time, last_failed_wal,
              CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END AS current
         FROM pg_stat_archiver`,
    );
    const newest = await t.rows<{ target: string; name: string; archived_at: Date }>(
      `SELECT DISTINCT ON (target) target, name, archived_at FROM pitr_wal WHERE name ~ '^[0-9A-F]{24}$' AND pruned_at IS NULL ORDER BY target, archived_at DESC, name DESC`,
    );
    const [base] = await t.rows<{ id: string; status: string; finished_at: Date | null }>("SELECT id, status, finished_at FROM pitr_base_backups ORDER BY started_at DESC LIMIT 1");
    const now = ctx.clock.now().getTime();
    const targets = policy.targets.map((def): PitrTargetStatus => {
      const n = newest.find((r) => r.target === def.name);
      if (!n) return { target: def.name, newestWal: null, newestArchivedAt: null, newestAgeSeconds: null, rpoSeconds: null };
      // Everything up to the segment being written is on the target: nothing would be lost now.
      const behind = files.length > 0 || (a?.current != null && a.current.slice(8) > n.name.slice(8));
      return {
        target: def.name,
        newestWal: n.name,
        newestArchivedAt: n.archived_at.toISOString(),
        newestAgeSeconds: Math.max(0, Math.round((now - n.archived_at.getTime()) / 1000)),
        rpoSeconds: behind ? Math.max(0, Math.round((now - n.archived_at.getTime()) / 1000)) : 0,
      };
    });
    const failing = !!a?.last_failed_time && (!a.last_archived_time || a.last_failed_time > a.last_archived_time);
    return {
      archiving: ctx.config.backup.walArchiving,
      archiveTimeoutSeconds: ctx.config.backup.archiveTimeoutSeconds,
      rpoObjectiveSeconds: ctx.config.backup.rpoObjectiveSeconds,
      spool: { files: files.length, bytes: files.reduce((s, f) => s + f.bytes, 0), limitBytes: ctx.config.backup.walSpoolLimitMiB * 1024 * 1024 },
      archiver: {
        archivedCount: Number(a?.archived_count ?? 0),
        failedCount: Number(a?.failed_count ?? 0),
        lastArchivedAt: a?.last_archived_time?.toISOString() ?? null,
        lastFailedAt: a?.last_failed_time?.toISOString() ?? null,
        lastFailedWal: a?.last_failed_wal ?? null,
        failing,
      },
      targets,
      lastBaseBackup: base ? { id: base.id, status: base.status, finishedAt: base.finished_at?.toISOString() ?? null } : null,
    };
  });
}

/** Raises or clears `rpo_exceeded` per target and `archiver_failed` (run by the backup watchdog). */
export async function evaluatePitrAlerts(ctx: ApplianceContext): Promise<PitrStatus> {
  const status = await pitrStatus(ctx);
  if (!status.archiving) return status;
  await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    for (const target of status.targets) {
      if (target.rpoSeconds != null && target.rpoSeconds > ctx.config.backup.rpoAlertSeconds) {
        await raiseAlert(
          ctx,
          t,
          "rpo_exceeded",
          `the newest WAL on this target was archived ${target.rpoSeconds} s ago (threshold ${ctx.config.backup.rpoAlertSeconds} s)`,
          target.target,
        );
      } else await clearAlert(ctx, t, "rpo_exceeded", target.target);
    }
    if (status.archiver.failing) {
      await raiseAlert(
        ctx,
        t,
        "archiver_failed",
        `PostgreSQL's archive_command failed for ${status.archiver.lastFailedWal ?? "a WAL file"} at ${status.archiver.lastFailedAt} (${status.archiver.failedCount} failures so far)`,
      );
    } else await clearAlert(ctx, t, "archiver_failed");
  });
  return status;
}

const pitrMetricsRegistered = new WeakSet<object>();

/** /metrics: recovery point per target, spool, archiver failures (read at scrape time). */
export function registerPitrMetrics(ctx: ApplianceContext): void {
  if (!ctx.config.backup.walArchiving || pitrMetricsRegistered.has(ctx.metrics)) return;
  pitrMetricsRegistered.add(ctx.metrics);
  let inFlight: Promise<PitrStatus | undefined> | undefined;
  const state = () =>
    (inFlight ??= pitrStatus(ctx)
      .catch(() => undefined)
      .finally(() => (inFlight = undefined)));
  new Gauge({
    name: "wardkeep_pitr_wal_newest_age_seconds",
    help: "Age of the newest WAL file archived on each target (the recovery point if the appliance were lost now, when WAL is waiting)",
    labelNames: ["target"],
    registers: [ctx.metrics],
    async collect() {
      const s = await state();
      for (const t of s?.targets ?? []) if (t.newestArchivedAt) this.set({ target: t.target }, Math.max(0, (ctx.clock.now().getTime() - Date.parse(t.newestArchivedAt)) / 1000));
    },
  });
  new Gauge({
    name: "wardkeep_pitr_rpo_seconds",
    help: "Seconds of committed work each target would lose now (0 when it holds all WAL written so far)",
    labelNames: ["target"],
    registers: [ctx.metrics],
    async collect() {
      const s = await state();
      for (const t of s?.targets ?? []) if (t.rpoSeconds != null) this.set({ target: t.target }, t.rpoSeconds);
    },
  });
  new Gauge({
    name: "wardkeep_pitr_wal_spool_bytes",
    help: "Bytes of WAL waiting in the spool to be shipped",
    registers: [ctx.metrics],
    async collect() {
      this.set((await state())?.spool.bytes ?? 0);
    },
  });
  new Gauge({
    name: "wardkeep_pitr_archiver_failures",
    help: "pg_stat_archiver.failed_count: archive_command failures since the statistics were reset",
    registers: [ctx.metrics],
    async collect() {
      this.set((await state())?.archiver.failedCount ?? 0);
    },
  });
  new Gauge({
    name: "wardkeep_pitr_archiver_failing",
    help: "1 when PostgreSQL's last archive attempt failed (pg_stat_archiver)",
    registers: [ctx.metrics],
    async collect() {
      this.set((await state())?.archiver.failing ? 1 : 0);
    },
  });
}
