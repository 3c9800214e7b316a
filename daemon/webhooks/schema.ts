import { z } from "zod";

/**
 * Requests and responses of the webhook routes (docs/webhooks.md). Leaf module (zod only): the
 * admin UI imports the inferred types, so it cannot read a field these routes do not send.
 */

/** Every event an endpoint may subscribe to. Appliance events (snapshot, drill) go to the appliance's own endpoints; the rest to the tenant's. */
export const WEBHOOK_EVENT_TYPES = [
  "snapshot.finished",
  "snapshot.failed",
  "drill.completed",
  "alert.raised",
  "alert.resolved",
  "user.deprovisioned",
  "erasure.completed",
  "consent.revoked",
  "break_glass.used",
] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

/**
 * The `data` of an event: ids, counts, states and kinds only. Keys are camelCase words; a string
 * is an id-like token (letters, digits, `.`, `_`, `:`, `-`, no spaces), so free text such as a
 * name or a note can never ride along.
 */
export const eventData = z.record(
  z.string().regex(/^[a-z][A-Za-z0-9]{0,40}$/, "a camelCase key"),
  z.union([z.string().regex(/^[A-Za-z0-9._:-]{0,128}$/, "an id, kind or state (no spaces)"), z.number().finite(), z.boolean(), z.null()]),
);
export type WebhookEventData = z.infer<typeof eventData>;

const hostPattern = /^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*|[0-9.]+)$/;

// ---- allow-list -------------------------------------------------------------------------------

export const allowedHostCreate = z
  .object({
    /** Host name or IP address as it appears in endpoint URLs (lower case; IPv6 in brackets). */
    host: z
      .string()
      .transform((h) => h.trim().toLowerCase())
      .pipe(z.string().min(1).max(253).regex(hostPattern, "a host name or IP address")),
    /** The one port endpoints on this host may use. */
    port: z.number().int().min(1).max(65535),
    /** Whether the host may resolve to private, shared or loopback addresses (hospital-internal receivers). Link-local, multicast and unspecified addresses are never allowed. */
    allowPrivate: z.boolean().default(false),
    /** Why it was approved (ticket, receiver). */
    note: z.string().max(200).optional(),
  })
  .strict();
export type AllowedHostCreateReq = z.infer<typeof allowedHostCreate>;

export const allowedHostView = z.object({
  /** Allow-list entry id. */
  id: z.string(),
  /** Host name or IP address. */
  host: z.string(),
  /** The one port allowed. */
  port: z.number(),
  /** Private, shared and loopback addresses allowed. */
  allowPrivate: z.boolean(),
  /** Why it was approved. */
  note: z.string().nullable(),
  /** Who approved it. */
  approvedBy: z.string().nullable(),
  /** When. */
  approvedAt: z.string(),
});
export type AllowedHostView = z.infer<typeof allowedHostView>;
export const allowedHostList = z.object({ hosts: z.array(allowedHostView) });
export type AllowedHostListRes = z.infer<typeof allowedHostList>;

// ---- endpoints (subscriptions) ----------------------------------------------------------------

/**
 * How an endpoint's deliveries are signed (Standard Webhooks 1.0): `v1` HMAC-SHA-256 with a shared
 * `whsec_` secret; `v1a` Ed25519, verified with the endpoint's `whpk_` public key alone.
 */
export const SIGNATURE_SCHEMES = ["v1", "v1a"] as const;
export type SignatureScheme = (typeof SIGNATURE_SCHEMES)[number];

export const endpointCreate = z
  .object({
    /** Where deliveries are POSTed: https:// on an allow-listed host and port. */
    url: z.string().max(2000).url(),
    /** Events to deliver. */
    eventTypes: z.array(z.enum(WEBHOOK_EVENT_TYPES)).min(1),
    /** For people: what receives it. No PHI. */
    description: z.string().max(200).optional(),
    /** `v1` (HMAC-SHA-256, shared secret; the default) or `v1a` (Ed25519; the receiver needs only the public key). */
    signatureScheme: z.enum(SIGNATURE_SCHEMES).optional(),
  })
  .strict();
export type EndpointCreateReq = z.infer<typeof endpointCreate>;

export const endpointUpdate = z
  .object({
    /** New URL (same allow-list rules). */
    url: z.string().max(2000).url().optional(),
    /** New event list. */
    eventTypes: z.array(z.enum(WEBHOOK_EVENT_TYPES)).min(1).optional(),
    /** New description. */
    description: z.string().max(200).optional(),
    /** Enable (also after a 410 disabled it) or disable deliveries. */
    enabled: z.boolean().optional(),
  })
  .strict();
export type EndpointUpdateReq = z.infer<typeof endpointUpdate>;

export const endpointView = z.object({
  /** Endpoint id. */
  id: z.string(),
  /** The tenant; null for the appliance's own endpoints. */
  tenantId: z.string().nullable(),
  /** Destination URL. */
  url: z.string(),
  /** What receives it. */
  description: z.string().nullable(),
  /** Subscribed events. */
  eventTypes: z.array(z.string()),
  /** `disabled` by an admin or by a 410 Gone answer. */
  status: z.enum(["enabled", "disabled"]),
  /** `gone`: the receiver answered 410; `admin`: switched off. */
  disabledReason: z.enum(["gone", "admin"]).nullable(),
  /** When it was disabled. */
  disabledAt: z.string().nullable(),
  /** `v1` (HMAC-SHA-256) or `v1a` (Ed25519). */
  signatureScheme: z.enum(SIGNATURE_SCHEMES),
  /** Version of the signing secret (or key pair) in use. */
  secretVersion: z.number(),
  /** For `v1a`: the public key receivers verify with (`whpk_` + base64 of 32 bytes); null for `v1`. Not secret. */
  publicKey: z.string().nullable(),
  /** Until when the previous secret also signs (rotation overlap), or null. */
  previousSecretExpiresAt: z.string().nullable(),
  /** During the overlap: how the previous secret signs (a rotation may switch schemes). */
  previousSignatureScheme: z.enum(SIGNATURE_SCHEMES).nullable(),
  /** During the overlap, when the previous scheme is `v1a`: its public key, still valid until the overlap ends. */
  previousPublicKey: z.string().nullable(),
  /** Deliveries waiting to be sent or retried. */
  pending: z.number(),
  /** Deliveries in the dead-letter list. */
  dead: z.number(),
  /** When it was created. */
  createdAt: z.string(),
});
export type EndpointView = z.infer<typeof endpointView>;
export const endpointList = z.object({ endpoints: z.array(endpointView) });
export type EndpointListRes = z.infer<typeof endpointList>;

/** Returned once, at creation and rotation: the secret is never shown again. */
export const endpointWithSecret = z.object({
  /** The endpoint. */
  endpoint: endpointView,
  /** For `v1`: the signing secret (`whsec_` + base64), to configure on the receiver, shown only now. Null for `v1a`: the receiver needs only `endpoint.publicKey`, and the private key never leaves the appliance. */
  secret: z.string().nullable(),
});
export type EndpointWithSecretRes = z.infer<typeof endpointWithSecret>;

export const rotateRequest = z
  .object({
    /** Hours during which the previous secret still signs beside the new one (default from config). */
    overlapHours: z.number().int().min(0).max(168).optional(),
  })
  .strict();
export type RotateReq = z.infer<typeof rotateRequest>;

export const endpointRotateRequest = rotateRequest
  .extend({
    /** Sign from now on with this scheme (default: the current one); during the overlap the previous secret's signature is sent too, whatever its scheme. */
    signatureScheme: z.enum(SIGNATURE_SCHEMES).optional(),
  })
  .strict();
export type EndpointRotateReq = z.infer<typeof endpointRotateRequest>;

export const idParams = z.object({ id: z.string().uuid() }).strict();

// ---- deliveries -------------------------------------------------------------------------------

export const deliveryQuery = z
  .object({
    /** Only deliveries in this state (`dead`: the dead-letter list). */
    status: z.enum(["pending", "delivered", "dead", "replayed"]).optional(),
    /** Only this endpoint's deliveries. */
    endpointId: z.string().uuid().optional(),
    /** At most this many (newest first). */
    limit: z.coerce.number().int().min(1).max(500).default(100),
  })
  .strict();
export type DeliveryQuery = z.infer<typeof deliveryQuery>;

export const attemptView = z.object({
  /** 1 for the first attempt. */
  attempt: z.number(),
  /** When it started. */
  startedAt: z.string(),
  /** How long it took. */
  durationMs: z.number(),
  /** The receiver's HTTP status, or null when no answer came. */
  statusCode: z.number().nullable(),
  /** delivered, failed (will retry), gone (410) or refused (destination not allowed). */
  outcome: z.enum(["delivered", "failed", "gone", "refused"]),
  /** Why it failed, in the appliance's words (never the receiver's body). */
  error: z.string().nullable(),
  /** When the next attempt was scheduled, after a failure. */
  nextAttemptAt: z.string().nullable(),
});
export type AttemptView = z.infer<typeof attemptView>;

export const deliveryView = z.object({
  /** Delivery id. */
  id: z.string(),
  /** The `webhook-id` the receiver sees (the same on every retry and replay). */
  messageId: z.string(),
  /** Event type. */
  eventType: z.string(),
  /** Endpoint id. */
  endpointId: z.string(),
  /** pending, delivered, dead (dead-letter list) or replayed (a new delivery was made from it). */
  status: z.enum(["pending", "delivered", "dead", "replayed"]),
  /** Attempts made. */
  attempts: z.number(),
  /** When the next attempt is due (pending). */
  nextAttemptAt: z.string().nullable(),
  /** Status of the last answer. */
  lastStatusCode: z.number().nullable(),
  /** Why the last attempt failed. */
  lastError: z.string().nullable(),
  /** Why it is in the dead-letter list. */
  deadReason: z.enum(["exhausted", "gone", "destination_refused"]).nullable(),
  /** The dead delivery this one replays. */
  replayOf: z.string().nullable(),
  /** When it was enqueued. */
  createdAt: z.string(),
  /** When it was delivered or given up. */
  finishedAt: z.string().nullable(),
});
export type DeliveryView = z.infer<typeof deliveryView>;
export const deliveryList = z.object({ deliveries: z.array(deliveryView) });
export type DeliveryListRes = z.infer<typeof deliveryList>;
export const deliveryDetail = z.object({
  /** The delivery. */
  delivery: deliveryView,
  /** Its delivery log, in order of attempt. */
  attempts: z.array(attemptView),
  /** The body that is sent (ids only). */
  payload: z.object({ type: z.string(), timestamp: z.string(), data: z.record(z.string(), z.unknown()) }),
});
export type DeliveryDetailRes = z.infer<typeof deliveryDetail>;

// ---- inbound sources --------------------------------------------------------------------------

export const INBOUND_SOURCE_KINDS = ["consent_forms", "ehr_events", "other"] as const;

/** A sender's Ed25519 public key as Standard Webhooks writes it: `whpk_` + base64 of the 32 raw bytes. */
const publicKeyInput = z.string().regex(/^whpk_[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/, "a whpk_ public key (whpk_ and the base64 of 32 bytes)");

export const sourceCreate = z
  .object({
    /** For people: the sending system. */
    name: z.string().min(1).max(100),
    /** What it sends. */
    kind: z.enum(INBOUND_SOURCE_KINDS),
    /** Requests accepted per minute; more get 429. */
    rateLimitPerMinute: z.number().int().min(1).max(100_000).default(600),
    /** The sender's Ed25519 public key (`whpk_` + base64 of 32 bytes): `v1a` signatures made with its private key are accepted. */
    publicKey: publicKeyInput.optional(),
    /** Whether the source also gets a `whsec_` secret for `v1` (HMAC) signatures; false needs `publicKey`. */
    hmacSecret: z.boolean().default(true),
  })
  .strict();
export type SourceCreateReq = z.infer<typeof sourceCreate>;

export const sourceUpdate = z
  .object({
    /** New name. */
    name: z.string().min(1).max(100).optional(),
    /** New rate limit. */
    rateLimitPerMinute: z.number().int().min(1).max(100_000).optional(),
    /** Accept (true) or refuse (false) its webhooks. */
    enabled: z.boolean().optional(),
    /**
     * A new `whpk_` public key for `v1a` (the sender changed its key pair), or null to stop accepting
     * `v1a`. The key it replaces or removes still verifies for `overlapHours`.
     */
    publicKey: publicKeyInput.nullable().optional(),
    /** How long the replaced public key still verifies (default webhooks.rotationOverlapHours; 0: not at all). */
    overlapHours: z.number().int().min(0).max(168).optional(),
    /** false: remove the `whsec_` secret at once, so `v1` signatures are refused (the source must have a public key). A new one comes from rotate-secret. */
    hmacSecret: z.literal(false).optional(),
  })
  .strict();
export type SourceUpdateReq = z.infer<typeof sourceUpdate>;

export const sourceView = z.object({
  /** Source id; the sender POSTs to /api/v1/webhooks/inbound/{id}. */
  id: z.string(),
  /** The sending system. */
  name: z.string(),
  /** What it sends. */
  kind: z.enum(INBOUND_SOURCE_KINDS),
  /** Accepting or refusing. */
  status: z.enum(["enabled", "disabled"]),
  /** Requests accepted per minute. */
  rateLimitPerMinute: z.number(),
  /** The signature schemes it accepts: `v1` (it has a `whsec_` secret), `v1a` (it has a public key). */
  signatureSchemes: z.array(z.enum(SIGNATURE_SCHEMES)),
  /** Version of the verifying secret (counts on across a removal). */
  secretVersion: z.number(),
  /** Until when the previous secret still verifies, or null. */
  previousSecretExpiresAt: z.string().nullable(),
  /** The sender's Ed25519 public key `v1a` signatures are verified with (`whpk_` + base64), or null. */
  publicKey: z.string().nullable(),
  /** Until when the replaced public key still verifies, or null. */
  previousPublicKeyExpiresAt: z.string().nullable(),
  /** The path the sender POSTs to. */
  path: z.string(),
  /** Messages received. */
  received: z.number(),
  /** When the last one arrived. */
  lastReceivedAt: z.string().nullable(),
  /** When it was created. */
  createdAt: z.string(),
});
export type SourceView = z.infer<typeof sourceView>;
export const sourceList = z.object({ sources: z.array(sourceView) });
export type SourceListRes = z.infer<typeof sourceList>;
export const sourceWithSecret = z.object({
  /** The source. */
  source: sourceView,
  /** The secret (`whsec_` + base64) to configure on the sender, shown only now; null for a source created with `hmacSecret: false` (it verifies `v1a` only). */
  secret: z.string().nullable(),
});
export type SourceWithSecretRes = z.infer<typeof sourceWithSecret>;

export const inboundMessageView = z.object({
  /** The sender's webhook-id. */
  messageId: z.string(),
  /** The `type` field of the body, when it has one. */
  eventType: z.string().nullable(),
  /** Body size. */
  bodyBytes: z.number(),
  /** The sender's webhook-timestamp. */
  signedAt: z.string(),
  /** When it arrived. */
  receivedAt: z.string(),
});
export const inboundMessageList = z.object({ messages: z.array(inboundMessageView) });
export type InboundMessageListRes = z.infer<typeof inboundMessageList>;

export const inboundParams = z.object({ sourceId: z.string() }).strict();
export const inboundAccepted = z.object({
  /** The message id that was accepted. */
  messageId: z.string(),
});
