/**
 * Alert messages to the channels (docs/alerts.md "Channels"): queued in the transaction that
 * raised or resolved the alert, sent by whichever replica claims them (FOR UPDATE SKIP LOCKED),
 * retried on `alerts.retryDelaysSeconds`, re-sent while the alert stays open (each channel's
 * `resendMinutes`), and kept as the alert's history of where it went. A channel whose messages keep
 * failing raises its own `alerts.channel_failed` alert, resolved by its next success.
 */
import type { ApplianceContext } from "../context.js";
import { inScope, type Tx } from "../db/sql.js";
import type { AlertDeliveryRes, AlertViewRes } from "./schema.js";
import { noteChannelOutcome, targetOf, type ChannelRow } from "./channels.js";
import { oneLineError, sendToChannel, type AlertEvent } from "./transports.js";

export const CHANNEL_FAILED = "alerts.channel_failed";
/** Serialises the reminder pass across replicas (see daemon/audit/siem.ts for 7_305_00x). */
const REMINDER_LOCK = 7_303_001;
const CLAIM_BATCH = 50;

const rank = (col: string) => `CASE ${col} WHEN 'info' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END`;

/** Per appliance: tests and the replica helpers run several appliances in one process. */
const wakers = new WeakMap<ApplianceContext, () => void>();
/** Makes this replica's sender look for due messages now (a new alert was committed here). */
export function wakeAlertSender(ctx: ApplianceContext): void {
  wakers.get(ctx)?.();
}

/**
 * Queues one message per channel of the alert's scope that takes its severity (`raised`), or per
 * channel that was told it was raised (`resolved`). A channel's own failure alert is not sent to it.
 */
export async function queueDeliveries(ctx: ApplianceContext, t: Tx, alert: AlertViewRes, event: "raised" | "resolved"): Promise<number> {
  return t.exec(
    `INSERT INTO alert_deliveries (alert_id, channel_id, tenant_id, event, next_attempt_at, created_at)
     SELECT $1, c.id, c.tenant_id, $2, $3, $3 FROM alert_channels c
      WHERE c.enabled AND c.tenant_id IS NOT DISTINCT FROM $4::uuid
        AND ${rank("c.min_severity")} <= ${rank("$5::text")}
        AND NOT ($6::text = '${CHANNEL_FAILED}' AND c.id::text = $7)
        AND ($2 = 'raised' OR EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.alert_id = $1 AND d.channel_id = c.id))`,
    [alert.id, event, ctx.clock.now(), alert.tenantId, alert.severity, alert.kind, alert.key],
  );
}

/** Where an alert went, oldest first. */
export async function deliveriesOf(t: Tx, alertId: string): Promise<AlertDeliveryRes[]> {
  const rows = await t.rows<{
    channel_id: string;
    name: string;
    type: "email" | "syslog";
    event: AlertEvent;
    status: "pending" | "sent" | "failed";
    attempts: number;
    created_at: Date;
    sent_at: Date | null;
    next_attempt_at: Date;
    last_error: string | null;
  }>(
    `SELECT d.channel_id, c.name, c.type, d.event, d.status, d.attempts, d.created_at, d.sent_at, d.next_attempt_at, d.last_error
       FROM alert_deliveries d JOIN alert_channels c ON c.id = d.channel_id WHERE d.alert_id = $1 ORDER BY d.id`,
    [alertId],
  );
  return rows.map((r) => ({
    channelId: r.channel_id,
    channelName: r.name,
    channelType: r.type,
    event: r.event,
    status: r.status,
    attempts: r.attempts,
    createdAt: r.created_at.toISOString(),
    sentAt: r.sent_at?.toISOString() ?? null,
    nextAttemptAt: r.status === "pending" ? r.next_attempt_at.toISOString() : null,
    lastError: r.last_error,
  }));
}

/** Open alerts whose channel heard nothing about them for `resend_minutes` get a reminder queued. */
async function queueReminders(ctx: ApplianceContext): Promise<number> {
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    await t.exec(`SELECT pg_advisory_xact_lock(${REMINDER_LOCK})`);
    return t.exec(
      `INSERT INTO alert_deliveries (alert_id, channel_id, tenant_id, event, next_attempt_at, created_at)
       SELECT a.id, c.id, c.tenant_id, 'reminder', $1::timestamptz, $1::timestamptz
         FROM alerts a JOIN alert_channels c ON c.tenant_id IS NOT DISTINCT FROM a.tenant_id
        WHERE a.resolved_at IS NULL AND c.enabled AND c.resend_minutes > 0
          AND ${rank("c.min_severity")} <= ${rank("a.severity")}
          AND NOT (a.kind = '${CHANNEL_FAILED}' AND a.key = c.id::text)
          AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.alert_id = a.id AND d.channel_id = c.id
                            AND (d.status = 'pending' OR d.created_at > $1::timestamptz - make_interval(mins => c.resend_minutes)))`,
      [ctx.clock.now()],
    );
  });
}

type Claimed = { id: string; alert_id: string; channel_id: string; event: AlertEvent; attempts: number };

/** Claims due messages for this replica (a lease: another replica takes them over if this one dies mid-send). */
async function claim(ctx: ApplianceContext): Promise<Claimed[]> {
  const now = ctx.clock.now();
  const lease = new Date(now.getTime() + 2 * ctx.config.alerts.sendTimeoutMs + 60_000);
  return inScope(ctx.db.app, { kind: "appliance" }, (t) =>
    t.rows<Claimed>(
      `UPDATE alert_deliveries d SET next_attempt_at = $2
        WHERE d.id IN (SELECT id FROM alert_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY id LIMIT ${CLAIM_BATCH} FOR UPDATE SKIP LOCKED)
        RETURNING d.id::text AS id, d.alert_id::text AS alert_id, d.channel_id, d.event, d.attempts`,
      [now, lease],
    ),
  );
}

/** The store, handed in by background.ts: it queues messages here, so this module cannot import it. */
export type AlertRaiser = {
  raise(ctx: ApplianceContext, channel: ChannelRow, error: string): Promise<void>;
  resolve(ctx: ApplianceContext, channel: ChannelRow): Promise<void>;
  views(ctx: ApplianceContext, ids: string[]): Promise<Map<string, AlertViewRes>>;
};

/** One pass: reminders, then every due message, grouped by channel, in order. Resolves to how many were sent. */
export async function sendDueAlerts(ctx: ApplianceContext, raiser: AlertRaiser): Promise<{ sent: number; failed: number }> {
  await queueReminders(ctx);
  let sent = 0;
  let failed = 0;
  for (;;) {
    const batch = await claim(ctx);
    if (batch.length === 0) break;
    const alerts = await raiser.views(
      ctx,
      batch.map((b) => b.alert_id),
    );
    const channelIds = [...new Set(batch.map((b) => b.channel_id))];
    const channels = await inScope(ctx.db.app, { kind: "appliance" }, (t) => t.rows<ChannelRow>("SELECT * FROM alert_channels WHERE id = ANY($1::uuid[])", [channelIds]));
    for (const channel of channels) {
      const mine = batch.filter((b) => b.channel_id === channel.id).sort((a, b) => Number(a.id) - Number(b.id));
      const at = ctx.clock.now();
      let error: string | null = null;
      try {
        await sendToChannel(
          targetOf(ctx, channel),
          mine.map((b) => ({ alert: alerts.get(b.alert_id)!, event: b.event })),
          at,
          ctx.config.alerts.sendTimeoutMs,
        );
      } catch (err) {
        error = oneLineError(err);
      }
      const outcome = await record(ctx, channel, mine, at, error);
      sent += outcome.sent;
      failed += outcome.failed;
      if (error === null) await raiser.resolve(ctx, channel);
      else if (outcome.giveUp) await raiser.raise(ctx, channel, error);
    }
    if (batch.length < CLAIM_BATCH) break;
  }
  return { sent, failed };
}

/** Writes the attempt's outcome; says whether the channel should raise its alert (a retry failed too, or retries ran out). */
async function record(ctx: ApplianceContext, channel: ChannelRow, mine: Claimed[], at: Date, error: string | null): Promise<{ sent: number; failed: number; giveUp: boolean }> {
  const delays = ctx.config.alerts.retryDelaysSeconds;
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    await noteChannelOutcome(t, channel.id, at, error);
    const ids = mine.map((b) => b.id);
    if (error === null) {
      await t.exec("UPDATE alert_deliveries SET status = 'sent', sent_at = $2, attempts = attempts + 1, last_error = NULL WHERE id = ANY($1::bigint[])", [ids, at]);
      return { sent: ids.length, failed: 0, giveUp: false };
    }
    let exhausted = 0;
    let retried = false;
    for (const b of mine) {
      const attempts = b.attempts + 1;
      const wait = delays[attempts - 1];
      if (attempts >= 2) retried = true;
      if (wait === undefined) exhausted += 1;
      await t.exec(`UPDATE alert_deliveries SET attempts = $2, last_error = $3, status = $4, next_attempt_at = $5 WHERE id = $1`, [
        b.id,
        attempts,
        error.slice(0, 500),
        wait === undefined ? "failed" : "pending",
        new Date(at.getTime() + (wait ?? 0) * 1000),
      ]);
    }
    return { sent: 0, failed: exhausted, giveUp: retried || exhausted > 0 };
  });
}

/** The sender loop of one replica: every `alerts.pollIntervalMs`, and at once when woken. */
export function startAlertSender(ctx: ApplianceContext, raiser: AlertRaiser): { stop(): Promise<void> } | undefined {
  if (!ctx.config.alerts.deliveryEnabled) return undefined;
  let stopped = false;
  let running: Promise<void> | undefined;
  let again = false;
  let failures = 0;
  let timer: NodeJS.Timeout | undefined;
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(kick, ctx.config.alerts.pollIntervalMs);
    timer.unref();
  };
  function kick(): void {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    clearTimeout(timer);
    running = sendDueAlerts(ctx, raiser)
      .then(() => {
        failures = 0;
      })
      .catch((err: unknown) => {
        // A database away for an hour would otherwise write a line every tick: the first, then every 100th.
        failures += 1;
        if (failures === 1 || failures % 100 === 0) ctx.log.warn("alert sender pass failed; it runs again on the next tick", { error: oneLineError(err), failures });
      })
      .finally(() => {
        running = undefined;
        if (again) {
          again = false;
          kick();
        } else schedule();
      });
  }
  wakers.set(ctx, kick);
  schedule();
  return {
    async stop() {
      stopped = true;
      if (wakers.get(ctx) === kick) wakers.delete(ctx);
      clearTimeout(timer);
      await running;
    },
  };
}
