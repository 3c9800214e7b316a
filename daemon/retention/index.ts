/** The retention register's public interface (docs/retention.md). */
export { purgeTenant, purgeAllTenants, previewPurge, listRules, listHolds, listRuns } from "./service.js";
export { retentionJobs, retentionPurgeJob } from "./background.js";
export { RECORD_CLASSES, classParams, type RecordClass, type RetentionHoldRes, type RetentionPreviewRes, type RetentionRuleRes, type RetentionRunRes } from "./schema.js";
