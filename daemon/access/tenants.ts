import { z } from "zod";
import { forgetResolvedApiTokens, inviteInTransaction } from "../auth/index.js";
import { recordAuthEvent } from "../audit/append.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import type { ApplianceContext } from "../context.js";
import { inScope, type Tx } from "../db/sql.js";
import { Conflict, NotFound } from "../kernel/errors.js";
import { scopeOf, type Actor } from "../kernel/actor.js";
import { authorize } from "../kernel/policy.js";
import { createTenantRequest, updateTenantRequest, securitySettingsRequest, type CreatedTenantRes } from "./schema.js";

/** Tenants (a hospital, clinic or department) and their security settings. */
export { createTenantRequest };

export { updateTenantRequest };

export { securitySettingsRequest };

export type TenantView = { id: string; name: string; slug: string; status: string; createdAt: string };
export type CreatedTenantView = CreatedTenantRes;
const TENANT_ROLES = ["owner", "admin", "practitioner", "front_desk", "auditor"] as const;
type TenantRole = (typeof TENANT_ROLES)[number];

export type SecuritySettings = {
  mfaRequired: boolean;
  mfaRequiredRoles: TenantRole[];
  passwordMinLength: number;
  commonPasswordsRefused: true;
  lockoutMaxFailures: number;
  lockoutMinutes: number;
  lockoutWindowMinutes: number;
  totpWindowSteps: number;
  idleTimeoutMinutes: number;
  idleTimeoutIsDefault: boolean;
  inactiveUserDays: number;
  inactiveUserDaysIsDefault: boolean;
  absoluteLifetimeHours: number;
  localSignIn: "everyone" | "break_glass_only";
  breakGlassAccounts: number;
};

type TenantRow = {
  id: string;
  name: string;
  slug: string;
  status: string;
  created_at: Date;
  mfa_required: boolean;
  mfa_roles: string[];
  password_min_length: number | null;
  lockout_max_failures: number | null;
  lockout_minutes: number | null;
  totp_window_steps: number | null;
  idle_timeout_minutes: number | null;
  inactive_user_days: number | null;
  local_sign_in: "everyone" | "break_glass_only";
  break_glass_accounts?: string;
};

const view = (r: TenantRow): TenantView => ({ id: r.id, name: r.name, slug: r.slug, status: r.status, createdAt: r.created_at.toISOString() });

/** A slug made from the name: "St. Mary's Cardiology" → "st-marys-cardiology". */
export function slugFrom(name: string): string {
  const base = name
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .toLowerCase()
    .replace(/['’]/g, "")
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 56)
    .replace(/-+$/, "");
  return base.length >= 2 ? base : `tenant${base ? `-${base}` : ""}`;
}

/** The derived slug, or the first of `slug-2`, `slug-3`… nobody has (a given slug is taken as it is). */
async function freeSlug(t: Tx, base: string): Promise<string> {
  const rows = await t.rows<{ slug: string }>("SELECT slug FROM tenants WHERE slug = $1 OR slug LIKE $2", [base, `${base}-%`]);
  const taken = new Set(rows.map((r) => r.slug));
  let slug = base;
  for (let n = 2; taken.has(slug); n++) slug = `${base}-${n}`;
  return slug;
}

/**
 * A new tenant and, when an owner email is given, its first owner's invite, in one transaction:
 * a tenant nobody can enter is not left behind when the invite cannot be made (email taken).
 */
export async function createTenant(ctx: ApplianceContext, actor: Actor, input: z.infer<typeof createTenantRequest>, meta: RequestMeta): Promise<CreatedTenantView> {
  authorize(actor, "tenant:create");
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const slug = input.slug ?? (await freeSlug(t, slugFrom(input.name)));
    // MFA is on for every role of a new tenant unless the creator turns it off (DESIGN: MFA enforceable; on by default).
    const [row] = await t.rows<TenantRow>(
      "INSERT INTO tenants (name, slug, mfa_required, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) ON CONFLICT (slug) DO NOTHING RETURNING *",
      [input.name, slug, input.mfaRequired, ctx.clock.now()],
    );
    if (!row) throw new Conflict(`a tenant with the slug ${slug} already exists`);
    await recordAuthEvent(ctx, t, actor, { action: "tenant.create", resourceType: "tenant", resourceId: row.id, tenantId: row.id, outcome: "success" }, meta);
    let ownerInvite: CreatedTenantView["ownerInvite"] = null;
    if (input.ownerEmail) {
      const created = await inviteInTransaction(ctx, t, actor, { email: input.ownerEmail, role: "owner", tenantId: row.id }, meta);
      ownerInvite = { id: created.invite.id, email: created.invite.email, token: created.token, expiresAt: created.invite.expiresAt };
    }
    return { ...view(row), ownerInvite };
  });
}

/** Super-admins see every tenant; tenant staff see their own (row-level security does the filtering). */
export async function listTenants(ctx: ApplianceContext, actor: Actor): Promise<TenantView[]> {
  authorize(actor, "tenant:list");
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const rows = await t.rows<TenantRow>("SELECT * FROM tenants ORDER BY name");
    return rows.map(view);
  });
}

export async function getTenant(ctx: ApplianceContext, actor: Actor, tenantId: string): Promise<TenantView> {
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    // Row-level security hides other tenants: their ids answer 404, not 403.
    const [row] = await t.rows<TenantRow>("SELECT * FROM tenants WHERE id = $1", [tenantId]);
    if (!row) throw new NotFound("no such tenant");
    authorize(actor, "tenant:read", { tenantId });
    return view(row);
  });
}

export async function updateTenant(ctx: ApplianceContext, actor: Actor, tenantId: string, input: z.infer<typeof updateTenantRequest>, meta: RequestMeta): Promise<TenantView> {
  authorize(actor, "tenant:update", { tenantId });
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const [row] = await t.rows<TenantRow>("UPDATE tenants SET name = coalesce($2, name), status = coalesce($3, status), updated_at = $4 WHERE id = $1 RETURNING *", [
      tenantId,
      input.name ?? null,
      input.status ?? null,
      ctx.clock.now(),
    ]);
    if (!row) throw new NotFound("no such tenant");
    // A suspended tenant's API tokens stop at once here (other replicas: auth.apiTokenCacheSeconds).
    t.afterCommit(() => forgetResolvedApiTokens(ctx));
    await recordAuthEvent(
      ctx,
      t,
      actor,
      { action: "tenant.update", resourceType: "tenant", resourceId: tenantId, tenantId, outcome: "success", reason: input.status ? `status ${input.status}` : null },
      meta,
    );
    return view(row);
  });
}

const BREAK_GLASS_COUNT = "(SELECT count(*) FROM users u WHERE u.tenant_id = tenants.id AND u.break_glass_account AND u.status = 'active') AS break_glass_accounts";

/**
 * Local sign-in for break-glass accounts only: refused unless the tenant can still get in, that
 * is, it has an enabled identity provider and at least one active break-glass account.
 */
async function checkLocalSignInOff(t: Tx, tenantId: string): Promise<void> {
  const [r] = await t.rows<{ providers: string; accounts: string }>(
    `SELECT (SELECT count(*) FROM identity_providers p WHERE p.tenant_id = $1 AND p.enabled) AS providers,
            (SELECT count(*) FROM users u WHERE u.tenant_id = $1 AND u.break_glass_account AND u.status = 'active') AS accounts`,
    [tenantId],
  );
  if (Number(r!.providers) === 0) throw new Conflict("enable an identity provider before turning local sign-in off");
  if (Number(r!.accounts) === 0) throw new Conflict("flag at least one break-glass account before turning local sign-in off");
}

function settingsOf(ctx: ApplianceContext, r: TenantRow): SecuritySettings {
  return {
    mfaRequired: r.mfa_required,
    mfaRequiredRoles: TENANT_ROLES.filter((role) => r.mfa_required || r.mfa_roles.includes(role)),
    passwordMinLength: r.password_min_length ?? 12,
    commonPasswordsRefused: true,
    lockoutMaxFailures: r.lockout_max_failures ?? ctx.config.auth.lockoutMaxFailures,
    lockoutMinutes: r.lockout_minutes ?? ctx.config.auth.lockoutMinutes,
    lockoutWindowMinutes: ctx.config.auth.lockoutWindowMinutes,
    totpWindowSteps: r.totp_window_steps ?? 1,
    idleTimeoutMinutes: r.idle_timeout_minutes ?? ctx.config.auth.idleTimeoutMinutes,
    idleTimeoutIsDefault: r.idle_timeout_minutes === null,
    inactiveUserDays: r.inactive_user_days ?? ctx.config.access.inactiveUserDays,
    inactiveUserDaysIsDefault: r.inactive_user_days === null,
    absoluteLifetimeHours: ctx.config.auth.absoluteLifetimeHours,
    localSignIn: r.local_sign_in,
    breakGlassAccounts: Number(r.break_glass_accounts ?? 0),
  };
}

function requireTenant(actor: Actor): string {
  if (!actor.tenantId) throw new NotFound("security settings belong to a tenant; appliance settings live in config");
  return actor.tenantId;
}

export async function getSecuritySettings(ctx: ApplianceContext, actor: Actor): Promise<SecuritySettings> {
  const tenantId = requireTenant(actor);
  authorize(actor, "security_settings:read", { tenantId });
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const [row] = await t.rows<TenantRow>(`SELECT *, ${BREAK_GLASS_COUNT} FROM tenants WHERE id = $1`, [tenantId]);
    if (!row) throw new NotFound("no such tenant");
    return settingsOf(ctx, row);
  });
}

/** Admins set MFA enforcement, the idle timeout and the inactivity period for their tenant. */
export async function updateSecuritySettings(ctx: ApplianceContext, actor: Actor, input: z.infer<typeof securitySettingsRequest>, meta: RequestMeta): Promise<SecuritySettings> {
  const tenantId = requireTenant(actor);
  authorize(actor, "security_settings:update", { tenantId });
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    if (input.localSignIn === "break_glass_only") await checkLocalSignInOff(t, tenantId);
    // mfaRequiredRoles names exactly the roles; mfaRequired (all or none) is its older, coarser form.
    const roles = input.mfaRequiredRoles;
    const mfaAll = roles ? TENANT_ROLES.every((r) => roles.includes(r)) : (input.mfaRequired ?? null);
    const mfaRoles = roles ?? (input.mfaRequired === false ? [] : null);
    const set = (v: number | null | undefined) => [v !== undefined, v ?? null] as const;
    const [row] = await t.rows<TenantRow>(
      `UPDATE tenants SET
         local_sign_in = coalesce($17, local_sign_in),
         mfa_required = coalesce($2, mfa_required),
         mfa_roles = coalesce($8::text[], mfa_roles),
         idle_timeout_minutes = CASE WHEN $3::boolean THEN $4::integer ELSE idle_timeout_minutes END,
         inactive_user_days = CASE WHEN $5::boolean THEN $6::integer ELSE inactive_user_days END,
         password_min_length = CASE WHEN $9::boolean THEN $10::integer ELSE password_min_length END,
         lockout_max_failures = CASE WHEN $11::boolean THEN $12::integer ELSE lockout_max_failures END,
         lockout_minutes = CASE WHEN $13::boolean THEN $14::integer ELSE lockout_minutes END,
         totp_window_steps = CASE WHEN $15::boolean THEN $16::integer ELSE totp_window_steps END,
         updated_at = $7
       WHERE id = $1 RETURNING *, ${BREAK_GLASS_COUNT}`,
      [
        tenantId,
        mfaAll,
        input.idleTimeoutMinutes !== undefined,
        input.idleTimeoutMinutes ?? null,
        input.inactiveUserDays !== undefined,
        input.inactiveUserDays ?? null,
        ctx.clock.now(),
        mfaRoles,
        ...set(input.passwordMinLength),
        ...set(input.lockoutMaxFailures),
        ...set(input.lockoutMinutes),
        ...set(input.totpWindowSteps),
        input.localSignIn ?? null,
      ],
    );
    if (!row) throw new NotFound("no such tenant");
    const changes = Object.entries(input)
      .map(([k, v]) => `${k}=${v === null ? "default" : Array.isArray(v) ? v.join(",") || "none" : String(v)}`)
      .join(" ");
    await recordAuthEvent(ctx, t, actor, { action: "settings.security.update", resourceType: "tenant", resourceId: tenantId, outcome: "success", reason: changes || null }, meta);
    return settingsOf(ctx, row);
  });
}
