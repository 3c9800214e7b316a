import { z } from "zod";
import { recordAuthEvent } from "../audit/append.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { accountIdOf, type Actor } from "../kernel/actor.js";
import { Invalid, NotFound } from "../kernel/errors.js";
import { authorize } from "../kernel/policy.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { createHash, randomBytes } from "node:crypto";
import { createScimTokenRequest, type ScimTokenRes } from "./schema.js";

/**
 * Per-tenant bearer tokens of SCIM provisioning clients. A token names its tenant: the SCIM
 * endpoint has no tenant in its URL, so another tenant's token can only ever reach that other
 * tenant's accounts (row-level security does the rest). Only the SHA-256 is stored; the token is
 * shown once. No cache: a revoked token is refused on its next request on every replica.
 */

export const SCIM_TOKEN_PREFIX = "wkscim_";

/** The SCIM client as it appears in the audit trail: its token id, never the token. */
export type ScimClient = { tokenId: string; tenantId: string; defaultRole: ScimTokenRes["defaultRole"] };

export function scimActor(client: ScimClient) {
  return { userId: client.tokenId, role: "scim_client", tenantId: client.tenantId };
}

type TokenRow = {
  id: string;
  tenant_id: string;
  name: string;
  token_prefix: string;
  default_role: ScimTokenRes["defaultRole"];
  created_by: string | null;
  created_at: Date;
  last_used_at: Date | null;
  revoked_at: Date | null;
};

const sha256 = (s: string) => createHash("sha256").update(s).digest();

function view(r: TokenRow): ScimTokenRes {
  return {
    id: r.id,
    name: r.name,
    defaultRole: r.default_role,
    prefix: r.token_prefix,
    createdBy: r.created_by,
    createdAt: r.created_at.toISOString(),
    lastUsedAt: r.last_used_at?.toISOString() ?? null,
    revokedAt: r.revoked_at?.toISOString() ?? null,
  };
}

function tenantOf(actor: Actor): string {
  if (!actor.tenantId) throw new Invalid("SCIM tokens belong to a tenant; act inside one");
  return actor.tenantId;
}

export async function createScimToken(
  ctx: ApplianceContext,
  actor: Actor,
  raw: z.input<typeof createScimTokenRequest>,
  meta: RequestMeta,
): Promise<{ token: string; scimToken: ScimTokenRes }> {
  const input = createScimTokenRequest.parse(raw);
  const tenantId = tenantOf(actor);
  authorize(actor, "scim_token:create", { tenantId });
  const token = SCIM_TOKEN_PREFIX + randomBytes(32).toString("base64url");
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const [row] = await t.rows<TokenRow>(
      `INSERT INTO scim_tokens (tenant_id, name, token_prefix, token_hash, default_role, created_by, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *`,
      [tenantId, input.name, token.slice(0, 12), sha256(token), input.defaultRole, accountIdOf(actor), ctx.clock.now()],
    );
    await recordAuthEvent(
      ctx,
      t,
      actor,
      { action: "scim_token.create", resourceType: "scim_token", resourceId: row!.id, outcome: "success", reason: `default role ${input.defaultRole}` },
      meta,
    );
    return { token, scimToken: view(row!) };
  });
}

export async function listScimTokens(ctx: ApplianceContext, actor: Actor): Promise<ScimTokenRes[]> {
  const tenantId = tenantOf(actor);
  authorize(actor, "scim_token:list", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const rows = await t.rows<TokenRow>("SELECT * FROM scim_tokens WHERE tenant_id = $1 ORDER BY created_at DESC", [tenantId]);
    return rows.map(view);
  });
}

export async function revokeScimToken(ctx: ApplianceContext, actor: Actor, tokenId: string, meta: RequestMeta): Promise<ScimTokenRes> {
  const tenantId = tenantOf(actor);
  authorize(actor, "scim_token:revoke", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const [row] = await t.rows<TokenRow>("UPDATE scim_tokens SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1 RETURNING *", [tokenId, ctx.clock.now()]);
    if (!row) throw new NotFound("no such SCIM token");
    await recordAuthEvent(ctx, t, actor, { action: "scim_token.revoke", resourceType: "scim_token", resourceId: tokenId, outcome: "success" }, meta);
    return view(row);
  });
}

/**
 * The SCIM client a bearer token stands for, or null (unknown, revoked, or its tenant suspended).
 * Looked up in appliance scope because the tenant is what the token tells us.
 */
export async function resolveScimToken(ctx: ApplianceContext, token: string): Promise<ScimClient | null> {
  if (!token.startsWith(SCIM_TOKEN_PREFIX) || token.length > 200) return null;
  const now = ctx.clock.now();
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const [row] = await t.rows<TokenRow & { tenant_status: string }>(
      `SELECT k.*, tn.status AS tenant_status FROM scim_tokens k JOIN tenants tn ON tn.id = k.tenant_id WHERE k.token_hash = $1`,
      [sha256(token)],
    );
    if (!row || row.revoked_at || row.tenant_status !== "active") return null;
    if (!row.last_used_at || now.getTime() - row.last_used_at.getTime() > 60_000) {
      await t.exec("UPDATE scim_tokens SET last_used_at = $2 WHERE id = $1", [row.id, now]);
    }
    return { tokenId: row.id, tenantId: row.tenant_id, defaultRole: row.default_role };
  });
}
