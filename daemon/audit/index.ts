/**
 * The audit capability's public face for readers of the trail (the CLI, backups' restore check).
 * Writing an event goes through ./append.ts, the one audit-event module every capability imports.
 */
export { verifyAuditChain, type VerifyReport } from "./verify.js";
export { exportAuditEvidence, newPackId, EXPORT_FORMATS, type ExportFormat } from "./export.js";
export { describeCheckpointKeys, publicKeysFromPem } from "./signing-key.js";
/** The retention register removes a tenant's evidence packs past its export_file rule. */
export { removeExportPack } from "./pack-jobs.js";
