import { randomUUID } from "node:crypto";
import { z } from "zod";
import type { ApplianceContext } from "../context.js";
import { inScope, isUniqueViolation, type Tx } from "../db/sql.js";
import { recordAuthEvent } from "../audit/append.js";
import { accountIdOf, scopeOf, type Actor } from "../kernel/actor.js";
import { Conflict, Invalid, NotFound } from "../kernel/errors.js";
import { authorize } from "../kernel/policy.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import type { CreateProviderReq, ProviderView, PublicProviderListRes, UpdateProviderReq } from "./schema.js";
import { openSsoValue, sealSsoValue } from "./secrets.js";

/**
 * The one table of identity providers (`identity_providers`) and the registry of the kinds that
 * fill it. Each protocol module registers its kind once (`registerProviderKind("oidc", …)`) with
 * the zod schemas of its settings and secrets; the table stores every kind alike, the secrets
 * sealed (./secrets.ts).
 */
export type ProviderKind<C = unknown, S = unknown> = {
  /** The kind's settings: validated on every create/update and again on every load. */
  configSchema: z.ZodType<C>;
  /** The kind's secrets (client secret, bind password); absent: the kind has none. */
  secretsSchema?: z.ZodType<S>;
  /** What the login page's button does for a provider of this kind (absent: no button). */
  browserSignIn?: (providerId: string) => { flow: "redirect" | "password"; path: string };
  /**
   * The URL the IdP sends the browser back to, to register at the IdP (absent: none). `base` is the
   * appliance's public address (server.publicUrl).
   */
  redirectUri?: (base: string, providerId: string, config: C) => string;
  /** Checks beyond the schema when settings change (for example, discovery reachable); throws Invalid. */
  validate?: (ctx: ApplianceContext, config: C, secrets: S | null) => Promise<void>;
};

const kinds = new Map<string, ProviderKind>();

export function registerProviderKind<C, S>(kind: string, spec: ProviderKind<C, S>): void {
  if (kinds.has(kind)) throw new Error(`provider kind registered twice: ${kind}`);
  kinds.set(kind, spec as ProviderKind);
}

/** Forgets a kind a test registered, so other test files sharing the process never see it. */
export function unregisterProviderKind(kind: string): void {
  kinds.delete(kind);
}

export function providerKind(kind: string): ProviderKind | undefined {
  return kinds.get(kind);
}

export function registeredKinds(): string[] {
  return [...kinds.keys()];
}

/** A provider as the protocol modules use it: settings parsed by its kind, secrets opened. */
export type LoadedProvider<C = Record<string, unknown>, S = Record<string, unknown>> = {
  id: string;
  tenantId: string;
  kind: string;
  name: string;
  config: C;
  secrets: S | null;
  enabled: boolean;
  mfaAcrValues: string[];
  linkByEmail: boolean;
};

type ProviderRow = {
  id: string;
  tenant_id: string;
  kind: string;
  name: string;
  config: Record<string, unknown>;
  secrets: Buffer | null;
  enabled: boolean;
  mfa_acr_values: string[];
  link_by_email: boolean;
  created_at: Date;
  updated_at: Date;
  linked_users?: number;
  last_sign_in_at?: Date | null;
};

const COLUMNS = "p.id, p.tenant_id, p.kind, p.name, p.config, p.secrets, p.enabled, p.mfa_acr_values, p.link_by_email, p.created_at, p.updated_at";

/** How many accounts link to a provider, and when one last signed in through it (the console's list). */
const LINK_FACTS =
  "(SELECT count(*) FROM sso_links l WHERE l.provider_id = p.id)::int AS linked_users, (SELECT max(l.last_login_at) FROM sso_links l WHERE l.provider_id = p.id) AS last_sign_in_at";

function kindOf(kind: string): ProviderKind {
  const spec = kinds.get(kind);
  if (!spec) throw new Invalid(`unknown provider kind ${kind}; known: ${registeredKinds().join(", ") || "none"}`, { errors: [{ path: "kind", message: "unknown kind" }] });
  return spec;
}

/** Parses settings with the kind's schema; a ZodError becomes a 400 naming the fields, never the values. */
function parsed<T>(schema: z.ZodType<T>, value: unknown, where: string): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  throw new Invalid(`the provider's ${where} are not valid`, { errors: result.error.issues.map((i) => ({ path: [where, ...i.path].join("."), message: i.message })) });
}

function view(base: string, r: ProviderRow): ProviderView {
  const spec = kinds.get(r.kind);
  return {
    id: r.id,
    kind: r.kind,
    name: r.name,
    config: r.config,
    hasSecrets: r.secrets !== null,
    enabled: r.enabled,
    mfaAcrValues: r.mfa_acr_values,
    linkByEmail: r.link_by_email,
    redirectUri: spec?.redirectUri?.(base, r.id, r.config) ?? null,
    linkedUsers: Number(r.linked_users ?? 0),
    lastSignInAt: r.last_sign_in_at?.toISOString() ?? null,
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
  };
}

function loaded(ctx: ApplianceContext, r: ProviderRow): LoadedProvider {
  const spec = kindOf(r.kind);
  return {
    id: r.id,
    tenantId: r.tenant_id,
    kind: r.kind,
    name: r.name,
    config: parsed(spec.configSchema, r.config, "settings") as Record<string, unknown>,
    secrets: r.secrets ? openSsoValue<Record<string, unknown>>(ctx.rootKey, "idp-secret", r.secrets, r.id) : null,
    enabled: r.enabled,
    mfaAcrValues: r.mfa_acr_values,
    linkByEmail: r.link_by_email,
  };
}

/** A provider by id inside a transaction already in its tenant's (or the appliance's) scope; null when unknown there. */
export async function loadProviderIn(ctx: ApplianceContext, t: Tx, id: string): Promise<LoadedProvider | null> {
  const [row] = await t.rows<ProviderRow>(`SELECT ${COLUMNS} FROM identity_providers p WHERE p.id = $1`, [id]);
  return row ? loaded(ctx, row) : null;
}

/**
 * A provider by id for a sign-in that is not yet anyone's (the callback of a browser coming back
 * from the IdP): looked up in appliance scope, since the tenant is what the provider says.
 */
export async function loadProvider(ctx: ApplianceContext, id: string): Promise<LoadedProvider | null> {
  return inScope(ctx.db.app, { kind: "appliance" }, (t) => loadProviderIn(ctx, t, id));
}

export async function listProviders(ctx: ApplianceContext, actor: Actor, base: string): Promise<ProviderView[]> {
  authorize(actor, "identity_provider:list");
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const rows = await t.rows<ProviderRow>(
      `SELECT ${COLUMNS}, ${LINK_FACTS}
         FROM identity_providers p ORDER BY p.name`,
    );
    return rows.map((r) => view(base, r));
  });
}

export async function getProvider(ctx: ApplianceContext, actor: Actor, id: string, base: string): Promise<ProviderView> {
  authorize(actor, "identity_provider:list");
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const [row] = await t.rows<ProviderRow>(`SELECT ${COLUMNS}, ${LINK_FACTS} FROM identity_providers p WHERE p.id = $1`, [id]);
    if (!row) throw new NotFound("no such identity provider in your tenant");
    return view(base, row);
  });
}

function tenantOf(actor: Actor): string {
  if (!actor.tenantId) throw new Invalid("identity providers belong to a tenant; act inside one");
  return actor.tenantId;
}

export async function createProvider(ctx: ApplianceContext, actor: Actor, input: CreateProviderReq, meta: RequestMeta, base: string): Promise<ProviderView> {
  authorize(actor, "identity_provider:create");
  const tenantId = tenantOf(actor);
  const spec = kindOf(input.kind);
  const config = parsed(spec.configSchema, input.config, "settings");
  const secrets = spec.secretsSchema && input.secrets ? parsed(spec.secretsSchema, input.secrets, "secrets") : null;
  await spec.validate?.(ctx, config, secrets);
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const now = ctx.clock.now();
    const id = randomUUID();
    try {
      await t.exec(
        `INSERT INTO identity_providers (id, tenant_id, kind, name, config, secrets, enabled, mfa_acr_values, link_by_email, created_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, false, $7, $8, $9, $10, $10)`,
        [
          id,
          tenantId,
          input.kind,
          input.name,
          JSON.stringify(config),
          secrets ? sealSsoValue(ctx.rootKey, "idp-secret", secrets, id) : null,
          input.mfaAcrValues ?? [],
          input.linkByEmail ?? false,
          accountIdOf(actor),
          now,
        ],
      );
    } catch (err) {
      if (isUniqueViolation(err)) throw new Conflict("a provider with this name exists in your tenant");
      throw err;
    }
    await recordAuthEvent(ctx, t, actor, { action: "identity_provider.create", resourceType: "identity_provider", resourceId: id, outcome: "success", reason: input.kind }, meta);
    const [row] = await t.rows<ProviderRow>(`SELECT ${COLUMNS}, 0 AS linked_users FROM identity_providers p WHERE p.id = $1`, [id]);
    return view(base, row!);
  });
}

export async function updateProvider(ctx: ApplianceContext, actor: Actor, id: string, input: UpdateProviderReq, meta: RequestMeta, base: string): Promise<ProviderView> {
  authorize(actor, "identity_provider:update");
  const tenantId = tenantOf(actor);
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const [row] = await t.rows<ProviderRow>(`SELECT ${COLUMNS} FROM identity_providers p WHERE p.id = $1 FOR UPDATE`, [id]);
    if (!row) throw new NotFound("no such identity provider in your tenant");
    const spec = kindOf(row.kind);
    const config = input.config !== undefined ? parsed(spec.configSchema, input.config, "settings") : row.config;
    const secrets =
      input.secrets !== undefined && spec.secretsSchema
        ? parsed(spec.secretsSchema, input.secrets, "secrets")
        : row.secrets
          ? openSsoValue(ctx.rootKey, "idp-secret", row.secrets, id)
          : null;
    if (input.config !== undefined || input.secrets !== undefined) await spec.validate?.(ctx, config, secrets);
    const changed = Object.keys(input).sort().join(",");
    try {
      await t.exec(`UPDATE identity_providers SET name = $2, config = $3, secrets = $4, mfa_acr_values = $5, link_by_email = $6, enabled = $7, updated_at = $8 WHERE id = $1`, [
        id,
        input.name ?? row.name,
        JSON.stringify(config),
        input.secrets !== undefined ? sealSsoValue(ctx.rootKey, "idp-secret", secrets, id) : row.secrets,
        input.mfaAcrValues ?? row.mfa_acr_values,
        input.linkByEmail ?? row.link_by_email,
        input.enabled ?? row.enabled,
        ctx.clock.now(),
      ]);
    } catch (err) {
      if (isUniqueViolation(err)) throw new Conflict("a provider with this name exists in your tenant");
      throw err;
    }
    const action =
      input.enabled === true && !row.enabled ? "identity_provider.enable" : input.enabled === false && row.enabled ? "identity_provider.disable" : "identity_provider.update";
    await recordAuthEvent(ctx, t, actor, { action, resourceType: "identity_provider", resourceId: id, outcome: "success", reason: `changed: ${changed}` }, meta);
    const [after] = await t.rows<ProviderRow>(`SELECT ${COLUMNS}, ${LINK_FACTS} FROM identity_providers p WHERE p.id = $1`, [id]);
    return view(base, after!);
  });
}

/**
 * Removes a provider. Its linked accounts stay (with their audit history) but can no longer sign
 * in through it; their open sessions made through it end.
 */
export async function deleteProvider(ctx: ApplianceContext, actor: Actor, id: string, meta: RequestMeta): Promise<void> {
  authorize(actor, "identity_provider:delete");
  const tenantId = tenantOf(actor);
  await inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const now = ctx.clock.now();
    await t.exec("UPDATE sessions SET revoked_at = $2, revoked_reason = 'identity provider removed' WHERE idp_provider_id = $1 AND revoked_at IS NULL", [id, now]);
    const rows = await t.rows<{ id: string }>("DELETE FROM identity_providers WHERE id = $1 RETURNING id", [id]);
    if (rows.length === 0) throw new NotFound("no such identity provider in your tenant");
    await recordAuthEvent(ctx, t, actor, { action: "identity_provider.delete", resourceType: "identity_provider", resourceId: id, outcome: "success" }, meta);
  });
}

/** The sign-in buttons of a tenant's login page: enabled providers whose kind has a browser flow. Public. */
export async function publicProvidersOf(ctx: ApplianceContext, tenantSlug: string): Promise<PublicProviderListRes> {
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const rows = await t.rows<{ id: string; name: string; kind: string }>(
      `SELECT p.id, p.name, p.kind FROM identity_providers p JOIN tenants tn ON tn.id = p.tenant_id
        WHERE tn.slug = $1 AND tn.status = 'active' AND p.enabled ORDER BY p.name`,
      [tenantSlug],
    );
    const providers = rows.flatMap((r) => {
      const flow = kinds.get(r.kind)?.browserSignIn?.(r.id);
      return flow ? [{ id: r.id, name: r.name, kind: r.kind, ...flow }] : [];
    });
    return { providers };
  });
}
