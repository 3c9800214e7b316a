/**
 * The key-store backup of a snapshot run (backup/keystore-backup.ts has the format and why): the
 * snapshot service calls `backUpKeyStore` once the data snapshot is published. A target that
 * holds the data but not the key store cannot be recovered from, so a key-store failure marks
 * that target failed in the run (the run becomes partial, or failed when no target has both).
 */
import { pruneKeyStoreBackups, writeKeyStoreBackup, type KeyStorePruneOutcome } from "../../backup/keystore-backup.js";
import type { SnapshotResult } from "../../backup/snapshot.js";
import type { SnapshotTarget } from "../../backup/targets/target.js";
import type { ApplianceContext } from "../context.js";
import { exportKeyStore } from "../keys/index.js";
import { APP_VERSION } from "../version.js";

export type KeyStoreRun = { written: string[]; failed: string[]; pruned: KeyStorePruneOutcome[] };

/**
 * Writes this run's key-store backup (same id as the snapshot) to every target that took the
 * snapshot, then prunes key-store backups older than keys.shredGraceDays on those targets.
 * Mutates `result.targets` / `result.ok` so the run's status tells the truth.
 */
export async function backUpKeyStore(
  ctx: ApplianceContext,
  run: { id: string; targets: SnapshotTarget[]; result: SnapshotResult; recoveryPublicKey: Buffer },
): Promise<KeyStoreRun> {
  const live = run.targets.filter((t) => run.result.targets.find((o) => o.target === t.name)?.ok);
  const out: KeyStoreRun = { written: [], failed: [], pruned: [] };
  const fail = (name: string, error: string) => {
    const o = run.result.targets.find((x) => x.target === name);
    if (o) Object.assign(o, { ok: false, error: o.error ? `${o.error}; ${error}` : error });
    out.failed.push(name);
  };
  const retentionDays = ctx.config.keys.shredGraceDays;
  try {
    const contents = await exportKeyStore(ctx, run.recoveryPublicKey);
    const { outcomes } = await writeKeyStoreBackup({
      targets: live,
      id: run.id,
      contents,
      applianceSecret: ctx.rootKey.material(),
      recoveryPublicKey: run.recoveryPublicKey,
      appVersion: APP_VERSION,
      now: ctx.clock.now(),
      retentionDays,
    });
    for (const o of outcomes) {
      if (o.ok) {
        out.written.push(o.target);
        const entry = run.result.targets.find((x) => x.target === o.target);
        if (entry) entry.bytes += o.bytes;
      } else {
        fail(o.target, o.error ?? "key-store backup failed");
        ctx.log.warn(`backup: key-store backup ${run.id} failed on target ${o.target}`, { target: o.target });
      }
    }
  } catch (err) {
    for (const t of live) fail(t.name, `key-store backup: ${(err as Error).message}`);
    ctx.log.error(`backup: key-store backup ${run.id} could not be made: ${(err as Error).message}`);
  }
  run.result.ok = run.result.targets.some((t) => t.ok);
  for (const t of live.filter((x) => out.written.includes(x.name))) {
    try {
      const p = await pruneKeyStoreBackups(t, ctx.clock.now(), retentionDays);
      out.pruned.push(p);
      if (p.pruned.length) ctx.log.info(`backup: pruned ${p.pruned.length} key-store backup(s) older than ${retentionDays} days from ${t.name}`, { target: t.name });
      // A WORM target that still refuses would keep destroyed keys restorable: loud, not fatal to the run.
      if (p.refused.length)
        ctx.log.error(`backup: target ${t.name} refused to delete ${p.refused.length} expired key-store backup(s); crypto-shredded keys stay recoverable until they go`, {
          target: t.name,
        });
    } catch (err) {
      ctx.log.warn(`backup: key-store retention on ${t.name} failed: ${(err as Error).message}`);
    }
  }
  return out;
}
