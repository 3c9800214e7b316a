/**
 * The keys capability's public surface for other capabilities (records, backup, audit, jobs).
 * docs/keys.md explains the design; import from here rather than from the files behind it.
 */
export { SNAPSHOT_EXCLUDED_SCHEMAS } from "./keystore.js";
export {
  blindIndexFor,
  dataKeyFor,
  cachedDataKeysForRead,
  dataKeysForRead,
  decryptFieldValue,
  encryptFieldValue,
  keyIdOf,
  KeyDestroyed,
  lockedWriteKeyOf,
  lockedWriteKeySql,
  type KeySubject,
  type LockedWriteKey,
  type WriteKey,
} from "./keyring.js";
export { encryptedColumns, registerEncryptedColumn, type EncryptedColumn } from "./columns.js";
export { reencryptPending, rewrapPending, rotateDataKey, rotateKek, tenantKeyId } from "./rotation.js";
export { cancelShred, destroyDueKeys, listShredSchedule, reapplyShredList, scheduleShred, type ShredSchedule } from "./shred.js";
export { currentRecoveryPublicKey, issueRecoveryKit, loadRecoveryPrivateKey, unwrapWithRecovery, wrapForRecovery, recoveryFingerprint } from "./recovery.js";
export { getAuditSigningKey, listAuditVerificationKeys, type AuditSigningKey, type AuditVerificationKey } from "./audit-signing.js";
export { describeKeys, type KeyStatus } from "./status.js";
export { requireUnsealed } from "./require-unsealed.js";
export { runKeyMaintenance, startKeyMaintenance } from "./maintenance.js";
export { sealAppliance, sealProgress, submitUnseal, unsealAtStart } from "./unseal/index.js";
export { DecryptionError, UnknownKeyVersionError, type FieldContext } from "./field-cipher.js";
