/** The retention register's public interface (docs/retention.md). */
export { purgeTenant, purgeAllTenants, previewPurge } from "./service.js";
export { RECORD_CLASSES, type RecordClass } from "./schema.js";
