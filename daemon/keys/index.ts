/**
 * The keys capability's public face: the only file of daemon/keys/ that another capability, the
 * CLI, the HTTP layer or the snapshot engine imports (ESLint enforces it; docs/architecture.md).
 * Three audiences, three groups:
 * - `FieldCrypto`: what records need to encrypt, decrypt and index PHI fields, and what the
 *   recovery drill needs to decrypt a sample offline;
 * - `KeyAdmin`: what the CLI, the appliance's start-up and the keys routes need to unseal,
 *   rotate, rekey, shred and report;
 * - what backups legitimately need: the primitives their stream format is built from, the
 *   recovery key pair, the schemas a data snapshot leaves out and the shredded list to re-apply.
 * docs/keys.md explains the design behind them.
 */
import {
  blindIndexFor,
  cachedDataKeysForRead,
  dataKeyFor,
  dataKeysForRead,
  decryptFieldValue,
  encryptFieldValue,
  flushNonceCounts,
  hintedKeyHolds,
  hintedWriteKey,
  keyIdOf,
  lockedWriteKeyOf,
  lockedWriteKeySql,
  settleHintedWrite,
} from "./keyring.js";
import { encryptedColumns, registerEncryptedColumn } from "./columns.js";
import { decryptField, encryptField, normaliseEmail, normaliseIdentifier, readFieldHeader } from "./field-cipher.js";
import { reencryptPending, rewrapPending, rotateKek } from "./rotation.js";
import { rotateDataKey, tenantKeyId } from "./data-key-rotation.js";
import { continueTenantRotation, rotateTenantKeys, startTenantRotation } from "./tenant-rotation.js";
import { cancelShred, destroyDueKeys, listShredSchedule, reapplyShredList, scheduleShred } from "./shred.js";
import { issueRecoveryKit, loadRecoveryPrivateKey } from "./recovery.js";
import { describeKeys } from "./status.js";
import { requireUnsealed } from "./require-unsealed.js";
import { runKeyMaintenance, startKeyMaintenance } from "./maintenance.js";
import { retryUnsealAfterMigration, sealAppliance, sealProgress, submitUnseal, unsealAtStart } from "./unseal/index.js";
import { initialiseKeyStore, openWithUnsealKey, rekeyKeyStore, unsealSourceFor } from "./seal.js";
import { assertSchemaCurrent, unsealForOperator } from "./operator.js";

// ---- FieldCrypto: records' field encryption (DESIGN "Field encryption") ----------------------

export {
  blindIndexFor,
  cachedDataKeysForRead,
  dataKeyFor,
  dataKeysForRead,
  decryptFieldValue,
  encryptFieldValue,
  hintedKeyHolds,
  hintedWriteKey,
  keyIdOf,
  KeyDestroyed,
  lockedWriteKeyOf,
  lockedWriteKeySql,
  settleHintedWrite,
  type KeySubject,
  type LockedWriteKey,
  type WriteKey,
} from "./keyring.js";
export { encryptedColumns, registerEncryptedColumn, type EncryptedColumn } from "./columns.js";
export {
  decryptField,
  encryptField,
  normaliseEmail,
  normaliseIdentifier,
  readFieldHeader,
  DecryptionError,
  UnknownKeyVersionError,
  NonceBudget,
  type DataKey,
  type DataKeyLookup,
  type FieldContext,
} from "./field-cipher.js";
export { requireUnsealed } from "./require-unsealed.js";
export { scheduleShred, destroyDueKeys, shreddedAmong } from "./shred.js";

/** Records' view of the keys capability: keys per subject, field ciphertexts, blind indexes. */
export interface FieldCrypto {
  /** The subject's current write key (tenant or patient), made on first use. */
  dataKeyFor: typeof dataKeyFor;
  /** The key versions a page of ciphertexts names, for `decryptField`. */
  dataKeysForRead: typeof dataKeysForRead;
  /** The same from the cache alone, or null when a key must be read. */
  cachedDataKeysForRead: typeof cachedDataKeysForRead;
  /** The write key's lock and version taken inside the caller's own statement (one round trip). */
  lockedWriteKeySql: typeof lockedWriteKeySql;
  lockedWriteKeyOf: typeof lockedWriteKeyOf;
  /** A write key from the cache, checked under the lock in the caller's statement (a write in one round trip). */
  hintedWriteKey: typeof hintedWriteKey;
  hintedKeyHolds: typeof hintedKeyHolds;
  settleHintedWrite: typeof settleHintedWrite;
  encryptField: typeof encryptField;
  decryptField: typeof decryptField;
  readFieldHeader: typeof readFieldHeader;
  encryptFieldValue: typeof encryptFieldValue;
  decryptFieldValue: typeof decryptFieldValue;
  blindIndexFor: typeof blindIndexFor;
  normaliseEmail: typeof normaliseEmail;
  normaliseIdentifier: typeof normaliseIdentifier;
  keyIdOf: typeof keyIdOf;
  registerEncryptedColumn: typeof registerEncryptedColumn;
  encryptedColumns: typeof encryptedColumns;
  /** Crypto-shredding of a deleted patient or tenant after the grace period. */
  scheduleShred: typeof scheduleShred;
  destroyDueKeys: typeof destroyDueKeys;
}

export const fieldCrypto: FieldCrypto = {
  dataKeyFor,
  dataKeysForRead,
  cachedDataKeysForRead,
  lockedWriteKeySql,
  lockedWriteKeyOf,
  hintedWriteKey,
  hintedKeyHolds,
  settleHintedWrite,
  encryptField,
  decryptField,
  readFieldHeader,
  encryptFieldValue,
  decryptFieldValue,
  blindIndexFor,
  normaliseEmail,
  normaliseIdentifier,
  keyIdOf,
  registerEncryptedColumn,
  encryptedColumns,
  scheduleShred,
  destroyDueKeys,
};

// ---- KeyAdmin: sealing, unsealing, rotation, shredding, status (CLI, start-up, keys routes) ----

export { RootKey, type UnsealMode, type SealStatus } from "./root-key.js";
export { UnsealError, type CreateSealInput, type SealCreation, type UnsealInput } from "./unseal/source.js";
export { KeyFileUnseal, shredKeyFile } from "./unseal/keyfile.js";
export { isInteractive, promptHidden } from "./unseal/prompt.js";
export { retryUnsealAfterMigration, sealAppliance, sealProgress, submitUnseal, unsealAtStart, type SealProgress } from "./unseal/index.js";
export { initialiseKeyStore, openWithUnsealKey, rekeyKeyStore, unsealSourceFor } from "./seal.js";
export {
  assertSchemaCurrent,
  callDaemon,
  daemonTarget,
  extractShare,
  obtainPassphrase,
  OperatorError,
  readSecretFile,
  unsealForOperator,
  type CurrentSecret,
  type DaemonAnswer,
  type DaemonTarget,
} from "./operator.js";
export { flushNonceCounts } from "./keyring.js";
export { reencryptPending, rewrapPending, rotateKek } from "./rotation.js";
export { rotateDataKey, tenantKeyId, type RotationReason } from "./data-key-rotation.js";
export { continueTenantRotation, rotateTenantKeys, startTenantRotation, type TenantRotation } from "./tenant-rotation.js";
export { cancelShred, listShredSchedule, reapplyShredList, type ShredSchedule } from "./shred.js";
export { currentRecoveryPublicKey, issueRecoveryKit, loadRecoveryPrivateKey } from "./recovery.js";
export { describeKeys, type KeyStatus } from "./status.js";
export { keyMaintenanceJob, runKeyMaintenance, startKeyMaintenance } from "./maintenance.js";

/** The operator's and the appliance's view: the seal, rotation, shredding, recovery kit, status. */
export interface KeyAdmin {
  unsealAtStart: typeof unsealAtStart;
  submitUnseal: typeof submitUnseal;
  sealAppliance: typeof sealAppliance;
  sealProgress: typeof sealProgress;
  retryUnsealAfterMigration: typeof retryUnsealAfterMigration;
  initialiseKeyStore: typeof initialiseKeyStore;
  rekeyKeyStore: typeof rekeyKeyStore;
  openWithUnsealKey: typeof openWithUnsealKey;
  unsealSourceFor: typeof unsealSourceFor;
  unsealForOperator: typeof unsealForOperator;
  assertSchemaCurrent: typeof assertSchemaCurrent;
  rotateDataKey: typeof rotateDataKey;
  rotateTenantKeys: typeof rotateTenantKeys;
  startTenantRotation: typeof startTenantRotation;
  continueTenantRotation: typeof continueTenantRotation;
  rotateKek: typeof rotateKek;
  rewrapPending: typeof rewrapPending;
  reencryptPending: typeof reencryptPending;
  flushNonceCounts: typeof flushNonceCounts;
  tenantKeyId: typeof tenantKeyId;
  cancelShred: typeof cancelShred;
  listShredSchedule: typeof listShredSchedule;
  reapplyShredList: typeof reapplyShredList;
  issueRecoveryKit: typeof issueRecoveryKit;
  loadRecoveryPrivateKey: typeof loadRecoveryPrivateKey;
  describeKeys: typeof describeKeys;
  runKeyMaintenance: typeof runKeyMaintenance;
  startKeyMaintenance: typeof startKeyMaintenance;
  requireUnsealed: typeof requireUnsealed;
}

export const keyAdmin: KeyAdmin = {
  unsealAtStart,
  submitUnseal,
  sealAppliance,
  sealProgress,
  retryUnsealAfterMigration,
  initialiseKeyStore,
  rekeyKeyStore,
  openWithUnsealKey,
  unsealSourceFor,
  unsealForOperator,
  assertSchemaCurrent,
  rotateDataKey,
  rotateTenantKeys,
  startTenantRotation,
  continueTenantRotation,
  rotateKek,
  rewrapPending,
  reencryptPending,
  flushNonceCounts,
  tenantKeyId,
  cancelShred,
  listShredSchedule,
  reapplyShredList,
  issueRecoveryKit,
  loadRecoveryPrivateKey,
  describeKeys,
  runKeyMaintenance,
  startKeyMaintenance,
  requireUnsealed,
};

// ---- What backups and the audit trail need -----------------------------------------------------

/** Schemas a data snapshot never contains (the key store is backed up on its own; DESIGN "Keys"). */
export { SNAPSHOT_EXCLUDED_SCHEMAS } from "./keystore.js";
/** AES-256-GCM under a key with bound associated data: backups seal target credentials with it. */
export { wrapSecret, unwrapSecret } from "./keystore.js";
/** The primitives the snapshot stream, the manifest and the key-store backup are built from. */
export { AES_256_KEY_BYTES, GCM_NONCE_BYTES, GCM_TAG_BYTES, aesGcmDecrypt, aesGcmEncrypt, hkdfSha256, hmacSha256, randomKey, unwrapKey, wrapKey, zeroize } from "./primitives.js";
/** The recovery key pair that wraps every snapshot key (DESIGN "Keys"). */
export {
  generateRecoveryKeyPair,
  rawPrivateKey,
  rawPublicKey,
  recoveryFingerprint,
  recoveryPrivateKeyFromRaw,
  recoveryPublicKeyFromRaw,
  unwrapWithRecovery,
  wrapForRecovery,
} from "./recovery-crypto.js";
/** The Ed25519 key that signs audit checkpoints, kept in the keyring. */
export { getAuditSigningKey, listAuditVerificationKeys, AUDIT_SIGNING_KEY_ID, type AuditSigningKey, type AuditVerificationKey } from "./audit-signing.js";
/** The live key store copied into a database an in-place restore loaded (backups' restore in place). */
export { carryKeyStoreInto, type CarriedKeyStore } from "./carry-over.js";
/** The key store's own backup, written beside every snapshot, and its recovery onto a new appliance. */
export {
  backupApplianceSecret,
  backupDataKeyLookup,
  exportKeyStore,
  installRecoveredKeyStore,
  readDataKeyRows,
  clearRestoredKeyStore,
  keyStoreContentsSchema,
  KeyStoreBackupError,
  shreddedSubjects,
  unwrapBackupKeks,
  type InstalledKeyStore,
  type KeyStoreContents,
  type KeyStoreOpener,
  type NewSeal,
  type ShreddedSubject,
} from "./recovery-backup.js";
