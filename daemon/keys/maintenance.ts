/**
 * Background key work. Per replica (its own memory): retry unsealing after a migration and
 * persist nonce counts. Appliance-wide (the `key-maintenance` job, one replica per fire): finish
 * KEK rewraps and data key re-encryptions, destroy keys whose shredding grace period has ended.
 * Each step is also safe to run concurrently (SKIP LOCKED batches and advisory locks).
 */
import type { ApplianceContext } from "../context.js";
import type { JobSpec } from "../jobs/index.js";
import { repeatInBackground } from "../repeat.js";
import { flushNonceCounts } from "./keyring.js";
import { reencryptPending, rewrapPending } from "./rotation.js";
import { destroyDueKeys, followDestroyedKeys } from "./shred.js";
import { continueOpenTenantRotations } from "./tenant-rotation.js";
import { retryUnsealAfterMigration } from "./unseal/index.js";

export type KeyMaintenanceRun = { nonceCounts: number; rewrapped: number; reencrypted: number; destroyed: number; errors: string[] };

type Step = (name: string, work: () => Promise<void>) => Promise<void>;

function stepper(run: KeyMaintenanceRun): Step {
  return async (name, work) => {
    try {
      await work();
    } catch (err) {
      run.errors.push(`${name}: ${(err as Error).message}`);
    }
  };
}

/** One pass of everything; `maxBatches` bounds the rewrap and re-encryption work per pass. */
export async function runKeyMaintenance(ctx: ApplianceContext, options: { maxBatches?: number } = {}): Promise<KeyMaintenanceRun> {
  const run: KeyMaintenanceRun = { nonceCounts: 0, rewrapped: 0, reencrypted: 0, destroyed: 0, errors: [] };
  await replicaUpkeep(ctx, run);
  await sharedMaintenance(ctx, run, options);
  for (const error of run.errors) ctx.log.warn(`key maintenance: ${error}`);
  return run;
}

async function replicaUpkeep(ctx: ApplianceContext, run: KeyMaintenanceRun): Promise<void> {
  const step = stepper(run);
  await step("unseal after migration", () => retryUnsealAfterMigration(ctx));
  await step("nonce counts", async () => {
    run.nonceCounts = await flushNonceCounts(ctx);
  });
}

async function sharedMaintenance(ctx: ApplianceContext, run: KeyMaintenanceRun, options: { maxBatches?: number }): Promise<void> {
  const step = stepper(run);
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
}

/** The appliance-wide part, as a job: shredding, KEK rewrap, re-encryption (a failed step fails the run). */
export const keyMaintenanceJob: JobSpec = {
  name: "key-maintenance",
  summary: "Destroys data keys past their shredding grace period, finishes KEK rewraps and re-encrypts data under new key versions",
  destructive: true,
  schedule: (ctx) => ctx.config.jobs.schedules.keyMaintenance || { everyMs: ctx.config.keys.maintenanceIntervalSeconds * 1000 },
  async run(ctx) {
    const run: KeyMaintenanceRun = { nonceCounts: 0, rewrapped: 0, reencrypted: 0, destroyed: 0, errors: [] };
    await sharedMaintenance(ctx, run, {});
    if (run.errors.length) throw new Error(`key maintenance: ${run.errors.join("; ")}`);
    return { counts: { destroyed: run.destroyed, rewrapped: run.rewrapped, reencrypted: run.reencrypted } };
  },
};

/** Per-replica upkeep every keys.maintenanceIntervalSeconds until stopped; stop() flushes the counts. */
export function startKeyMaintenance(ctx: ApplianceContext): { stop(): Promise<void> } {
  const unfollow = followDestroyedKeys(ctx);
  const job = repeatInBackground({ everyMs: ctx.config.keys.maintenanceIntervalSeconds * 1000, onError: () => undefined }, async () => {
    const run: KeyMaintenanceRun = { nonceCounts: 0, rewrapped: 0, reencrypted: 0, destroyed: 0, errors: [] };
    await replicaUpkeep(ctx, run);
    for (const error of run.errors) ctx.log.warn(`key maintenance: ${error}`);
  });
  return {
    async stop() {
      unfollow();
      await job.stop();
      await flushNonceCounts(ctx).catch((err: unknown) => ctx.log.warn(`could not persist nonce counts at shutdown: ${(err as Error).message}`));
    },
  };
}
