import { Gauge } from "prom-client";
import type { ApplianceContext } from "../context.js";
import type { JobSpec } from "../jobs/index.js";
import { readChainHead, startAuditChainer } from "./chainer.js";
import { periodicCheckpoint } from "./checkpoints.js";
import { settleExportJobs } from "./pack-jobs.js";
import { dropExpiredAuditSegments } from "./retention.js";
import { startSiemForwarder } from "./siem.js";
import { pinAuditPublicKey } from "./signing-key.js";

/** The audit capability's recurring jobs (daemon/jobs runs them on one replica per fire). */
export const auditJobs: JobSpec[] = [
  {
    name: "audit-checkpoint",
    summary: "Signs a checkpoint of the audit chain head when events arrived since the last one",
    needsUnsealed: true,
    schedule: (ctx) => ctx.config.jobs.schedules.auditCheckpoint || { everyMs: ctx.config.audit.checkpointIntervalMinutes * 60_000 },
    async run(ctx) {
      await pinAuditPublicKey(ctx);
      const signed = await periodicCheckpoint(ctx);
      return { counts: { checkpoints: signed ? 1 : 0 } };
    },
  },
  {
    name: "audit-retention",
    summary: "Drops monthly audit segments older than audit retention (after anchoring their last hash)",
    destructive: true,
    schedule: (ctx) => ctx.config.jobs.schedules.auditRetention || "0 15 */6 * * *",
    async run(ctx) {
      const dropped = await dropExpiredAuditSegments(ctx);
      return { counts: { segments: dropped.length } };
    },
  },
];

/** The audit capability's continuous background work in a running daemon: chaining and SIEM forwarding. */
export function startAuditServices(ctx: ApplianceContext): { stop(): Promise<void> } {
  const chainer = startAuditChainer(ctx);
  // A growing intake means the chainer is stuck: alert on it (events are safe, not yet chained).
  new Gauge({
    name: "wardkeep_audit_intake_pending",
    help: "Audit events committed but not yet in the hash chain",
    registers: [ctx.metrics],
    async collect() {
      const n = await ctx.db.owner
        .transaction(async (t) => {
          await t.exec("SELECT set_config('wardkeep.scope', 'appliance', true)");
          const [r] = await t.rows<{ n: number }>("SELECT count(*)::int AS n FROM audit_intake");
          return r?.n ?? -1;
        })
        .catch(() => -1);
      this.set(n);
    },
  });
  new Gauge({
    name: "wardkeep_audit_chain_head_seq",
    help: "Sequence number of the last chained audit event",
    registers: [ctx.metrics],
    async collect() {
      this.set(Number((await readChainHead(ctx).catch(() => ({ seq: "-1" }))).seq));
    },
  });
  const siem = startSiemForwarder(ctx);
  pinAuditPublicKey(ctx).catch((err: Error) => ctx.log.warn(`audit public key not pinned: ${err.message}`));
  return {
    async stop() {
      await settleExportJobs();
      await chainer.stop();
      await siem?.stop();
    },
  };
}
