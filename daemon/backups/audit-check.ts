import { InvalidationBus } from "../db/invalidation.js";
import { SqlPool } from "../db/sql.js";
import type { AuditChainVerifier } from "../../backup/restore.js";
import { verifyAuditChain } from "../audit/index.js";
import { RootKey } from "../keys/index.js";
import type { ApplianceContext } from "../context.js";

/**
 * Runs the audit capability's own verifier (daemon/audit/verify.ts) against a restored database,
 * so the canonical encoding has one implementation. Checkpoint signatures are checked with this
 * appliance's keys when `trust` is "appliance" (drills, restores of our own snapshots): read from
 * its live key store, since data snapshots carry none. A restore on a brand-new appliance from the
 * recovery kit can only check their self-consistency ("database", or the keys pinned in the data
 * directory if there are any), and the head is then vouched for by the signed manifest alone.
 */
export function auditVerifierFor(ctx: ApplianceContext, trust: "appliance"): AuditChainVerifier;
export function auditVerifierFor(ctx: Pick<ApplianceContext, "config" | "log" | "clock" | "rootKey" | "metrics">, trust: "database"): AuditChainVerifier;
export function auditVerifierFor(
  ctx: Pick<ApplianceContext, "config" | "log" | "clock" | "rootKey" | "metrics"> & { db?: ApplianceContext["db"] },
  trust: "appliance" | "database",
): AuditChainVerifier {
  return async (url) => {
    const db = new SqlPool({ url, applicationName: "wardkeep-restore-verify", max: 2, statementTimeoutMs: 0 });
    const scratch = {
      ...ctx,
      rootKey: new RootKey(ctx.rootKey.mode),
      db: { owner: db, app: db, appRole: "", invalidations: new InvalidationBus(url), close: () => db.close() },
    } as ApplianceContext;
    try {
      const report = await verifyAuditChain(scratch, { flush: false, keysFrom: trust === "appliance" ? (ctx as ApplianceContext) : undefined });
      const head = report.lastGoodSeq && report.lastGoodSeq !== "0" ? { seq: report.lastGoodSeq, hash: report.head } : null;
      return { intact: report.intact, head, detail: report.break?.detail ?? (report.intact ? undefined : report.summary) };
    } finally {
      await db.close();
    }
  };
}
