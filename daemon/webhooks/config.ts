import { z } from "zod";

/** Settings of the webhooks capability (`webhooks:` in config/default.yaml). Subscriptions, the allow-list and inbound sources are set in the admin API. */
export const webhooksSchema = z
  .object({
    deliveryEnabled: z
      .boolean()
      .default(true)
      .describe("Deliver outbound webhooks from this replica; replicas share the queue (FOR UPDATE SKIP LOCKED), so each delivery is sent by one."),
    pollIntervalMs: z
      .number()
      .int()
      .min(50)
      .max(60_000)
      .default(1000)
      .describe("How often the delivery worker looks for due deliveries (a new event on this replica wakes it at once)."),
    batchSize: z.number().int().min(1).max(1000).default(200).describe("Deliveries one worker claims at a time."),
    concurrency: z.number().int().min(1).max(512).default(64).describe("HTTP requests in flight at once per replica."),
    perEndpointConcurrency: z
      .number()
      .int()
      .min(1)
      .max(512)
      .default(4)
      .describe(
        "Deliveries in flight at once to one endpoint, over all replicas; the rest wait in order (oldest first), so a slow receiver holds at most this many of the replica's slots and the others' deliveries are not delayed.",
      ),
    perEndpointClaimAhead: z
      .number()
      .int()
      .min(0)
      .max(512)
      .default(4)
      .describe(
        "Deliveries a worker that alone holds an endpoint's claims keeps claimed beyond perEndpointConcurrency, sent as its slots to that endpoint free up, so a freed slot is refilled without a database round trip (0: none; claims split between replicas stay within perEndpointConcurrency).",
      ),
    timeoutMs: z.number().int().min(100).max(60_000).default(10_000).describe("How long one HTTP attempt may take (connect to last byte) before it counts as failed."),
    maxAttempts: z.number().int().min(1).max(20).default(9).describe("Attempts per delivery before it goes to the dead-letter list (the first one plus retries)."),
    retryBaseMs: z
      .number()
      .int()
      .min(10)
      .max(3_600_000)
      .default(5000)
      .describe("Wait before the first retry; each further retry waits 4 times longer, capped at retryMaxMs (docs/webhooks.md lists the schedule)."),
    retryMaxMs: z
      .number()
      .int()
      .min(10)
      .max(86_400_000)
      .default(6 * 3_600_000)
      .describe("Longest wait between two attempts (a Retry-After answer may ask for up to 24 hours)."),
    rotationOverlapHours: z
      .number()
      .int()
      .min(0)
      .max(168)
      .default(24)
      .describe("After a secret rotation, how long the previous secret still signs (outbound) or verifies (inbound)."),
    allowPlainHttp: z
      .boolean()
      .default(false)
      .describe("Allow http:// endpoint URLs (evaluation and tests only: a webhook over plain HTTP can be read and replayed on the network)."),
    caFile: z.string().optional().describe("PEM bundle of extra CAs to trust for https:// endpoints (the hospital's internal CA), besides the system roots."),
    inboundBodyLimit: z
      .string()
      .regex(/^\d+(b|kb|mb)$/i, "a size such as 64kb or 1mb")
      .default("256kb")
      .describe("Largest inbound webhook body accepted; larger bodies get 413 before the signature is checked."),
    inboundToleranceSeconds: z
      .number()
      .int()
      .min(30)
      .max(3600)
      .default(300)
      .describe("How far an inbound webhook-timestamp may be from the appliance's clock, either way (Standard Webhooks: 5 minutes)."),
  })
  .strict();

export type WebhooksConfig = z.infer<typeof webhooksSchema>;
