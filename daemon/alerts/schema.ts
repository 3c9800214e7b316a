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
  /** The channels (names) that took a message about it. */
  sentTo: z.array(z.string()),
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

// ---- channels ---------------------------------------------------------------------------------

const hostName = z
  .string()
  .trim()
  .min(1)
  .max(253)
  .regex(/^[A-Za-z0-9.:[\]-]+$/, "a host name or IP address");
const pem = z
  .string()
  .max(20_000)
  .regex(/-----BEGIN CERTIFICATE-----/, "a PEM certificate bundle");

/** An SMTP relay: STARTTLS on 587 (default), implicit TLS on 465, or plain on a trusted network. */
export const emailSettings = z.object({
  host: hostName,
  port: z.number().int().min(1).max(65535).default(587),
  /** starttls (required, the connection fails without it), tls (implicit, port 465) or none. */
  security: z.enum(["starttls", "tls", "none"]).default("starttls"),
  /** SMTP AUTH user; empty for a relay that accepts the appliance by address. */
  username: z.string().max(200).default(""),
  /** The From address. */
  from: z.string().email().max(254),
  /** Who gets the alerts (a team mailbox is better than a person). */
  to: z.array(z.string().email().max(254)).min(1).max(20),
  /** PEM CA bundle of the relay's certificate (a hospital CA); unset uses the system store. */
  caPem: pem.optional(),
});

/** A syslog collector taking RFC 5424 over TLS (RFC 5425), as the SIEM forwarder sends. */
export const syslogSettings = z.object({
  host: hostName,
  port: z.number().int().min(1).max(65535).default(6514),
  /** PEM CA bundle of the collector's certificate; unset uses the system store. */
  caPem: pem.optional(),
  /** RFC 5424 facility (16 = local0). */
  facility: z.number().int().min(0).max(23).default(16),
});

const channelCommon = {
  /** A name people recognise ("IT on-call mailbox"). */
  name: z.string().trim().min(1).max(100),
  /** The lowest severity this channel takes (default warning). */
  minSeverity: z.enum(ALERT_SEVERITIES).default("warning"),
  /** Send an open alert again this often, in minutes (0: only when raised and resolved). */
  resendMinutes: z.number().int().min(0).max(10_080).default(240),
  enabled: z.boolean().default(true),
};

/** `POST /api/v1/alert-channels`, and `PUT /api/v1/alert-channels/{id}` (the whole channel; an omitted password keeps the stored one). */
export const alertChannelInput = z.discriminatedUnion("type", [
  z.object({ ...channelCommon, type: z.literal("email"), settings: emailSettings, /** SMTP AUTH password (write-only). */ password: z.string().min(1).max(500).optional() }),
  z.object({ ...channelCommon, type: z.literal("syslog"), settings: syslogSettings }),
]);

export const alertChannelView = z.object({
  id: z.string(),
  /** The tenant whose alerts it takes; null: the appliance's. */
  tenantId: z.string().nullable(),
  name: z.string(),
  type: z.enum(["email", "syslog"]),
  /** The settings as given (never the password). */
  settings: z.record(z.string(), z.unknown()),
  /** An SMTP password is stored. */
  hasPassword: z.boolean(),
  minSeverity: z.enum(ALERT_SEVERITIES),
  resendMinutes: z.number(),
  enabled: z.boolean(),
  createdAt: z.string(),
  /** The last message (or test) it took. */
  lastSuccessAt: z.string().nullable(),
  /** The last attempt that failed, and why. */
  lastFailureAt: z.string().nullable(),
  lastError: z.string().nullable(),
  /** Messages waiting to be sent or retried. */
  pending: z.number(),
});

export const alertChannelList = z.object({ channels: z.array(alertChannelView) });
export const alertChannelParams = z.object({ id: z.string().uuid("a channel id is a UUID") });

/** `POST /api/v1/alert-channels/{id}/test`: a test message, sent now. */
export const alertChannelTestResult = z.object({
  /** The channel took the message. */
  delivered: z.boolean(),
  /** Why not, in one line. */
  error: z.string().nullable(),
});

/** One message of one alert to one channel. */
export const alertDelivery = z.object({
  channelId: z.string(),
  channelName: z.string(),
  channelType: z.enum(["email", "syslog"]),
  /** raised, reminder (still open) or resolved. */
  event: z.enum(["raised", "reminder", "resolved"]),
  /** pending (waiting or being retried), sent, or failed (every retry used). */
  status: z.enum(["pending", "sent", "failed"]),
  attempts: z.number(),
  createdAt: z.string(),
  sentAt: z.string().nullable(),
  nextAttemptAt: z.string().nullable(),
  lastError: z.string().nullable(),
});

/** `GET /api/v1/alerts/{id}`: the alert and where it went. */
export const alertDetail = z.object({ alert: alertView, deliveries: z.array(alertDelivery) });

export type AlertChannelInputReq = z.infer<typeof alertChannelInput>;
export type AlertChannelViewRes = z.infer<typeof alertChannelView>;
export type AlertChannelTestRes = z.infer<typeof alertChannelTestResult>;
export type AlertDeliveryRes = z.infer<typeof alertDelivery>;
export type AlertDetailRes = z.infer<typeof alertDetail>;
