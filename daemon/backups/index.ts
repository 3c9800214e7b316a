/**
 * The backups capability's public face: what the CLI runs (snapshots, verify, restore, drills,
 * reconcile) and the audit-chain check a restore ends with. The routes and the scheduler are
 * wired by the appliance (routes.ts, background.ts).
 */
export { listSnapshotRecords, reconcileCatalogue, restoreSnapshotById, runDrill, runSnapshot, verifySnapshotById, type AuditMeta, type SnapshotRecord } from "./service.js";
export { auditVerifierFor } from "./audit-check.js";
export { applianceName, restoreInPlace, type InPlaceDetails } from "./restore-in-place.js";
export { listPitrDrills, runPitrDrill, type PitrDrillRecord } from "./pitr-drill.js";
export { applyPitrRetention, pitrStatus, runBaseBackup, shipSpool, type BaseBackupRun, type PitrStatus, type ShipOutcome } from "./pitr.js";
export { addTarget, listTargets, testTargetConnection } from "./target-test.js";
export type { TargetTestRes } from "./schema.js";
