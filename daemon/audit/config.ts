import { z } from "zod";

/**
 * Settings of the audit capability (`audit:` in config/default.yaml). Kept beside the code that
 * reads them; daemon/config/schema.ts includes this section.
 */
export const siemSchema = z
  .object({
    enabled: z.boolean().default(false).describe("Forward every chained event as RFC 5424 syslog over TLS (RFC 5425) to the hospital's collector."),
    host: z.string().default("").describe("Collector host name or address (must match its TLS certificate)."),
    port: z.number().int().min(1).max(65535).default(6514).describe("Collector port (6514 is syslog over TLS)."),
    caFile: z.string().optional().describe("PEM CA bundle that issued the collector's certificate; unset uses the system store."),
    certFile: z.string().optional().describe("PEM client certificate, when the collector requires mutual TLS."),
    keyFile: z.string().optional().describe("PEM private key for certFile."),
    appName: z
      .string()
      .regex(/^[!-~]{1,48}$/)
      .default("wardkeep")
      .describe("RFC 5424 APP-NAME field."),
    facility: z.number().int().min(0).max(23).default(13).describe("Syslog facility (13 = log audit)."),
    reconnectMs: z.number().int().min(100).max(600_000).default(5_000).describe("Wait before reconnecting after the collector drops the connection."),
    startFrom: z
      .enum(["head", "genesis"])
      .default("head")
      .describe(
        "Where forwarding starts the first time it runs: head (events chained from then on) or genesis (the whole retained chain). Afterwards it always resumes from its durable cursor.",
      ),
    lagAlertSeconds: z
      .number()
      .int()
      .min(1)
      .max(604_800)
      .default(300)
      .describe("Raise the SIEM lag alert when the oldest event not yet written to the collector is older than this (wardkeep_audit_siem_lag_alert, an error log line)."),
  })
  .strict();

export const auditSchema = z
  .object({
    chainIntervalMs: z
      .number()
      .int()
      .min(10)
      .max(60_000)
      .default(500)
      .describe("How often each replica looks for committed events to chain (it is also woken by its own commits)."),
    chainDelayMs: z
      .number()
      .int()
      .min(0)
      .max(5_000)
      .default(20)
      .describe("After a commit that wrote events, wait this long before chaining, so one chainer transaction seals the events of many requests (0: chain at once)."),
    checkpointIntervalMinutes: z
      .number()
      .int()
      .min(1)
      .max(1440)
      .default(60)
      .describe("How often the chain head is signed (Ed25519) when new events arrived; every export signs one too."),
    retentionYears: z.number().int().min(1).max(100).default(7).describe("Audit segments (months) older than this are dropped by the retention job, leaving a signed anchor."),
    exportDir: z.string().default("exports/audit").describe("Where API-requested evidence packs are written, relative to dataDir (an on-premises path only)."),
    siem: siemSchema.prefault({}),
  })
  .strict();

export type AuditConfig = z.infer<typeof auditSchema>;
