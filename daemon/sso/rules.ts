import type { ApplianceContext } from "../context.js";
import { inScope, type Tx } from "../db/sql.js";
import { recordAuthEvent, type EventActor } from "../audit/append.js";
import { revokeUserSessions } from "../auth/index.js";
import { accountIdOf, type Actor } from "../kernel/actor.js";
import { Conflict, Forbidden, Invalid, NotFound } from "../kernel/errors.js";
import { authorize } from "../kernel/policy.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { PRIVILEGED_SSO_ROLES, SSO_ROLES, type DryRunRes, type MfaMode, type MfaPolicyReq, type MfaPolicyRes, type RuleInput, type RuleView, type SsoRole } from "./schema.js";

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
export async function saveRules(ctx: ApplianceContext, actor: Actor, input: RuleInput[], meta: RequestMeta): Promise<{ rules: RuleView[]; reapplied: ReapplyOutcome }> {
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
    const reapplied = await reapplyRules(ctx, t, actor, meta);
    await recordAuthEvent(
      ctx,
      t,
      actor,
      {
        action: "sso.rules.save",
        resourceType: "sso_rules",
        resourceId: tenantId,
        outcome: "success",
        reason: `${input.length} rules, ${pending} pending approval; re-applied: ${reapplied.roleChanges} role changes, ${reapplied.accessEnded} accounts without access`,
      },
      meta,
    );
    return { rules: (await rulesIn(t)).map(viewOf), reapplied };
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
    // The rule is in force now: the accounts it matches get its role at once.
    await reapplyRules(ctx, t, actor, meta);
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
      users: [
        ...links.map((l) => {
          const who = { providerId: l.provider_id, groups: l.last_groups, claims: l.last_claims };
          const hit = firstMatch(asRules, who, true);
          const change = !hit ? "loses_access" : hit.status === "pending" && hit.role !== l.role ? "pending_approval" : hit.role === l.role ? "unchanged" : "role_change";
          return { userId: l.user_id, email: l.email, providerName: l.provider_name, currentRole: l.role, proposedRole: hit?.role ?? null, change } as const;
        }),
        // SCIM accounts linked to no provider: only provider-less group rules apply, and no match keeps the role (reapplyRules).
        ...(await scimOnlyAccounts(t)).map((a) => {
          const hit = firstMatch(
            asRules.filter((r) => r.source === "group" && r.providerId === null),
            { providerId: "", groups: a.groups, claims: {} },
            true,
          );
          const proposed = hit?.role ?? a.role;
          const change = hit && hit.status === "pending" && hit.role !== a.role ? "pending_approval" : proposed === a.role ? "unchanged" : "role_change";
          return { userId: a.id, email: a.email, providerName: "SCIM provisioning", currentRole: a.role, proposedRole: proposed, change } as const;
        }),
      ],
    };
  });
}

export type SsoMfaMode = MfaMode;

/** A role's MFA policy for sign-ins through an IdP: at sign-in, and for step-up. No row: the IdP's word counts for both. */
export async function mfaModeFor(t: Tx, role: string, part: "signIn" | "stepUp" = "signIn"): Promise<SsoMfaMode> {
  const [row] = await t.rows<{ mode: SsoMfaMode; step_up: SsoMfaMode }>("SELECT mode, step_up FROM sso_mfa_policy WHERE role = $1", [role]);
  return (part === "signIn" ? row?.mode : row?.step_up) ?? "idp";
}

async function mfaPolicyIn(t: Tx): Promise<MfaPolicyRes> {
  const rows = await t.rows<{ role: SsoRole; mode: SsoMfaMode; step_up: SsoMfaMode }>("SELECT role, mode, step_up FROM sso_mfa_policy");
  const of = (r: SsoRole) => rows.find((x) => x.role === r);
  return {
    roles: Object.fromEntries(SSO_ROLES.map((r) => [r, of(r)?.mode ?? "idp"])) as Record<SsoRole, SsoMfaMode>,
    stepUp: Object.fromEntries(SSO_ROLES.map((r) => [r, of(r)?.step_up ?? "idp"])) as Record<SsoRole, SsoMfaMode>,
  };
}

export async function getMfaPolicy(ctx: ApplianceContext, actor: Actor): Promise<MfaPolicyRes> {
  authorize(actor, "identity_provider:list");
  return inScope(ctx.db.app, { kind: "tenant", tenantId: tenantOf(actor) }, mfaPolicyIn);
}

/**
 * Sets the sign-in and step-up halves of some roles' MFA policy. A role given a sign-in mode
 * without a step-up mode steps up the same way. Step-up at the IdP is refused for a role whose
 * sign-in asks for the local code: the IdP's word does not count as a second factor for it.
 */
export async function setMfaPolicy(ctx: ApplianceContext, actor: Actor, input: MfaPolicyReq, meta: RequestMeta): Promise<MfaPolicyRes> {
  authorize(actor, "identity_provider:update");
  const tenantId = tenantOf(actor);
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const before = await mfaPolicyIn(t);
    const changed = SSO_ROLES.filter((r) => input.roles?.[r] !== undefined || input.stepUp?.[r] !== undefined);
    const errors: { path: string; message: string }[] = [];
    const next = changed.map((role) => {
      const mode = input.roles?.[role] ?? before.roles[role];
      const stepUp = input.stepUp?.[role] ?? input.roles?.[role] ?? before.stepUp[role];
      if (mode === "local" && stepUp === "idp")
        errors.push({ path: `stepUp.${role}`, message: "a role that must enter the local authenticator code at sign-in steps up with it too: choose local" });
      return { role, mode, stepUp };
    });
    if (errors.length > 0) throw new Invalid("the MFA policy is not valid", { errors });
    for (const { role, mode, stepUp } of next) {
      await t.exec(
        `INSERT INTO sso_mfa_policy (tenant_id, role, mode, step_up) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, role) DO UPDATE SET mode = EXCLUDED.mode, step_up = EXCLUDED.step_up`,
        [tenantId, role, mode, stepUp],
      );
    }
    const said = next.map((n) => `${n.role}=${n.mode}, step-up ${n.stepUp}`).join("; ");
    await recordAuthEvent(
      ctx,
      t,
      actor,
      { action: "sso.mfa_policy.update", resourceType: "sso_mfa_policy", resourceId: tenantId, outcome: "success", reason: said || "no change" },
      meta,
    );
    return mfaPolicyIn(t);
  });
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
  defaultRole: SsoRole | null,
  meta: RequestMeta,
  /** Appended to the audit reason, e.g. ", re-applied when the rules changed". */
  occasion = "",
): Promise<{ changed: number }> {
  const rules = (await rulesIn(t)).filter((r) => r.source === "group" && r.providerId === null);
  if (rules.length === 0 || userIds.length === 0) return { changed: 0 };
  const accounts = await t.rows<{ id: string; tenant_id: string; role: string; groups: string[] }>(
    `SELECT u.id, u.tenant_id, u.role, ${SCIM_GROUPS_OF_U}
       FROM users u
      WHERE u.id = ANY($1::uuid[]) AND u.kind = 'human' AND NOT u.break_glass_account AND u.scim_deleted_at IS NULL AND u.status = 'active'
      ORDER BY u.id FOR UPDATE OF u`,
    [[...new Set(userIds)]],
  );
  let changed = 0;
  for (const a of accounts) {
    const hit = firstMatch(rules, { providerId: "", groups: a.groups, claims: {} });
    const role = hit?.role ?? defaultRole ?? a.role;
    if (role === a.role) continue;
    const reason = hit ? `scim group rule at position ${hit.position}${occasion}` : "no scim group rule matches: the scim token's default role";
    if (a.role === "owner") {
      const [owners] = await t.rows<{ n: string }>("SELECT count(*) AS n FROM users WHERE tenant_id = $1 AND role = 'owner' AND status = 'active'", [a.tenant_id]);
      if (Number(owners!.n) <= 1) {
        await recordAuthEvent(
          ctx,
          t,
          actor,
          { action: "user.role.change", resourceType: "user", resourceId: a.id, outcome: "denied", reason: `${reason}: owner -> ${role} refused, the tenant's last owner` },
          meta,
        );
        continue;
      }
    }
    await t.exec("UPDATE users SET role = $2, updated_at = $3 WHERE id = $1", [a.id, role, ctx.clock.now()]);
    await revokeUserSessions(ctx, t, a.id, "role-changed");
    await recordAuthEvent(
      ctx,
      t,
      actor,
      { action: "user.role.change", resourceType: "user", resourceId: a.id, outcome: "success", reason: `${reason}: ${a.role} -> ${role}` },
      meta,
    );
    changed += 1;
  }
  return { changed };
}

/** The SCIM groups of account `u`, by displayName and externalId, as the rules match them. */
const SCIM_GROUPS_OF_U = `coalesce((SELECT array_agg(x) FROM scim_group_members m JOIN scim_groups g ON g.id = m.group_id,
  LATERAL unnest(array_remove(ARRAY[g.display_name, g.external_id], NULL)) AS x WHERE m.user_id = u.id), '{}') AS groups`;

/** Active SCIM accounts linked to no provider (SCIM's group rules govern their role), with their SCIM groups. */
async function scimOnlyAccounts(t: Tx): Promise<{ id: string; email: string; role: string; groups: string[] }[]> {
  return t.rows(
    `SELECT u.id, u.email, u.role, ${SCIM_GROUPS_OF_U} FROM users u
      WHERE u.source = 'scim' AND u.status = 'active' AND u.kind = 'human' AND NOT u.break_glass_account AND u.scim_deleted_at IS NULL
        AND NOT EXISTS (SELECT 1 FROM sso_links l WHERE l.user_id = u.id)
      ORDER BY u.email`,
  );
}

/** What re-applying the rules did: roles changed, and accounts no rule admits any more (their sessions ended). */
export type ReapplyOutcome = { roleChanges: number; accessEnded: number };

/**
 * Re-applies the tenant's rules, as they now stand, to the accounts they govern, when an admin saves
 * the table or a second admin approves a privileged rule (docs/sso.md "Rules"), in that
 * transaction and audited with that admin as the actor:
 * - accounts linked to a provider (just-in-time accounts, and local ones linked by email) get the
 *   role of the first active rule that matches the groups and claims of their last sign-in; an
 *   account no rule admits any more keeps its role but its sessions end (it cannot sign in again
 *   until a rule admits it: no match, no access);
 * - SCIM accounts linked to no provider get the role of the first active group rule that matches
 *   their SCIM groups (applyScimGroupRules); no match keeps the role until their next SCIM change.
 * Pending privileged rules grant nothing until approved; break-glass accounts are never touched,
 * and the tenant's last active owner keeps that role.
 */
export async function reapplyRules(ctx: ApplianceContext, t: Tx, actor: Actor, meta: RequestMeta): Promise<ReapplyOutcome> {
  const rules = await rulesIn(t);
  // Each account's most recent link (its last sign-in) decides; the accounts are locked against a concurrent change.
  const rows = await t.rows<{ id: string; tenant_id: string; role: string; provider_id: string; last_groups: string[]; last_claims: Record<string, unknown> }>(
    `SELECT u.id, u.tenant_id, u.role, l.provider_id, l.last_groups, l.last_claims
       FROM users u JOIN sso_links l ON l.user_id = u.id
      WHERE u.status = 'active' AND u.kind = 'human' AND NOT u.break_glass_account
      ORDER BY u.id, l.last_login_at DESC NULLS LAST
      FOR UPDATE OF u`,
  );
  const linked = rows.filter((r, i) => i === 0 || rows[i - 1]!.id !== r.id);
  const outcome: ReapplyOutcome = { roleChanges: 0, accessEnded: 0 };
  const audit = (userId: string, action: string, outcome: "success" | "denied", reason: string) =>
    recordAuthEvent(ctx, t, actor, { action, resourceType: "user", resourceId: userId, outcome, reason }, meta);
  for (const a of linked) {
    const hit = firstMatch(rules, { providerId: a.provider_id, groups: a.last_groups, claims: a.last_claims });
    if (!hit) {
      const ended = await revokeUserSessions(ctx, t, a.id, "sign-in rules: no rule matches");
      if (ended > 0) {
        await audit(a.id, "auth.session.revoke_all", "success", `sign-in rules changed: no rule matches the last sign-in any more; sessions ${ended}`);
        outcome.accessEnded += 1;
      }
      continue;
    }
    if (hit.role === a.role) continue;
    const why = `sign-in rule at position ${hit.position}, re-applied when the rules changed`;
    if (a.role === "owner") {
      const [owners] = await t.rows<{ n: string }>("SELECT count(*) AS n FROM users WHERE tenant_id = $1 AND role = 'owner' AND status = 'active'", [a.tenant_id]);
      if (Number(owners!.n) <= 1) {
        await audit(a.id, "user.role.change", "denied", `${why}: owner -> ${hit.role} refused, the tenant's last owner`);
        continue;
      }
    }
    await t.exec("UPDATE users SET role = $2, updated_at = $3 WHERE id = $1", [a.id, hit.role, ctx.clock.now()]);
    await revokeUserSessions(ctx, t, a.id, "role-changed");
    await audit(a.id, "user.role.change", "success", `${why}: ${a.role} -> ${hit.role}`);
    outcome.roleChanges += 1;
  }
  const scimOnly = await scimOnlyAccounts(t);
  const scim = await applyScimGroupRules(
    ctx,
    t,
    actor,
    scimOnly.map((u) => u.id),
    null,
    meta,
    ", re-applied when the rules changed",
  );
  outcome.roleChanges += scim.changed;
  return outcome;
}
