/**
 * Restore in place (docs/backups.md "Restore in place"): one of this appliance's snapshots
 * replaces its live database, and can itself be undone.
 *
 * checkConfirmation → openAndCheck (manifest signature; nothing changes on a failure) → maintenance
 * (API and SCIM answer 503 with Retry-After; every session ends) → takeSafetySnapshot (the live
 * database as it stands, trigger `pre_restore`) → loadIntoNewDatabase (restoreSnapshot into a new
 * database: digests, tags, row counts, audit chain to the manifest's head) → finishNewDatabase (the
 * live key store and backup catalogue carried in, shredded subjects purged, sessions ended, every
 * encrypted value checked against the key store and a sample decrypted) → swapDatabases (the new
 * database takes the live one's name; the replaced one is dropped, its keys would otherwise
 * outlive a later crypto-shredding) → reopen (the pools reconnect, the shred list is re-applied,
 * the restore and the safety snapshot's id are audited as events after the snapshot's head) →
 * maintenance ends.
 *
 * Until the swap nothing of the live database has changed but its sessions: any failure before it
 * drops the new database, and the old one goes on serving.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { manifestSigner } from "../../backup/keys.js";
import { checkEncryptedValues, describeUnreadable, purgeShreddedSubjects, registeredEncryptedColumns, type PurgeResult } from "../../backup/keystore-backup.js";
import { RestoreRefused } from "../../backup/errors.js";
import { openSnapshot, restoreSnapshot } from "../../backup/restore.js";
import { publicOrigin } from "../config/public-url.js";
import type { ApplianceContext } from "../context.js";
import { carryRows } from "../db/carry-rows.js";
import { Conflict, Invalid } from "../kernel/errors.js";
import { enterMaintenance, leaveMaintenance } from "../kernel/maintenance.js";
import { SYSTEM_ACTOR } from "../audit/append.js";
import { backupDataKeyLookup, carryKeyStoreInto, exportKeyStore, readDataKeyRows, reapplyShredList, unwrapBackupKeks, zeroize, type CarriedKeyStore } from "../keys/index.js";
import { auditVerifierFor } from "./audit-check.js";
import { databaseAdminUrl, scratchDatabaseFactory } from "./connections.js";
import { assertStillStored, audit, closeAll, recoveryPublicKey, runSnapshot, targetsHolding, tx, type AuditMeta, type RestoreOutcome } from "./service.js";

/** What the API and the CLI are told to wait while the restore runs (seconds). */
const RETRY_AFTER_SECONDS = 30;
/** The backup catalogue describes the targets, which a restore does not change: it comes along as it is now. */
const CATALOGUE_TABLES = ["backup_snapshots", "backup_snapshot_copies", "backup_drills", "pitr_wal", "pitr_base_backups", "pitr_drills"];

export type InPlaceDetails = {
  /** The snapshot of the live database taken first: restore it in place to undo this restore. */
  safetySnapshotId: string;
  /** Sessions ended (all of them: the accounts may differ in the restored data). */
  sessionsEnded: number;
  /** Key-store rows carried from the live appliance, per table. */
  keyStore: Record<string, number>;
  /** Subjects crypto-shredded since the snapshot whose rows were purged from the restored data. */
  purged: PurgeResult;
  /** Every stored encrypted value names a key the key store holds; a sample per column and tenant decrypted. */
  readable: { values: number; sampled: number; columns: number; tenants: number };
  /** Milliseconds the API answered 503. */
  maintenanceMs: number;
};

/** The name an in-place restore must be confirmed with: the appliance's host name as clients reach it (server.publicUrl or publicHostname). */
export function applianceName(ctx: Pick<ApplianceContext, "config">): string {
  return new URL(publicOrigin(ctx.config)).hostname;
}

export async function restoreInPlace(
  ctx: ApplianceContext,
  id: string,
  opts: { confirm: string; target?: string; meta?: AuditMeta; refuseWhileServing?: boolean },
): Promise<RestoreOutcome & { inPlace: InPlaceDetails }> {
  const secret = ctx.rootKey.material();
  const meta = opts.meta ?? { actor: SYSTEM_ACTOR };
  const failed = (reason: string) => tx(ctx, (t) => audit(ctx, t, meta, "backup.restore", "backup_snapshot", id, "failure", `in place: ${reason}`)).catch(() => {});
  let holding: Awaited<ReturnType<typeof targetsHolding>>;
  try {
    checkConfirmation(ctx, opts.confirm);
    await assertStillStored(ctx, id);
    if (opts.refuseWhileServing) await refuseWhileServing(ctx);
    holding = await targetsHolding(ctx, id, opts.target);
  } catch (err) {
    await failed((err as Error).message);
    throw err;
  }
  const { target, others } = holding;
  const signer = manifestSigner(secret).publicKeyRaw;
  try {
    try {
      zeroize((await openSnapshot(target, id, { applianceSecret: secret }, [signer])).key);
      databaseAdminUrl(ctx);
    } catch (err) {
      await failed((err as Error).message);
      throw err;
    }
    const started = performance.now();
    enterMaintenance(ctx, `restoring snapshot ${id} in place`, RETRY_AFTER_SECONDS);
    try {
      const sessionsEnded = await endSessions(ctx);
      const safety = await runSnapshot(ctx, { trigger: "pre_restore", meta });
      if (safety.status !== "complete" && safety.status !== "partial") {
        const why = `the safety snapshot ${safety.id} failed (${safety.error ?? "no target took it"}); nothing was restored`;
        await failed(why);
        throw new Conflict(why);
      }
      const scratch = await scratchDatabaseFactory(ctx, "wardkeep_inplace")();
      let restored: Awaited<ReturnType<typeof restoreSnapshot>>;
      let finished: Finished;
      try {
        restored = await restoreSnapshot({
          target,
          snapshotId: id,
          intoUrl: scratch.ownerUrl,
          appRole: ctx.db.appRole,
          opener: { applianceSecret: secret },
          trustedSigners: [signer],
          verifyAuditChain: auditVerifierFor(ctx, "appliance"),
        });
        finished = await finishNewDatabase(ctx, scratch.ownerUrl, secret);
        await swapDatabases(ctx, new URL(scratch.ownerUrl).pathname.slice(1));
      } catch (err) {
        await scratch.drop().catch((e: unknown) => ctx.log.warn(`backup: could not drop the database of a failed in-place restore: ${(e as Error).message}`));
        await failed(`${(err as Error).message}; the live database was left as it was (safety snapshot ${safety.id})`);
        throw err;
      }
      // From here the restored database is the live one: its audit chain continues after the snapshot's head.
      await reopen(ctx);
      await tx(ctx, async (t) => {
        await audit(
          ctx,
          t,
          meta,
          "backup.restore",
          "backup_snapshot",
          id,
          "success",
          `in place; ${sessionsEnded} session(s) ended; ${finished.purged.patients} shredded patient(s) purged`,
        );
        await audit(ctx, t, meta, "backup.restore.safety_snapshot", "backup_snapshot", safety.id, "success", `taken before snapshot ${id} was restored in place`);
      });
      await reapplyShredList(ctx);
      const maintenanceMs = Math.round(performance.now() - started);
      ctx.log.info(`backup: snapshot ${id} restored in place (safety snapshot ${safety.id}, ${maintenanceMs} ms in maintenance)`);
      return {
        ...restored,
        target: target.name,
        shredList: "reapplied",
        scratchDatabase: null,
        inPlace: { safetySnapshotId: safety.id, sessionsEnded, keyStore: finished.keyStore.rows, purged: finished.purged, readable: finished.readable, maintenanceMs },
      };
    } finally {
      leaveMaintenance(ctx);
    }
  } finally {
    await closeAll([target, ...others]);
  }
}

function checkConfirmation(ctx: ApplianceContext, confirm: string): void {
  const name = applianceName(ctx);
  if (confirm.trim().toLowerCase() !== name.toLowerCase()) {
    throw new Invalid(`type the appliance's name, ${name}, to confirm that the live database is to be replaced`, { field: "confirm" });
  }
}

/** The CLI runs with the daemon stopped: a serving daemon keeps a LISTEN connection (db/invalidation.ts) and would go on taking writes the restore loses. */
async function refuseWhileServing(ctx: ApplianceContext): Promise<void> {
  const [row] = await tx(ctx, (t) =>
    t.rows<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'wardkeep-invalidation'"),
  );
  if (row!.n > 0) {
    throw new Conflict(
      `a running Wardkeep daemon is connected to this database (${row!.n} replica(s)): stop it before restoring in place from the command line, or restore from the console (Backups), which holds the API in maintenance meanwhile`,
    );
  }
}

async function endSessions(ctx: ApplianceContext): Promise<number> {
  const rows = await tx(ctx, (t) =>
    t.rows<{ id: string }>("UPDATE sessions SET revoked_at = $1, revoked_reason = 'restore-in-place' WHERE revoked_at IS NULL RETURNING id", [ctx.clock.now()]),
  );
  return rows.length;
}

type Finished = { keyStore: CarriedKeyStore; purged: PurgeResult; readable: InPlaceDetails["readable"] };

/**
 * In one transaction on the new database: the live key store and backup catalogue, the rows of
 * subjects shredded since the snapshot purged, sessions ended, and every encrypted value checked
 * (the key it names is held; a sample per column and tenant decrypts with the live keys).
 */
async function finishNewDatabase(ctx: ApplianceContext, url: string, secret: Buffer): Promise<Finished> {
  const columns = await registeredEncryptedColumns();
  const contents = await exportKeyStore(ctx, await recoveryPublicKey(ctx));
  const keks = unwrapBackupKeks(contents, { applianceSecret: secret });
  const keys = backupDataKeyLookup(contents, keks);
  const client = new pg.Client({ connectionString: url, application_name: "wardkeep-restore" });
  await client.connect();
  try {
    await client.query("BEGIN");
    await client.query("SELECT set_config('wardkeep.scope', 'appliance', true), set_config('wardkeep.tenant_id', '', true)");
    const keyStore = await carryKeyStoreInto(ctx, client);
    await tx(ctx, (t) => carryRows(t, client, CATALOGUE_TABLES, { replace: true }));
    const now = ctx.clock.now();
    const purged = await purgeShreddedSubjects(client, keyStore.shredded, now);
    await client.query("UPDATE sessions SET revoked_at = $1, revoked_reason = 'restore-in-place' WHERE revoked_at IS NULL", [now]);
    const held = new Set((await readDataKeyRows(client)).map((d) => `${d.keyId}#${d.version}`));
    const readable = await checkEncryptedValues(client, columns, keys.lookup, { perTenant: 2, keySlots: held });
    if (!readable.ok)
      throw new RestoreRefused(`the restored data cannot be read with this appliance's key store (${describeUnreadable(readable, "live")}); the live database was left as it was`);
    await client.query("COMMIT");
    return { keyStore, purged, readable: { values: readable.values, sampled: readable.sampled, columns: readable.columns, tenants: readable.tenants } };
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    throw err;
  } finally {
    keys.dispose();
    for (const k of keks.values()) zeroize(k);
    await client.end().catch(() => {});
  }
}

/**
 * The new database takes the live one's name, as the database administrator's role: no new
 * connection to the live database, every open one ended (this daemon's pools, its LISTEN
 * connection, other replicas'), rename it away, rename the new one in, drop the old one. A
 * failure between the two renames puts the old name back.
 */
async function swapDatabases(ctx: ApplianceContext, fresh: string): Promise<void> {
  const live = ctx.db.owner.info.database;
  const replaced = `wardkeep_replaced_${randomBytes(5).toString("hex")}`;
  const admin = new pg.Client({ connectionString: databaseAdminUrl(ctx), application_name: "wardkeep-restore" });
  await admin.connect();
  const id = (n: string) => admin.escapeIdentifier(n);
  try {
    await admin.query(`ALTER DATABASE ${id(live)} WITH ALLOW_CONNECTIONS false`);
    try {
      await renameWhenIdle(admin, live, replaced);
    } catch (err) {
      await admin.query(`ALTER DATABASE ${id(live)} WITH ALLOW_CONNECTIONS true`).catch(() => {});
      throw err;
    }
    try {
      await admin.query(`ALTER DATABASE ${id(fresh)} RENAME TO ${id(live)}`);
    } catch (err) {
      await admin.query(`ALTER DATABASE ${id(replaced)} RENAME TO ${id(live)}`).catch(() => {});
      await admin.query(`ALTER DATABASE ${id(live)} WITH ALLOW_CONNECTIONS true`).catch(() => {});
      throw err;
    }
    await admin
      .query(`DROP DATABASE ${id(replaced)} WITH (FORCE)`)
      .catch((e: unknown) => ctx.log.error(`backup: the database replaced by an in-place restore (${replaced}) could not be dropped: ${(e as Error).message}; drop it by hand`));
  } finally {
    await admin.end().catch(() => {});
  }
}

/** Ends every connection to `from` and renames it; a pool that reconnected in between is ended again (ALLOW_CONNECTIONS false stops new ones). */
async function renameWhenIdle(admin: pg.Client, from: string, to: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", [from]);
    try {
      await admin.query(`ALTER DATABASE ${admin.escapeIdentifier(from)} RENAME TO ${admin.escapeIdentifier(to)}`);
      return;
    } catch (err) {
      // 55006: still being accessed by other users (a backend not yet gone).
      if ((err as { code?: string }).code !== "55006" || attempt >= 50) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** The pools lost every connection in the swap: wait until the circuit and a pooled query see the (new) database answer. */
async function reopen(ctx: ApplianceContext): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const answered =
      (await ctx.db.circuit.probeNow()) &&
      (await tx(ctx, (t) => t.rows("SELECT 1 AS ok")).then(
        () => true,
        () => false,
      ));
    if (answered) return;
    if (Date.now() > deadline) throw new Conflict("the restored database does not answer after the swap; see the daemon's log");
    await new Promise((r) => setTimeout(r, 200));
  }
}
