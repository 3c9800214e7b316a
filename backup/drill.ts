/**
 * runRecoveryDrill: proves a snapshot can be restored, instead of hoping so. Restores the chosen
 * (by default the latest) snapshot into a scratch database, and records each check:
 * - the manifest authenticates and its signer is this appliance;
 * - every object's digests, GCM tags and row counts match (checked while loading);
 * - the audit chain verifies up to the head in the manifest, and that head equals the one the
 *   live appliance recorded when it took the snapshot (a head kept outside the snapshot);
 * - the run's key-store backup (same id) authenticates and its KEKs open with the same key as the
 *   snapshot, and a sample of every encrypted column of every tenant decrypts with ITS data keys
 *   (a drill that decrypts nothing proves nothing: without the key store a restore is ciphertext);
 * - a smoke query through the app role (row-level security on) sees the restored rows.
 * RTO is the time from the first byte downloaded to a verified database; RPO is the age of the
 * snapshot when the drill started — what a disaster at that moment would lose.
 */
import pg from "pg";
import {
  backupDataKeyLookup,
  recoveryPrivateKeyFromRaw,
  shreddedSubjects,
  unwrapBackupKeks,
  zeroize,
  type DataKeyLookup,
  type EncryptedColumn,
  type KeyStoreContents,
  type KeyStoreOpener,
} from "../daemon/keys/index.js";
import { latestSnapshot } from "./catalog.js";
import { SnapshotNotFound } from "./errors.js";
import type { SnapshotOpener } from "./keys.js";
import { checkEncryptedValues, describeUnreadable, openKeyStoreBackup, purgeShreddedSubjects, registeredEncryptedColumns, type EncryptedValuesCheck } from "./keystore-backup.js";
import { attachmentDigestCheck } from "./attachments.js";
import { openSnapshot, restoreSnapshot, type AuditChainVerifier, type RestorePhases } from "./restore.js";
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
  /** Rows per tenant and encrypted column decrypted with the key-store backup (default 2). */
  decryptSamplePerTenant?: number;
  /** The field-encrypted columns to sample; default the keys capability's registry (records registers its own). */
  encryptedColumns?: EncryptedColumn[];
  now?: () => Date;
};

export const KEYSTORE_CHECK = "key-store backup";
export const DECRYPT_CHECK = "encrypted columns decrypt";

function keyStoreOpener(opener: SnapshotOpener): KeyStoreOpener {
  if ("applianceSecret" in opener) return opener;
  const k = opener.recoveryPrivateKey;
  return { recoveryPrivateKey: Buffer.isBuffer(k) ? recoveryPrivateKeyFromRaw(k) : k };
}

type LoadedKeyStore = { id: string; contents: KeyStoreContents; keks: Map<number, Buffer> };

/** The run's key-store backup, opened with the snapshot's opener and pinned to the same signers. */
async function loadKeyStore(opts: DrillOptions, id: string): Promise<{ loaded?: LoadedKeyStore; check: DrillCheck }> {
  try {
    const opened = await openKeyStoreBackup(opts.target, id, opts.opener, opts.trustedSigners);
    const keks = unwrapBackupKeks(opened.contents, keyStoreOpener(opts.opener));
    const c = opened.manifest.counts;
    return {
      loaded: { id, contents: opened.contents, keks },
      check: { name: KEYSTORE_CHECK, ok: true, detail: `${id} authenticated: ${c.kekVersions} KEK version(s) open, ${c.dataKeys} data key(s), ${c.shredded} shredded subject(s)` },
    };
  } catch (err) {
    return { check: { name: KEYSTORE_CHECK, ok: false, detail: (err as Error).message.slice(0, 500) } };
  }
}

/**
 * Every stored value names a key of the backup, and up to `perTenant` values of every encrypted
 * column of every tenant of the restored database decrypt with the backup's data keys.
 */
async function decryptSample(ownerUrl: string, columns: EncryptedColumn[], loaded: LoadedKeyStore, lookup: DataKeyLookup, perTenant: number): Promise<DrillCheck> {
  const client = new pg.Client({ connectionString: ownerUrl });
  let check: EncryptedValuesCheck;
  try {
    await client.connect();
    await client.query("BEGIN READ ONLY");
    await client.query("SELECT set_config('wardkeep.scope', 'appliance', true), set_config('wardkeep.tenant_id', '', true)");
    const keySlots = new Set(loaded.contents.dataKeys.map((d) => `${d.keyId}#${d.version}`));
    check = await checkEncryptedValues(client, columns, lookup, { perTenant, keySlots });
    await client.query("COMMIT");
  } catch (err) {
    return { name: DECRYPT_CHECK, ok: false, detail: `could not sample the restored database (${(err as { code?: string }).code ?? (err as Error).message})` };
  } finally {
    await client.end().catch(() => {});
  }
  if (!check.ok) return { name: DECRYPT_CHECK, ok: false, detail: describeUnreadable(check, loaded.id) };
  if (check.sampled === 0) return { name: DECRYPT_CHECK, ok: true, detail: "the snapshot holds no encrypted values yet" };
  return {
    name: DECRYPT_CHECK,
    ok: true,
    detail: `${check.sampled} value(s) of ${check.columns} encrypted column(s) across ${check.tenants} tenant(s) decrypted with key-store backup ${loaded.id}; all ${check.values} stored value(s) name keys it holds`,
  };
}

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
    if (expectTenants !== undefined && n !== expectTenants)
      return { name: "smoke query as the app role", ok: false, detail: `the app role sees ${n} tenants, the snapshot holds ${expectTenants}` };
    return { name: "smoke query as the app role", ok: true, detail: `the app role reads ${n} tenant(s) under row-level security` };
  } catch (err) {
    return { name: "smoke query as the app role", ok: false, detail: `the app role cannot query the restored database (${(err as { code?: string }).code ?? "error"})` };
  } finally {
    await client.end().catch(() => {});
  }
}

/** One attachment of the snapshot, chosen at random, read back from the target against the manifest's digest. */
async function attachmentSample(opts: DrillOptions, snapshotId: string): Promise<DrillCheck> {
  const name = "attachment bytes";
  const { manifest } = await openSnapshot(opts.target, snapshotId, opts.opener, opts.trustedSigners);
  const entries = manifest.attachments?.entries ?? [];
  if (entries.length === 0) return { name, ok: true, detail: "the snapshot holds no attachment" };
  const entry = entries[Math.floor(Math.random() * entries.length)]!;
  const r = await attachmentDigestCheck(opts.target, entry);
  return { name, ok: r.ok, detail: `attachment ${r.id}: ${r.detail}` };
}

export async function runRecoveryDrill(opts: DrillOptions): Promise<DrillResult> {
  const now = opts.now ?? (() => new Date());
  const started = now();
  const checks: DrillCheck[] = [];
  const result: DrillResult = { passed: false, snapshotId: null, target: opts.target.name, rtoMs: null, rpoMs: null, phases: null, checks, error: null };
  let scratch: ScratchDatabase | undefined;
  let loaded: LoadedKeyStore | undefined;
  try {
    const id = opts.snapshotId ?? (await latestSnapshot(opts.target));
    if (!id) throw new SnapshotNotFound(`target ${opts.target.name} holds no complete snapshot to drill`);
    result.snapshotId = id;
    const keyStore = await loadKeyStore(opts, id);
    loaded = keyStore.loaded;
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
      // As a recovery would: rows of subjects shredded by the time of the key-store backup go.
      beforeCommit: loaded ? async (client) => ({ purged: await purgeShreddedSubjects(client, shreddedSubjects(loaded!.contents, now()), now()) }) : undefined,
    });
    result.rtoMs = Math.round(performance.now() - t);
    result.phases = restored.phases;
    checks.push({
      name: "manifest authenticated",
      ok: true,
      detail: `MAC and Ed25519 signature valid (signer ${restored.signer.signerKeyId}${restored.signer.signerMatches ? ", this appliance" : ""})`,
    });
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
        checks.push({
          name: "audit head recorded outside the snapshot",
          ok: same,
          detail: same
            ? `matches the head the appliance recorded (${recorded?.seq ?? "0"})`
            : `the appliance recorded ${recorded?.seq ?? "0"}, the snapshot holds ${manifestHead?.seq ?? "0"}`,
        });
      }
    }
    checks.push(keyStore.check);
    if (loaded) {
      const keys = backupDataKeyLookup(loaded.contents, loaded.keks);
      try {
        const columns = opts.encryptedColumns ?? (await registeredEncryptedColumns());
        checks.push(await decryptSample(scratch.ownerUrl, columns, loaded, keys.lookup, opts.decryptSamplePerTenant ?? 2));
      } finally {
        keys.dispose();
      }
    } else checks.push({ name: DECRYPT_CHECK, ok: false, detail: "not checked: without the run's key-store backup no encrypted value can be decrypted" });
    checks.push(await attachmentSample(opts, id));
    const tenants = restored.tableRows.find((o) => o.table === "tenants")?.rows;
    checks.push(await smokeQuery(scratch.appUrl, tenants));
    result.rpoMs = started.getTime() - snapshotCreatedAt(id).getTime();
    result.passed = checks.every((c) => c.ok);
    if (!result.passed)
      result.error = checks
        .filter((c) => !c.ok)
        .map((c) => `${c.name}: ${c.detail}`)
        .join("; ");
  } catch (err) {
    result.error = (err as Error).message.slice(0, 1000);
    checks.push({ name: "restore", ok: false, detail: result.error });
  } finally {
    for (const k of loaded?.keks.values() ?? []) zeroize(k);
    await scratch?.drop().catch(() => {});
  }
  return result;
}

function snapshotCreatedAt(id: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(id)!;
  return new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!));
}
