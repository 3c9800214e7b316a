import { randomBytes } from "node:crypto";
import type { ApplianceContext } from "../context.js";
import { inScope, type Tx } from "../db/sql.js";
import { eventData, WEBHOOK_EVENT_TYPES, type WebhookEventData, type WebhookEventType } from "./schema.js";
import { wakeDeliveryWorker } from "./wake.js";

/**
 * An event for the webhook endpoints that subscribe to it. `tenantId` null: an appliance event
 * (snapshots, drills, appliance alerts) for the appliance's own endpoints; otherwise only that
 * tenant's endpoints get it. `data` holds ids, counts and states only (checked: see `eventData`).
 */
export type WebhookEvent = { tenantId: string | null; type: WebhookEventType; data: WebhookEventData };

export type Published = {
  /** The `webhook-id` receivers will see, or null when no endpoint subscribes (nothing is stored). */
  messageId: string | null;
  /** Deliveries enqueued (one per subscribed, enabled endpoint). */
  deliveries: number;
};

/** `msg_` + 12 hex digits of milliseconds + 20 random hex digits: unique, and sorts by time. */
export function newMessageId(at: Date): string {
  return `msg_${at.getTime().toString(16).padStart(12, "0")}${randomBytes(10).toString("hex")}`;
}

/** The Standard Webhooks payload: `{type, timestamp, data}`; these exact bytes are signed and sent on every attempt. */
export function payloadOf(event: WebhookEvent, at: Date): string {
  return JSON.stringify({ type: event.type, timestamp: at.toISOString(), data: event.data });
}

function checked(event: WebhookEvent): WebhookEvent {
  if (!(WEBHOOK_EVENT_TYPES as readonly string[]).includes(event.type)) throw new TypeError(`webhooks: unknown event type ${String(event.type)}`);
  // A programming error, not bad input: a payload that could carry free text (PHI) is never stored.
  if (!eventData.safeParse(event.data).success) throw new TypeError(`webhooks: the data of ${event.type} must hold ids, counts and states only`);
  return event;
}

/**
 * Enqueues durable deliveries of `event` in the caller's transaction: the message and one
 * delivery per subscribed endpoint commit (or roll back) with the work that caused the event, so
 * no event is sent for work that did not happen and none is lost for work that did. One
 * statement; nothing is written when no endpoint subscribes. The transaction's scope must see the
 * event's tenant (its own tenant scope, or appliance scope).
 */
export async function publishWebhookEvent(ctx: ApplianceContext, tx: Tx, event: WebhookEvent): Promise<Published> {
  checked(event);
  const now = ctx.clock.now();
  const messageId = newMessageId(now);
  const deliveries = await tx.exec(
    `WITH subs AS (
       SELECT id, tenant_id FROM webhook_endpoints
        WHERE tenant_id IS NOT DISTINCT FROM $2::uuid AND status = 'enabled' AND $3::text = ANY (event_types)
     ), msg AS (
       INSERT INTO webhook_messages (id, tenant_id, event_type, body, created_at)
       SELECT $1, $2::uuid, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM subs)
       RETURNING id
     )
     INSERT INTO webhook_deliveries (message_id, endpoint_id, tenant_id, next_attempt_at, created_at)
     SELECT msg.id, subs.id, subs.tenant_id, $5, $5 FROM msg, subs`,
    [messageId, event.tenantId, event.type, payloadOf(event, now), now],
  );
  if (deliveries > 0) tx.afterCommit(() => wakeDeliveryWorker(ctx));
  return { messageId: deliveries > 0 ? messageId : null, deliveries };
}

/** The same in a transaction of its own (appliance scope), for work that has none: background jobs, a run that finished. */
export async function publishWebhookEventAlone(ctx: ApplianceContext, event: WebhookEvent): Promise<Published> {
  checked(event);
  return inScope(ctx.db.app, { kind: "appliance" }, (tx) => publishWebhookEvent(ctx, tx, event));
}
