/**
 * The alerts capability's public interface (docs/alerts.md). Detectors in any capability raise
 * and resolve through it; nothing else writes the `alerts` table.
 *
 * - `raiseAlert(ctx, {kind, severity, key?, tenantId?, summary, details?}, tx?)`: opens the alert,
 *   or refreshes the open one of the same scope, kind and key (`last_seen`, `occurrences`).
 * - `resolveAlert(ctx, kind, key, {tenantId?, tx?})`: closes it (key `null`: every key of the kind).
 * - `openAlertsOf(ctx, kinds?)`: what is open, for a capability's own view (backups, metrics).
 * Ids and counts only, never PHI, in the summary and the details.
 */
export { raiseAlert, resolveAlert, openAlertsOf, type AlertInput, type AlertDetails, type RaisedAlert, type ResolveOptions } from "./store.js";
export { ALERT_SEVERITIES, type AlertSeverity, type AlertViewRes } from "./schema.js";
export { listAlertsAsOperator, acknowledgeAlertAsOperator } from "./store.js";
