/**
 * Alert channels: where a scope's alerts are sent (docs/alerts.md "Channels"). The appliance's
 * channels take appliance alerts, a tenant's channels that tenant's. SMTP passwords are sealed
 * under a key derived from the root key and bound to the channel's id; the API never returns one.
 */
import { randomUUID } from "node:crypto";
import { recordEvent } from "../audit/append.js";
import type { ApplianceContext } from "../context.js";
import { inScope, isUniqueViolation, type Tx } from "../db/sql.js";
import { scopeOf, type Actor } from "../kernel/actor.js";
import { Conflict, NotFound } from "../kernel/errors.js";
import { authorize } from "../kernel/policy.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { hkdfSha256, unwrapSecret, wrapSecret, zeroize } from "../keys/index.js";
import type { AlertChannelInputReq, AlertChannelTestRes, AlertChannelViewRes, AlertSeverity } from "./schema.js";
import { oneLineError, sendToChannel, type ChannelTarget, type EmailSettings, type SyslogSettings } from "./transports.js";

export type ChannelRow = {
  id: string;
  tenant_id: string | null;
  name: string;
  type: "email" | "syslog";
  settings: Record<string, unknown>;
  secret: Buffer | null;
  min_severity: AlertSeverity;
  resend_minutes: number;
  enabled: boolean;
  created_at: Date;
  last_success_at: Date | null;
  last_failure_at: Date | null;
  last_error: string | null;
  pending?: number;
};

function sealingKey(ctx: ApplianceContext): Buffer {
  return hkdfSha256(ctx.rootKey.material(), Buffer.alloc(0), Buffer.from("wardkeep/alerts/channel-secret-key/v1"), 32);
}
const aadOf = (channelId: string) => `wardkeep/alerts/channel-secret/v1|${channelId}`;

function sealPassword(ctx: ApplianceContext, channelId: string, password: string): Buffer {
  const key = sealingKey(ctx);
  try {
    return wrapSecret(key, Buffer.from(password, "utf8"), aadOf(channelId));
  } finally {
    zeroize(key);
  }
}

function openPassword(ctx: ApplianceContext, row: ChannelRow): string | null {
  if (!row.secret) return null;
  const key = sealingKey(ctx);
  try {
    return unwrapSecret(key, row.secret, aadOf(row.id)).toString("utf8");
  } finally {
    zeroize(key);
  }
}

/** What a sender needs: the settings and the opened password (throws Sealed while the appliance is sealed). */
export function targetOf(ctx: ApplianceContext, row: ChannelRow): ChannelTarget {
  if (row.type === "email") return { type: "email", settings: row.settings as EmailSettings, password: openPassword(ctx, row) };
  return { type: "syslog", settings: row.settings as SyslogSettings };
}

export function channelViewOf(r: ChannelRow): AlertChannelViewRes {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    name: r.name,
    type: r.type,
    settings: r.settings,
    hasPassword: r.secret !== null,
    minSeverity: r.min_severity,
    resendMinutes: r.resend_minutes,
    enabled: r.enabled,
    createdAt: r.created_at.toISOString(),
    lastSuccessAt: r.last_success_at?.toISOString() ?? null,
    lastFailureAt: r.last_failure_at?.toISOString() ?? null,
    lastError: r.last_error,
    pending: r.pending ?? 0,
  };
}

const SELECT = `SELECT c.*, (SELECT count(*)::int FROM alert_deliveries d WHERE d.channel_id = c.id AND d.status = 'pending') AS pending FROM alert_channels c`;

/** The caller's scope's channels: a tenant's staff their tenant's, appliance operators the appliance's. */
export async function listChannels(ctx: ApplianceContext, actor: Actor): Promise<AlertChannelViewRes[]> {
  authorize(actor, "alert_channel:list", { tenantId: actor.tenantId });
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const rows = await t.rows<ChannelRow>(`${SELECT} WHERE c.tenant_id IS NOT DISTINCT FROM $1::uuid ORDER BY lower(c.name)`, [actor.tenantId]);
    return rows.map(channelViewOf);
  });
}

async function channelIn(t: Tx, actor: Actor, id: string): Promise<ChannelRow> {
  const row = await t.one<ChannelRow>(`${SELECT} WHERE c.id = $1 AND c.tenant_id IS NOT DISTINCT FROM $2::uuid`, [id, actor.tenantId]);
  if (!row) throw new NotFound("no such alert channel");
  return row;
}

const nameTaken = (err: unknown) => (isUniqueViolation(err, "alert_channels_name") ? new Conflict("an alert channel of that name exists") : err);

export async function createChannel(ctx: ApplianceContext, actor: Actor, input: AlertChannelInputReq, meta: RequestMeta | null): Promise<AlertChannelViewRes> {
  authorize(actor, "alert_channel:configure", { tenantId: actor.tenantId });
  const id = randomUUID();
  const secret = input.type === "email" && input.password ? sealPassword(ctx, id, input.password) : null;
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const now = ctx.clock.now();
    await t
      .exec(
        `INSERT INTO alert_channels (id, tenant_id, name, type, settings, secret, min_severity, resend_minutes, enabled, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)`,
        [id, actor.tenantId, input.name, input.type, JSON.stringify(input.settings), secret, input.minSeverity, input.resendMinutes, input.enabled, now],
      )
      .catch((err: unknown) => Promise.reject(nameTaken(err)));
    await recordEvent(ctx, t, actor, { action: "alert.channel.create", resourceType: "alert_channel", resourceId: id, outcome: "success", reason: input.type }, meta);
    return channelViewOf(await channelIn(t, actor, id));
  });
}

export async function updateChannel(ctx: ApplianceContext, actor: Actor, id: string, input: AlertChannelInputReq, meta: RequestMeta | null): Promise<AlertChannelViewRes> {
  authorize(actor, "alert_channel:configure", { tenantId: actor.tenantId });
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const current = await channelIn(t, actor, id);
    // A new password replaces the stored one; none keeps it (for e-mail); syslog has none.
    const secret = input.type !== "email" ? null : input.password ? sealPassword(ctx, id, input.password) : current.type === "email" ? current.secret : null;
    await t
      .exec(`UPDATE alert_channels SET name = $2, type = $3, settings = $4, secret = $5, min_severity = $6, resend_minutes = $7, enabled = $8, updated_at = $9 WHERE id = $1`, [
        id,
        input.name,
        input.type,
        JSON.stringify(input.settings),
        secret,
        input.minSeverity,
        input.resendMinutes,
        input.enabled,
        ctx.clock.now(),
      ])
      .catch((err: unknown) => Promise.reject(nameTaken(err)));
    await recordEvent(ctx, t, actor, { action: "alert.channel.update", resourceType: "alert_channel", resourceId: id, outcome: "success" }, meta);
    return channelViewOf(await channelIn(t, actor, id));
  });
}

export async function deleteChannel(ctx: ApplianceContext, actor: Actor, id: string, meta: RequestMeta | null): Promise<void> {
  authorize(actor, "alert_channel:configure", { tenantId: actor.tenantId });
  await inScope(ctx.db.app, scopeOf(actor), async (t) => {
    await channelIn(t, actor, id);
    await t.exec("DELETE FROM alert_channels WHERE id = $1", [id]);
    await recordEvent(ctx, t, actor, { action: "alert.channel.delete", resourceType: "alert_channel", resourceId: id, outcome: "success" }, meta);
  });
}

/** Marks the channel's last success or failure (shown in the console beside it). */
export async function noteChannelOutcome(t: Tx, id: string, at: Date, error: string | null): Promise<void> {
  if (error === null) await t.exec("UPDATE alert_channels SET last_success_at = $2 WHERE id = $1", [id, at]);
  else await t.exec("UPDATE alert_channels SET last_failure_at = $2, last_error = $3 WHERE id = $1", [id, at, error.slice(0, 500)]);
}

/** Sends a test message now and says whether the channel took it (audited either way). */
export async function testChannel(ctx: ApplianceContext, actor: Actor, id: string, meta: RequestMeta | null): Promise<AlertChannelTestRes> {
  authorize(actor, "alert_channel:test", { tenantId: actor.tenantId });
  const row = await inScope(ctx.db.app, scopeOf(actor), (t) => channelIn(t, actor, id));
  const at = ctx.clock.now();
  let error: string | null = null;
  try {
    const probe = {
      alert: {
        id: "0",
        tenantId: row.tenant_id,
        kind: "alerts.test",
        key: row.name,
        severity: "info" as const,
        summary: `test message from alert channel ${row.name}: if you read this, alerts reach you`,
        details: {},
        firstSeen: at.toISOString(),
        lastSeen: at.toISOString(),
        occurrences: 1,
        acknowledgedAt: null,
        acknowledgedBy: null,
        acknowledgementNote: null,
        resolvedAt: null,
        sentTo: [],
      },
      event: "raised" as const,
    };
    await sendToChannel(targetOf(ctx, row), [probe], at, ctx.config.alerts.sendTimeoutMs);
  } catch (err) {
    error = oneLineError(err);
  }
  await inScope(ctx.db.app, scopeOf(actor), async (t) => {
    await noteChannelOutcome(t, id, at, error);
    await recordEvent(ctx, t, actor, { action: "alert.channel.test", resourceType: "alert_channel", resourceId: id, outcome: error ? "failure" : "success" }, meta);
  });
  return { delivered: error === null, error };
}
