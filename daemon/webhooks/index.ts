/**
 * The webhooks capability's public face (docs/webhooks.md). Other capabilities publish events
 * here, inside the transaction of the work the event reports:
 *
 *   await publishWebhookEvent(ctx, tx, { tenantId, type: "consent.revoked", data: { patientId, consentId } });
 *
 * Outbound deliveries follow Standard Webhooks 1.0 (`webhook-id`, `webhook-timestamp`,
 * `webhook-signature`), carry ids only, and go only to allow-listed hosts.
 */
export { publishWebhookEvent, publishWebhookEventAlone, type Published, type WebhookEvent } from "./events.js";
export { WEBHOOK_EVENT_TYPES, type WebhookEventData, type WebhookEventType } from "./schema.js";

/** Administration for the CLI (as the host operator) and the routes. */
export { approveHost, listAllowedHosts, listDeliveries, listEndpoints, replayDelivery, revokeHost } from "./service.js";
export { allowedHostCreate, deliveryQuery, idParams, type AllowedHostView, type DeliveryView, type EndpointView } from "./schema.js";
