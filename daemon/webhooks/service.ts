import { randomUUID } from "node:crypto";
import { recordEvent } from "../audit/append.js";
import type { ApplianceContext } from "../context.js";
import { inScope, isUniqueViolation, type Tx } from "../db/sql.js";
import { scopeOf, type Actor } from "../kernel/actor.js";
import { Conflict, NotFound } from "../kernel/errors.js";
import { authorize } from "../kernel/policy.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { assertAllowedDestination } from "./destinations.js";
import type {
  AllowedHostCreateReq,
  AllowedHostView,
  AttemptView,
  DeliveryDetailRes,
  DeliveryQuery,
  DeliveryView,
  EndpointCreateReq,
  EndpointUpdateReq,
  EndpointView,
  EndpointRotateReq,
  EndpointWithSecretRes,
  SignatureScheme,
} from "./schema.js";
import { formatPublicKey, formatSecret, newEd25519Pair, newSecret, sealWebhookSecret } from "./secrets.js";
import { wakeDeliveryWorker } from "./wake.js";

/**
 * Outbound webhook administration (docs/webhooks.md): the allow-list (appliance operators), a
 * tenant's endpoints with their secrets, the delivery log, the dead-letter list and replay. Each
 * change writes its audit event in the same transaction. Endpoints belong to the actor's tenant,
 * or to the appliance (tenant null) for super-admins.
 */

const iso = (d: Date | null) => d?.toISOString() ?? null;

/** The host operator (CLI) sees every tenant's endpoints and deliveries; everyone else their own tenant's (or the appliance's). */
const seesAllTenants = (actor: Actor) => actor.via === "host";

// ---- allow-list -------------------------------------------------------------------------------

type HostRow = { id: string; host: string; port: number; allow_private: boolean; note: string | null; approved_by: string | null; approved_at: Date };
const hostView = (r: HostRow): AllowedHostView => ({
  id: r.id,
  host: r.host,
  port: r.port,
  allowPrivate: r.allow_private,
  note: r.note,
  approvedBy: r.approved_by,
  approvedAt: r.approved_at.toISOString(),
});

export async function listAllowedHosts(ctx: ApplianceContext, actor: Actor): Promise<AllowedHostView[]> {
  authorize(actor, "webhook_host:list");
  return inScope(ctx.db.app, scopeOf(actor), async (tx) => (await tx.rows<HostRow>("SELECT * FROM webhook_allowed_hosts ORDER BY host, port")).map(hostView));
}

/** Approves a destination (a super-admin, or the host operator at the CLI). */
export async function approveHost(ctx: ApplianceContext, actor: Actor, body: AllowedHostCreateReq, meta: RequestMeta): Promise<AllowedHostView> {
  authorize(actor, "webhook_host:approve");
  return inScope(ctx.db.app, { kind: "appliance" }, async (tx) => {
    try {
      const row = await tx.one<HostRow>(
        "INSERT INTO webhook_allowed_hosts (host, port, allow_private, note, approved_by, approved_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        [body.host, body.port, body.allowPrivate, body.note ?? null, actor?.userId ?? null, ctx.clock.now()],
      );
      await recordEvent(
        ctx,
        tx,
        actor,
        {
          action: "webhook.host.approve",
          resourceType: "webhook_host",
          resourceId: row!.id,
          tenantId: null,
          outcome: "success",
          reason: `${body.host}:${body.port}${body.allowPrivate ? " private" : ""}`,
        },
        meta,
      );
      return hostView(row!);
    } catch (err) {
      if (isUniqueViolation(err)) throw new Conflict(`${body.host}:${body.port} is already on the allow-list`);
      throw err;
    }
  });
}

export async function revokeHost(ctx: ApplianceContext, actor: Actor, id: string, meta: RequestMeta): Promise<void> {
  authorize(actor, "webhook_host:revoke");
  await inScope(ctx.db.app, { kind: "appliance" }, async (tx) => {
    const row = await tx.one<HostRow>("DELETE FROM webhook_allowed_hosts WHERE id = $1 RETURNING *", [id]);
    if (!row) throw new NotFound("no such allow-list entry");
    await recordEvent(
      ctx,
      tx,
      actor,
      { action: "webhook.host.revoke", resourceType: "webhook_host", resourceId: id, tenantId: null, outcome: "success", reason: `${row.host}:${row.port}` },
      meta,
    );
  });
}

// ---- endpoints --------------------------------------------------------------------------------

type EndpointRow = {
  id: string;
  tenant_id: string | null;
  url: string;
  description: string | null;
  event_types: string[];
  status: "enabled" | "disabled";
  disabled_reason: "gone" | "admin" | null;
  disabled_at: Date | null;
  secret_version: number;
  signature_scheme: SignatureScheme;
  public_key: Buffer | null;
  previous_secret_expires_at: Date | null;
  previous_signature_scheme: SignatureScheme | null;
  previous_public_key: Buffer | null;
  created_at: Date;
  pending: number;
  dead: number;
};

const ENDPOINT_COLUMNS = `e.id, e.tenant_id, e.url, e.description, e.event_types, e.status, e.disabled_reason, e.disabled_at, e.secret_version,
  e.signature_scheme, e.public_key, e.previous_secret_expires_at, e.previous_signature_scheme, e.previous_public_key, e.created_at,
  (SELECT count(*)::int FROM webhook_deliveries d WHERE d.endpoint_id = e.id AND d.status = 'pending') AS pending,
  (SELECT count(*)::int FROM webhook_deliveries d WHERE d.endpoint_id = e.id AND d.status = 'dead') AS dead`;

function endpointView(r: EndpointRow, now: Date): EndpointView {
  const overlap = r.previous_secret_expires_at !== null && r.previous_secret_expires_at > now;
  return {
    id: r.id,
    tenantId: r.tenant_id,
    url: r.url,
    description: r.description,
    eventTypes: r.event_types,
    status: r.status,
    disabledReason: r.disabled_reason,
    disabledAt: iso(r.disabled_at),
    signatureScheme: r.signature_scheme,
    secretVersion: r.secret_version,
    publicKey: r.public_key ? formatPublicKey(r.public_key) : null,
    previousSecretExpiresAt: overlap ? r.previous_secret_expires_at!.toISOString() : null,
    previousSignatureScheme: overlap ? (r.previous_signature_scheme ?? "v1") : null,
    previousPublicKey: overlap && r.previous_public_key ? formatPublicKey(r.previous_public_key) : null,
    pending: r.pending,
    dead: r.dead,
    createdAt: r.created_at.toISOString(),
  };
}

async function readEndpoint(ctx: ApplianceContext, tx: Tx, actor: Actor, id: string): Promise<EndpointView> {
  const row = await tx.one<EndpointRow>(`SELECT ${ENDPOINT_COLUMNS} FROM webhook_endpoints e WHERE e.id = $1 AND e.tenant_id IS NOT DISTINCT FROM $2::uuid`, [id, actor.tenantId]);
  if (!row) throw new NotFound("no such webhook endpoint");
  return endpointView(row, ctx.clock.now());
}

export async function listEndpoints(ctx: ApplianceContext, actor: Actor): Promise<EndpointView[]> {
  authorize(actor, "webhook:list");
  const now = ctx.clock.now();
  return inScope(ctx.db.app, scopeOf(actor), async (tx) =>
    (
      await tx.rows<EndpointRow>(`SELECT ${ENDPOINT_COLUMNS} FROM webhook_endpoints e WHERE ($2::boolean OR e.tenant_id IS NOT DISTINCT FROM $1::uuid) ORDER BY e.created_at`, [
        actor.tenantId,
        seesAllTenants(actor),
      ])
    ).map((r) => endpointView(r, now)),
  );
}

export async function createEndpoint(ctx: ApplianceContext, actor: Actor, body: EndpointCreateReq, meta: RequestMeta): Promise<EndpointWithSecretRes> {
  authorize(actor, "webhook:create");
  const id = randomUUID();
  const scheme = body.signatureScheme ?? "v1";
  const signing = newSigningSecret(ctx, scheme, id, 1);
  return inScope(ctx.db.app, scopeOf(actor), async (tx) => {
    const dest = await assertAllowedDestination(ctx, tx, body.url);
    const now = ctx.clock.now();
    await tx.exec(
      `INSERT INTO webhook_endpoints (id, tenant_id, url, description, event_types, secret, signature_scheme, public_key, created_by, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)`,
      [id, actor.tenantId, dest.url.toString(), body.description ?? null, [...new Set(body.eventTypes)], signing.sealed, scheme, signing.publicKey, actor.userId, now],
    );
    await recordEvent(
      ctx,
      tx,
      actor,
      { action: "webhook.endpoint.create", resourceType: "webhook_endpoint", resourceId: id, outcome: "success", reason: `${scheme} ${body.eventTypes.join(",")}` },
      meta,
    );
    return { endpoint: await readEndpoint(ctx, tx, actor, id), secret: signing.shown };
  });
}

export async function updateEndpoint(ctx: ApplianceContext, actor: Actor, id: string, body: EndpointUpdateReq, meta: RequestMeta): Promise<EndpointView> {
  authorize(actor, "webhook:update");
  return inScope(ctx.db.app, scopeOf(actor), async (tx) => {
    await readEndpoint(ctx, tx, actor, id);
    const url = body.url === undefined ? null : (await assertAllowedDestination(ctx, tx, body.url)).url.toString();
    const now = ctx.clock.now();
    await tx.exec(
      `UPDATE webhook_endpoints SET
         url = coalesce($2, url),
         event_types = coalesce($3, event_types),
         description = coalesce($4, description),
         status = CASE WHEN $5::boolean IS NULL THEN status WHEN $5 THEN 'enabled' ELSE 'disabled' END,
         disabled_reason = CASE WHEN $5::boolean IS NULL THEN disabled_reason WHEN $5 THEN NULL ELSE 'admin' END,
         disabled_at = CASE WHEN $5::boolean IS NULL THEN disabled_at WHEN $5 THEN NULL ELSE $6 END,
         updated_at = $6
       WHERE id = $1`,
      [id, url, body.eventTypes ? [...new Set(body.eventTypes)] : null, body.description ?? null, body.enabled ?? null, now],
    );
    const changed = Object.keys(body).sort().join(",");
    await recordEvent(ctx, tx, actor, { action: "webhook.endpoint.update", resourceType: "webhook_endpoint", resourceId: id, outcome: "success", reason: changed }, meta);
    if (body.enabled) tx.afterCommit(() => wakeDeliveryWorker(ctx));
    return readEndpoint(ctx, tx, actor, id);
  });
}

export async function deleteEndpoint(ctx: ApplianceContext, actor: Actor, id: string, meta: RequestMeta): Promise<void> {
  authorize(actor, "webhook:delete");
  await inScope(ctx.db.app, scopeOf(actor), async (tx) => {
    await readEndpoint(ctx, tx, actor, id);
    await tx.exec("DELETE FROM webhook_endpoints WHERE id = $1", [id]);
    await recordEvent(ctx, tx, actor, { action: "webhook.endpoint.delete", resourceType: "webhook_endpoint", resourceId: id, outcome: "success" }, meta);
  });
}

/**
 * New signing material for an endpoint, sealed for (id, version): a `whsec_` secret for `v1`
 * (shown once), or an Ed25519 key pair for `v1a` whose private half never leaves the appliance
 * (nothing to show but the public key, which the endpoint view carries).
 */
function newSigningSecret(ctx: ApplianceContext, scheme: SignatureScheme, id: string, version: number): { sealed: Buffer; publicKey: Buffer | null; shown: string | null } {
  if (scheme === "v1a") {
    const pair = newEd25519Pair();
    const sealed = sealWebhookSecret(ctx, pair.privateKeyDer, { kind: "endpoint_ed25519", id, version });
    pair.privateKeyDer.fill(0);
    return { sealed, publicKey: pair.publicKey, shown: null };
  }
  const raw = newSecret();
  const sealed = sealWebhookSecret(ctx, raw, { kind: "endpoint", id, version });
  const shown = formatSecret(raw);
  raw.fill(0);
  return { sealed, publicKey: null, shown };
}

/**
 * A new signing secret (or key pair), optionally of the other scheme. During the overlap the
 * previous one keeps signing beside it (two signatures in one header, e.g. `v1,<new> v1,<old>` or
 * `v1a,<new> v1,<old>`), so receivers can switch at their own pace without a failed delivery.
 */
export async function rotateEndpointSecret(ctx: ApplianceContext, actor: Actor, id: string, body: EndpointRotateReq, meta: RequestMeta): Promise<EndpointWithSecretRes> {
  authorize(actor, "webhook:rotate_secret");
  const overlapHours = body.overlapHours ?? ctx.config.webhooks.rotationOverlapHours;
  return inScope(ctx.db.app, scopeOf(actor), async (tx) => {
    const current = await tx.one<{ secret_version: number; signature_scheme: SignatureScheme }>(
      "SELECT secret_version, signature_scheme FROM webhook_endpoints WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2::uuid FOR UPDATE",
      [id, actor.tenantId],
    );
    if (!current) throw new NotFound("no such webhook endpoint");
    const version = current.secret_version + 1;
    const scheme = body.signatureScheme ?? current.signature_scheme;
    const signing = newSigningSecret(ctx, scheme, id, version);
    const now = ctx.clock.now();
    await tx.exec(
      `UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_version = secret_version, previous_secret_expires_at = $2,
              previous_signature_scheme = signature_scheme, previous_public_key = public_key,
              secret = $3, secret_version = $4, signature_scheme = $5, public_key = $6, updated_at = $7 WHERE id = $1`,
      [id, new Date(now.getTime() + overlapHours * 3_600_000), signing.sealed, version, scheme, signing.publicKey, now],
    );
    const switched = scheme === current.signature_scheme ? scheme : `${current.signature_scheme} to ${scheme}`;
    await recordEvent(
      ctx,
      tx,
      actor,
      {
        action: "webhook.endpoint.rotate_secret",
        resourceType: "webhook_endpoint",
        resourceId: id,
        outcome: "success",
        reason: `version ${version}, ${switched}, overlap ${overlapHours} h`,
      },
      meta,
    );
    return { endpoint: await readEndpoint(ctx, tx, actor, id), secret: signing.shown };
  });
}

// ---- deliveries -------------------------------------------------------------------------------

type DeliveryRow = {
  id: string;
  message_id: string;
  event_type: string;
  endpoint_id: string;
  status: DeliveryView["status"];
  attempts: number;
  next_attempt_at: Date | null;
  last_status_code: number | null;
  last_error: string | null;
  dead_reason: DeliveryView["deadReason"];
  replay_of: string | null;
  created_at: Date;
  finished_at: Date | null;
};

const deliveryView = (r: DeliveryRow): DeliveryView => ({
  id: r.id,
  messageId: r.message_id,
  eventType: r.event_type,
  endpointId: r.endpoint_id,
  status: r.status,
  attempts: r.attempts,
  nextAttemptAt: r.status === "pending" ? iso(r.next_attempt_at) : null,
  lastStatusCode: r.last_status_code,
  lastError: r.last_error,
  deadReason: r.dead_reason,
  replayOf: r.replay_of,
  createdAt: r.created_at.toISOString(),
  finishedAt: iso(r.finished_at),
});

const DELIVERY_COLUMNS = `d.id, d.message_id, m.event_type, d.endpoint_id, d.status, d.attempts, d.next_attempt_at, d.last_status_code, d.last_error,
  d.dead_reason, d.replay_of, d.created_at, d.finished_at`;

/** The delivery log (newest first); `status: "dead"` is the dead-letter list. */
export async function listDeliveries(ctx: ApplianceContext, actor: Actor, query: DeliveryQuery): Promise<DeliveryView[]> {
  authorize(actor, "webhook:list");
  return inScope(ctx.db.app, scopeOf(actor), async (tx) =>
    (
      await tx.rows<DeliveryRow>(
        `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id
          WHERE ($5::boolean OR d.tenant_id IS NOT DISTINCT FROM $1::uuid) AND ($2::text IS NULL OR d.status = $2) AND ($3::uuid IS NULL OR d.endpoint_id = $3)
          ORDER BY coalesce(d.finished_at, d.created_at) DESC, d.id LIMIT $4`,
        [actor.tenantId, query.status ?? null, query.endpointId ?? null, query.limit, seesAllTenants(actor)],
      )
    ).map(deliveryView),
  );
}

type AttemptRow = {
  attempt: number;
  started_at: Date;
  duration_ms: number;
  status_code: number | null;
  outcome: AttemptView["outcome"];
  error: string | null;
  next_attempt_at: Date | null;
};

export async function getDelivery(ctx: ApplianceContext, actor: Actor, id: string): Promise<DeliveryDetailRes> {
  authorize(actor, "webhook:list");
  return inScope(ctx.db.app, scopeOf(actor), async (tx) => {
    const row = await tx.one<DeliveryRow & { body: string }>(
      `SELECT ${DELIVERY_COLUMNS}, m.body FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id WHERE d.id = $1 AND d.tenant_id IS NOT DISTINCT FROM $2::uuid`,
      [id, actor.tenantId],
    );
    if (!row) throw new NotFound("no such delivery");
    const attempts = await tx.rows<AttemptRow>("SELECT * FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt", [id]);
    return {
      delivery: deliveryView(row),
      attempts: attempts.map((a) => ({
        attempt: a.attempt,
        startedAt: a.started_at.toISOString(),
        durationMs: a.duration_ms,
        statusCode: a.status_code,
        outcome: a.outcome,
        error: a.error,
        nextAttemptAt: iso(a.next_attempt_at),
      })),
      payload: JSON.parse(row.body) as DeliveryDetailRes["payload"],
    };
  });
}

/**
 * Sends a dead-lettered message again: a new delivery of the same message (same `webhook-id`,
 * same body, signed afresh) with a fresh attempt budget; the dead one is marked `replayed`.
 */
export async function replayDelivery(ctx: ApplianceContext, actor: Actor, id: string, meta: RequestMeta): Promise<DeliveryView> {
  authorize(actor, "webhook:replay");
  return inScope(ctx.db.app, scopeOf(actor), async (tx) => {
    const dead = await tx.one<{ endpoint_id: string; message_id: string; tenant_id: string | null; status: string; endpoint_status: string }>(
      `SELECT d.endpoint_id, d.message_id, d.tenant_id, d.status, e.status AS endpoint_status FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
        WHERE d.id = $1 AND ($2::boolean OR d.tenant_id IS NOT DISTINCT FROM $3::uuid) FOR UPDATE OF d`,
      [id, seesAllTenants(actor), actor.tenantId],
    );
    if (!dead) throw new NotFound("no such delivery");
    if (dead.status !== "dead") throw new Conflict(`only a dead-lettered delivery can be replayed; this one is ${dead.status}`);
    if (dead.endpoint_status !== "enabled") throw new Conflict("the endpoint is disabled; enable it before replaying");
    const now = ctx.clock.now();
    await tx.exec("UPDATE webhook_deliveries SET status = 'replayed' WHERE id = $1", [id]);
    const created = await tx.one<{ id: string }>(
      `INSERT INTO webhook_deliveries (message_id, endpoint_id, tenant_id, next_attempt_at, created_at, replay_of) VALUES ($1, $2, $3, $4, $4, $5) RETURNING id`,
      [dead.message_id, dead.endpoint_id, dead.tenant_id, now, id],
    );
    await recordEvent(
      ctx,
      tx,
      actor,
      { action: "webhook.delivery.replay", resourceType: "webhook_delivery", resourceId: created!.id, tenantId: dead.tenant_id, outcome: "success", reason: `replays ${id}` },
      meta,
    );
    tx.afterCommit(() => wakeDeliveryWorker(ctx));
    const row = await tx.one<DeliveryRow>(`SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id WHERE d.id = $1`, [created!.id]);
    return deliveryView(row!);
  });
}
