import { randomUUID, timingSafeEqual, type KeyObject } from "node:crypto";
import { Webhook } from "standardwebhooks";
import { recordEvent } from "../audit/append.js";
import type { ApplianceContext } from "../context.js";
import { inScope, type Tx } from "../db/sql.js";
import { scopeOf, type Actor } from "../kernel/actor.js";
import { AppError, Invalid, NotFound, TooManyRequests } from "../kernel/errors.js";
import { authorize } from "../kernel/policy.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import type { InboundMessageListRes, RotateReq, SourceCreateReq, SourceUpdateReq, SourceView, SourceWithSecretRes } from "./schema.js";
import { ed25519PublicKey, formatPublicKey, formatSecret, newSecret, openWebhookSecret, parsePublicKey, sealWebhookSecret, verifyV1a } from "./secrets.js";

/**
 * Inbound webhooks (docs/webhooks.md, "Inbound"): a tenant's senders (a consent form service, an
 * EHR event source) POST Standard Webhooks to /api/v1/webhooks/inbound/{sourceId}. A message is
 * accepted only when, in this order: the body is within `webhooks.inboundBodyLimit` (413, before
 * anything else is read), the source exists and is enabled, its rate limit is not exceeded (429),
 * the timestamp is within `inboundToleranceSeconds` of the appliance's clock either way, a `v1`
 * signature matches the source's secret or a `v1a` (Ed25519) one its public key (or the previous
 * secret or key during an overlap), every candidate checked with no early exit, and the id was not
 * seen before (409). Every refusal is a
 * problem+json 4xx that says which rule failed and nothing else: no secret, no expected value,
 * not even whether the source id exists (an unknown source reads like a bad signature).
 */

export class WebhookUnverified extends AppError {
  readonly status = 401;
  readonly slug = "webhook-unverified";
  readonly title = "The webhook could not be verified";
}
export class WebhookReplayed extends AppError {
  readonly status = 409;
  readonly slug = "webhook-replayed";
  readonly title = "The webhook was already received";
}

const UNVERIFIED = "the webhook signature does not match, or the source does not accept webhooks";

type SourceRow = {
  id: string;
  tenant_id: string;
  name: string;
  kind: SourceView["kind"];
  status: "enabled" | "disabled";
  rate_limit_per_minute: number;
  secret_version: number;
  /** Null: the source verifies `v1a` only. */
  secret: Buffer | null;
  previous_secret: Buffer | null;
  previous_secret_version: number | null;
  previous_secret_expires_at: Date | null;
  public_key: Buffer | null;
  previous_public_key: Buffer | null;
  previous_public_key_expires_at: Date | null;
  created_at: Date;
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Reads the headers of a Standard Webhooks request; anything missing or malformed is unverified. */
function signedHeaders(headers: Record<string, string | string[] | undefined>): { id: string; timestamp: number; signatures: string[] } {
  const one = (name: string) => {
    const v = headers[name];
    return Array.isArray(v) ? undefined : v;
  };
  const id = one("webhook-id");
  const ts = one("webhook-timestamp");
  const sig = one("webhook-signature");
  if (!id || !ts || !sig || id.length > 200 || !/^[\x21-\x7e]+$/.test(id) || !/^\d{1,12}$/.test(ts))
    throw new WebhookUnverified("the webhook-id, webhook-timestamp and webhook-signature headers are required");
  return { id, timestamp: Number(ts), signatures: sig.split(" ").filter(Boolean).slice(0, 10) };
}

/**
 * True when one of the `v1,` signatures was made with `secret`. The expected value comes from
 * the `standardwebhooks` package's own `sign` (the reference computation); the comparison is
 * node:crypto's constant-time one over equal-length buffers. The package's `verify` is not used
 * because it reads the wall clock (Date.now) for the timestamp window, which the appliance takes
 * from its own clock (tests move it).
 */
function signatureMatches(secret: Buffer, id: string, timestamp: number, body: Buffer, signatures: string[]): boolean {
  const expected = Buffer.from(new Webhook(secret, { format: "raw" }).sign(id, new Date(timestamp * 1000), body));
  let matched = false;
  for (const s of signatures) {
    const given = Buffer.from(s);
    // Every candidate is compared (no early exit), and a length mismatch costs the same comparison.
    const same = given.length === expected.length ? timingSafeEqual(given, expected) : timingSafeEqual(expected, expected) && false;
    matched = same || matched;
  }
  return matched;
}

/**
 * True when one of the `v1a,` signatures verifies with one of `keys` (Ed25519). Every candidate is
 * verified against every key, with no early exit, as the `v1` comparison does; verification reads
 * only public values (the key, the message, the signature), so it leaks nothing secret.
 */
function ed25519Matches(keys: KeyObject[], id: string, timestamp: number, body: Buffer, signatures: string[]): boolean {
  let matched = false;
  for (const s of signatures) {
    if (!s.startsWith("v1a,")) continue;
    for (const key of keys) matched = verifyV1a(key, id, timestamp, body, s.slice(4)) || matched;
  }
  return matched;
}

async function countRequest(ctx: ApplianceContext, tx: Tx, source: SourceRow): Promise<void> {
  const now = ctx.clock.now();
  const row = await tx.one<{ count: number; window_start: Date }>(
    `INSERT INTO webhook_inbound_rate (source_id, window_start, count) VALUES ($1, $2, 1)
     ON CONFLICT (source_id) DO UPDATE SET
       count = CASE WHEN webhook_inbound_rate.window_start <= $3 THEN 1 ELSE webhook_inbound_rate.count + 1 END,
       window_start = CASE WHEN webhook_inbound_rate.window_start <= $3 THEN $2 ELSE webhook_inbound_rate.window_start END
     RETURNING count, window_start`,
    [source.id, now, new Date(now.getTime() - 60_000)],
  );
  if (row!.count > source.rate_limit_per_minute) {
    const retryAfterSeconds = Math.max(1, Math.ceil((row!.window_start.getTime() + 60_000 - now.getTime()) / 1000));
    throw new TooManyRequests(`this source may send ${source.rate_limit_per_minute} webhooks per minute; retry later`, { retryAfterSeconds });
  }
}

/**
 * Verifies and records one inbound message. The rate-limit count commits even when the message is
 * refused (it is written in a transaction of its own), so a flood of bad signatures is limited too.
 */
export async function receiveInboundWebhook(
  ctx: ApplianceContext,
  sourceId: string,
  headers: Record<string, string | string[] | undefined>,
  body: Buffer,
  meta: RequestMeta,
): Promise<{ messageId: string }> {
  if (!UUID.test(sourceId)) throw new WebhookUnverified(UNVERIFIED);
  const source = await inScope(ctx.db.app, { kind: "appliance" }, async (tx) => {
    const row = await tx.one<SourceRow>("SELECT * FROM webhook_sources WHERE id = $1", [sourceId]);
    if (!row || row.status !== "enabled") return undefined;
    await countRequest(ctx, tx, row);
    return row;
  });
  if (!source) throw new WebhookUnverified(UNVERIFIED);

  const signed = signedHeaders(headers);
  const now = ctx.clock.now();
  const skew = signed.timestamp - Math.floor(now.getTime() / 1000);
  const tolerance = ctx.config.webhooks.inboundToleranceSeconds;
  if (skew < -tolerance) throw new WebhookUnverified(`the webhook-timestamp is more than ${tolerance} seconds old`, { reason: "timestamp_too_old" });
  if (skew > tolerance) throw new WebhookUnverified(`the webhook-timestamp is more than ${tolerance} seconds in the future`, { reason: "timestamp_too_new" });

  const secrets = source.secret ? [openWebhookSecret(ctx, source.secret, { kind: "source", id: source.id, version: source.secret_version })] : [];
  if (source.previous_secret && source.previous_secret_version && source.previous_secret_expires_at && source.previous_secret_expires_at > now) {
    secrets.push(openWebhookSecret(ctx, source.previous_secret, { kind: "source", id: source.id, version: source.previous_secret_version }));
  }
  const keys = [
    ...(source.public_key ? [source.public_key] : []),
    ...(source.previous_public_key && source.previous_public_key_expires_at && source.previous_public_key_expires_at > now ? [source.previous_public_key] : []),
  ].map(ed25519PublicKey);
  const hmac = secrets.map((s) => signatureMatches(s, signed.id, signed.timestamp, body, signed.signatures));
  const ed25519 = ed25519Matches(keys, signed.id, signed.timestamp, body, signed.signatures);
  for (const s of secrets) s.fill(0);
  if (!hmac.includes(true) && !ed25519) throw new WebhookUnverified(UNVERIFIED);

  let eventType: string | null = null;
  try {
    const parsed = JSON.parse(body.toString("utf8")) as { type?: unknown };
    if (typeof parsed.type === "string" && /^[A-Za-z0-9._:-]{1,100}$/.test(parsed.type)) eventType = parsed.type;
  } catch {
    // Not JSON: accepted as signed bytes; the received log shows no type.
  }

  await inScope(ctx.db.app, { kind: "tenant", tenantId: source.tenant_id }, async (tx) => {
    const inserted = await tx.exec(
      `INSERT INTO webhook_inbound_messages (source_id, message_id, tenant_id, event_type, body_bytes, signed_at, received_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
      [source.id, signed.id, source.tenant_id, eventType, body.length, new Date(signed.timestamp * 1000), now],
    );
    if (inserted === 0) throw new WebhookReplayed("a webhook with this webhook-id was already received from this source");
    await recordEvent(
      ctx,
      tx,
      { userId: null, role: "webhook_source" },
      { action: "webhook.inbound.receive", resourceType: "webhook_source", resourceId: source.id, tenantId: source.tenant_id, outcome: "success", reason: eventType },
      meta,
    );
  });
  return { messageId: signed.id };
}

// ---- administration ---------------------------------------------------------------------------

const SOURCE_COLUMNS = `s.*, (SELECT count(*)::int FROM webhook_inbound_messages i WHERE i.source_id = s.id) AS received,
  (SELECT max(received_at) FROM webhook_inbound_messages i WHERE i.source_id = s.id) AS last_received_at`;

function sourceView(r: SourceRow & { received: number; last_received_at: Date | null }, now: Date): SourceView {
  return {
    id: r.id,
    name: r.name,
    kind: r.kind,
    status: r.status,
    rateLimitPerMinute: r.rate_limit_per_minute,
    signatureSchemes: [...(r.secret ? (["v1"] as const) : []), ...(r.public_key ? (["v1a"] as const) : [])],
    secretVersion: r.secret_version,
    previousSecretExpiresAt: r.previous_secret_expires_at && r.previous_secret_expires_at > now ? r.previous_secret_expires_at.toISOString() : null,
    publicKey: r.public_key ? formatPublicKey(r.public_key) : null,
    previousPublicKeyExpiresAt:
      r.previous_public_key && r.previous_public_key_expires_at && r.previous_public_key_expires_at > now ? r.previous_public_key_expires_at.toISOString() : null,
    path: `/api/v1/webhooks/inbound/${r.id}`,
    received: r.received,
    lastReceivedAt: r.last_received_at?.toISOString() ?? null,
    createdAt: r.created_at.toISOString(),
  };
}

async function readSource(ctx: ApplianceContext, tx: Tx, actor: Actor, id: string): Promise<SourceView> {
  const row = await tx.one<SourceRow & { received: number; last_received_at: Date | null }>(
    `SELECT ${SOURCE_COLUMNS} FROM webhook_sources s WHERE s.id = $1 AND s.tenant_id = $2`,
    [id, actor.tenantId],
  );
  if (!row) throw new NotFound("no such inbound source");
  return sourceView(row, ctx.clock.now());
}

/** Inbound sources belong to a tenant: appliance staff have none. */
function tenantOf(actor: Actor): string {
  if (!actor.tenantId) throw new NotFound("inbound sources belong to a tenant; sign in to one");
  return actor.tenantId;
}

export async function listSources(ctx: ApplianceContext, actor: Actor): Promise<SourceView[]> {
  authorize(actor, "webhook:list");
  if (!actor.tenantId) return [];
  const now = ctx.clock.now();
  return inScope(ctx.db.app, scopeOf(actor), async (tx) =>
    (
      await tx.rows<SourceRow & { received: number; last_received_at: Date | null }>(
        `SELECT ${SOURCE_COLUMNS} FROM webhook_sources s WHERE s.tenant_id = $1 ORDER BY s.created_at`,
        [actor.tenantId],
      )
    ).map((r) => sourceView(r, now)),
  );
}

/** The raw bytes of a `whpk_` key that Ed25519 accepts; 400 otherwise. */
function publicKeyOf(whpk: string): Buffer {
  const raw = parsePublicKey(whpk);
  try {
    ed25519PublicKey(raw);
  } catch {
    throw new Invalid("the publicKey is not an Ed25519 public key");
  }
  return raw;
}

export async function createSource(ctx: ApplianceContext, actor: Actor, body: SourceCreateReq, meta: RequestMeta): Promise<SourceWithSecretRes> {
  authorize(actor, "webhook:create");
  const tenantId = tenantOf(actor);
  if (!body.hmacSecret && !body.publicKey) throw new Invalid("a source without a whsec_ secret (hmacSecret: false) needs a publicKey to verify v1a signatures with");
  const publicKey = body.publicKey ? publicKeyOf(body.publicKey) : null;
  const id = randomUUID();
  const raw = body.hmacSecret ? newSecret() : null;
  const sealed = raw ? sealWebhookSecret(ctx, raw, { kind: "source", id, version: 1 }) : null;
  return inScope(ctx.db.app, scopeOf(actor), async (tx) => {
    const now = ctx.clock.now();
    await tx.exec(
      `INSERT INTO webhook_sources (id, tenant_id, name, kind, rate_limit_per_minute, secret, public_key, created_by, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)`,
      [id, tenantId, body.name, body.kind, body.rateLimitPerMinute, sealed, publicKey, actor.userId, now],
    );
    const schemes = [raw ? "v1" : null, publicKey ? "v1a" : null].filter(Boolean).join("+");
    await recordEvent(
      ctx,
      tx,
      actor,
      { action: "webhook.source.create", resourceType: "webhook_source", resourceId: id, outcome: "success", reason: `${body.kind} ${schemes}` },
      meta,
    );
    return { source: await readSource(ctx, tx, actor, id), secret: raw ? formatSecret(raw) : null };
  });
}

export async function updateSource(ctx: ApplianceContext, actor: Actor, id: string, body: SourceUpdateReq, meta: RequestMeta): Promise<SourceView> {
  authorize(actor, "webhook:update");
  tenantOf(actor);
  const newKey = body.publicKey ? publicKeyOf(body.publicKey) : null;
  return inScope(ctx.db.app, scopeOf(actor), async (tx) => {
    const current = await tx.one<{ secret: Buffer | null; public_key: Buffer | null }>(
      "SELECT secret, public_key FROM webhook_sources WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
      [id, actor.tenantId],
    );
    if (!current) throw new NotFound("no such inbound source");
    const now = ctx.clock.now();
    const keepsSecret = body.hmacSecret !== false && current.secret !== null;
    const keepsKey = body.publicKey === undefined ? current.public_key !== null : body.publicKey !== null;
    if (!keepsSecret && !keepsKey) throw new Invalid("a source needs a whsec_ secret or a public key: this change would leave it with neither");
    await tx.exec(
      `UPDATE webhook_sources SET name = coalesce($2, name), rate_limit_per_minute = coalesce($3, rate_limit_per_minute),
              status = CASE WHEN $4::boolean IS NULL THEN status WHEN $4 THEN 'enabled' ELSE 'disabled' END, updated_at = $5 WHERE id = $1`,
      [id, body.name ?? null, body.rateLimitPerMinute ?? null, body.enabled ?? null, now],
    );
    if (body.publicKey !== undefined) {
      // The key replaced or removed still verifies during the overlap (a sender switches key pairs at its own pace).
      const overlapHours = body.overlapHours ?? ctx.config.webhooks.rotationOverlapHours;
      await tx.exec(
        `UPDATE webhook_sources SET previous_public_key = public_key, previous_public_key_expires_at = CASE WHEN public_key IS NULL THEN NULL ELSE $3::timestamptz END,
                public_key = $2 WHERE id = $1`,
        [id, newKey, new Date(now.getTime() + overlapHours * 3_600_000)],
      );
    }
    if (body.hmacSecret === false) {
      // At once, the previous secret too: removing the secret is how a compromised one is withdrawn.
      await tx.exec("UPDATE webhook_sources SET secret = NULL, previous_secret = NULL, previous_secret_version = NULL, previous_secret_expires_at = NULL WHERE id = $1", [id]);
    }
    await recordEvent(
      ctx,
      tx,
      actor,
      { action: "webhook.source.update", resourceType: "webhook_source", resourceId: id, outcome: "success", reason: Object.keys(body).sort().join(",") },
      meta,
    );
    return readSource(ctx, tx, actor, id);
  });
}

export async function deleteSource(ctx: ApplianceContext, actor: Actor, id: string, meta: RequestMeta): Promise<void> {
  authorize(actor, "webhook:delete");
  tenantOf(actor);
  await inScope(ctx.db.app, scopeOf(actor), async (tx) => {
    await readSource(ctx, tx, actor, id);
    await tx.exec("DELETE FROM webhook_sources WHERE id = $1", [id]);
    await recordEvent(ctx, tx, actor, { action: "webhook.source.delete", resourceType: "webhook_source", resourceId: id, outcome: "success" }, meta);
  });
}

export async function rotateSourceSecret(ctx: ApplianceContext, actor: Actor, id: string, body: RotateReq, meta: RequestMeta): Promise<SourceWithSecretRes> {
  authorize(actor, "webhook:rotate_secret");
  tenantOf(actor);
  const overlapHours = body.overlapHours ?? ctx.config.webhooks.rotationOverlapHours;
  return inScope(ctx.db.app, scopeOf(actor), async (tx) => {
    const current = await tx.one<{ secret_version: number }>("SELECT secret_version FROM webhook_sources WHERE id = $1 AND tenant_id = $2 FOR UPDATE", [id, actor.tenantId]);
    if (!current) throw new NotFound("no such inbound source");
    // A source without a secret (v1a only) gets one: there is no previous secret to overlap with.
    const version = current.secret_version + 1;
    const raw = newSecret();
    const now = ctx.clock.now();
    await tx.exec(
      `UPDATE webhook_sources SET previous_secret = secret, previous_secret_version = CASE WHEN secret IS NULL THEN NULL ELSE secret_version END,
              previous_secret_expires_at = CASE WHEN secret IS NULL THEN NULL ELSE $2::timestamptz END,
              secret = $3, secret_version = $4, updated_at = $5 WHERE id = $1`,
      [id, new Date(now.getTime() + overlapHours * 3_600_000), sealWebhookSecret(ctx, raw, { kind: "source", id, version }), version, now],
    );
    await recordEvent(
      ctx,
      tx,
      actor,
      { action: "webhook.source.rotate_secret", resourceType: "webhook_source", resourceId: id, outcome: "success", reason: `version ${version}, overlap ${overlapHours} h` },
      meta,
    );
    return { source: await readSource(ctx, tx, actor, id), secret: formatSecret(raw) };
  });
}

export async function listInboundMessages(ctx: ApplianceContext, actor: Actor, id: string): Promise<InboundMessageListRes> {
  authorize(actor, "webhook:list");
  tenantOf(actor);
  return inScope(ctx.db.app, scopeOf(actor), async (tx) => {
    await readSource(ctx, tx, actor, id);
    const rows = await tx.rows<{ message_id: string; event_type: string | null; body_bytes: number; signed_at: Date; received_at: Date }>(
      "SELECT message_id, event_type, body_bytes, signed_at, received_at FROM webhook_inbound_messages WHERE source_id = $1 ORDER BY received_at DESC LIMIT 200",
      [id],
    );
    return {
      messages: rows.map((r) => ({
        messageId: r.message_id,
        eventType: r.event_type,
        bodyBytes: r.body_bytes,
        signedAt: r.signed_at.toISOString(),
        receivedAt: r.received_at.toISOString(),
      })),
    };
  });
}
