import { z } from "zod";
import type { ApplianceContext } from "../context.js";
import type { Actor } from "../kernel/actor.js";
import { defineRoute, type Route, type RouteHandler } from "../kernel/define-route.js";
import { capabilitiesOf, STEP_UP_ACTIONS, type Action } from "../kernel/policy.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { listBreakGlass, openBreakGlass } from "./break-glass.js";
import { assignToCareTeam, listCareTeam, removeFromCareTeam } from "./care-team.js";
import { acknowledgeNotification, listNotifications } from "./notifications.js";
import {
  accessReviewEntry,
  campaignEntryParams,
  campaignEvidence,
  campaignSummary,
  campaignView,
  reviewDecisionRequest,
  startCampaignRequest,
  adminNotification,
  breakGlassGrant,
  breakGlassQuery,
  breakGlassRequest,
  capabilitiesResponse,
  careTeamAssign,
  careTeamMember,
  createTenantRequest,
  createdTenant,
  idParams,
  notificationsQuery,
  patientUserParams,
  privilegedAccessRequest,
  privilegedAccessView,
  securitySettingsRequest,
  securitySettingsView,
  supportRequestInput,
  supportRequestView,
  tenantView,
  updateTenantRequest,
  updateUserRequest,
  userView,
} from "./schema.js";
import { decideSupportRequest, endSupportAccess, enterSupportAccess, listSupportRequests, requestSupportAccess } from "./support.js";
import { createTenant, getSecuritySettings, getTenant, listTenants, updateSecuritySettings, updateTenant } from "./tenants.js";
import { accessReview, getUser, listUsers, resetUserMfa, updateUser } from "./users.js";
import { decideEntry, exportCampaignEvidence, getCampaign, listCampaigns, startCampaign } from "./reviews.js";
import { decidePrivilegedAccess, endPrivilegedAccess, listPrivilegedAccess, requestPrivilegedAccess } from "./privileged-access.js";

const tag = "access";

/**
 * `POST <path>` on the one record its `:id` names, with no body, answered with the record as it is
 * afterwards: the shape of every approve, deny, enter, end, reset and acknowledge route below. Each
 * is still one `defineRoute` (mount, OpenAPI and policy action in one definition); this spells the
 * parts they share once.
 */
function recordAction<R extends z.ZodType>(
  spec: { path: string; action: Action; summary: string; response: R; problems?: Partial<Record<number, string>> },
  run: (ctx: ApplianceContext, actor: Actor, id: string, meta: RequestMeta) => ReturnType<RouteHandler<typeof idParams, undefined, undefined, R>>,
): Route {
  return defineRoute({ method: "post", tag, params: idParams, ...spec }, ({ ctx, actor, params, meta }) => run(ctx, actor, params.id, meta));
}

type Decision = "approve" | "deny";

/** `POST <base>/:id/approve` and `…/deny` of a request someone else decides: both answer the request, 409 once decided. */
function decisionRoutes<R extends z.ZodType>(
  base: string,
  spec: Record<Decision, { action: Action; summary: string }>,
  response: R,
  decide: (ctx: ApplianceContext, actor: Actor, id: string, decision: Decision, meta: RequestMeta) => ReturnType<RouteHandler<typeof idParams, undefined, undefined, R>>,
): Route[] {
  return (["approve", "deny"] as const).map((decision) =>
    recordAction({ path: `${base}/:id/${decision}`, ...spec[decision], response, problems: { 409: "Already decided" } }, (ctx, actor, id, meta) =>
      decide(ctx, actor, id, decision, meta),
    ),
  );
}

/** Tenants, security settings, users, support access, break-glass, care teams and admin notifications. */
export const accessRoutes = [
  // Any signed-in caller may ask what it may do; answered from the policy table alone.
  defineRoute(
    {
      method: "get",
      path: "/access/capabilities",
      action: "authenticated",
      tag,
      summary: "What the caller may do: every policy action allowed at route level, and which of them ask for a fresh second factor",
      response: capabilitiesResponse,
    },
    ({ actor }) => {
      const actions = capabilitiesOf(actor);
      return { actions, stepUp: actions.filter((a) => STEP_UP_ACTIONS.has(a)) };
    },
  ),

  defineRoute(
    { method: "get", path: "/tenants", action: "tenant:list", tag, summary: "Tenants (all for super-admins, own for tenant staff)", response: z.array(tenantView) },
    ({ ctx, actor }) => listTenants(ctx, actor),
  ),
  defineRoute(
    {
      method: "post",
      path: "/tenants",
      action: "tenant:create",
      tag,
      summary: "Create a tenant (super-admin), with its first owner's invite when ownerEmail is given",
      body: createTenantRequest,
      response: createdTenant,
      status: 201,
      problems: { 409: "The slug is taken, or the owner email already has an account" },
    },
    ({ ctx, actor, body, meta }) => createTenant(ctx, actor, body, meta),
  ),
  defineRoute({ method: "get", path: "/tenants/:id", action: "tenant:read", tag, summary: "One tenant", params: idParams, response: tenantView }, ({ ctx, actor, params }) =>
    getTenant(ctx, actor, params.id),
  ),
  defineRoute(
    {
      method: "patch",
      path: "/tenants/:id",
      action: "tenant:update",
      tag,
      summary: "Rename or suspend a tenant (super-admin)",
      params: idParams,
      body: updateTenantRequest,
      response: tenantView,
    },
    ({ ctx, actor, params, body, meta }) => updateTenant(ctx, actor, params.id, body, meta),
  ),

  defineRoute(
    {
      method: "get",
      path: "/settings/security",
      action: "security_settings:read",
      tag,
      summary: "The tenant's MFA enforcement, idle timeout, inactivity period and local sign-in",
      response: securitySettingsView,
    },
    ({ ctx, actor }) => getSecuritySettings(ctx, actor),
  ),
  defineRoute(
    {
      method: "put",
      path: "/settings/security",
      action: "security_settings:update",
      tag,
      summary: "Change the tenant's security settings (owner, admin)",
      body: securitySettingsRequest,
      response: securitySettingsView,
    },
    ({ ctx, actor, body, meta }) => updateSecuritySettings(ctx, actor, body, meta),
  ),

  defineRoute(
    { method: "get", path: "/users", action: "user:list", tag, summary: "Accounts of the tenant (or appliance staff for super-admins)", response: z.array(userView) },
    ({ ctx, actor }) => listUsers(ctx, actor),
  ),
  defineRoute({ method: "get", path: "/users/:id", action: "user:read", tag, summary: "One account", params: idParams, response: userView }, ({ ctx, actor, params }) =>
    getUser(ctx, actor, params.id),
  ),
  defineRoute(
    {
      method: "patch",
      path: "/users/:id",
      action: "user:update",
      tag,
      summary: "Change role (step-up), display name or status; deactivation ends sessions",
      params: idParams,
      body: updateUserRequest,
      response: userView,
    },
    ({ ctx, actor, params, body, meta }) => updateUser(ctx, actor, params.id, body, meta),
  ),
  recordAction({ path: "/users/:id/mfa/reset", action: "user:reset_mfa", summary: "Remove an account's authenticator (lost phone; step-up)", response: userView }, resetUserMfa),
  defineRoute(
    {
      method: "get",
      path: "/access-reviews",
      action: "access_review:read",
      tag,
      summary: "Access review: every account with role, last sign-in, MFA state and open sessions",
      response: z.array(accessReviewEntry),
    },
    ({ ctx, actor }) => accessReview(ctx, actor),
  ),
  // Access review campaigns (docs/access-reviews.md).
  defineRoute(
    {
      method: "get",
      path: "/access-reviews/campaigns",
      action: "access_review:read",
      tag,
      summary: "The tenant's access review campaigns, newest first, with their progress",
      response: z.array(campaignSummary),
    },
    ({ ctx, actor }) => listCampaigns(ctx, actor),
  ),
  defineRoute(
    {
      method: "post",
      path: "/access-reviews/campaigns",
      action: "access_review:start",
      tag,
      summary: "Start a campaign now: a snapshot of every active person with role, last sign-in, source and groups",
      body: startCampaignRequest,
      response: campaignView,
      status: 201,
      problems: { 409: "A campaign is already open in this tenant" },
    },
    ({ ctx, actor, body, meta }) => startCampaign(ctx, actor, body, meta),
  ),
  defineRoute(
    {
      method: "get",
      path: "/access-reviews/campaigns/:id",
      action: "access_review:read",
      tag,
      summary: "One campaign with every account and its decision",
      params: idParams,
      response: campaignView,
    },
    ({ ctx, actor, params }) => getCampaign(ctx, actor, params.id),
  ),
  defineRoute(
    {
      method: "put",
      path: "/access-reviews/campaigns/:id/entries/:userId",
      action: "access_review:decide",
      tag,
      summary: "Keep or remove one account, with a comment (remove deactivates it at once; step-up)",
      params: campaignEntryParams,
      body: reviewDecisionRequest,
      response: campaignView,
      problems: { 409: "The campaign is closed, the account was already removed, or it is the tenant's last owner" },
    },
    ({ ctx, actor, params, body, meta }) => decideEntry(ctx, actor, params.id, params.userId, body, meta),
  ),
  defineRoute(
    {
      method: "get",
      path: "/access-reviews/campaigns/:id/evidence",
      action: "access_review:export",
      tag,
      summary: "A closed campaign's signed evidence (JSON and CSV, Ed25519 over the JSON), for auditors",
      params: idParams,
      response: campaignEvidence,
      problems: { 409: "The campaign is still open" },
    },
    ({ ctx, actor, params, meta }) => exportCampaignEvidence(ctx, actor, params.id, meta),
  ),

  defineRoute(
    { method: "get", path: "/support/requests", action: "support_request:list", tag, summary: "Support-access requests", response: z.array(supportRequestView) },
    ({ ctx, actor }) => listSupportRequests(ctx, actor),
  ),
  defineRoute(
    {
      method: "post",
      path: "/support/requests",
      action: "support_request:create",
      tag,
      summary: "Ask for support access to a tenant (support staff)",
      body: supportRequestInput,
      response: supportRequestView,
      status: 201,
    },
    ({ ctx, actor, body, meta }) => requestSupportAccess(ctx, actor, body, meta),
  ),
  ...decisionRoutes(
    "/support/requests",
    {
      approve: { action: "support_request:decide", summary: "Approve a support-access request (tenant owner or admin)" },
      deny: { action: "support_request:decide", summary: "Deny a support-access request" },
    },
    supportRequestView,
    decideSupportRequest,
  ),
  recordAction(
    {
      path: "/support/requests/:id/enter",
      action: "support_request:enter",
      summary: "Act inside the tenant under the approved request (the support user's session)",
      response: supportRequestView,
      problems: { 409: "Not approved, or expired" },
    },
    enterSupportAccess,
  ),
  recordAction({ path: "/support/requests/:id/end", action: "support_request:end", summary: "End support access early", response: supportRequestView }, endSupportAccess),

  defineRoute(
    {
      method: "post",
      path: "/patients/:id/break-glass",
      action: "break_glass:create",
      tag,
      summary: "Open a patient outside your care team, with a reason (practitioners; time-limited, flagged, admins notified)",
      params: idParams,
      body: breakGlassRequest,
      response: breakGlassGrant,
      status: 201,
    },
    ({ ctx, actor, params, body, meta }) => openBreakGlass(ctx, actor, params.id, body, meta),
  ),
  defineRoute(
    {
      method: "get",
      path: "/break-glass",
      action: "break_glass:list",
      tag,
      summary: "Break-glass grants of the tenant (owners, admins, auditors)",
      query: breakGlassQuery,
      response: z.array(breakGlassGrant),
    },
    ({ ctx, actor, query }) => listBreakGlass(ctx, actor, { ...(query.patientId ? { patientId: query.patientId } : {}), activeOnly: query.active === "true" }),
  ),
  defineRoute(
    { method: "get", path: "/patients/:id/care-team", action: "care_team:read", tag, summary: "The patient's care team", params: idParams, response: z.array(careTeamMember) },
    ({ ctx, actor, params }) => listCareTeam(ctx, actor, params.id),
  ),
  defineRoute(
    {
      method: "post",
      path: "/patients/:id/care-team",
      action: "care_team:update",
      tag,
      summary: "Assign a practitioner to the patient's care team; answers with the team",
      params: idParams,
      body: careTeamAssign,
      response: z.array(careTeamMember),
    },
    async ({ ctx, actor, params, body, meta }) => {
      await assignToCareTeam(ctx, actor, params.id, body.userId, meta);
      return listCareTeam(ctx, actor, params.id);
    },
  ),
  defineRoute(
    { method: "delete", path: "/patients/:id/care-team/:userId", action: "care_team:update", tag, summary: "Remove a practitioner from the care team", params: patientUserParams },
    async ({ ctx, actor, params, meta }) => {
      await removeFromCareTeam(ctx, actor, params.id, params.userId, meta);
    },
  ),

  defineRoute(
    {
      method: "get",
      path: "/notifications",
      action: "notification:list",
      tag,
      summary: "Notifications for the tenant's admins (break-glass, support requests)",
      query: notificationsQuery,
      response: z.array(adminNotification),
    },
    ({ ctx, actor, query }) => listNotifications(ctx, actor, { unacknowledgedOnly: query.unacknowledged === "true" }),
  ),
  recordAction(
    { path: "/notifications/:id/acknowledge", action: "notification:acknowledge", summary: "Acknowledge a notification", response: adminNotification },
    acknowledgeNotification,
  ),

  // Just-in-time privileged access (docs/sso.md).
  defineRoute(
    {
      method: "post",
      path: "/privileged-access",
      action: "privileged_access:request",
      tag,
      summary: "Ask for a privileged role (admin, auditor) for a bounded time, with a reason; a second admin decides",
      body: privilegedAccessRequest,
      response: privilegedAccessView,
      status: 201,
      problems: { 409: "You already hold the role, or have an open request or grant" },
    },
    ({ ctx, actor, body, meta }) => requestPrivilegedAccess(ctx, actor, body, meta),
  ),
  defineRoute(
    {
      method: "get",
      path: "/privileged-access",
      action: "privileged_access:list",
      tag,
      summary: "Privileged-access requests and grants (admins: the tenant's; others: their own)",
      response: z.array(privilegedAccessView),
    },
    ({ ctx, actor }) => listPrivilegedAccess(ctx, actor),
  ),
  ...decisionRoutes(
    "/privileged-access",
    {
      approve: { action: "privileged_access:approve", summary: "Approve someone else's request (needs step-up); the role lasts the minutes asked for from now" },
      deny: { action: "privileged_access:deny", summary: "Deny someone else's request" },
    },
    privilegedAccessView,
    decidePrivilegedAccess,
  ),
  recordAction(
    {
      path: "/privileged-access/:id/end",
      action: "privileged_access:end",
      summary: "End a grant or withdraw a request early (the requester or an admin)",
      response: privilegedAccessView,
      problems: { 409: "Already ended, denied" },
    },
    endPrivilegedAccess,
  ),
];
