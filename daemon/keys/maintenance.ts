/**
 * Background key work, on every replica (each step is safe to run concurrently: SKIP LOCKED
 * batches and advisory locks): persist nonce counts, finish KEK rewraps and data key
 * re-encryptions, destroy keys whose shredding grace period has ended.
 */
import type { ApplianceContext } from "../context.js";
import { repeatInBackground } from "../repeat.js";
import { flushNonceCounts } from "./keyring.js";
import { reencryptPending, rewrapPending } from "./rotation.js";
import { destroyDueKeys, followDestroyedKeys } from "./shred.js";
import { continueOpenTenantRotations } from "./tenant-rotation.js";
import { retryUnsealAfterMigration } from "./unseal/index.js";

export type KeyMaintenanceRun = { nonceCounts: number; rewrapped: number; reencrypted: number; destroyed: number; errors: string[] };

/** One pass; `maxBatches` bounds the rewrap and re-encryption work per pass. */
export async function runKeyMaintenance(ctx: ApplianceContext, options: { maxBatches?: number } = {}): Promise<KeyMaintenanceRun> {
  const run: KeyMaintenanceRun = { nonceCounts: 0, rewrapped: 0, reencrypted: 0, destroyed: 0, errors: [] };
  const step = async (name: string, work: () => Promise<void>) => {
    try {
      await work();
    } catch (err) {
      run.errors.push(`${name}: ${(err as Error).message}`);
    }
  };
  await step("unseal after migration", () => retryUnsealAfterMigration(ctx));
  await step("nonce counts", async () => {
    run.nonceCounts = await flushNonceCounts(ctx);
  });
  await step("shredding", async () => {
    run.destroyed = (await destroyDueKeys(ctx)).destroyed.length;
  });
  if (!ctx.rootKey.isSealed) {
    await step("KEK rewrap", async () => {
      run.rewrapped = (await rewrapPending(ctx, { maxBatches: options.maxBatches ?? 20 })).rewrapped;
    });
    // Before the general re-encryption: a run killed while giving its keys new versions resumes here.
    await step("tenant key rotation", async () => {
      await continueOpenTenantRotations(ctx, { maxBatches: options.maxBatches ?? 20 });
    });
    await step("re-encryption", async () => {
      run.reencrypted = (await reencryptPending(ctx, { maxBatches: options.maxBatches ?? 20 })).rewritten;
    });
  }
  for (const error of run.errors) ctx.log.warn(`key maintenance: ${error}`);
  return run;
}

/** Runs maintenance every keys.maintenanceIntervalSeconds until stopped; stop() flushes the counts. */
export function startKeyMaintenance(ctx: ApplianceContext): { stop(): Promise<void> } {
  // runKeyMaintenance logs its own failures.
  const unfollow = followDestroyedKeys(ctx);
  const job = repeatInBackground({ everyMs: ctx.config.keys.maintenanceIntervalSeconds * 1000, onError: () => undefined }, () => runKeyMaintenance(ctx));
  return {
    async stop() {
      unfollow();
      await job.stop();
      await flushNonceCounts(ctx).catch((err: unknown) => ctx.log.warn(`could not persist nonce counts at shutdown: ${(err as Error).message}`));
    },
  };
}
