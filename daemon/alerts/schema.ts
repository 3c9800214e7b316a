import { z } from "zod";

/**
 * Request and response schemas of the alerts routes (`/api/v1/alerts…`). Leaf module (zod only):
 * the admin UI imports the inferred types, so it cannot read a field these routes do not send.
 * An alert carries ids and counts, never PHI (docs/alerts.md).
 */

export const ALERT_SEVERITIES = ["info", "warning", "critical"] as const;
export type AlertSeverity = (typeof ALERT_SEVERITIES)[number];

/** Ids, counts and flags only: a detector's facts about the problem, never a PHI value. */
export const alertDetails = z.record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.null()]));

export const alertView = z.object({
  /** Alert id (a new one each time a resolved problem comes back). */
  id: z.string(),
  /** The tenant it concerns; null for the appliance. */
  tenantId: z.string().nullable(),
  /** What kind of problem, dotted by capability: `backup.snapshot_failed`, `tls.certificate_expiring`, `disk.low`… */
  kind: z.string(),
  /** What it is about within its kind (a target's name, a channel's id); "" when the kind has one subject. */
  key: z.string(),
  severity: z.enum(ALERT_SEVERITIES),
  /** A sentence for people, without PHI. */
  summary: z.string(),
  /** Ids and counts the detector recorded. */
  details: alertDetails,
  /** When it was first raised. */
  firstSeen: z.string(),
  /** When a detector last saw it still there. */
  lastSeen: z.string(),
  /** How many times a detector raised it while open. */
  occurrences: z.number(),
  /** When someone acknowledged it (it stays open until the problem clears). */
  acknowledgedAt: z.string().nullable(),
  /** Who acknowledged it (user id). */
  acknowledgedBy: z.string().nullable(),
  /** Their note. */
  acknowledgementNote: z.string().nullable(),
  /** When the problem cleared; null while open. */
  resolvedAt: z.string().nullable(),
});

/** `GET /api/v1/alerts`. */
export const alertListQuery = z.object({
  /** open (default), resolved, or all. */
  state: z.enum(["open", "resolved", "all"]).default("open"),
  /** At most this many, newest first (default 200). */
  limit: z.coerce.number().int().min(1).max(1000).default(200),
});

export const alertListResponse = z.object({
  alerts: z.array(alertView),
  /** Open alerts visible to the caller, whatever the filter. */
  openCount: z.number(),
});

/** `GET /api/v1/alerts/summary`: what the console's top bar shows. */
export const alertSummary = z.object({
  /** Open alerts visible to the caller. */
  open: z.number(),
  /** Of them, not yet acknowledged. */
  unacknowledged: z.number(),
  /** Of them, critical. */
  critical: z.number(),
});

export const alertParams = z.object({ id: z.string().regex(/^\d{1,18}$/, "an alert id is a number") });

/** `POST /api/v1/alerts/{id}/acknowledge`. */
export const alertAckRequest = z.object({
  /** Why, or what is being done about it (kept with the alert and in the audit trail). */
  note: z.string().trim().min(1, "say what is being done about it").max(1000),
});

export type AlertViewRes = z.infer<typeof alertView>;
export type AlertListRes = z.infer<typeof alertListResponse>;
export type AlertSummaryRes = z.infer<typeof alertSummary>;
export type AlertAckReq = z.infer<typeof alertAckRequest>;
