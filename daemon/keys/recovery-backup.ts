/**
 * The key store as it travels in a key-store backup (DESIGN "Keys", backup/FORMAT.md "Key-store
 * backups"), and how a brand-new appliance installs it again.
 *
 * - Export (a running, unsealed appliance): every KEK version, unwrapped from the unseal key and
 *   wrapped twice: for the recovery public key (X25519, recovery-crypto.ts) so a new appliance
 *   recovers with the kit alone, and under a key derived from the appliance-internal secret so
 *   the appliance's own recovery drills can prove the backup opens. Data keys travel exactly as
 *   stored (wrapped by their KEK version), with the shredded list, the shred schedule, the
 *   recovery public keys and the seal's metadata. Never the unseal key, never a private key.
 * - Install (recovery): the KEKs are rewrapped under the NEW unseal key of the new appliance (the
 *   old unseal key is gone with the old machine), data keys of subjects on the shredded list (or
 *   due for destruction) are left out and recorded as destroyed, so nothing shredded comes back.
 */
import type { KeyObject } from "node:crypto";
import type pg from "pg";
import { z } from "zod";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import type { DataKeyLookup } from "./field-cipher.js";
import { aad, kekCheckValue, sameCheckValue, slotOf, unsealCheckValue, unwrapSecret, wrapSecret } from "./keystore.js";
import { DecryptionError, hkdfSha256, zeroize } from "./primitives.js";
import { recoveryFingerprint, unwrapWithRecovery, wrapForRecovery } from "./recovery-crypto.js";
import type { UnsealMode } from "./root-key.js";
import { INTERNAL_KEY_ID, loadKek } from "./seal.js";

const hex = z.string().regex(/^([0-9a-f]{2})*$/);
const stamp = z.string().min(1);

export const keyStoreContentsSchema = z
  .object({
    format: z.literal("wardkeep-keystore-contents"),
    formatVersion: z.literal(1),
    /** When the key store was read (the moment the backup is a picture of). */
    readAt: stamp,
    kekVersions: z.array(
      z
        .object({
          version: z.number().int().positive(),
          state: z.enum(["active", "retiring"]),
          checkValue: hex,
          wrappedByPrevious: hex.nullable(),
          createdAt: stamp,
          retiredAt: stamp.nullable(),
          /** The KEK wrapped for the recovery public key, and under the appliance's drill key (base64). */
          wraps: z.object({ recovery: z.string(), appliance: z.string() }).strict(),
        })
        .strict(),
    ),
    dataKeys: z.array(
      z
        .object({
          keyId: z.string(),
          version: z.number().int().positive(),
          kind: z.enum(["tenant", "patient", "index", "audit-signing", "appliance-internal"]),
          tenantId: z.string().nullable(),
          patientId: z.string().nullable(),
          wrapped: hex,
          kekVersion: z.number().int().positive(),
          publicKey: hex.nullable(),
          state: z.enum(["active", "retired"]),
          nonceCount: z.string().regex(/^\d+$/),
          createdAt: stamp,
          retiredAt: stamp.nullable(),
        })
        .strict(),
    ),
    shredded: z.array(
      z
        .object({
          subject: z.string(),
          kind: z.enum(["tenant", "patient"]),
          tenantId: z.string(),
          patientId: z.string().nullable(),
          scheduledAt: stamp,
          destroyedAt: stamp,
          keyVersions: z.number().int(),
        })
        .strict(),
    ),
    shredSchedule: z.array(
      z
        .object({ subject: z.string(), kind: z.enum(["tenant", "patient"]), tenantId: z.string(), patientId: z.string().nullable(), scheduledAt: stamp, destroyAfter: stamp })
        .strict(),
    ),
    recoveryKeys: z.array(
      z
        .object({
          id: z.number().int().positive(),
          publicKey: hex,
          state: z.enum(["active", "retired"]),
          createdAt: stamp,
          issuedAt: stamp.nullable(),
          issuedShares: z.number().int().nullable(),
          issuedThreshold: z.number().int().nullable(),
          retiredAt: stamp.nullable(),
        })
        .strict(),
    ),
    /** How the old appliance was unsealed (public metadata only: no check value, no salt secret). */
    seal: z
      .object({ mode: z.enum(["keyfile", "passphrase", "shamir", "pkcs11"]), generation: z.number().int(), createdAt: stamp, updatedAt: stamp })
      .strict()
      .nullable(),
  })
  .strict();

export type KeyStoreContents = z.infer<typeof keyStoreContentsSchema>;
export type ShreddedSubject = { subject: string; kind: "tenant" | "patient"; tenantId: string; patientId: string | null };

const KEK_WRAP_INFO = "wardkeep-backup/keystore-kek-wrap/v1";
const kekWrapAad = (version: number) => `wardkeep-backup/keystore-kek/v1|${version}`;

/** The key the appliance wraps KEKs under inside its own key-store backups (for drills). */
function applianceKekWrapKey(applianceSecret: Buffer): Buffer {
  return hkdfSha256(applianceSecret, Buffer.alloc(0), Buffer.from(KEK_WRAP_INFO), 32);
}

type Raw = {
  keks: { version: number; state: "active" | "retiring"; check_value: string; wrapped_by_previous: string | null; created_at: string; retired_at: string | null }[];
  data_keys: KeyStoreContents["dataKeys"];
  shredded: KeyStoreContents["shredded"];
  schedule: KeyStoreContents["shredSchedule"];
  recovery: KeyStoreContents["recoveryKeys"];
  seal: KeyStoreContents["seal"];
};

// One statement, so every table is read from the same snapshot (a rotation committing halfway
// through could otherwise leave a data key pointing at a KEK version the backup lacks).
const READ_KEY_STORE = `
SELECT
  (SELECT coalesce(json_agg(json_build_object('version', version, 'state', state, 'check_value', encode(check_value, 'hex'),
          'wrapped_by_previous', encode(wrapped_by_previous, 'hex'), 'created_at', created_at, 'retired_at', retired_at) ORDER BY version), '[]')
     FROM keystore.kek_versions) AS keks,
  (SELECT coalesce(json_agg(json_build_object('keyId', key_id, 'version', version, 'kind', kind, 'tenantId', tenant_id, 'patientId', patient_id,
          'wrapped', encode(wrapped, 'hex'), 'kekVersion', kek_version, 'publicKey', encode(public_key, 'hex'), 'state', state,
          'nonceCount', nonce_count::text, 'createdAt', created_at, 'retiredAt', retired_at) ORDER BY key_id, version), '[]')
     FROM keystore.data_keys) AS data_keys,
  (SELECT coalesce(json_agg(json_build_object('subject', subject, 'kind', kind, 'tenantId', tenant_id, 'patientId', patient_id,
          'scheduledAt', scheduled_at, 'destroyedAt', destroyed_at, 'keyVersions', key_versions) ORDER BY subject), '[]')
     FROM keystore.shredded) AS shredded,
  (SELECT coalesce(json_agg(json_build_object('subject', subject, 'kind', kind, 'tenantId', tenant_id, 'patientId', patient_id,
          'scheduledAt', scheduled_at, 'destroyAfter', destroy_after) ORDER BY subject), '[]')
     FROM keystore.shred_schedule) AS schedule,
  (SELECT coalesce(json_agg(json_build_object('id', id, 'publicKey', encode(public_key, 'hex'), 'state', state, 'createdAt', created_at,
          'issuedAt', issued_at, 'issuedShares', issued_shares, 'issuedThreshold', issued_threshold, 'retiredAt', retired_at) ORDER BY id), '[]')
     FROM keystore.recovery_keys) AS recovery,
  (SELECT json_build_object('mode', mode, 'generation', generation, 'createdAt', created_at, 'updatedAt', updated_at) FROM keystore.seal) AS seal`;

/**
 * Reads the whole key store and wraps each KEK version for the recovery public key and for the
 * appliance's drills. Needs the barrier unsealed (the KEKs are unwrapped from the unseal key).
 */
export async function exportKeyStore(ctx: ApplianceContext, recoveryPublicKey: Buffer): Promise<KeyStoreContents> {
  ctx.rootKey.assertUnsealed();
  const wrapKey = applianceKekWrapKey(ctx.rootKey.material());
  try {
    return await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
      const raw = (await t.one<Raw>(READ_KEY_STORE))!;
      const kekVersions: KeyStoreContents["kekVersions"] = [];
      for (const k of raw.keks) {
        const kek = await loadKek(ctx, t, k.version);
        kekVersions.push({
          version: k.version,
          state: k.state,
          checkValue: k.check_value,
          wrappedByPrevious: k.wrapped_by_previous,
          createdAt: k.created_at,
          retiredAt: k.retired_at,
          wraps: { recovery: wrapForRecovery(recoveryPublicKey, kek).toString("base64"), appliance: wrapSecret(wrapKey, kek, kekWrapAad(k.version)).toString("base64") },
        });
      }
      return keyStoreContentsSchema.parse({
        format: "wardkeep-keystore-contents",
        formatVersion: 1,
        readAt: ctx.clock.now().toISOString(),
        kekVersions,
        dataKeys: raw.data_keys,
        shredded: raw.shredded,
        shredSchedule: raw.schedule,
        recoveryKeys: raw.recovery,
        seal: raw.seal,
      });
    });
  } finally {
    zeroize(wrapKey);
  }
}

/** What can open the KEKs of a key-store backup: the appliance's own secret, or the recovery kit. */
export type KeyStoreOpener = { applianceSecret: Buffer } | { recoveryPrivateKey: KeyObject };

export class KeyStoreBackupError extends Error {
  override name = "KeyStoreBackupError";
}

/**
 * Unwraps every KEK version of a backup and checks each against its check value (a wrong kit or
 * a damaged entry ends here, naming the version, never a key). The caller zeroes the result.
 */
export function unwrapBackupKeks(contents: KeyStoreContents, opener: KeyStoreOpener): Map<number, Buffer> {
  const keks = new Map<number, Buffer>();
  const wrapKey = "applianceSecret" in opener ? applianceKekWrapKey(opener.applianceSecret) : undefined;
  try {
    for (const k of contents.kekVersions) {
      let kek: Buffer;
      try {
        kek = wrapKey
          ? unwrapSecret(wrapKey, Buffer.from(k.wraps.appliance, "base64"), kekWrapAad(k.version))
          : unwrapWithRecovery((opener as { recoveryPrivateKey: KeyObject }).recoveryPrivateKey, Buffer.from(k.wraps.recovery, "base64"));
      } catch (err) {
        if (!(err instanceof DecryptionError)) throw err;
        throw new KeyStoreBackupError(
          wrapKey
            ? `KEK version ${k.version} of the key-store backup does not open with this appliance's key (made by another appliance, or damaged)`
            : `KEK version ${k.version} of the key-store backup does not open with this recovery key (wrong kit, or damaged)`,
        );
      }
      if (!sameCheckValue(kekCheckValue(kek, k.version), Buffer.from(k.checkValue, "hex"))) {
        zeroize(kek);
        throw new KeyStoreBackupError(`KEK version ${k.version} of the key-store backup does not match its check value`);
      }
      keks.set(k.version, kek);
    }
    return keks;
  } catch (err) {
    for (const k of keks.values()) zeroize(k);
    throw err;
  } finally {
    if (wrapKey) zeroize(wrapKey);
  }
}

/** Unwraps one data key of a backup with the backup's own KEKs. */
function unwrapBackupDataKey(contents: KeyStoreContents["dataKeys"][number], keks: Map<number, Buffer>): Buffer {
  const kek = keks.get(contents.kekVersion);
  if (!kek) throw new KeyStoreBackupError(`data key ${contents.keyId} v${contents.version} names KEK version ${contents.kekVersion}, which the backup lacks`);
  try {
    return unwrapSecret(kek, Buffer.from(contents.wrapped, "hex"), aad.dataKey(contents.keyId, contents.version, contents.kekVersion));
  } catch (err) {
    if (err instanceof DecryptionError) throw new KeyStoreBackupError(`data key ${contents.keyId} v${contents.version} does not unwrap with its KEK`);
    throw err;
  }
}

/** The appliance-internal secret held in a backup: the manifests' signing key derives from it. */
export function backupApplianceSecret(contents: KeyStoreContents, keks: Map<number, Buffer>): Buffer {
  const row = contents.dataKeys.find((d) => d.keyId === INTERNAL_KEY_ID && d.state === "active");
  if (!row) throw new KeyStoreBackupError("the key-store backup lacks the appliance-internal key");
  return unwrapBackupDataKey(row, keks);
}

/**
 * A `decryptField` lookup over the backup's data keys (drills decrypt restored ciphertexts with
 * the backup's keys, not the live key store's). `dispose` zeroes what was unwrapped.
 */
export function backupDataKeyLookup(contents: KeyStoreContents, keks: Map<number, Buffer>): { lookup: DataKeyLookup; dispose(): void } {
  const rows = new Map(contents.dataKeys.map((d) => [slotOf(d.keyId, d.version), d]));
  const opened = new Map<string, Buffer>();
  return {
    lookup: (keyId, version) => {
      const slot = slotOf(keyId, version);
      let key = opened.get(slot);
      if (!key) {
        const row = rows.get(slot);
        if (!row) return undefined;
        key = unwrapBackupDataKey(row, keks);
        opened.set(slot, key);
      }
      return { id: keyId, version, key };
    },
    dispose: () => {
      for (const k of opened.values()) zeroize(k);
      opened.clear();
    },
  };
}

/**
 * Subjects that must stay destroyed: the shredded list plus scheduled destructions whose grace
 * period has ended by `now` (the old appliance would have destroyed them by now).
 */
export function shreddedSubjects(contents: KeyStoreContents, now: Date): ShreddedSubject[] {
  const out = new Map<string, ShreddedSubject>();
  for (const s of contents.shredded) out.set(s.subject, { subject: s.subject, kind: s.kind, tenantId: s.tenantId, patientId: s.patientId });
  for (const s of contents.shredSchedule)
    if (Date.parse(s.destroyAfter) <= now.getTime()) out.set(s.subject, { subject: s.subject, kind: s.kind, tenantId: s.tenantId, patientId: s.patientId });
  return [...out.values()].sort((a, b) => a.subject.localeCompare(b.subject));
}

function isShredded(d: KeyStoreContents["dataKeys"][number], subjects: ShreddedSubject[]): boolean {
  return subjects.some((s) => (s.kind === "tenant" ? d.tenantId === s.tenantId : d.keyId === s.subject));
}

export type NewSeal = { mode: UnsealMode; params: Record<string, unknown>; unsealKey: Buffer };

export type InstalledKeyStore = {
  kekVersions: number;
  dataKeys: number;
  /** Key versions of shredded subjects that were in the backup and were left out. */
  dataKeysLeftOut: number;
  shredded: ShreddedSubject[];
  scheduled: number;
  recoveryFingerprints: string[];
};

async function insertJson(client: pg.Client, sql: string, items: unknown[]): Promise<void> {
  // Batches keep each statement's parameter small; json_to_recordset types the columns.
  for (let i = 0; i < items.length; i += 5000) await client.query(sql, [JSON.stringify(items.slice(i, i + 5000))]);
}

/**
 * Writes a recovered key store into the `keystore` schema of a freshly restored database (inside
 * the restore's transaction, on the owner connection with the appliance scope set): a new seal
 * record for the new unseal source, every KEK version rewrapped under the new unseal key, the data
 * keys as they were (minus shredded subjects'), the shredded list (with due destructions added),
 * the pending schedule and the recovery public keys.
 */
export async function installRecoveredKeyStore(client: pg.Client, contents: KeyStoreContents, keks: Map<number, Buffer>, seal: NewSeal, now: Date): Promise<InstalledKeyStore> {
  const existing = await client.query<{ n: number }>(
    "SELECT (SELECT count(*) FROM keystore.seal) + (SELECT count(*) FROM keystore.kek_versions) + (SELECT count(*) FROM keystore.data_keys) AS n",
  );
  if (Number(existing.rows[0]!.n) > 0) throw new KeyStoreBackupError("the key store of the database being restored is not empty");
  await client.query("INSERT INTO keystore.seal (mode, params, check_value, generation, created_at, updated_at) VALUES ($1, $2::jsonb, $3, 1, $4, $4)", [
    seal.mode,
    JSON.stringify(seal.params),
    unsealCheckValue(seal.unsealKey),
    now,
  ]);
  for (const k of contents.kekVersions) {
    const kek = keks.get(k.version);
    if (!kek) throw new KeyStoreBackupError(`KEK version ${k.version} was not unwrapped`);
    await client.query(
      "INSERT INTO keystore.kek_versions (version, wrapped, wrapped_by_previous, check_value, state, created_at, retired_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
      [
        k.version,
        wrapSecret(seal.unsealKey, kek, aad.kek(k.version)),
        k.wrappedByPrevious ? Buffer.from(k.wrappedByPrevious, "hex") : null,
        Buffer.from(k.checkValue, "hex"),
        k.state,
        k.createdAt,
        k.retiredAt,
      ],
    );
  }
  const subjects = shreddedSubjects(contents, now);
  const keep = contents.dataKeys.filter((d) => !isShredded(d, subjects));
  await insertJson(
    client,
    `INSERT INTO keystore.data_keys (key_id, version, kind, tenant_id, patient_id, wrapped, kek_version, public_key, state, nonce_count, created_at, retired_at)
     SELECT x."keyId", x.version, x.kind, x."tenantId", x."patientId", decode(x.wrapped, 'hex'), x."kekVersion", decode(x."publicKey", 'hex'), x.state, x."nonceCount"::bigint, x."createdAt", x."retiredAt"
       FROM json_to_recordset($1::json) AS x("keyId" text, version int, kind text, "tenantId" uuid, "patientId" uuid, wrapped text, "kekVersion" int, "publicKey" text, state text, "nonceCount" text, "createdAt" timestamptz, "retiredAt" timestamptz)`,
    keep,
  );
  const destroyedNow = subjects.filter((s) => !contents.shredded.some((x) => x.subject === s.subject));
  const shreddedRows = [
    ...contents.shredded,
    ...destroyedNow.map((s) => ({
      ...s,
      scheduledAt: contents.shredSchedule.find((x) => x.subject === s.subject)!.scheduledAt,
      destroyedAt: now.toISOString(),
      keyVersions: contents.dataKeys.filter((d) => isShredded(d, [s])).length,
    })),
  ];
  await insertJson(
    client,
    `INSERT INTO keystore.shredded (subject, kind, tenant_id, patient_id, scheduled_at, destroyed_at, key_versions)
     SELECT x.subject, x.kind, x."tenantId", x."patientId", x."scheduledAt", x."destroyedAt", x."keyVersions"
       FROM json_to_recordset($1::json) AS x(subject text, kind text, "tenantId" uuid, "patientId" uuid, "scheduledAt" timestamptz, "destroyedAt" timestamptz, "keyVersions" int)`,
    shreddedRows,
  );
  const pending = contents.shredSchedule.filter((s) => !subjects.some((x) => x.subject === s.subject));
  await insertJson(
    client,
    `INSERT INTO keystore.shred_schedule (subject, kind, tenant_id, patient_id, scheduled_at, destroy_after)
     SELECT x.subject, x.kind, x."tenantId", x."patientId", x."scheduledAt", x."destroyAfter"
       FROM json_to_recordset($1::json) AS x(subject text, kind text, "tenantId" uuid, "patientId" uuid, "scheduledAt" timestamptz, "destroyAfter" timestamptz)`,
    pending,
  );
  // Private halves never travel: a kit that was not yet written cannot be written any more.
  for (const r of contents.recoveryKeys) {
    await client.query(
      `INSERT INTO keystore.recovery_keys (id, public_key, state, created_at, issued_at, issued_shares, issued_threshold, retired_at)
       OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [r.id, Buffer.from(r.publicKey, "hex"), r.state, r.createdAt, r.issuedAt, r.issuedShares, r.issuedThreshold, r.retiredAt],
    );
  }
  if (contents.recoveryKeys.length) {
    await client.query("SELECT setval(pg_get_serial_sequence('keystore.recovery_keys', 'id'), (SELECT max(id) FROM keystore.recovery_keys))");
  }
  return {
    kekVersions: contents.kekVersions.length,
    dataKeys: keep.length,
    dataKeysLeftOut: contents.dataKeys.length - keep.length,
    shredded: subjects,
    scheduled: pending.length,
    recoveryFingerprints: contents.recoveryKeys.map((r) => recoveryFingerprint(Buffer.from(r.publicKey, "hex"))),
  };
}

/**
 * The data keys of a key store as a backup lists them, read from a database restored to a point
 * in time (its key store is that moment's): a point-in-time recovery keeps the keys created after
 * the newest key-store backup, which that backup cannot hold, and still takes KEKs and the
 * shredded list from the backup.
 */
export async function readDataKeyRows(client: pg.ClientBase): Promise<KeyStoreContents["dataKeys"]> {
  const r = await client.query<{ rows: KeyStoreContents["dataKeys"] }>(
    `SELECT coalesce(json_agg(json_build_object('keyId', key_id, 'version', version, 'kind', kind, 'tenantId', tenant_id, 'patientId', patient_id,
            'wrapped', encode(wrapped, 'hex'), 'kekVersion', kek_version, 'publicKey', encode(public_key, 'hex'), 'state', state,
            'nonceCount', nonce_count::text, 'createdAt', created_at, 'retiredAt', retired_at) ORDER BY key_id, version), '[]') AS rows
       FROM keystore.data_keys`,
  );
  return keyStoreContentsSchema.shape.dataKeys.parse(r.rows[0]!.rows);
}

/** Empties the key store of a restored database (its KEKs are wrapped under an unseal key that is gone) before `installRecoveredKeyStore`. */
export async function clearRestoredKeyStore(client: pg.ClientBase): Promise<void> {
  await client.query(
    "DELETE FROM keystore.data_keys; DELETE FROM keystore.kek_versions; DELETE FROM keystore.seal; DELETE FROM keystore.shredded; DELETE FROM keystore.shred_schedule; DELETE FROM keystore.recovery_keys",
  );
}
