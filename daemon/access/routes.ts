import { Router } from "express";
import { z } from "zod";
import { requestMeta } from "../kernel/request-meta.js";
import type { ApplianceContext } from "../context.js";
import { jsonBody, jsonResponse, openApiRegistry } from "../http/openapi.js";
import { currentActor } from "../kernel/actor.js";
import { breakGlassRequest, listBreakGlass, openBreakGlass } from "./break-glass.js";
import { assignToCareTeam, listCareTeam, removeFromCareTeam } from "./care-team.js";
import { guardedRoute } from "./guard.js";
import { capabilitiesOf, STEP_UP_ACTIONS } from "../kernel/policy.js";
import { acknowledgeNotification, listNotifications } from "./notifications.js";
import { decideSupportRequest, endSupportAccess, enterSupportAccess, listSupportRequests, requestSupportAccess, supportRequestInput } from "./support.js";
import { createTenant, createTenantRequest, getSecuritySettings, getTenant, listTenants, securitySettingsRequest, updateSecuritySettings, updateTenant, updateTenantRequest } from "./tenants.js";
import { accessReview, getUser, listUsers, resetUserMfa, updateUser, updateUserRequest } from "./users.js";

const API = "/api/v1";
const idParam = z.object({ id: z.uuid() }).strict();
const patientUserParams = z.object({ id: z.uuid(), userId: z.uuid() }).strict();
const careTeamAssign = z.object({ /** A practitioner of the tenant. */ userId: z.uuid() }).strict();
const breakGlassQuery = z.object({ patientId: z.uuid().optional(), active: z.enum(["true", "false"]).optional() }).strict();
const notificationsQuery = z.object({ unacknowledged: z.enum(["true", "false"]).optional() }).strict();
const anyJson = z.object({}).passthrough();

function doc(method: "get" | "post" | "put" | "patch" | "delete", path: string, summary: string, body?: z.ZodType) {
  openApiRegistry.registerPath({
    method,
    path: `${API}${path}`.replace(/:(\w+)/g, "{$1}"),
    summary,
    tags: ["access"],
    ...(body ? { request: { body: jsonBody(body) } } : {}),
    responses: { 200: jsonResponse(summary, anyJson) },
  });
}

doc("get", "/access/capabilities", "What the caller may do: every policy action allowed at route level, and which of them ask for a fresh second factor");
doc("get", "/tenants", "Tenants (all for super-admins, own for tenant staff)");
doc("post", "/tenants", "Create a tenant (super-admin)", createTenantRequest);
doc("get", "/tenants/:id", "One tenant");
doc("patch", "/tenants/:id", "Rename or suspend a tenant (super-admin)", updateTenantRequest);
doc("get", "/settings/security", "The tenant's MFA enforcement, idle timeout and inactivity period");
doc("put", "/settings/security", "Change the tenant's security settings (owner, admin)", securitySettingsRequest);
doc("get", "/users", "Accounts of the tenant (or appliance staff for super-admins)");
doc("get", "/users/:id", "One account");
doc("patch", "/users/:id", "Change role (step-up), display name or status; deactivation ends sessions", updateUserRequest);
doc("post", "/users/:id/mfa/reset", "Remove an account's authenticator (lost phone; step-up)");
doc("get", "/access-reviews", "Access review: every account with role, last sign-in, MFA state and open sessions");
doc("get", "/support/requests", "Support-access requests");
doc("post", "/support/requests", "Ask for support access to a tenant (support staff)", supportRequestInput);
doc("post", "/support/requests/:id/approve", "Approve a support-access request (tenant owner or admin)");
doc("post", "/support/requests/:id/deny", "Deny a support-access request");
doc("post", "/support/requests/:id/enter", "Act inside the tenant under the approved request (the support user's session)");
doc("post", "/support/requests/:id/end", "End support access early");
doc("post", "/patients/:id/break-glass", "Open a patient outside your care team, with a reason (practitioners; time-limited, flagged, admins notified)", breakGlassRequest);
doc("get", "/break-glass", "Break-glass grants of the tenant (owners, admins, auditors)");
doc("get", "/patients/:id/care-team", "The patient's care team");
doc("post", "/patients/:id/care-team", "Assign a practitioner to the patient's care team", careTeamAssign);
doc("delete", "/patients/:id/care-team/:userId", "Remove a practitioner from the care team");
doc("get", "/notifications", "Notifications for the tenant's admins (break-glass, support requests)");
doc("post", "/notifications/:id/acknowledge", "Acknowledge a notification");

export function accessRoutes(ctx: ApplianceContext): Router {
  const router = Router();
  const route = (spec: Parameters<typeof guardedRoute>[3], handler: Parameters<typeof guardedRoute>[4]) => guardedRoute(ctx, router, API, spec, handler);

  // Any signed-in caller may ask what it may do; answered from the policy table alone.
  router.get("/access/capabilities", (_req, res) => {
    const actions = capabilitiesOf(currentActor(res));
    res.json({ actions, stepUp: actions.filter((a) => STEP_UP_ACTIONS.has(a)) });
  });

  route({ method: "get", path: "/tenants", action: "tenant:list" }, async (_req, res) => {
    res.json(await listTenants(ctx, currentActor(res)));
  });
  route({ method: "post", path: "/tenants", action: "tenant:create" }, async (req, res) => {
    res.status(201).json(await createTenant(ctx, currentActor(res), createTenantRequest.parse(req.body), requestMeta(req, res)));
  });
  route({ method: "get", path: "/tenants/:id", action: "tenant:read" }, async (req, res) => {
    res.json(await getTenant(ctx, currentActor(res), idParam.parse(req.params).id));
  });
  route({ method: "patch", path: "/tenants/:id", action: "tenant:update" }, async (req, res) => {
    res.json(await updateTenant(ctx, currentActor(res), idParam.parse(req.params).id, updateTenantRequest.parse(req.body), requestMeta(req, res)));
  });

  route({ method: "get", path: "/settings/security", action: "security_settings:read" }, async (_req, res) => {
    res.json(await getSecuritySettings(ctx, currentActor(res)));
  });
  route({ method: "put", path: "/settings/security", action: "security_settings:update" }, async (req, res) => {
    res.json(await updateSecuritySettings(ctx, currentActor(res), securitySettingsRequest.parse(req.body), requestMeta(req, res)));
  });

  route({ method: "get", path: "/users", action: "user:list" }, async (_req, res) => {
    res.json(await listUsers(ctx, currentActor(res)));
  });
  route({ method: "get", path: "/users/:id", action: "user:read" }, async (req, res) => {
    res.json(await getUser(ctx, currentActor(res), idParam.parse(req.params).id));
  });
  route({ method: "patch", path: "/users/:id", action: "user:update" }, async (req, res) => {
    res.json(await updateUser(ctx, currentActor(res), idParam.parse(req.params).id, updateUserRequest.parse(req.body), requestMeta(req, res)));
  });
  route({ method: "post", path: "/users/:id/mfa/reset", action: "user:reset_mfa" }, async (req, res) => {
    res.json(await resetUserMfa(ctx, currentActor(res), idParam.parse(req.params).id, requestMeta(req, res)));
  });
  route({ method: "get", path: "/access-reviews", action: "access_review:read" }, async (_req, res) => {
    res.json(await accessReview(ctx, currentActor(res)));
  });

  route({ method: "get", path: "/support/requests", action: "support_request:list" }, async (_req, res) => {
    res.json(await listSupportRequests(ctx, currentActor(res)));
  });
  route({ method: "post", path: "/support/requests", action: "support_request:create" }, async (req, res) => {
    res.status(201).json(await requestSupportAccess(ctx, currentActor(res), supportRequestInput.parse(req.body), requestMeta(req, res)));
  });
  route({ method: "post", path: "/support/requests/:id/approve", action: "support_request:decide" }, async (req, res) => {
    res.json(await decideSupportRequest(ctx, currentActor(res), idParam.parse(req.params).id, "approve", requestMeta(req, res)));
  });
  route({ method: "post", path: "/support/requests/:id/deny", action: "support_request:decide" }, async (req, res) => {
    res.json(await decideSupportRequest(ctx, currentActor(res), idParam.parse(req.params).id, "deny", requestMeta(req, res)));
  });
  route({ method: "post", path: "/support/requests/:id/enter", action: "support_request:enter" }, async (req, res) => {
    res.json(await enterSupportAccess(ctx, currentActor(res), idParam.parse(req.params).id, requestMeta(req, res)));
  });
  route({ method: "post", path: "/support/requests/:id/end", action: "support_request:end" }, async (req, res) => {
    res.json(await endSupportAccess(ctx, currentActor(res), idParam.parse(req.params).id, requestMeta(req, res)));
  });

  route({ method: "post", path: "/patients/:id/break-glass", action: "break_glass:create" }, async (req, res) => {
    res.status(201).json(await openBreakGlass(ctx, currentActor(res), idParam.parse(req.params).id, breakGlassRequest.parse(req.body), requestMeta(req, res)));
  });
  route({ method: "get", path: "/break-glass", action: "break_glass:list" }, async (req, res) => {
    const q = breakGlassQuery.parse(req.query);
    res.json(await listBreakGlass(ctx, currentActor(res), { ...(q.patientId ? { patientId: q.patientId } : {}), activeOnly: q.active === "true" }));
  });
  route({ method: "get", path: "/patients/:id/care-team", action: "care_team:read" }, async (req, res) => {
    res.json(await listCareTeam(ctx, currentActor(res), idParam.parse(req.params).id));
  });
  route({ method: "post", path: "/patients/:id/care-team", action: "care_team:update" }, async (req, res) => {
    const patientId = idParam.parse(req.params).id;
    await assignToCareTeam(ctx, currentActor(res), patientId, careTeamAssign.parse(req.body).userId, requestMeta(req, res));
    res.json(await listCareTeam(ctx, currentActor(res), patientId));
  });
  route({ method: "delete", path: "/patients/:id/care-team/:userId", action: "care_team:update" }, async (req, res) => {
    const p = patientUserParams.parse(req.params);
    await removeFromCareTeam(ctx, currentActor(res), p.id, p.userId, requestMeta(req, res));
    res.status(204).end();
  });

  route({ method: "get", path: "/notifications", action: "notification:list" }, async (req, res) => {
    const q = notificationsQuery.parse(req.query);
    res.json(await listNotifications(ctx, currentActor(res), { unacknowledgedOnly: q.unacknowledged === "true" }));
  });
  route({ method: "post", path: "/notifications/:id/acknowledge", action: "notification:acknowledge" }, async (req, res) => {
    res.json(await acknowledgeNotification(ctx, currentActor(res), idParam.parse(req.params).id, requestMeta(req, res)));
  });

  return router;
}
