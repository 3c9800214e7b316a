/**
 * runRecoveryDrill: proves a snapshot can be restored, instead of hoping so. Restores the chosen
 * (by default the latest) snapshot into a scratch database, and records each check:
 * - the manifest authenticates and its signer is this appliance;
 * - every object's digests, GCM tags and row counts match (checked while loading);
 * - the audit chain verifies up to the head in the manifest, and that head equals the one the
 *   live appliance recorded when it took the snapshot (a head kept outside the snapshot);
 * - a smoke query through the app role (row-level security on) sees the restored rows.
 * RTO is the time from the first byte downloaded to a verified database; RPO is the age of the
 * snapshot when the drill started — what a disaster at that moment would lose.
 */
import pg from "pg";
import { latestSnapshot } from "./catalog.js";
import { SnapshotNotFound } from "./errors.js";
import type { SnapshotOpener } from "./keys.js";
import { restoreSnapshot, type AuditChainVerifier, type RestorePhases } from "./restore.js";
import type { SnapshotTarget } from "./targets/target.js";

export type ScratchDatabase = { ownerUrl: string; appUrl: string; drop(): Promise<void> };

export type DrillCheck = { name: string; ok: boolean; detail: string };

export type DrillResult = {
  passed: boolean;
  snapshotId: string | null;
  target: string;
  rtoMs: number | null;
  rpoMs: number | null;
  phases: RestorePhases | null;
  checks: DrillCheck[];
  error: string | null;
};

export type DrillOptions = {
  target: SnapshotTarget;
  snapshotId?: string;
  createScratch: () => Promise<ScratchDatabase>;
  appRole: string;
  opener: SnapshotOpener;
  trustedSigners?: Buffer[];
  verifyAuditChain?: AuditChainVerifier;
  /** The audit head the live appliance recorded for this snapshot (outside the snapshot). */
  recordedHead?: (snapshotId: string) => Promise<{ seq: string; hash: string } | null | undefined>;
  now?: () => Date;
};

async function smokeQuery(appUrl: string, expectTenants: number | undefined): Promise<DrillCheck> {
  const client = new pg.Client({ connectionString: appUrl });
  try {
    await client.connect();
    await client.query("BEGIN READ ONLY");
    await client.query("SELECT set_config('wardkeep.scope', 'appliance', true)");
    const r = await client.query<{ n: string; rls: boolean }>(
      "SELECT (SELECT count(*) FROM tenants)::text AS n, (SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = current_user) AS rls",
    );
    await client.query("COMMIT");
    const n = Number(r.rows[0]!.n);
    if (r.rows[0]!.rls) return { name: "smoke query as the app role", ok: false, detail: "the app role bypasses row-level security" };
    if (expectTenants !== undefined && n !== expectTenants) return { name: "smoke query as the app role", ok: false, detail: `the app role sees ${n} tenants, the snapshot holds ${expectTenants}` };
    return { name: "smoke query as the app role", ok: true, detail: `the app role reads ${n} tenant(s) under row-level security` };
  } catch (err) {
    return { name: "smoke query as the app role", ok: false, detail: `the app role cannot query the restored database (${(err as { code?: string }).code ?? "error"})` };
  } finally {
    await client.end().catch(() => {});
  }
}

export async function runRecoveryDrill(opts: DrillOptions): Promise<DrillResult> {
  const now = opts.now ?? (() => new Date());
  const started = now();
  const checks: DrillCheck[] = [];
  const result: DrillResult = { passed: false, snapshotId: null, target: opts.target.name, rtoMs: null, rpoMs: null, phases: null, checks, error: null };
  let scratch: ScratchDatabase | undefined;
  try {
    const id = opts.snapshotId ?? (await latestSnapshot(opts.target));
    if (!id) throw new SnapshotNotFound(`target ${opts.target.name} holds no complete snapshot to drill`);
    result.snapshotId = id;
    scratch = await opts.createScratch();
    const t = performance.now();
    const restored = await restoreSnapshot({
      target: opts.target,
      snapshotId: id,
      intoUrl: scratch.ownerUrl,
      appRole: opts.appRole,
      opener: opts.opener,
      trustedSigners: opts.trustedSigners,
      verifyAuditChain: opts.verifyAuditChain,
    });
    result.rtoMs = Math.round(performance.now() - t);
    result.phases = restored.phases;
    checks.push({ name: "manifest authenticated", ok: true, detail: `MAC and Ed25519 signature valid (signer ${restored.signer.signerKeyId}${restored.signer.signerMatches ? ", this appliance" : ""})` });
    checks.push({ name: "digests, tags and row counts", ok: true, detail: `${restored.tables} objects, ${restored.rows} rows, ${restored.storedBytes} bytes` });
    const chain = restored.auditChain;
    checks.push(
      chain.checked
        ? { name: "audit chain", ok: chain.intact, detail: chain.intact ? `intact up to the manifest's head ${chain.expected?.seq ?? "0"}` : (chain.detail ?? "broken") }
        : { name: "audit chain", ok: false, detail: chain.reason },
    );
    if (opts.recordedHead) {
      const recorded = await opts.recordedHead(id);
      const manifestHead = chain.checked ? chain.expected : null;
      if (recorded === undefined) checks.push({ name: "audit head recorded outside the snapshot", ok: false, detail: "the appliance has no record of this snapshot" });
      else {
        const same = (recorded?.seq ?? "0") === (manifestHead?.seq ?? "0") && (recorded?.hash ?? "") === (manifestHead?.hash ?? "");
        checks.push({ name: "audit head recorded outside the snapshot", ok: same, detail: same ? `matches the head the appliance recorded (${recorded?.seq ?? "0"})` : `the appliance recorded ${recorded?.seq ?? "0"}, the snapshot holds ${manifestHead?.seq ?? "0"}` });
      }
    }
    const tenants = restored.tableRows.find((o) => o.table === "tenants")?.rows;
    checks.push(await smokeQuery(scratch.appUrl, tenants));
    result.rpoMs = started.getTime() - snapshotCreatedAt(id).getTime();
    result.passed = checks.every((c) => c.ok);
    if (!result.passed) result.error = checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`).join("; ");
  } catch (err) {
    result.error = (err as Error).message.slice(0, 1000);
    checks.push({ name: "restore", ok: false, detail: result.error });
  } finally {
    await scratch?.drop().catch(() => {});
  }
  return result;
}

function snapshotCreatedAt(id: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(id)!;
  return new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!));
}
