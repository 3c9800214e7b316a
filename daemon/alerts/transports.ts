import os from "node:os";
import { printable, sdEscape, sendSyslogOverTls } from "../log/syslog.js";
import type { AlertViewRes } from "./schema.js";
import type { z } from "zod";
import type { emailSettings, syslogSettings } from "./schema.js";

/**
 * How one alert message reaches a channel: an e-mail through the hospital's SMTP relay
 * (nodemailer), or an RFC 5424 message to a syslog collector over TLS (daemon/log/syslog.ts, the
 * SIEM forwarder's framing). Ids, counts and the detector's summary only: never PHI, never the
 * acknowledgement note (free text people typed).
 */

export type EmailSettings = z.infer<typeof emailSettings>;
export type SyslogSettings = z.infer<typeof syslogSettings>;
export type ChannelTarget = { type: "email"; settings: EmailSettings; password: string | null } | { type: "syslog"; settings: SyslogSettings };

export type AlertEvent = "raised" | "reminder" | "resolved";
export type AlertMessage = { alert: AlertViewRes; event: AlertEvent };

const HEADLINE: Record<AlertEvent, string> = { raised: "raised", reminder: "still open", resolved: "resolved" };

export function subjectOf({ alert, event }: AlertMessage): string {
  const what = `${alert.kind}${alert.key ? ` (${alert.key})` : ""}`;
  return event === "resolved" ? `[Wardkeep] RESOLVED: ${what}` : `[Wardkeep] ${alert.severity.toUpperCase()} ${HEADLINE[event]}: ${what}`;
}

export function textOf(m: AlertMessage, host = os.hostname()): string {
  const a = m.alert;
  const details = Object.entries(a.details).map(([k, v]) => `  ${k}: ${String(v)}`);
  return [
    `Alert ${a.id} ${HEADLINE[m.event]} on ${host} (${a.tenantId ? `tenant ${a.tenantId}` : "appliance"}).`,
    "",
    `Kind:        ${a.kind}`,
    ...(a.key ? [`About:       ${a.key}`] : []),
    `Severity:    ${a.severity}`,
    `Summary:     ${a.summary}`,
    `First seen:  ${a.firstSeen}`,
    `Last seen:   ${a.lastSeen}`,
    `Occurrences: ${a.occurrences}`,
    ...(a.resolvedAt ? [`Resolved:    ${a.resolvedAt}`] : []),
    ...(a.acknowledgedAt ? [`Acknowledged: ${a.acknowledgedAt} by user ${a.acknowledgedBy}`] : []),
    ...(details.length ? ["Details:", ...details] : []),
    "",
    "See Alerts in the Wardkeep console, or run `wardkeep alerts list`.",
  ].join("\n");
}

const SD_ID = "wardkeepAlert@32473";
const SYSLOG_SEVERITY: Record<AlertViewRes["severity"], number> = { critical: 2, warning: 4, info: 6 };

/** One RFC 5424 message: MSGID `alert.raised|alert.reminder|alert.resolved`, the alert's ids in structured data. */
export function syslogOf(m: AlertMessage, facility: number, at: Date, host = os.hostname()): string {
  const a = m.alert;
  const severity = m.event === "resolved" ? 5 : SYSLOG_SEVERITY[a.severity];
  const params: [string, string][] = [
    ["id", a.id],
    ["event", m.event],
    ["kind", a.kind],
    ["key", a.key],
    ["severity", a.severity],
    ["tenant", a.tenantId ?? ""],
    ["firstSeen", a.firstSeen],
    ["occurrences", String(a.occurrences)],
  ];
  const sd = `[${SD_ID} ${params
    .filter(([, v]) => v !== "")
    .map(([k, v]) => `${k}="${sdEscape(v)}"`)
    .join(" ")}]`;
  return `<${facility * 8 + severity}>1 ${at.toISOString()} ${printable(host, 255)} wardkeep ${process.pid} alert.${m.event} ${sd} ${subjectOf(m).replace("[Wardkeep] ", "")}: ${a.summary}`;
}

/** The first line of an error, short enough for the console (SMTP replies can run long). */
export function oneLineError(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return (msg.split("\n")[0] ?? "").slice(0, 300) || "unknown error";
}

export async function sendEmail(settings: EmailSettings, password: string | null, mail: { subject: string; text: string }, timeoutMs: number): Promise<void> {
  // nodemailer loads with the first e-mail, not with the module (every CLI command imports this file).
  const { default: nodemailer } = await import("nodemailer");
  const transport = nodemailer.createTransport({
    host: settings.host,
    port: settings.port,
    secure: settings.security === "tls",
    requireTLS: settings.security === "starttls",
    ignoreTLS: settings.security === "none",
    ...(settings.username ? { auth: { user: settings.username, pass: password ?? "" } } : {}),
    tls: { minVersion: "TLSv1.2", ...(settings.caPem ? { ca: settings.caPem } : {}) },
    connectionTimeout: timeoutMs,
    greetingTimeout: timeoutMs,
    socketTimeout: timeoutMs,
  });
  try {
    await transport.sendMail({ from: settings.from, to: settings.to, subject: mail.subject, text: mail.text });
  } finally {
    transport.close();
  }
}

/** Sends messages to one channel: e-mail one by one, syslog in one connection. Rejects with the first failure. */
export async function sendToChannel(target: ChannelTarget, messages: AlertMessage[], at: Date, timeoutMs: number): Promise<void> {
  if (target.type === "email") {
    for (const m of messages) await sendEmail(target.settings, target.password, { subject: subjectOf(m), text: textOf(m) }, timeoutMs);
    return;
  }
  await sendSyslogOverTls(
    { host: target.settings.host, port: target.settings.port, ...(target.settings.caPem ? { ca: target.settings.caPem } : {}) },
    messages.map((m) => syslogOf(m, target.settings.facility, at)),
    timeoutMs,
  );
}
