/**
 * What `wardkeep keys status` and `GET /api/v1/keys` show: versions, dates, what each key
 * protects (counts), rotation progress and seal state. Never key bytes, never a value. Works
 * while sealed: everything here is read from the key store's public columns.
 */
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { encryptedColumns, quoteIdentifier } from "./columns.js";
import { readFieldHeader } from "./field-cipher.js";

import { recoveryFingerprint } from "./recovery-crypto.js";
import { listTenantRotations, type TenantRotation } from "./tenant-rotation.js";
import { sealProgress, type SealProgress } from "./unseal/index.js";

type VersionStatus = { version: number; state: "active" | "retired"; createdAt: string; retiredAt: string | null; encryptions: number; values: number | null };

export type KeyStatus = {
  seal: SealProgress;
  kek: {
    versions: Array<{ version: number; state: "active" | "retiring"; createdAt: string; retiredAt: string | null; wraps: number }>;
    rotation: { inProgress: boolean; remaining: number };
  };
  tenants: Array<{
    tenantId: string;
    keyId: string;
    versions: VersionStatus[];
    patientKeys: number;
    patientValues: number | null;
    blindIndexKey: boolean;
    shredScheduledFor: string | null;
  }>;
  applianceKeys: Array<{ keyId: string; kind: string; versions: VersionStatus[] }>;
  rotations: Array<{
    target: "kek" | "data-key";
    keyId: string | null;
    from: number;
    to: number;
    reason: string;
    startedAt: string;
    completedAt: string | null;
    itemsDone: number;
  }>;
  tenantRotations: TenantRotation[];
  shredding: { scheduled: number; nextDestroyAfter: string | null; destroyed: number };
  recovery: { fingerprint: string; createdAt: string; issuedAt: string | null; shares: number | null; threshold: number | null } | null;
  cache: { entries: number; capacity: number };
  encryptedColumns: Array<{ table: string; column: string; subject: "tenant" | "patient" }>;
};

type KeyRow = {
  key_id: string;
  version: number;
  kind: string;
  tenant_id: string | null;
  patient_id: string | null;
  state: "active" | "retired";
  nonce_count: string;
  created_at: Date;
  retired_at: Date | null;
};

const iso = (d: Date | null) => (d ? d.toISOString() : null);

/** Stored values per key id and version, from the headers of every registered column (one scan each). */
async function countValues(ctx: ApplianceContext): Promise<Map<string, number> | null> {
  const columns = encryptedColumns();
  if (columns.length === 0) return null;
  const counts = new Map<string, number>();
  await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    for (const c of columns) {
      const col = quoteIdentifier(c.column);
      const rows = await t.rows<{ header: Buffer; n: string }>(`SELECT substring(${col} from 1 for 6 + get_byte(${col}, 5)) AS header, count(*) AS n
           FROM ${quoteIdentifier(c.table)} WHERE ${col} IS NOT NULL AND length(${col}) > 6 GROUP BY 1`);
      for (const r of rows) {
        try {
          const h = readFieldHeader(Buffer.concat([r.header, Buffer.alloc(40)]));
          const slot = `${h.keyId}#${h.keyVersion}`;
          counts.set(slot, (counts.get(slot) ?? 0) + Number(r.n));
        } catch {
          /* not a field ciphertext: not counted */
        }
      }
    }
  });
  return counts;
}

export async function describeKeys(ctx: ApplianceContext, options: { countValues?: boolean } = {}): Promise<KeyStatus> {
  const seal = await sealProgress(ctx);
  const values = options.countValues === false ? null : await countValues(ctx);
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const keks = await t.rows<{ version: number; state: "active" | "retiring"; created_at: Date; retired_at: Date | null; wraps: string }>(
      "SELECT k.version, k.state, k.created_at, k.retired_at, (SELECT count(*) FROM keystore.data_keys d WHERE d.kek_version = k.version) AS wraps FROM keystore.kek_versions k ORDER BY k.version",
    );
    const keys = await t.rows<KeyRow>(
      "SELECT key_id, version, kind, tenant_id, patient_id, state, nonce_count, created_at, retired_at FROM keystore.data_keys WHERE kind <> 'patient' ORDER BY key_id, version",
    );
    const patientSummary = await t.rows<{ tenant_id: string; patients: string }>(
      "SELECT tenant_id, count(DISTINCT key_id) AS patients FROM keystore.data_keys WHERE kind = 'patient' GROUP BY tenant_id",
    );
    const patientKeyTenants = values
      ? await t.rows<{ key_id: string; version: number; tenant_id: string }>("SELECT key_id, version, tenant_id FROM keystore.data_keys WHERE kind = 'patient'")
      : [];
    const rotations = await t.rows<{
      target: "kek" | "data-key";
      key_id: string | null;
      from_version: number;
      to_version: number;
      reason: string;
      started_at: Date;
      completed_at: Date | null;
      items_done: string;
    }>(
      // A tenant rotation's per-key rotations (one per patient) are summed up in tenantRotations.
      `SELECT * FROM (SELECT * FROM keystore.rotations WHERE tenant_rotation_id IS NULL ORDER BY started_at DESC, id DESC LIMIT 50) r
        UNION SELECT * FROM keystore.rotations WHERE completed_at IS NULL AND tenant_rotation_id IS NULL ORDER BY started_at DESC`,
    );
    const tenantRotations = await listTenantRotations(ctx, t);
    const [shred] = await t.rows<{ scheduled: string; next: Date | null; destroyed: string }>(
      "SELECT (SELECT count(*) FROM keystore.shred_schedule) AS scheduled, (SELECT min(destroy_after) FROM keystore.shred_schedule) AS next, (SELECT count(*) FROM keystore.shredded) AS destroyed",
    );
    const schedules = await t.rows<{ tenant_id: string; destroy_after: Date }>("SELECT tenant_id, destroy_after FROM keystore.shred_schedule WHERE kind = 'tenant'");
    const [recovery] = await t.rows<{ public_key: Buffer; created_at: Date; issued_at: Date | null; issued_shares: number | null; issued_threshold: number | null }>(
      "SELECT public_key, created_at, issued_at, issued_shares, issued_threshold FROM keystore.recovery_keys WHERE state = 'active'",
    );

    const version = (r: KeyRow): VersionStatus => ({
      version: r.version,
      state: r.state,
      createdAt: r.created_at.toISOString(),
      retiredAt: iso(r.retired_at),
      encryptions: Number(r.nonce_count),
      values: values ? (values.get(`${r.key_id}#${r.version}`) ?? 0) : null,
    });
    const patientValues = new Map<string, number>();
    for (const p of patientKeyTenants) patientValues.set(p.tenant_id, (patientValues.get(p.tenant_id) ?? 0) + (values?.get(`${p.key_id}#${p.version}`) ?? 0));

    const tenantIds = new Set<string>();
    for (const k of keys) if (k.tenant_id) tenantIds.add(k.tenant_id);
    for (const p of patientSummary) tenantIds.add(p.tenant_id);
    const tenants = [...tenantIds].sort().map((tenantId) => ({
      tenantId,
      keyId: `tenant/${tenantId}`,
      versions: keys.filter((k) => k.key_id === `tenant/${tenantId}`).map(version),
      patientKeys: Number(patientSummary.find((p) => p.tenant_id === tenantId)?.patients ?? 0),
      patientValues: values ? (patientValues.get(tenantId) ?? 0) : null,
      blindIndexKey: keys.some((k) => k.key_id === `index/${tenantId}`),
      shredScheduledFor: iso(schedules.find((s) => s.tenant_id === tenantId)?.destroy_after ?? null),
    }));
    const applianceIds = [...new Set(keys.filter((k) => !k.tenant_id).map((k) => k.key_id))];
    const retiring = keks.filter((k) => k.state === "retiring");
    return {
      seal,
      kek: {
        versions: keks.map((k) => ({ version: k.version, state: k.state, createdAt: k.created_at.toISOString(), retiredAt: iso(k.retired_at), wraps: Number(k.wraps) })),
        rotation: { inProgress: retiring.length > 0, remaining: retiring.reduce((n, k) => n + Number(k.wraps), 0) },
      },
      tenants,
      applianceKeys: applianceIds.map((keyId) => {
        const rows = keys.filter((k) => k.key_id === keyId);
        return { keyId, kind: rows[0]!.kind, versions: rows.map(version) };
      }),
      rotations: rotations.map((r) => ({
        target: r.target,
        keyId: r.key_id,
        from: r.from_version,
        to: r.to_version,
        reason: r.reason,
        startedAt: r.started_at.toISOString(),
        completedAt: iso(r.completed_at),
        itemsDone: Number(r.items_done),
      })),
      tenantRotations,
      shredding: { scheduled: Number(shred?.scheduled ?? 0), nextDestroyAfter: iso(shred?.next ?? null), destroyed: Number(shred?.destroyed ?? 0) },
      recovery: recovery
        ? {
            fingerprint: recoveryFingerprint(recovery.public_key),
            createdAt: recovery.created_at.toISOString(),
            issuedAt: iso(recovery.issued_at),
            shares: recovery.issued_shares,
            threshold: recovery.issued_threshold,
          }
        : null,
      cache: { entries: ctx.rootKey.cachedDataKeyCount, capacity: ctx.rootKey.cacheSize },
      encryptedColumns: encryptedColumns().map((c) => ({ table: c.table, column: c.column, subject: c.subject.kind })),
    };
  });
}
