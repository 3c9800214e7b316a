/**
 * Key-store backups (DESIGN "Keys", backup/FORMAT.md "Key-store backups"): data snapshots never
 * hold the key store, so every snapshot run also writes the key store as its own encrypted,
 * signed object set on every target:
 *
 *   keystores/<id>/keystore.wkd      the key store (daemon/keys/recovery-backup.ts), segmented AES-256-GCM
 *   keystores/<id>/manifest.json     written LAST, once: MAC + Ed25519 signature, as a snapshot manifest
 *
 * `<id>` is the id of the snapshot run that wrote it. They are kept no longer than
 * `keys.shredGraceDays` (WORM retention included): a key-store backup old enough to predate a
 * crypto-shredding must not exist any more, or restoring it would bring the destroyed keys back.
 * Recovery = a data snapshot of any age + the NEWEST key-store backup + the recovery kit; the
 * shredded list of that backup is re-applied (its keys left out, the subjects' rows purged).
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type pg from "pg";
import { z } from "zod";
import {
  decryptField,
  DecryptionError,
  encryptedColumns,
  hmacSha256,
  keyStoreContentsSchema,
  UnknownKeyVersionError,
  zeroize,
  type DataKeyLookup,
  type EncryptedColumn,
  type KeyStoreContents,
  type ShreddedSubject,
} from "../daemon/keys/index.js";
import { canonicalJson } from "./canonical-json.js";
import { readAll } from "./catalog.js";
import { SnapshotIntegrityError, SnapshotNotFound, TargetError } from "./errors.js";
import {
  ed25519Sign,
  ed25519Verify,
  manifestMacKey,
  manifestSigner,
  newSnapshotKey,
  unwrapSnapshotKey,
  wrapForAppliance,
  wrapForRecoveryKey,
  type SnapshotOpener,
} from "./keys.js";
import { SNAPSHOT_ID, STREAM_ALG, sealedFileSchema, signerEntry, signerEntrySchema } from "./manifest.js";
import { snapshotTime } from "./retention.js";
import { SegmentDecryptStream, SegmentEncryptStream, snapshotKeyId } from "./stream-aead.js";
import type { SnapshotTarget } from "./targets/target.js";

export const KEYSTORE_FORMAT = "wardkeep-keystore";
export const KEYSTORE_VERSION = 1;
const SEGMENT_BYTES = 256 * 1024;
const MAX_KEYSTORE_BYTES = 512 * 1024 * 1024;

export const keyStoreLayout = {
  prefix: "keystores/",
  dir: (id: string) => `keystores/${id}`,
  manifest: (id: string) => `keystores/${id}/manifest.json`,
  object: (id: string) => `keystores/${id}/keystore.wkd`,
};

/** What the object's segment keys are bound to (stream-aead.ts associated data). */
export const keyStoreAssociatedData = (id: string) => `keystore/${id}`;

const hex = (n: number) => z.string().regex(new RegExp(`^[0-9a-f]{${n}}$`));

export const keyStoreManifestBodySchema = z
  .object({
    format: z.literal(KEYSTORE_FORMAT),
    formatVersion: z.literal(KEYSTORE_VERSION),
    keystoreId: z.string().regex(SNAPSHOT_ID),
    createdAt: z.string(),
    /** After this the backup is pruned (createdAt + keys.shredGraceDays); WORM retention never reaches past it. */
    expiresAt: z.string(),
    producer: z.object({ appVersion: z.string() }).strict(),
    encryption: z.object({ alg: z.literal(STREAM_ALG), segmentBytes: z.number().int(), keyId: hex(16) }).strict(),
    keyWraps: z.array(z.object({ type: z.enum(["appliance", "recovery"]), alg: z.string(), keyId: z.string(), wrapped: z.string() }).strict()).min(1),
    object: z.object({ path: z.literal("keystore.wkd"), plainBytes: z.number().int(), plainSha256: hex(64), storedBytes: z.number().int(), sha256: hex(64) }).strict(),
    counts: z.object({ kekVersions: z.number().int(), dataKeys: z.number().int(), shredded: z.number().int(), scheduled: z.number().int() }).strict(),
    signer: signerEntrySchema,
  })
  .strict();

export type KeyStoreManifestBody = z.infer<typeof keyStoreManifestBodySchema>;

const keyStoreManifestFileSchema = sealedFileSchema(keyStoreManifestBodySchema);

/** The key-store backup named is not (completely) on the target. */
export class KeyStoreBackupMissing extends SnapshotNotFound {}

/** Everything a stream yields, in one buffer (small objects only: key-store backups, WAL files). */
export async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await pipeline(
    stream,
    new Writable({
      write(chunk: Buffer, _enc, done) {
        chunks.push(chunk);
        done();
      },
    }),
  );
  return Buffer.concat(chunks);
}

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

export type KeyStoreWriteOutcome = { target: string; ok: boolean; bytes: number; error?: string };

export type WriteKeyStoreOptions = {
  targets: SnapshotTarget[];
  /** The snapshot run's id. */
  id: string;
  contents: KeyStoreContents;
  applianceSecret: Buffer;
  recoveryPublicKey: Buffer;
  appVersion: string;
  now: Date;
  /** keys.shredGraceDays: the backup expires (and any WORM lock ends) this many days after `now`. */
  retentionDays: number;
};

/**
 * Encrypts and signs one key-store backup and writes it to every target: the object first, the
 * manifest last and once. A target that fails is reported and skipped; the others complete.
 */
export async function writeKeyStoreBackup(opts: WriteKeyStoreOptions): Promise<{ manifest: KeyStoreManifestBody; outcomes: KeyStoreWriteOutcome[] }> {
  const key = newSnapshotKey();
  const signer = manifestSigner(opts.applianceSecret);
  try {
    const plain = Buffer.from(JSON.stringify(keyStoreContentsSchema.parse(opts.contents)), "utf8");
    const stored = await collect(Readable.from([plain]).pipe(new SegmentEncryptStream(key, keyStoreAssociatedData(opts.id), SEGMENT_BYTES)));
    const expiresAt = new Date(opts.now.getTime() + opts.retentionDays * 86_400_000);
    const body: KeyStoreManifestBody = {
      format: KEYSTORE_FORMAT,
      formatVersion: KEYSTORE_VERSION,
      keystoreId: opts.id,
      createdAt: opts.now.toISOString(),
      expiresAt: expiresAt.toISOString(),
      producer: { appVersion: opts.appVersion },
      encryption: { alg: STREAM_ALG, segmentBytes: SEGMENT_BYTES, keyId: snapshotKeyId(key).toString("hex") },
      keyWraps: [wrapForAppliance(opts.applianceSecret, key), wrapForRecoveryKey(opts.recoveryPublicKey, key)],
      object: { path: "keystore.wkd", plainBytes: plain.length, plainSha256: sha256(plain), storedBytes: stored.length, sha256: sha256(stored) },
      counts: {
        kekVersions: opts.contents.kekVersions.length,
        dataKeys: opts.contents.dataKeys.length,
        shredded: opts.contents.shredded.length,
        scheduled: opts.contents.shredSchedule.length,
      },
      signer: signerEntry(signer),
    };
    const bytes = Buffer.from(canonicalJson(keyStoreManifestBodySchema.parse(body)), "utf8");
    const macKey = manifestMacKey(key);
    const mac = hmacSha256(macKey, bytes);
    zeroize(macKey);
    const manifest = Buffer.from(
      JSON.stringify(
        { body, mac: { alg: "HMAC-SHA256", value: mac.toString("base64") }, signature: { alg: "Ed25519", value: ed25519Sign(signer, bytes).toString("base64") } },
        null,
        2,
      ) + "\n",
      "utf8",
    );
    // The lock ends when the backup expires: a WORM target must let pruning delete it in time.
    const retainUntil = expiresAt;
    const outcomes = await Promise.all(
      opts.targets.map(async (t): Promise<KeyStoreWriteOutcome> => {
        try {
          await t.putStream(keyStoreLayout.object(opts.id), Readable.from([stored]), { retainUntil });
          await t.putOnce(keyStoreLayout.manifest(opts.id), manifest, { retainUntil });
          return { target: t.name, ok: true, bytes: stored.length + manifest.length };
        } catch (err) {
          return { target: t.name, ok: false, bytes: 0, error: `key-store backup: ${(err as Error).message}` };
        }
      }),
    );
    return { manifest: body, outcomes };
  } finally {
    zeroize(key);
  }
}

export type KeyStoreScan = { complete: string[]; incomplete: { id: string; keys: string[] }[] };

/** Key-store backups on a target (complete = the manifest exists), oldest first. */
export async function scanKeyStoreBackups(target: SnapshotTarget): Promise<KeyStoreScan> {
  const byId = new Map<string, { keys: string[]; manifest: boolean }>();
  for (const e of await target.list(keyStoreLayout.prefix)) {
    const [top, id, ...rest] = e.key.split("/");
    if (top !== "keystores" || !id || !SNAPSHOT_ID.test(id)) continue;
    const slot = byId.get(id) ?? { keys: [], manifest: false };
    slot.keys.push(e.key);
    if (rest.join("/") === "manifest.json") slot.manifest = true;
    byId.set(id, slot);
  }
  const ids = [...byId.keys()].sort();
  return { complete: ids.filter((id) => byId.get(id)!.manifest), incomplete: ids.filter((id) => !byId.get(id)!.manifest).map((id) => ({ id, keys: byId.get(id)!.keys })) };
}

export async function latestKeyStoreBackup(target: SnapshotTarget): Promise<string | undefined> {
  return (await scanKeyStoreBackups(target)).complete.at(-1);
}

export type OpenedKeyStore = { manifest: KeyStoreManifestBody; contents: KeyStoreContents; signerPublicKey: Buffer };

/**
 * Reads, authenticates and decrypts one key-store backup: the manifest (its id must be its
 * directory's), the key unwrap, the MAC and the signature (pinned when `trustedSigners` is given),
 * the object's digests and every GCM tag, then the contents' schema. Any failure names the
 * backup and what failed, never a key.
 */
export async function openKeyStoreBackup(target: SnapshotTarget, id: string, opener: SnapshotOpener, trustedSigners: Buffer[] = []): Promise<OpenedKeyStore> {
  if (!SNAPSHOT_ID.test(id)) throw new KeyStoreBackupMissing(`"${id}" is not a key-store backup id`);
  const read = async (key: string, max: number, what: string) => {
    try {
      return await readAll(await target.get(key), max, what);
    } catch (err) {
      if (err instanceof TargetError && /ENOENT|NoSuchKey|NotFound|\b2\b/.test(String(err.extras.code))) {
        throw new KeyStoreBackupMissing(`key-store backup ${id} is not on target ${target.name} (${what} is missing)`);
      }
      throw err;
    }
  };
  const raw = await read(keyStoreLayout.manifest(id), 1 << 20, "its manifest");
  let json: unknown;
  try {
    json = JSON.parse(raw.toString("utf8"));
  } catch {
    throw new SnapshotIntegrityError(`the manifest of key-store backup ${id} is not valid JSON`);
  }
  const parsed = keyStoreManifestFileSchema.safeParse(json);
  if (!parsed.success)
    throw new SnapshotIntegrityError(`the manifest of key-store backup ${id} is malformed (${parsed.error.issues[0]!.path.join(".")}: ${parsed.error.issues[0]!.message})`);
  const file = parsed.data;
  if (file.body.keystoreId !== id) throw new SnapshotIntegrityError(`the key-store manifest stored as ${id} belongs to ${file.body.keystoreId}`);
  const key = unwrapSnapshotKey(file.body.keyWraps, opener);
  try {
    const bytes = Buffer.from(canonicalJson(file.body), "utf8");
    const macKey = manifestMacKey(key);
    const expected = hmacSha256(macKey, bytes);
    zeroize(macKey);
    const given = Buffer.from(file.mac.value, "base64");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new SnapshotIntegrityError(`the manifest of key-store backup ${id} failed its MAC check`);
    const signerPublicKey = Buffer.from(file.body.signer.publicKey, "base64");
    if (!ed25519Verify(signerPublicKey, bytes, Buffer.from(file.signature.value, "base64")))
      throw new SnapshotIntegrityError(`the manifest of key-store backup ${id} has an invalid signature`);
    if (trustedSigners.length && !trustedSigners.some((k) => k.equals(signerPublicKey))) {
      throw new SnapshotIntegrityError(`key-store backup ${id} was signed by ${file.body.signer.keyId}, which is not a trusted signer`);
    }
    const stored = await read(keyStoreLayout.object(id), MAX_KEYSTORE_BYTES, "its key-store object");
    if (stored.length !== file.body.object.storedBytes || sha256(stored) !== file.body.object.sha256) {
      throw new SnapshotIntegrityError(`key-store backup ${id}: the stored bytes do not match the manifest digest`);
    }
    const plain = await collect(Readable.from([stored]).pipe(new SegmentDecryptStream(key, keyStoreAssociatedData(id), true)));
    if (sha256(plain) !== file.body.object.plainSha256) throw new SnapshotIntegrityError(`key-store backup ${id}: the decrypted data does not match the manifest digest`);
    const contents = keyStoreContentsSchema.safeParse(JSON.parse(plain.toString("utf8")));
    if (!contents.success) throw new SnapshotIntegrityError(`key-store backup ${id}: the contents are malformed (${contents.error.issues[0]!.path.join(".")})`);
    return { manifest: file.body, contents: contents.data, signerPublicKey };
  } finally {
    zeroize(key);
  }
}

export type KeyStorePruneOutcome = { target: string; pruned: string[]; refused: { id: string; error: string }[] };

/**
 * Deletes key-store backups whose time is up (older than `retentionDays`, i.e. keys.shredGraceDays)
 * and directories without a manifest (interrupted writes). Runs under the snapshot lock, after a
 * new backup was written, so the newest one is always young. Manifest first, as for snapshots.
 */
export async function pruneKeyStoreBackups(target: SnapshotTarget, now: Date, retentionDays: number): Promise<KeyStorePruneOutcome> {
  const scan = await scanKeyStoreBackups(target);
  const out: KeyStorePruneOutcome = { target: target.name, pruned: [], refused: [] };
  const limit = now.getTime() - retentionDays * 86_400_000;
  for (const id of scan.complete.filter((x) => snapshotTime(x).getTime() <= limit)) {
    try {
      await target.delete(keyStoreLayout.manifest(id));
      await target.delete(keyStoreLayout.object(id)).catch(() => {});
      out.pruned.push(id);
    } catch (err) {
      out.refused.push({ id, error: (err as Error).message });
    }
  }
  for (const dir of scan.incomplete) for (const key of dir.keys) await target.delete(key).catch(() => {});
  return out;
}

// ---- after a restore ---------------------------------------------------------------------------

/** Tables whose rows records' purge deletes outright (daemon/records/data-rights/deletion.ts), children first. */
const PURGED_TABLES = ["note_versions", "notes", "consent_revocations", "consents", "attachments", "appointments", "legal_holds", "care_team_assignments"];

export type PurgeResult = { patients: number; tenants: number; rowsDeleted: number };

/**
 * Removes what a restored data snapshot still holds of crypto-shredded subjects, exactly as the
 * records capability's purge leaves a patient: every record row deleted, free-text break-glass
 * reasons blanked, the patient row kept as a tombstone with every PHI column NULL (so ids in the
 * audit trail still resolve). Their ciphertexts could never be decrypted again; left in place
 * they would make lists fail. Runs inside the restore's transaction (owner, appliance scope).
 */
export async function purgeShreddedSubjects(client: pg.ClientBase, subjects: ShreddedSubject[], now: Date): Promise<PurgeResult> {
  const result: PurgeResult = { patients: 0, tenants: 0, rowsDeleted: 0 };
  if (subjects.length === 0) return result;
  const present = new Set(
    (
      await client.query<{ t: string }>("SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NOT NULL", [[...PURGED_TABLES, "patients", "break_glass_grants", "tenants"]])
    ).rows.map((r) => r.t),
  );
  if (!present.has("patients")) return result;
  // The patient row's PHI columns: every field-encrypted (_enc) and blind-index (_bidx) column.
  const phi = (
    await client.query<{ c: string }>(
      "SELECT column_name AS c FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'patients' AND (column_name LIKE '%\\_enc' OR column_name LIKE '%\\_bidx') ORDER BY 1",
    )
  ).rows.map((r) => `"${r.c}" = NULL`);
  const patients: { tenantId: string; patientId: string }[] = [];
  for (const s of subjects) {
    if (s.kind === "patient" && s.patientId) patients.push({ tenantId: s.tenantId, patientId: s.patientId });
    if (s.kind === "tenant") {
      result.tenants += 1;
      const rows = await client.query<{ id: string }>("SELECT id::text FROM patients WHERE tenant_id = $1 AND status <> 'purged'", [s.tenantId]);
      for (const r of rows.rows) patients.push({ tenantId: s.tenantId, patientId: r.id });
    }
  }
  for (const p of patients) {
    // The history tables' guard lets a DELETE through only for the patient a purge names.
    await client.query("SELECT set_config('wardkeep.purge_patient', $1, true)", [p.patientId]);
    for (const table of PURGED_TABLES.filter((t) => present.has(t))) {
      const r = await client.query(`DELETE FROM ${table} WHERE tenant_id = $1 AND patient_id = $2`, [p.tenantId, p.patientId]);
      result.rowsDeleted += r.rowCount ?? 0;
    }
    if (present.has("break_glass_grants")) {
      await client.query(
        "UPDATE break_glass_grants SET reason = '(removed when the patient was purged)', ended_at = coalesce(ended_at, $3) WHERE tenant_id = $1 AND patient_id = $2",
        [p.tenantId, p.patientId, now],
      );
    }
    const r = await client.query(
      `UPDATE patients SET status = 'purged', ${phi.join(", ")}, purged_at = coalesce(purged_at, $3), updated_at = $3, updated_by = NULL, version = version + 1
        WHERE tenant_id = $1 AND id = $2 AND status <> 'purged'`,
      [p.tenantId, p.patientId, now],
    );
    result.patients += r.rowCount ?? 0;
  }
  await client.query("SELECT set_config('wardkeep.purge_patient', '', true)");
  if (present.has("tenants")) {
    for (const s of subjects.filter((x) => x.kind === "tenant")) {
      await client.query("UPDATE tenants SET status = 'deleting', updated_at = $2 WHERE id = $1 AND status <> 'deleting'", [s.tenantId, now]);
    }
  }
  return result;
}

// ---- readability of the restored data ------------------------------------------------------------

/** The field-encrypted columns, with the records capability's registered (it registers them on import). */
export async function registeredEncryptedColumns(): Promise<EncryptedColumn[]> {
  await import("../daemon/records/columns.js");
  return encryptedColumns();
}

export type EncryptedValuesCheck = { ok: boolean; values: number; sampled: number; columns: number; tenants: number; missingKeys: string[]; undecryptable: string[] };

const quoteRel = (table: string) =>
  table
    .split(".")
    .map((p) => `"${p}"`)
    .join(".");

/**
 * Whether the restored data can be read with a key store (`lookup`, `keySlots` = "keyId#version"
 * it holds): every stored value's header is checked to name a key the store holds (a full scan
 * in SQL, headers only), and up to `perTenant` values of every column of every tenant are
 * decrypted (which also checks the associated data: tenant, table, column, row). Failures name
 * table, column, tenant, row or key ids, never a value. `client` has the appliance scope set.
 */
export async function checkEncryptedValues(
  client: pg.ClientBase,
  columns: EncryptedColumn[],
  lookup: DataKeyLookup,
  opts: { perTenant: number; keySlots?: Set<string> },
): Promise<EncryptedValuesCheck> {
  const out: EncryptedValuesCheck = { ok: true, values: 0, sampled: 0, columns: 0, tenants: 0, missingKeys: [], undecryptable: [] };
  const tenants = new Set<string>();
  for (const col of columns) {
    const rel = quoteRel(col.table);
    const exists = await client.query("SELECT to_regclass($1) AS r", [rel]);
    if (!exists.rows[0].r) continue;
    if (opts.keySlots) {
      // Field header: format (1) || key version (uint32 BE) || key id length L (1) || key id (L).
      const keys = await client.query<{ key_id: string; version: string; n: number }>(
        `SELECT convert_from(substring(v FROM 7 FOR get_byte(v, 5)), 'UTF8') AS key_id,
                ((get_byte(v, 1)::bigint << 24) | (get_byte(v, 2) << 16) | (get_byte(v, 3) << 8) | get_byte(v, 4))::text AS version,
                count(*)::int AS n
           FROM (SELECT "${col.column}" AS v FROM ${rel} WHERE "${col.column}" IS NOT NULL AND length("${col.column}") > 6) s
          GROUP BY 1, 2`,
      );
      for (const k of keys.rows) {
        out.values += k.n;
        if (!opts.keySlots.has(`${k.key_id}#${k.version}`)) out.missingKeys.push(`${col.table}.${col.column}: ${k.n} value(s) under ${k.key_id} v${k.version}`);
      }
    }
    const rows = await client.query<{ tenant: string; id: string; value: Buffer }>(
      `SELECT tenant, id, value FROM (
         SELECT "${col.tenantColumn}"::text AS tenant, "${col.idColumn}"::text AS id, "${col.column}" AS value,
                row_number() OVER (PARTITION BY "${col.tenantColumn}" ORDER BY "${col.idColumn}") AS rn
           FROM ${rel} WHERE "${col.column}" IS NOT NULL) s
        WHERE rn <= $1`,
      [opts.perTenant],
    );
    if (rows.rows.length) out.columns += 1;
    for (const r of rows.rows) {
      out.sampled += 1;
      tenants.add(r.tenant);
      try {
        zeroize(decryptField(lookup, { tenantId: r.tenant, table: col.table, column: col.column, rowId: r.id }, r.value));
      } catch (err) {
        if (!(err instanceof DecryptionError || err instanceof UnknownKeyVersionError)) throw err;
        out.undecryptable.push(
          `${col.table}.${col.column} (tenant ${r.tenant}, row ${r.id}: ${err instanceof UnknownKeyVersionError ? "its data key is not in the key-store backup" : "authentication failed"})`,
        );
      }
    }
  }
  out.tenants = tenants.size;
  out.ok = out.missingKeys.length === 0 && out.undecryptable.length === 0;
  return out;
}

/** One line about a failed check (first three of each kind). */
export function describeUnreadable(check: EncryptedValuesCheck, keystoreId: string): string {
  const parts: string[] = [];
  const some = (list: string[]) => `${list.slice(0, 3).join("; ")}${list.length > 3 ? "; ..." : ""}`;
  if (check.undecryptable.length)
    parts.push(`${check.undecryptable.length} of ${check.sampled} sampled value(s) did not decrypt with key-store backup ${keystoreId}: ${some(check.undecryptable)}`);
  if (check.missingKeys.length) parts.push(`stored values name data keys that key-store backup ${keystoreId} does not hold: ${some(check.missingKeys)}`);
  return parts.join("; ");
}
