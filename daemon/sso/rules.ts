import type { ApplianceContext } from "../context.js";
import { inScope, type Tx } from "../db/sql.js";
import { recordAuthEvent, type EventActor } from "../audit/append.js";
import { revokeUserSessions } from "../auth/index.js";
import { accountIdOf, type Actor } from "../kernel/actor.js";
import { Conflict, Forbidden, Invalid, NotFound } from "../kernel/errors.js";
import { authorize } from "../kernel/policy.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { PRIVILEGED_SSO_ROLES, SSO_ROLES, type DryRunRes, type MfaPolicyRes, type RuleInput, type RuleView, type SsoRole } from "./schema.js";

/**
 * The ordered claim/group → role rules of a tenant (docs/sso.md "Rules"). First match wins; no
 * match means no access. A rule that grants a privileged role (owner, admin, auditor) is saved as
 * `pending` and skipped until a second admin approves it, so one compromised admin session cannot
 * mint administrators through the IdP.
 */
export type Rule = {
  id: string;
  position: number;
  providerId: string | null;
  source: "group" | "claim";
  claim: string | null;
  match: "equals" | "prefix" | "suffix" | "regex";
  value: string;
  role: SsoRole;
  status: "active" | "pending";
  createdBy: string | null;
  approvedBy: string | null;
};

type RuleRow = {
  id: string;
  position: number;
  provider_id: string | null;
  source: "group" | "claim";
  claim: string | null;
  match: Rule["match"];
  value: string;
  role: SsoRole;
  status: "active" | "pending";
  created_by: string | null;
  approved_by: string | null;
};

const fromRow = (r: RuleRow): Rule => ({
  id: r.id,
  position: r.position,
  providerId: r.provider_id,
  source: r.source,
  claim: r.claim,
  match: r.match,
  value: r.value,
  role: r.role,
  status: r.status,
  createdBy: r.created_by,
  approvedBy: r.approved_by,
});

const viewOf = (r: Rule): RuleView => ({ ...r });

export async function rulesIn(t: Tx): Promise<Rule[]> {
  const rows = await t.rows<RuleRow>("SELECT id, position, provider_id, source, claim, match, value, role, status, created_by, approved_by FROM sso_role_rules ORDER BY position");
  return rows.map(fromRow);
}

function matches(rule: Pick<Rule, "match" | "value">, candidate: string): boolean {
  switch (rule.match) {
    case "equals":
      return candidate === rule.value;
    case "prefix":
      return candidate.startsWith(rule.value);
    case "suffix":
      return candidate.endsWith(rule.value);
    case "regex":
      return new RegExp(`^(?:${rule.value})$`, "u").test(candidate);
  }
}

/** A claim's values as strings: a string, a number, or an array of them (other shapes never match). */
function claimValues(claims: Record<string, unknown>, name: string): string[] {
  const v = claims[name];
  const one = (x: unknown) => (typeof x === "string" ? [x] : typeof x === "number" || typeof x === "boolean" ? [String(x)] : []);
  return Array.isArray(v) ? v.flatMap(one) : one(v);
}

export type RuleSubject = { providerId: string; groups: string[]; claims: Record<string, unknown> };

/**
 * The first rule (in order) that matches, among those in effect: active ones, and, for a dry run
 * (`includePending`), pending ones too. Null: no access.
 */
export function firstMatch(rules: readonly Omit<Rule, "id" | "createdBy" | "approvedBy">[], who: RuleSubject, includePending = false): (typeof rules)[number] | null {
  for (const rule of rules) {
    if (rule.status === "pending" && !includePending) continue;
    if (rule.providerId && rule.providerId !== who.providerId) continue;
    const candidates = rule.source === "group" ? who.groups : claimValues(who.claims, rule.claim ?? "");
    if (candidates.some((c) => matches(rule, c))) return rule;
  }
  return null;
}

function checkRegexes(rules: readonly RuleInput[]): void {
  rules.forEach((r, i) => {
    if (r.source === "claim" && !r.claim) throw new Invalid("a claim rule names its claim", { errors: [{ path: `rules.${i}.claim`, message: "required for source claim" }] });
    if (r.match !== "regex") return;
    try {
      new RegExp(r.value, "u");
    } catch {
      throw new Invalid("a rule's regular expression does not compile", { errors: [{ path: `rules.${i}.value`, message: "not a valid regular expression" }] });
    }
  });
}

function tenantOf(actor: Actor): string {
  if (!actor.tenantId) throw new Invalid("sign-in rules belong to a tenant; act inside one");
  return actor.tenantId;
}

export async function listRules(ctx: ApplianceContext, actor: Actor): Promise<RuleView[]> {
  authorize(actor, "identity_provider:list");
  return inScope(ctx.db.app, { kind: "tenant", tenantId: tenantOf(actor) }, async (t) => (await rulesIn(t)).map(viewOf));
}

const sameRule = (a: Omit<RuleInput, "claim" | "providerId"> & { claim?: string | null; providerId?: string | null }, b: Rule) =>
  a.source === b.source && (a.claim ?? null) === b.claim && a.match === b.match && a.value === b.value && a.role === b.role && (a.providerId ?? null) === b.providerId;

/**
 * Replaces the whole ordered table. A privileged rule keeps an approval it already had (same
 * rule, same provider); a new or changed one is saved pending.
 */
export async function saveRules(ctx: ApplianceContext, actor: Actor, input: RuleInput[], meta: RequestMeta): Promise<RuleView[]> {
  authorize(actor, "identity_provider:update");
  for (const r of input) authorize(actor, "user:update", { targetRole: r.role });
  checkRegexes(input);
  const tenantId = tenantOf(actor);
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const before = await rulesIn(t);
    const providerIds = new Set((await t.rows<{ id: string }>("SELECT id FROM identity_providers")).map((r) => r.id));
    input.forEach((r, i) => {
      if (r.providerId && !providerIds.has(r.providerId))
        throw new Invalid("a rule names a provider your tenant does not have", { errors: [{ path: `rules.${i}.providerId`, message: "unknown" }] });
    });
    await t.exec("DELETE FROM sso_role_rules");
    const now = ctx.clock.now();
    let pending = 0;
    for (const [position, r] of input.entries()) {
      const kept = before.find((b) => sameRule(r, b));
      const privileged = PRIVILEGED_SSO_ROLES.includes(r.role);
      const status = !privileged || kept?.status === "active" ? "active" : "pending";
      if (status === "pending") pending++;
      await t.exec(
        `INSERT INTO sso_role_rules (tenant_id, position, provider_id, source, claim, match, value, role, status, created_by, created_at, approved_by, approved_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
        [
          tenantId,
          position,
          r.providerId ?? null,
          r.source,
          r.source === "claim" ? (r.claim ?? null) : null,
          r.match,
          r.value,
          r.role,
          status,
          kept ? kept.createdBy : accountIdOf(actor),
          now,
          status === "active" && privileged ? (kept?.approvedBy ?? null) : null,
          status === "active" && privileged ? now : null,
        ],
      );
    }
    await recordAuthEvent(
      ctx,
      t,
      actor,
      { action: "sso.rules.save", resourceType: "sso_rules", resourceId: tenantId, outcome: "success", reason: `${input.length} rules, ${pending} pending approval` },
      meta,
    );
    return (await rulesIn(t)).map(viewOf);
  });
}

/**
 * A second admin approves a pending privileged rule. The one who saved it cannot: the point is
 * two people. Audited either way.
 */
export async function approveRule(ctx: ApplianceContext, actor: Actor, ruleId: string, meta: RequestMeta): Promise<RuleView> {
  authorize(actor, "identity_provider:approve_rule");
  const tenantId = tenantOf(actor);
  const refusal = await inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const [row] = await t.rows<RuleRow>(
      "SELECT id, position, provider_id, source, claim, match, value, role, status, created_by, approved_by FROM sso_role_rules WHERE id = $1 FOR UPDATE",
      [ruleId],
    );
    if (!row) throw new NotFound("no such rule in your tenant");
    if (row.status !== "pending") throw new Conflict("this rule is not waiting for approval");
    authorize(actor, "user:update", { targetRole: row.role });
    if (row.created_by === actor.userId || actor.impersonatorId) return row;
    await t.exec("UPDATE sso_role_rules SET status = 'active', approved_by = $2, approved_at = $3 WHERE id = $1", [ruleId, actor.userId, ctx.clock.now()]);
    await recordAuthEvent(ctx, t, actor, { action: "sso.rule.approve", resourceType: "sso_rule", resourceId: ruleId, outcome: "success", reason: `grants ${row.role}` }, meta);
    return null;
  });
  if (refusal) {
    await inScope(ctx.db.app, { kind: "tenant", tenantId }, (t) =>
      recordAuthEvent(
        ctx,
        t,
        actor,
        { action: "sso.rule.approve", resourceType: "sso_rule", resourceId: ruleId, outcome: "denied", reason: "the admin who saved the rule cannot approve it" },
        meta,
      ),
    );
    throw new Forbidden("a second administrator must approve a rule that grants a privileged role; you saved this one", { reason: "second_admin_required" });
  }
  const rules = await listRules(ctx, actor);
  return rules.find((r) => r.id === ruleId)!;
}

/**
 * An admin turns a pending privileged rule down: it is removed from the table (the others keep
 * their order). The one who saved it may withdraw it too; rejecting grants nothing, so it needs
 * no second person. Audited.
 */
export async function rejectRule(ctx: ApplianceContext, actor: Actor, ruleId: string, meta: RequestMeta): Promise<RuleView[]> {
  authorize(actor, "identity_provider:approve_rule");
  return inScope(ctx.db.app, { kind: "tenant", tenantId: tenantOf(actor) }, async (t) => {
    const [row] = await t.rows<{ status: string; role: string }>("SELECT status, role FROM sso_role_rules WHERE id = $1 FOR UPDATE", [ruleId]);
    if (!row) throw new NotFound("no such rule in your tenant");
    if (row.status !== "pending") throw new Conflict("this rule is not waiting for approval");
    await t.exec("DELETE FROM sso_role_rules WHERE id = $1", [ruleId]);
    await recordAuthEvent(
      ctx,
      t,
      actor,
      { action: "sso.rule.reject", resourceType: "sso_rule", resourceId: ruleId, outcome: "success", reason: `would have granted ${row.role}` },
      meta,
    );
    return (await rulesIn(t)).map(viewOf);
  });
}

/**
 * What the proposed table would do to every account linked to an IdP of the tenant, judged on the
 * groups and claims each brought at its last sign-in. Nothing is saved.
 */
export async function dryRunRules(ctx: ApplianceContext, actor: Actor, proposed: RuleInput[]): Promise<DryRunRes> {
  authorize(actor, "identity_provider:list");
  checkRegexes(proposed);
  return inScope(ctx.db.app, { kind: "tenant", tenantId: tenantOf(actor) }, async (t) => {
    const before = await rulesIn(t);
    const asRules = proposed.map((r, position) => {
      const kept = before.find((b) => sameRule(r, b));
      const status: Rule["status"] = !PRIVILEGED_SSO_ROLES.includes(r.role) || kept?.status === "active" ? "active" : "pending";
      return { position, providerId: r.providerId ?? null, source: r.source, claim: r.claim ?? null, match: r.match, value: r.value, role: r.role, status };
    });
    const links = await t.rows<{
      user_id: string;
      email: string | null;
      role: string;
      provider_id: string;
      provider_name: string;
      last_groups: string[];
      last_claims: Record<string, unknown>;
    }>(
      `SELECT l.user_id, u.email, u.role, l.provider_id, p.name AS provider_name, l.last_groups, l.last_claims
         FROM sso_links l JOIN users u ON u.id = l.user_id JOIN identity_providers p ON p.id = l.provider_id
        WHERE u.status = 'active' ORDER BY u.email`,
    );
    return {
      users: links.map((l) => {
        const who = { providerId: l.provider_id, groups: l.last_groups, claims: l.last_claims };
        const hit = firstMatch(asRules, who, true);
        const change = !hit ? "loses_access" : hit.status === "pending" && hit.role !== l.role ? "pending_approval" : hit.role === l.role ? "unchanged" : "role_change";
        return { userId: l.user_id, email: l.email, providerName: l.provider_name, currentRole: l.role, proposedRole: hit?.role ?? null, change } as const;
      }),
    };
  });
}

export type SsoMfaMode = "idp" | "local";

export async function mfaModeFor(t: Tx, role: string): Promise<SsoMfaMode> {
  const [row] = await t.rows<{ mode: SsoMfaMode }>("SELECT mode FROM sso_mfa_policy WHERE role = $1", [role]);
  return row?.mode ?? "idp";
}

export async function getMfaPolicy(ctx: ApplianceContext, actor: Actor): Promise<MfaPolicyRes> {
  authorize(actor, "identity_provider:list");
  return inScope(ctx.db.app, { kind: "tenant", tenantId: tenantOf(actor) }, async (t) => {
    const rows = await t.rows<{ role: SsoRole; mode: SsoMfaMode }>("SELECT role, mode FROM sso_mfa_policy");
    const roles = Object.fromEntries(SSO_ROLES.map((r) => [r, rows.find((x) => x.role === r)?.mode ?? "idp"])) as Record<SsoRole, SsoMfaMode>;
    return { roles };
  });
}

export async function setMfaPolicy(ctx: ApplianceContext, actor: Actor, roles: Partial<Record<SsoRole, SsoMfaMode>>, meta: RequestMeta): Promise<MfaPolicyRes> {
  authorize(actor, "identity_provider:update");
  const tenantId = tenantOf(actor);
  await inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    for (const [role, mode] of Object.entries(roles)) {
      await t.exec("INSERT INTO sso_mfa_policy (tenant_id, role, mode) VALUES ($1, $2, $3) ON CONFLICT (tenant_id, role) DO UPDATE SET mode = EXCLUDED.mode", [
        tenantId,
        role,
        mode,
      ]);
    }
    const said = Object.entries(roles)
      .map(([r, m]) => `${r}=${m}`)
      .join(", ");
    await recordAuthEvent(ctx, t, actor, { action: "sso.mfa_policy.update", resourceType: "sso_mfa_policy", resourceId: tenantId, outcome: "success", reason: said }, meta);
  });
  return getMfaPolicy(ctx, actor);
}

/**
 * SCIM groups feed the same rule table as sign-ins (docs/sso.md "Rules and SCIM groups"): after a
 * SCIM change to group memberships, each account concerned gets the role of the first active rule
 * of source `group` that names no provider and matches one of its SCIM groups (by displayName or
 * externalId); with no match it falls back to the SCIM token's default role. A tenant without any
 * such rule keeps SCIM out of roles altogether, as before. Pending privileged rules are skipped
 * (a second admin has not approved them), and the tenant's last active owner keeps that role.
 * A change ends the account's sessions (the new role applies from the next sign-in, as when an
 * admin changes it) and is audited with the SCIM client as actor, in the caller's transaction.
 */
export async function applyScimGroupRules(
  ctx: ApplianceContext,
  t: Tx,
  actor: EventActor,
  userIds: readonly string[],
  defaultRole: SsoRole,
  meta: RequestMeta,
): Promise<{ changed: number }> {
  const rules = (await rulesIn(t)).filter((r) => r.source === "group" && r.providerId === null);
  if (rules.length === 0 || userIds.length === 0) return { changed: 0 };
  const accounts = await t.rows<{ id: string; tenant_id: string; role: string; groups: string[] }>(
    `SELECT u.id, u.tenant_id, u.role,
            coalesce((SELECT array_agg(x) FROM scim_group_members m JOIN scim_groups g ON g.id = m.group_id,
                      LATERAL unnest(array_remove(ARRAY[g.display_name, g.external_id], NULL)) AS x WHERE m.user_id = u.id), '{}') AS groups
       FROM users u
      WHERE u.id = ANY($1::uuid[]) AND u.kind = 'human' AND NOT u.break_glass_account AND u.scim_deleted_at IS NULL AND u.status = 'active'
      ORDER BY u.id FOR UPDATE OF u`,
    [[...new Set(userIds)]],
  );
  let changed = 0;
  for (const a of accounts) {
    const hit = firstMatch(rules, { providerId: "", groups: a.groups, claims: {} });
    const role = hit?.role ?? defaultRole;
    if (role === a.role) continue;
    const why = hit ? `scim group rule at position ${hit.position}` : "no scim group rule matches: the scim token's default role";
    if (a.role === "owner") {
      const [owners] = await t.rows<{ n: string }>("SELECT count(*) AS n FROM users WHERE tenant_id = $1 AND role = 'owner' AND status = 'active'", [a.tenant_id]);
      if (Number(owners!.n) <= 1) {
        await recordAuthEvent(
          ctx,
          t,
          actor,
          { action: "user.role.change", resourceType: "user", resourceId: a.id, outcome: "denied", reason: `${why}: owner -> ${role} refused, the tenant's last owner` },
          meta,
        );
        continue;
      }
    }
    await t.exec("UPDATE users SET role = $2, updated_at = $3 WHERE id = $1", [a.id, role, ctx.clock.now()]);
    await revokeUserSessions(ctx, t, a.id, "role-changed");
    await recordAuthEvent(ctx, t, actor, { action: "user.role.change", resourceType: "user", resourceId: a.id, outcome: "success", reason: `${why}: ${a.role} -> ${role}` }, meta);
    changed += 1;
  }
  return { changed };
}
