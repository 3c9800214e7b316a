import { Gauge } from "prom-client";
import type { ApplianceContext } from "../context.js";
import { readChainHead, startAuditChainer } from "./chainer.js";
import { periodicCheckpoint } from "./checkpoints.js";
import { settleExportJobs } from "./pack-jobs.js";
import { dropExpiredAuditSegments } from "./retention.js";
import { startSiemForwarder } from "./siem.js";
import { pinAuditPublicKey } from "./signing-key.js";

const RETENTION_LOCK = 7_305_002;
const RETENTION_EVERY_MS = 6 * 3_600_000;

/** The audit capability's background work in a running daemon: chaining, checkpoints, retention, SIEM. */
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
  const safely = (what: string, work: () => Promise<unknown>) => () => {
    work().catch((err: Error) => ctx.log.warn(`audit ${what} did not run: ${err.name}`));
  };
  const checkpoint = setInterval(
    safely("checkpoint", async () => {
      await pinAuditPublicKey(ctx);
      await periodicCheckpoint(ctx);
    }),
    ctx.config.audit.checkpointIntervalMinutes * 60_000,
  );
  checkpoint.unref();
  const retention = setInterval(
    safely("retention", () =>
      ctx.db.owner.transaction(async (t) => {
        const [lock] = await t.rows<{ ok: boolean }>("SELECT pg_try_advisory_xact_lock($1) AS ok", [RETENTION_LOCK]);
        if (lock?.ok) await dropExpiredAuditSegments(ctx);
      }),
    ),
    RETENTION_EVERY_MS,
  );
  retention.unref();
  pinAuditPublicKey(ctx).catch((err: Error) => ctx.log.warn(`audit public key not pinned: ${err.message}`));
  return {
    async stop() {
      clearInterval(checkpoint);
      clearInterval(retention);
      await settleExportJobs();
      await chainer.stop();
      await siem?.stop();
    },
  };
}
