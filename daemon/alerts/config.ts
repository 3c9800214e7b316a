import { z } from "zod";

/** Settings of the alerts capability (`alerts:` in config/default.yaml). Channels themselves are set in the admin API. */
export const alertsSchema = z
  .object({
    deliveryEnabled: z
      .boolean()
      .default(true)
      .describe("Send alert messages to the channels from this replica; replicas share the queue (FOR UPDATE SKIP LOCKED), so each message is sent by one."),
    pollIntervalMs: z
      .number()
      .int()
      .min(50)
      .max(300_000)
      .default(5000)
      .describe("How often the sender looks for due messages and open alerts to send again (a new alert on this replica wakes it at once)."),
    retryDelaysSeconds: z
      .array(z.coerce.number().int().min(1).max(86_400))
      .min(0)
      .max(20)
      .default([30, 120, 600, 1800])
      .describe("Waits between attempts of one message; after the last, the message is marked failed and the channel raises alerts.channel_failed."),
    sendTimeoutMs: z.number().int().min(100).max(120_000).default(15_000).describe("How long one SMTP or syslog attempt may take before it counts as failed."),
    checkIntervalMs: z
      .number()
      .int()
      .min(1000)
      .max(86_400_000)
      .default(300_000)
      .describe("How often each replica checks its data directory's free space (system.disk_low). The certificate check is the tls-expiry job (jobs.schedules.tlsExpiry)."),
    firstCheckDelayMs: z.number().int().min(0).max(86_400_000).default(1000).describe("How long after start each replica runs its first disk check (then every checkIntervalMs)."),
    certificateWarnDays: z.number().int().min(1).max(365).default(30).describe("Raise tls.certificate_expiring (warning) this many days before the server certificate expires."),
    certificateCriticalDays: z.number().int().min(0).max(365).default(7).describe("Make it critical this many days before."),
    diskWarnPercent: z.number().min(1).max(100).default(85).describe("Raise system.disk_low (warning) when the data directory's file system is this full."),
    diskCriticalPercent: z.number().min(1).max(100).default(95).describe("Make it critical when this full."),
  })
  .strict();
