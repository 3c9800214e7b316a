import { z } from "zod";
import { accountIdOf, type Actor, type Role } from "../kernel/actor.js";
import { authorize } from "../kernel/policy.js";
import type { ApplianceContext } from "../context.js";
import { inScope, type Tx } from "../db/sql.js";
import { Invalid, NotFound } from "../kernel/errors.js";
import { recordAuthEvent, type EventActor } from "../audit/append.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { API_TOKEN_PREFIX, randomToken, sha256 } from "./tokens.js";
import { createApiTokenRequest } from "./schema.js";

/**
 * Service accounts for clinical applications. Each token belongs to its own service account (a
 * user row with kind = 'service', no email, no usable password) with one least-privilege role, and
 * is further narrowed by scopes. Only the SHA-256 of the token is stored; it is shown once.
 */
export { createApiTokenRequest };
export type CreateApiTokenRequest = z.input<typeof createApiTokenRequest>;

export type ApiTokenView = {
  id: string;
  name: string;
  serviceAccountId: string;
  role: Role;
  scopes: string[];
  prefix: string;
  createdAt: string;
  expiresAt: string;
  lastUsedAt: string | null;
  revokedAt: string | null;
};

type TokenRow = {
  id: string;
  tenant_id: string;
  user_id: string;
  name: string;
  token_prefix: string;
  scopes: string[];
  created_at: Date;
  expires_at: Date;
  revoked_at: Date | null;
  last_used_at: Date | null;
  role: Role;
};

function viewOf(r: TokenRow): ApiTokenView {
  return {
    id: r.id,
    name: r.name,
    serviceAccountId: r.user_id,
    role: r.role,
    scopes: r.scopes,
    prefix: r.token_prefix,
    createdAt: r.created_at.toISOString(),
    expiresAt: r.expires_at.toISOString(),
    lastUsedAt: r.last_used_at?.toISOString() ?? null,
    revokedAt: r.revoked_at?.toISOString() ?? null,
  };
}

function tenantOf(actor: Actor): string {
  if (!actor.tenantId) throw new Invalid("API tokens belong to a tenant; act inside one");
  return actor.tenantId;
}

export async function createApiToken(ctx: ApplianceContext, actor: Actor, raw: CreateApiTokenRequest, meta: RequestMeta): Promise<{ token: string; apiToken: ApiTokenView }> {
  const input = createApiTokenRequest.parse(raw);
  const tenantId = tenantOf(actor);
  authorize(actor, "api_token:create", { tenantId, targetRole: input.role });
  const token = randomToken(API_TOKEN_PREFIX);
  const now = ctx.clock.now();
  const expiresAt = new Date(now.getTime() + input.expiresInDays * 86_400_000);
  const row = await inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const [account] = await t.rows<{ id: string }>(
      `INSERT INTO users (tenant_id, email, password_hash, role, kind, display_name, created_at, updated_at)
       VALUES ($1, NULL, '!service-account', $2, 'service', $3, $4, $4) RETURNING id`,
      [tenantId, input.role, input.name, now],
    );
    const [inserted] = await t.rows<TokenRow>(
      `INSERT INTO api_tokens (tenant_id, user_id, name, token_prefix, token_hash, scopes, created_by, created_at, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *, $10::text AS role`,
      [tenantId, account!.id, input.name, token.slice(0, 10), sha256(token), input.scopes, accountIdOf(actor), now, expiresAt, input.role],
    );
    await recordAuthEvent(
      ctx,
      t,
      actor,
      { action: "api_token.create", resourceType: "api_token", resourceId: inserted!.id, outcome: "success", reason: `role ${input.role}; scopes ${input.scopes.join(" ")}` },
      meta,
    );
    return inserted!;
  });
  return { token, apiToken: viewOf(row) };
}

export async function listApiTokens(ctx: ApplianceContext, actor: Actor): Promise<ApiTokenView[]> {
  const tenantId = tenantOf(actor);
  authorize(actor, "api_token:list", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const rows = await t.rows<TokenRow>("SELECT k.*, u.role FROM api_tokens k JOIN users u ON u.id = k.user_id WHERE k.tenant_id = $1 ORDER BY k.created_at DESC", [tenantId]);
    return rows.map(viewOf);
  });
}

/** Revokes the token and deactivates its service account: nothing can act as it afterwards. */
export async function revokeApiToken(ctx: ApplianceContext, actor: Actor, tokenId: string, meta: RequestMeta): Promise<ApiTokenView> {
  const tenantId = tenantOf(actor);
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const [row] = await t.rows<TokenRow>("SELECT k.*, u.role FROM api_tokens k JOIN users u ON u.id = k.user_id WHERE k.id = $1 FOR UPDATE OF k", [tokenId]);
    if (!row) throw new NotFound("no such API token");
    authorize(actor, "api_token:revoke", { tenantId: row.tenant_id });
    await revokeApiTokensIn(ctx, t, actor, { tokenId }, null, meta);
    return viewOf({ ...row, revoked_at: row.revoked_at ?? ctx.clock.now() });
  });
}

/**
 * The one way API tokens are revoked, in the caller's transaction: by id (an admin's revoke), or
 * every live token a person created (their account is deactivated by an admin, SCIM, an access
 * review or the inactivity job: they were shown each secret once and may have kept it). Each
 * token's service account is deactivated too, each revocation is audited, and this replica's
 * cache of resolved tokens is emptied at commit; the others hear migration 0070's notification.
 */
export async function revokeApiTokensIn(
  ctx: ApplianceContext,
  t: Tx,
  actor: EventActor,
  which: { tokenId: string } | { createdBy: string },
  reason: string | null,
  meta: RequestMeta,
): Promise<number> {
  const now = ctx.clock.now();
  const revoked =
    "tokenId" in which
      ? await t.rows<{ id: string; user_id: string; tenant_id: string }>(
          "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1 RETURNING id, user_id, tenant_id",
          [which.tokenId, now],
        )
      : await t.rows<{ id: string; user_id: string; tenant_id: string }>(
          "UPDATE api_tokens SET revoked_at = $2 WHERE created_by = $1 AND revoked_at IS NULL RETURNING id, user_id, tenant_id",
          [which.createdBy, now],
        );
  for (const k of revoked) {
    await t.exec("UPDATE users SET status = 'deactivated', deactivated_at = coalesce(deactivated_at, $2), deactivated_reason = 'api token revoked' WHERE id = $1", [
      k.user_id,
      now,
    ]);
    await recordAuthEvent(
      ctx,
      t,
      actor,
      { action: "api_token.revoke", resourceType: "api_token", resourceId: k.id, tenantId: k.tenant_id, outcome: "success", ...(reason ? { reason } : {}) },
      meta,
    );
  }
  t.afterCommit(() => forgetResolvedApiTokens(ctx));
  return revoked.length;
}

/**
 * Resolved tokens, per daemon: a clinical application sends its token with every request, and
 * asking PostgreSQL each time is a round trip per request (docs/records.md, Performance). An entry
 * lives `auth.apiTokenCacheSeconds` (2 s by default) and never past the token's own expiry; the
 * services that revoke a token or change an account or tenant empty the cache of their replica
 * when they commit (`forgetResolvedApiTokens`), so there the change is immediate, and every
 * replica empties its own when PostgreSQL's notification of the change arrives (migration 0070,
 * daemon/db/invalidation.ts): milliseconds, or the cache time while a replica's listener is
 * reconnecting. Keyed by the token's SHA-256, never the token.
 */
type ResolvedToken = { actor: Actor; tokenExpiresAt: number; until: number };
const resolved = new WeakMap<ApplianceContext, Map<string, ResolvedToken>>();
const RESOLVED_MAX = 10_000;
/**
 * Lookups in flight, per token: the requests that find the cache empty at the same moment (every
 * `apiTokenCacheSeconds` under load) share one lookup, and so one `last_used_at` refresh, instead
 * of queueing refreshes on the token's row lock one commit after another (docs/records.md, Performance).
 */
const inFlight = new WeakMap<ApplianceContext, Map<string, Promise<Actor | null>>>();
/** Bumped by `forgetResolvedApiTokens`: a lookup that started before a change does not fill the cache after it. */
const generations = new WeakMap<ApplianceContext, number>();

/** Empties this daemon's cache of resolved API tokens (call after the change has committed). */
export function forgetResolvedApiTokens(ctx: ApplianceContext): void {
  resolved.get(ctx)?.clear();
  inFlight.get(ctx)?.clear();
  generations.set(ctx, (generations.get(ctx) ?? 0) + 1);
}

/**
 * The actor an `Authorization: Bearer` token stands for, or null when it is unknown, revoked,
 * expired, or its account or tenant is inactive. Looked up by the token's hash in appliance scope
 * (the tenant is not known yet); `last_used_at` is refreshed at most once a minute.
 */
export async function resolveApiToken(ctx: ApplianceContext, token: string): Promise<Actor | null> {
  if (!token.startsWith(API_TOKEN_PREFIX) || token.length > 200) return null;
  const hash = sha256(token);
  const key = hash.toString("hex");
  const now = ctx.clock.now();
  let cache = resolved.get(ctx);
  if (!cache) {
    resolved.set(ctx, (cache = new Map<string, ResolvedToken>()));
    ctx.db.invalidations.subscribe("api-tokens", () => forgetResolvedApiTokens(ctx));
  }
  const hit = cache.get(key);
  if (hit && hit.until > now.getTime() && hit.tokenExpiresAt > now.getTime()) return { ...hit.actor };
  if (hit) cache.delete(key);

  let lookups = inFlight.get(ctx);
  if (!lookups) inFlight.set(ctx, (lookups = new Map()));
  let lookup = lookups.get(key);
  if (!lookup) {
    const started = lookups;
    const mine = lookUpApiToken(ctx, hash, key, now).finally(() => {
      if (started.get(key) === mine) started.delete(key);
    });
    lookups.set(key, (lookup = mine));
  }
  const actor = await lookup;
  return actor ? { ...actor } : null;
}

/** One lookup of a token by its hash (see `resolveApiToken`), caching what it finds. */
async function lookUpApiToken(ctx: ApplianceContext, hash: Buffer, key: string, now: Date): Promise<Actor | null> {
  const generation = generations.get(ctx) ?? 0;
  // One statement, no explicit transaction (migration 0007).
  const [row] = await ctx.db.app.rows<
    Pick<TokenRow, "id" | "tenant_id" | "user_id" | "scopes" | "expires_at" | "revoked_at" | "last_used_at" | "role"> & { user_status: string; tenant_status: string }
  >("SELECT * FROM api_token_lookup($1)", [hash]);
  if (!row || row.revoked_at || row.expires_at <= now || row.user_status !== "active" || row.tenant_status !== "active") return null;
  if (!row.last_used_at || now.getTime() - row.last_used_at.getTime() > 60_000) {
    await inScope(ctx.db.app, { kind: "tenant", tenantId: row.tenant_id }, (t) => t.rows("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1", [row.id, now]));
  }
  const actor: Actor = { userId: row.user_id, role: row.role, tenantId: row.tenant_id, via: "api-token" as const, scopes: row.scopes };
  const seconds = ctx.config.auth.apiTokenCacheSeconds;
  const cache = resolved.get(ctx);
  if (seconds > 0 && cache && (generations.get(ctx) ?? 0) === generation) {
    if (cache.size >= RESOLVED_MAX) cache.clear();
    cache.set(key, { actor, tokenExpiresAt: row.expires_at.getTime(), until: now.getTime() + seconds * 1000 });
  }
  return actor;
}
