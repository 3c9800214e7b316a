/**
 * `wardkeep recover`: the whole appliance back on new hardware (DESIGN "Key-store backups").
 * Given only the target's connection details and the recovery kit, it restores a data snapshot
 * (the newest, or --snapshot) into this appliance's empty database (embedded or external), the
 * NEWEST key-store backup into its key store, and the attachment files into its data directory;
 * re-applies the crypto-shredding list; and seals the key store under a NEW unseal source chosen
 * here (the old unseal key is gone with the old machine). `wardkeep start` then serves the same
 * patients, notes and attachments. docs/backups.md "Whole-appliance recovery" is the runbook.
 */
import fs from "node:fs";
import path from "node:path";
import type { KeyObject } from "node:crypto";
import type { Command } from "commander";
import cliProgress from "cli-progress";
import { Registry } from "prom-client";
import { restoreAttachments, type RestoreAttachmentsResult } from "../../../backup/attachments.js";
import { latestSnapshot } from "../../../backup/catalog.js";
import { manifestSigner } from "../../../backup/keys.js";
import { RestoreRefused } from "../../../backup/errors.js";
import {
  checkEncryptedValues,
  describeUnreadable,
  latestKeyStoreBackup,
  openKeyStoreBackup,
  purgeShreddedSubjects,
  registeredEncryptedColumns,
  type EncryptedValuesCheck,
  type PurgeResult,
} from "../../../backup/keystore-backup.js";
import { openSnapshot, restoreSnapshot, type RestoreResult } from "../../../backup/restore.js";
import { openTarget, targetDefinitionSchema, targetSecretsSchema, type SnapshotTarget } from "../../../backup/targets/index.js";
import { appendAuditEvent } from "../../audit/append.js";
import { auditVerifierFor } from "../../backups/index.js";
import {
  backupApplianceSecret,
  backupDataKeyLookup,
  installRecoveredKeyStore,
  KeyStoreBackupError,
  unwrapBackupKeks,
  type InstalledKeyStore,
  OperatorError,
  loadRecoveryPrivateKey,
  RootKey,
  type UnsealMode,
  reapplyShredList,
  openWithUnsealKey,
  unsealSourceFor,
  zeroize,
  UnsealError,
  type CreateSealInput,
  type SealCreation,
} from "../../keys/index.js";
import { systemClock } from "../../clock.js";
import { inDataDir, loadConfig } from "../../config/load.js";
import type { Config } from "../../config/schema.js";
import type { ApplianceContext } from "../../context.js";
import { openDatabase } from "../../db/connection.js";
import { prepareDatabase } from "../../db/roles.js";
import { inScope } from "../../db/sql.js";
import { AppError } from "../../kernel/errors.js";
import { silentLogger } from "../../log/logger.js";
import { parseUnsealMode, sealInput, UNSEAL_MODES } from "../seal-input.js";
import { planPointInTimeRecovery, recoverToPointInTime, type PointInTime } from "./recover-pitr.js";
import { CliError, printResult, type GlobalOptions } from "../output.js";
import { aliasTo, hiddenAlias } from "../flags.js";

type RecoverOptions = {
  targetFile: string;
  recoveryKeyFile?: string;
  recoveryShareFile?: string[];
  snapshot?: string;
  expectSigner?: string;
  unseal?: string;
  passphraseFile?: string;
  shares?: string;
  threshold?: string;
  outDir?: string;
  createHsmKey?: boolean;
  at?: string;
  beforeEvent?: string;
  dryRun?: boolean;
};

const collect = (v: string, prev: string[] = []) => [...prev, v];

/**
 * The target file: the target's definition exactly as in the backup policy (`kind`, `name`, ...,
 * see backup/targets/target.ts), plus an optional `secrets` object (`privateKey`, `passphrase`,
 * `password`, `secretAccessKey`). docs/backups.md shows one per kind.
 */
export function readTargetFile(file: string): SnapshotTarget {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    throw new CliError(`--target-file ${file}: ${(err as NodeJS.ErrnoException).code ?? "not valid JSON"}`);
  }
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw new CliError(`--target-file ${file}: expected one JSON object`);
  const { secrets, ...def } = raw as { secrets?: unknown };
  const parsedDef = targetDefinitionSchema.safeParse(def);
  if (!parsedDef.success) throw new CliError(`--target-file ${file}: ${parsedDef.error.issues[0]!.path.join(".") || "kind"}: ${parsedDef.error.issues[0]!.message}`);
  const parsedSecrets = targetSecretsSchema.safeParse(secrets ?? {});
  if (!parsedSecrets.success) throw new CliError(`--target-file ${file}: secrets: ${parsedSecrets.error.issues[0]!.message}`);
  try {
    return openTarget(parsedDef.data, parsedSecrets.data);
  } catch (err) {
    throw new CliError(`--target-file ${file}: ${(err as Error).message}`);
  }
}

export type RecoveryOutcome = {
  target: string;
  snapshotId: string;
  keyStoreBackup: string;
  signerKeyId: string;
  restore: Pick<RestoreResult, "tables" | "rows" | "storedBytes" | "schema" | "auditChain" | "phases">;
  keyStore: Omit<InstalledKeyStore, "shredded"> & { shreddedSubjects: number };
  purged: PurgeResult;
  /** Every stored encrypted value names a key the recovered store holds; a sample per column and tenant decrypted. */
  readable: { values: number; sampled: number; columns: number; tenants: number };
  shredListReapplied: number;
  attachments: Pick<RestoreAttachmentsResult, "restored" | "alreadyPresent" | "bytes"> & { leftOut: number };
  unseal: { mode: UnsealMode; keyFile?: string; shares?: string[]; shareFiles?: string[]; threshold?: number };
  durationMs: number;
  phases: { locateMs: number; keyStoreMs: number; restoreMs: number; attachmentsMs: number; finishMs: number };
};

export type RecoveryProgress = { phase: string; done: number; total: number; detail?: string };

/**
 * The recovery itself (the command is a thin wrapper). Order matters: everything that can be
 * checked without touching the new appliance is checked first (snapshot and key-store backup
 * present, both authenticate, the kit opens every KEK), so a wrong kit or a missing key-store
 * backup leaves the new machine as it was.
 */
export type RecoveryRequest = {
  target: SnapshotTarget;
  privateKey: KeyObject;
  snapshotId?: string;
  expectSigner?: Buffer;
  mode: UnsealMode;
  input: CreateSealInput;
  onProgress?: (p: RecoveryProgress) => void;
};

/**
 * Read kit and target → open key store → restore → install keys and purge shredded (inside the
 * restore's transaction) → attachments → new unseal source; each phase timed in `phases`.
 */
export async function recoverAppliance(config: Config, opts: RecoveryRequest): Promise<RecoveryOutcome> {
  const started = performance.now();
  const mark = () => performance.now();
  let t = mark();
  const { snapshotId, keyStoreId } = await locateBackups(opts.target, opts.snapshotId);
  const locateMs = mark() - t;

  t = mark();
  opts.onProgress?.({ phase: "key store", done: 0, total: 1 });
  const opener = { recoveryPrivateKey: opts.privateKey };
  const keyStore = await openKeyStoreBackup(opts.target, keyStoreId, opener, opts.expectSigner ? [opts.expectSigner] : []);
  const keks = unwrapBackupKeks(keyStore.contents, opener);
  let creation: SealCreation | undefined;
  try {
    const { signer, opened } = await authenticateBackups(opts.target, snapshotId, keyStoreId, keyStore, keks, opener);
    const keyStoreMs = mark() - t;

    creation = await unsealSourceFor(config, opts.mode).create(opts.input);
    t = mark();
    const db = await prepareDatabase(config);
    try {
      const seal = { mode: opts.mode, params: creation.params, unsealKey: creation.unsealKey };
      const { restored, keys } = await restoreWithKeys(config, opts, db, { snapshotId, keyStoreId, keyStore, keks, opener, signer, seal });
      const restoreMs = mark() - t;

      t = mark();
      const shredded = keys.installed.shredded;
      const entries = opened.manifest.attachments?.entries ?? [];
      const files = await restoreAttachmentFiles(config, opts, entries, shredded);
      const attachmentsMs = mark() - t;

      t = mark();
      const reapplied = await openWithNewUnsealSource(config, opts, db, creation, { snapshotId, keyStoreId, shredded: shredded.length });
      const finishMs = mark() - t;
      const { shredded: _, ...keyCounts } = keys.installed;
      const { readable, purged } = keys;
      return {
        target: opts.target.name,
        snapshotId,
        keyStoreBackup: keyStoreId,
        signerKeyId: signer.keyId,
        restore: {
          tables: restored.tables,
          rows: restored.rows,
          storedBytes: restored.storedBytes,
          schema: restored.schema,
          auditChain: restored.auditChain,
          phases: restored.phases,
        },
        keyStore: { ...keyCounts, shreddedSubjects: shredded.length },
        purged,
        readable: { values: readable.values, sampled: readable.sampled, columns: readable.columns, tenants: readable.tenants },
        shredListReapplied: reapplied,
        attachments: { restored: files.restored, alreadyPresent: files.alreadyPresent, bytes: files.bytes, leftOut: files.leftOut },
        unseal: { mode: opts.mode, keyFile: creation.createdFile, shares: creation.shares, threshold: opts.input.threshold },
        durationMs: Math.round(mark() - started),
        phases: {
          locateMs: Math.round(locateMs),
          keyStoreMs: Math.round(keyStoreMs),
          restoreMs: Math.round(restoreMs),
          attachmentsMs: Math.round(attachmentsMs),
          finishMs: Math.round(finishMs),
        },
      };
    } finally {
      await db.embedded?.stop();
    }
  } catch (err) {
    // A key file made for a recovery that did not happen would only mislead the next attempt.
    if (creation?.createdFile) fs.rmSync(creation.createdFile, { force: true });
    throw err;
  } finally {
    for (const k of keks.values()) zeroize(k);
    if (creation) zeroize(creation.unsealKey);
  }
}

type KeyStoreBackup = Awaited<ReturnType<typeof openKeyStoreBackup>>;
type Keks = ReturnType<typeof unwrapBackupKeks>;
type Opener = { recoveryPrivateKey: KeyObject };
type Signer = ReturnType<typeof manifestSigner>;
type PreparedDatabase = Awaited<ReturnType<typeof prepareDatabase>>;

/** Phase 1, read the target: the snapshot to restore (given or newest) and the newest key-store backup. */
async function locateBackups(target: SnapshotTarget, wanted: string | undefined): Promise<{ snapshotId: string; keyStoreId: string }> {
  const snapshotId = wanted ?? (await latestSnapshot(target));
  if (!snapshotId) throw new CliError(`target ${target.name} holds no complete snapshot to recover from`);
  const keyStoreId = await latestKeyStoreBackup(target);
  if (!keyStoreId) {
    throw new CliError(
      `target ${target.name} holds no key-store backup: without one, no encrypted value of the snapshot can be decrypted (each snapshot run writes one; they are kept keys.shredGraceDays days)`,
    );
  }
  return { snapshotId, keyStoreId };
}

/**
 * Phase 2, open the key store: the manifests' signing key derives from the appliance-internal
 * secret the backup holds, so a key-store backup (and a snapshot) not signed by the appliance
 * whose keys they are is refused, before anything is written.
 */
async function authenticateBackups(target: SnapshotTarget, snapshotId: string, keyStoreId: string, keyStore: KeyStoreBackup, keks: Keks, opener: Opener) {
  const internal = backupApplianceSecret(keyStore.contents, keks);
  const signer = manifestSigner(internal);
  zeroize(internal);
  if (!signer.publicKeyRaw.equals(keyStore.signerPublicKey)) {
    throw new KeyStoreBackupError(
      `key-store backup ${keyStoreId} was not signed by the appliance whose keys it holds (signer ${keyStore.manifest.signer.keyId}, expected ${signer.keyId})`,
    );
  }
  // Authenticates the snapshot with the same signer before anything is written.
  const opened = await openSnapshot(target, snapshotId, opener, [signer.publicKeyRaw]);
  zeroize(opened.key);
  return { signer, opened };
}

type RecoveredKeys = { installed: InstalledKeyStore; purged: PurgeResult; readable: EncryptedValuesCheck };

/**
 * Phases 3 and 4, restore, then install keys and purge shredded subjects inside the restore's
 * transaction, so the recovery ends with all of it or with nothing.
 */
async function restoreWithKeys(
  config: Config,
  opts: RecoveryRequest,
  db: PreparedDatabase,
  c: { snapshotId: string; keyStoreId: string; keyStore: KeyStoreBackup; keks: Keks; opener: Opener; signer: Signer; seal: Parameters<typeof installRecoveredKeyStore>[3] },
): Promise<{ restored: RestoreResult; keys: RecoveredKeys }> {
  const now = new Date();
  let keys: RecoveredKeys | undefined;
  const columns = await registeredEncryptedColumns();
  const restored = await restoreSnapshot({
    target: opts.target,
    snapshotId: c.snapshotId,
    intoUrl: db.ownerUrl,
    appRole: db.appRole,
    opener: c.opener,
    trustedSigners: [c.signer.publicKeyRaw],
    verifyAuditChain: auditVerifierFor({ config, log: silentLogger(), clock: systemClock, rootKey: new RootKey(config.keys.unseal), metrics: new Registry() }, "database"),
    onProgress: (p) => opts.onProgress?.({ phase: "data", done: p.done, total: p.total }),
    beforeCommit: async (client) => {
      keys = await installKeysAndPurge(client, c.keyStore, c.keks, c.keyStoreId, c.seal, columns, now);
      const { installed, purged, readable } = keys;
      return { keyStore: { ...installed, shredded: installed.shredded.length }, purged, readable: { values: readable.values, sampled: readable.sampled } };
    },
  });
  return { restored, keys: keys! };
}

/** Phase 4, inside the load transaction: the key store installed, shredded subjects purged, every encrypted value checked. */
async function installKeysAndPurge(
  client: Parameters<NonNullable<Parameters<typeof restoreSnapshot>[0]["beforeCommit"]>>[0],
  keyStore: KeyStoreBackup,
  keks: Keks,
  keyStoreId: string,
  seal: Parameters<typeof installRecoveredKeyStore>[3],
  columns: Awaited<ReturnType<typeof registeredEncryptedColumns>>,
  now: Date,
): Promise<RecoveredKeys> {
  const installed = await installRecoveredKeyStore(client, keyStore.contents, keks, seal, now);
  const purged = await purgeShreddedSubjects(client, installed.shredded, now);
  // Before COMMIT: data the key store cannot read (a snapshot newer than the newest
  // key-store backup) is refused whole rather than restored as ciphertext.
  const gone = installed.shredded;
  const held = keyStore.contents.dataKeys.filter((d) => !gone.some((x) => (x.kind === "tenant" ? d.tenantId === x.tenantId : d.keyId === x.subject)));
  const keys = backupDataKeyLookup(keyStore.contents, keks);
  let readable: EncryptedValuesCheck;
  try {
    readable = await checkEncryptedValues(client, columns, keys.lookup, { perTenant: 2, keySlots: new Set(held.map((d) => `${d.keyId}#${d.version}`)) });
  } finally {
    keys.dispose();
  }
  if (!readable.ok) {
    throw new RestoreRefused(
      `the snapshot cannot be read with the newest key-store backup (${describeUnreadable(readable, keyStoreId)}); no data was loaded (start again on an empty database) — recover a --snapshot taken no later than ${keyStoreId}`,
    );
  }
  return { installed, purged, readable };
}

/** Phase 5: attachment files, except those of crypto-shredded subjects. */
async function restoreAttachmentFiles(
  config: Config,
  opts: RecoveryRequest,
  entries: AttachmentEntryOf,
  shredded: InstalledKeyStore["shredded"],
): Promise<RestoreAttachmentsResult & { leftOut: number }> {
  const keep = entries.filter((e) => !shredded.some((s) => (s.kind === "tenant" ? s.tenantId === e.tenantId : s.patientId === e.patientId)));
  const files = await restoreAttachments({
    target: opts.target,
    entries: keep,
    root: inDataDir(config, config.records.attachmentsDir),
    onProgress: (p) => opts.onProgress?.({ phase: "attachments", done: p.done, total: p.total }),
  });
  return { ...files, leftOut: entries.length - keep.length };
}

type AttachmentEntryOf = NonNullable<Awaited<ReturnType<typeof openSnapshot>>["manifest"]["attachments"]>["entries"];

/** Phase 6: the appliance opened with its new unseal source, the shred list re-applied, the recovery audited. */
async function openWithNewUnsealSource(
  config: Config,
  opts: RecoveryRequest,
  db: PreparedDatabase,
  creation: SealCreation,
  r: { snapshotId: string; keyStoreId: string; shredded: number },
): Promise<number> {
  const pools = openDatabase(db, config);
  const ctx: ApplianceContext = { config, log: silentLogger(), db: pools, rootKey: new RootKey(opts.mode), metrics: new Registry(), clock: systemClock };
  try {
    await openWithUnsealKey(ctx, opts.mode, creation.unsealKey, 1);
    // The keys capability's own pass: anything of a shredded subject still in the store goes.
    const reapplied = (await reapplyShredList(ctx)).reapplied;
    await inScope(ctx.db.app, { kind: "appliance" }, (tx) =>
      appendAuditEvent(ctx, tx, {
        tenantId: null,
        actor: { userId: null, role: "host_operator" },
        action: "backup.recover",
        resourceType: "backup_snapshot",
        resourceId: r.snapshotId,
        outcome: "success",
        userAgent: "wardkeep-cli",
        reason: `key-store backup ${r.keyStoreId}; ${r.shredded} crypto-shredded subject(s) re-applied; new unseal mode ${opts.mode}`,
      }),
    );
    return reapplied;
  } finally {
    ctx.rootKey.seal("recovery finished");
    await pools.close();
  }
}

/** One progress bar per phase on a terminal; nothing with --json or when stderr is not a terminal. */
function phaseProgress(global: GlobalOptions): { onProgress: (p: { phase: string; done: number; total: number }) => void; stop: () => void } {
  const bar =
    global.json || !process.stderr.isTTY
      ? undefined
      : new cliProgress.SingleBar({ format: "  {phase} {bar} {value}/{total}", stream: process.stderr, hideCursor: true }, cliProgress.Presets.shades_classic);
  let phase = "";
  return {
    onProgress: (p) => {
      if (!bar) return;
      if (p.phase !== phase) {
        if (bar.isActive) bar.stop();
        phase = p.phase;
        bar.start(Math.max(p.total, 1), p.done, { phase: p.phase.padEnd(11) });
      }
      bar.setTotal(Math.max(p.total, 1));
      bar.update(p.done, { phase: p.phase.padEnd(11) });
    },
    stop: () => bar?.stop(),
  };
}

/** The recovery kit given on the command line: one PEM file, or the custodians' share files. */
function loadKit(opts: RecoverOptions) {
  return opts.recoveryKeyFile ? loadRecoveryPrivateKey({ pem: readKit(opts.recoveryKeyFile) }) : loadRecoveryPrivateKey({ shares: opts.recoveryShareFile!.map(readKit) });
}

/** The new unseal source's shares, delivered (terminal or --out-dir), and what the JSON answer says of them. */
function deliveredUnseal<U extends { shares?: string[] | undefined; threshold?: number | undefined }>(unseal: U, outDir: string | undefined) {
  const shares = unseal.shares ? deliverShares(unseal.shares, unseal.threshold ?? 3, outDir) : undefined;
  return { shares, unseal: { ...unseal, shares: shares?.files ? undefined : unseal.shares, shareFiles: shares?.files } };
}

/** A recovery's failure as one line (the errors the recovery itself names keep their text). */
function asCliError(err: unknown): CliError {
  if (err instanceof AppError || err instanceof UnsealError || err instanceof OperatorError || err instanceof KeyStoreBackupError) return new CliError(err.message);
  if (err instanceof CliError) return err;
  return new CliError((err as Error).message.split("\n")[0]!.slice(0, 500));
}

/** Shares go to the terminal, or one 0600 file per custodian with --out-dir. */
function deliverShares(shares: string[], threshold: number, outDir: string | undefined): { files?: string[]; lines: string[] } {
  if (!outDir) return { lines: [`${shares.length} custodian shares (any ${threshold} unseal); shown once, never stored:`, ...shares.map((s, i) => `  share ${i + 1}: ${s}`)] };
  fs.mkdirSync(outDir, { recursive: true, mode: 0o700 });
  const files = shares.map((share, i) => {
    const file = path.join(path.resolve(outDir), `unseal-share-${i + 1}-of-${shares.length}.txt`);
    fs.writeFileSync(file, `Wardkeep unseal share ${i + 1} of ${shares.length} (any ${threshold} unseal)\n\n${share}\n`, { mode: 0o600, flag: "wx" });
    return file;
  });
  return { files, lines: [`${shares.length} custodian share files written (any ${threshold} unseal):`, ...files.map((f) => `  ${f}`)] };
}

export function registerRecover(program: Command) {
  program
    .command("recover")
    .description("recover the whole appliance on new hardware: newest (or --snapshot) data snapshot + newest key-store backup + recovery kit")
    .requiredOption("--target-file <file>", "the target holding the snapshots: JSON definition as in the backup policy, plus optional `secrets`")
    .option("--recovery-key-file <file>", "the recovery kit (PEM)")
    .option("--recovery-share-file <file>", "a recovery kit share file (repeat k times) instead of --recovery-key-file", collect)
    .addOption(hiddenAlias("--recovery-key <file>", "--recovery-key-file"))
    .on("option:recovery-key", aliasTo("recoveryKeyFile"))
    .addOption(hiddenAlias("--recovery-share <file>", "--recovery-share-file"))
    .on("option:recovery-share", aliasTo("recoveryShareFile", { repeat: true }))
    .option("--snapshot <id>", "data snapshot to restore (default: the newest complete one)")
    .option("--expect-signer <hex>", "raw Ed25519 public key (hex) the manifests must be signed with (backup/FORMAT.md, Manifest: write it down beside the kit)")
    .option("--unseal <mode>", `NEW unseal source for this appliance: ${UNSEAL_MODES.join(", ")} (default: keys.unseal)`)
    .option("--passphrase-file <file>", "passphrase mode: file holding the new passphrase (- for stdin); otherwise asked twice")
    .option("--shares <n>", "shamir mode: number of custodian shares (default 5)")
    .option("--threshold <k>", "shamir mode: shares needed to unseal (default 3)")
    .option("--out-dir <dir>", "shamir mode: write one share file per custodian instead of printing them")
    .option("--create-hsm-key", "pkcs11 mode: create the AES key in the HSM when the token has none")
    .option("--at <time>", "point-in-time recovery: an ISO 8601 time (2026-12-03T10:58:30Z), or `latest`; replays archived WAL over the newest base backup before it")
    .option(
      "--before-event <seq>",
      "point-in-time recovery to just before the transaction that wrote audit event SEQ: its time is read from the archived audit chain (two replays; docs/backups.md)",
    )
    .option("--dry-run", "with --at or --before-event: list the base backup and the WAL files a recovery would fetch, and write nothing")
    .action(async (opts: RecoverOptions, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const config = loadConfig();
      const mode = parseUnsealMode(opts.unseal ?? config.keys.unseal);
      if (!opts.recoveryKeyFile && !opts.recoveryShareFile?.length)
        throw new CliError("give the recovery kit: --recovery-key-file FILE, or --recovery-share-file FILE once per share");
      if (opts.at !== undefined || opts.beforeEvent !== undefined) return recoverPointInTime(global, config, mode, opts);
      if (opts.dryRun) throw new CliError("--dry-run goes with --at or --before-event (point-in-time recovery)");
      if (opts.expectSigner !== undefined && !/^[0-9a-fA-F]{64}$/.test(opts.expectSigner)) throw new CliError("--expect-signer must be 64 hex digits (a raw Ed25519 public key)");
      const progress = phaseProgress(global);
      let target: SnapshotTarget | undefined;
      try {
        const privateKey = await loadKit(opts);
        const input = await sealInput(mode, opts);
        target = readTargetFile(opts.targetFile);
        const r = await recoverAppliance(config, {
          target,
          privateKey,
          snapshotId: opts.snapshot,
          expectSigner: opts.expectSigner ? Buffer.from(opts.expectSigner, "hex") : undefined,
          mode,
          input,
          onProgress: progress.onProgress,
        });
        progress.stop();
        const { shares, unseal } = deliveredUnseal(r.unseal, opts.outDir);
        const chain = r.restore.auditChain;
        printResult(global, { recovery: { ...r, unseal } }, [
          `recovered snapshot ${r.snapshotId} with key-store backup ${r.keyStoreBackup} from target ${r.target} in ${(r.durationMs / 1000).toFixed(1)} s`,
          `  data: ${r.restore.tables} tables, ${r.restore.rows} rows (schema ${r.restore.schema.restoredTo}); audit chain ${chain.checked ? (chain.intact ? `intact up to ${chain.expected?.seq ?? 0}` : "BROKEN") : chain.reason}`,
          `  keys: ${r.keyStore.kekVersions} KEK version(s), ${r.keyStore.dataKeys} data key(s); ${r.keyStore.shreddedSubjects} crypto-shredded subject(s) kept destroyed (${r.purged.patients} patient record(s) purged)`,
          `  readable: all ${r.readable.values} encrypted value(s) name keys the recovered key store holds; ${r.readable.sampled} sampled across ${r.readable.tenants} tenant(s) decrypted`,
          `  attachments: ${r.attachments.restored} restored${r.attachments.leftOut ? `, ${r.attachments.leftOut} of shredded patients left out` : ""}`,
          `  phases: locate ${r.phases.locateMs} ms, key store ${r.phases.keyStoreMs} ms, data ${r.phases.restoreMs} ms (load ${r.restore.phases.loadMs} ms, verify ${r.restore.phases.verifyMs} ms), attachments ${r.phases.attachmentsMs} ms, finish ${r.phases.finishMs} ms`,
          `  manifests signed by ${r.signerKeyId}`,
          ...(mode === "keyfile"
            ? [`  unseal: key file ${r.unseal.keyFile ?? inDataDir(config, config.keys.keyFile)} (evaluation only; use passphrase, shamir or pkcs11 in production)`]
            : []),
          ...(mode === "passphrase" ? ["  unseal: the new passphrase (the old one no longer exists anywhere)"] : []),
          ...(shares?.lines ?? []),
          "  next: wardkeep start — then write a NEW recovery kit only if you want to rotate it (the old kit still opens every snapshot)",
        ]);
      } catch (err) {
        progress.stop();
        throw asCliError(err);
      } finally {
        await target?.close().catch(() => {});
      }
    });
}

/** `--at` / `--before-event` as a recovery point; one readable line when they are wrong. */
export function parsePoint(opts: Pick<RecoverOptions, "at" | "beforeEvent">): PointInTime {
  if (opts.at !== undefined && opts.beforeEvent !== undefined) throw new CliError("--at and --before-event exclude each other: give one point to recover to");
  if (opts.beforeEvent !== undefined) {
    if (!/^[1-9][0-9]{0,17}$/.test(opts.beforeEvent)) throw new CliError(`--before-event must be an audit sequence number (1, 2, ...), not ${JSON.stringify(opts.beforeEvent)}`);
    return { kind: "event", seq: opts.beforeEvent };
  }
  const at = opts.at!;
  if (at === "latest") return { kind: "latest" };
  const t = Date.parse(at);
  if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/.test(at) || Number.isNaN(t)) {
    throw new CliError(`--at must be an ISO 8601 time with a zone (2026-12-03T10:58:30Z) or "latest", not ${JSON.stringify(at)}`);
  }
  // A time later than this machine's clock cannot have been archived; a time written in another
  // zone without its offset is the usual cause, so say how the time was read.
  if (t > Date.now()) {
    throw new CliError(
      `--at ${at} (${new Date(t).toISOString()}) is in the future: this machine's clock says ${new Date().toISOString()}; give the time with its zone offset, or --at latest (--dry-run shows the newest archived time by the database's clock)`,
    );
  }
  return { kind: "time", at: new Date(t) };
}

/** `recover --at`: the point-in-time path (recover-pitr.ts); same kit, target file, unseal choice and output conventions. */
async function recoverPointInTime(global: GlobalOptions, config: Config, mode: UnsealMode, opts: RecoverOptions): Promise<void> {
  if (opts.snapshot) throw new CliError("--snapshot excludes --at and --before-event: they replay WAL over a base backup");
  const point = parsePoint(opts);
  let target: SnapshotTarget | undefined;
  const progress = phaseProgress(global);
  try {
    const privateKey = await loadKit(opts);
    target = readTargetFile(opts.targetFile);
    const expectSigner = opts.expectSigner ? Buffer.from(opts.expectSigner, "hex") : undefined;
    if (opts.dryRun) {
      const plan = await planPointInTimeRecovery({ target, privateKey, point, expectSigner, mode, input: {} });
      printResult(global, { plan }, [
        `point-in-time recovery to ${plan.point} from target ${plan.target} would use:`,
        `  the archive reaches ${plan.archive.archivedAt ?? "no time yet"} by the database's clock (newest WAL ${plan.archive.newestWal ?? "none"}); this machine's clock says ${new Date().toISOString()}`,
        `  base backup ${plan.baseBackup.id} (ended ${plan.baseBackup.completedAt}, ${plan.baseBackup.storedBytes} bytes stored)`,
        `  key-store backup ${plan.keyStoreBackup}`,
        `  ${plan.wal.length} WAL file(s), ${plan.walStoredBytes} bytes stored: ${plan.wal.length ? `${plan.wal[0]!.name} .. ${plan.wal.at(-1)!.name}` : "none"}`,
        ...plan.wal.map((w) => `    ${w.name}  archived ${w.archivedAt}`),
        ...(point.kind === "event" ? [`  (the event's time is read from the archived audit chain during a first replay: every WAL file may be fetched twice)`] : []),
        ...(plan.missing.length ? [`  MISSING from the target: ${plan.missing.join(", ")} (replay would stop there)`] : []),
      ]);
      if (plan.missing.length) process.exitCode = 3;
      return;
    }
    const input = await sealInput(mode, opts);
    const r = await recoverToPointInTime(config, {
      target,
      privateKey,
      point,
      expectSigner,
      mode,
      input,
      onProgress: progress.onProgress,
    });
    progress.stop();
    const { shares, unseal } = deliveredUnseal(r.unseal, opts.outDir);
    printResult(global, { recovery: { ...r, unseal } }, [
      `recovered to ${r.point} (last transaction ${r.recoveredTo ?? "none"}) from base backup ${r.baseBackup} and ${r.replay.walFiles} WAL file(s) on target ${r.target} in ${(r.durationMs / 1000).toFixed(1)} s`,
      `  keys: key-store backup ${r.keyStoreBackup}, ${r.keyStore.kekVersions} KEK version(s), ${r.keyStore.dataKeys} data key(s) (${r.keyStore.dataKeysSinceBackup} made since that backup); ${r.keyStore.shreddedSubjects} crypto-shredded subject(s) kept destroyed (${r.purged.patients} patient record(s) purged)`,
      `  readable: all ${r.readable.values} encrypted value(s) name keys the recovered key store holds; ${r.readable.sampled} sampled decrypted; audit chain intact up to ${r.auditChain.head ?? 0}`,
      ...(r.beforeEvent
        ? [
            `  stopped before audit event ${r.beforeEvent.seq} (${r.beforeEvent.action}, at ${r.beforeEvent.occurredAt}): chain present through ${r.beforeEvent.chainedThrough}, ${r.beforeEvent.pendingInIntake} committed event(s) chained at start${r.beforeEvent.missingBefore ? `, ${r.beforeEvent.missingBefore} earlier event(s) NOT kept (committed during the event's own request)` : ""}`,
          ]
        : []),
      ...(r.adopted.renamedSuperuser || r.adopted.renamedDatabase || r.adopted.ownerFrom
        ? [
            `  made an embedded cluster: ${[
              r.adopted.renamedDatabase ? `database ${r.adopted.renamedDatabase} renamed wardkeep` : "",
              r.adopted.ownerFrom ? `${r.adopted.objects} object(s) of ${r.adopted.ownerFrom} now owned by wardkeep_owner` : "",
              r.adopted.renamedSuperuser ? `superuser ${r.adopted.renamedSuperuser} renamed postgres` : "",
            ]
              .filter(Boolean)
              .join(", ")}; password rules of the embedded server`,
          ]
        : []),
      `  phases (RTO): ${r.phases.findEventMs ? `find event ${r.phases.findEventMs} ms, ` : ""}locate ${r.phases.locateMs} ms, key store ${r.phases.keyStoreMs} ms, base backup ${r.phases.baseMs} ms, replay ${r.phases.replayMs} ms, keys ${r.phases.keysMs} ms, finish ${r.phases.finishMs} ms`,
      ...(mode === "keyfile" ? [`  unseal: key file ${r.unseal.keyFile ?? inDataDir(config, config.keys.keyFile)} (evaluation only)`] : []),
      ...(mode === "passphrase" ? ["  unseal: the new passphrase (the old one no longer exists anywhere)"] : []),
      ...(shares?.lines ?? []),
      "  attachment files are not in the WAL: restore them with `wardkeep recover` from a snapshot's attachments if needed (docs/backups.md)",
      "  next: wardkeep start",
    ]);
  } catch (err) {
    progress.stop();
    throw asCliError(err);
  } finally {
    await target?.close().catch(() => {});
  }
}

function readKit(file: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new CliError(`cannot read the recovery kit ${file} (${(err as NodeJS.ErrnoException).code})`);
  }
}
