import type { Response } from "express";
import { clearedSessionCookie, readCookie, sessionCookie, signOut } from "../auth/index.js";
import { appliancePublicUrl } from "../config/public-url.js";
import type { ApplianceContext } from "../context.js";
import { defineRoute } from "../kernel/define-route.js";
import { Conflict, Invalid, Unauthorized } from "../kernel/errors.js";
import { authorize } from "../kernel/policy.js";
import { ExternalSignInRefused, refusedSignInPath } from "./identity.js";
import { idpStepUpRefusal } from "./signin.js";
import "./kinds.js";
import { ldapRoutes } from "./ldap/routes.js";
import { idpSignOut } from "./logout.js";
import { BROWSER_COOKIE, finishOidcSignIn, oidcTestResult, startOidcSignIn } from "./oidc/index.js";
import { createProvider, deleteProvider, getProvider, listProviders, publicProvidersOf, updateProvider } from "./providers.js";
import { approveRule, rejectRule, dryRunRules, getMfaPolicy, listRules, saveRules, setMfaPolicy } from "./rules.js";
import { readForm, samlBindingCookie, samlPostRoutes, samlRoutes } from "./saml/routes.js";
import { beginSamlStepUp } from "./saml/signin.js";
import { acceptBackchannelLogout } from "./oidc/backchannel.js";
import {
  createProviderRequest,
  dryRunResult,
  mfaPolicyRequest,
  mfaPolicyView,
  providerIdParams,
  providerList,
  providerView,
  publicProviderList,
  publicProvidersQuery,
  ruleIdParams,
  ruleList,
  ruleView,
  saveRulesRequest,
  ssoLogoutResponse,
  stepUpRequest,
  stepUpStarted,
  testParams,
  testResult,
  testStarted,
  updateProviderRequest,
} from "./schema.js";

const tag = "sso";

/** The appliance's public address (server.publicUrl), which the redirect URIs are made from; never the request's Host. */
const publicBase = (ctx: ApplianceContext): string => appliancePublicUrl(ctx);

/** Where the browser lands after a refused sign-in: the login page, with the one generic message and the request id to quote. */
function refusedRedirect(res: Response, err: unknown): void {
  if (!(err instanceof ExternalSignInRefused)) throw err;
  res.redirect(303, refusedSignInPath(err.requestId));
}

/**
 * The sso capability's routes (docs/sso.md), mounted by daemon/http/app.ts: the admin API, the
 * login page's providers, and the browser flows of OpenID Connect, LDAP / Active Directory and SAML.
 */
export const ssoRoutes = [
  // ---- public: the login page and the browser's round trip through the IdP -------------------
  defineRoute(
    {
      method: "get",
      path: "/sso/providers",
      action: "public",
      tag,
      summary: "The sign-in buttons of a tenant's login page: its enabled identity providers and how each signs in",
      query: publicProvidersQuery,
      response: publicProviderList,
    },
    ({ ctx, query }) => publicProvidersOf(ctx, query.tenant),
  ),
  defineRoute(
    {
      method: "get",
      path: "/sso/oidc/:id/start",
      action: "public",
      tag,
      summary: "Start signing in through an OpenID Connect provider: redirects the browser to it",
      params: providerIdParams,
      status: 303,
      responseDescription: "Redirect to the identity provider's authorization endpoint",
      problems: { 503: "The identity provider cannot be reached" },
    },
    async ({ ctx, res, params, meta }) => {
      const started = await startOidcSignIn(ctx, params.id, { base: publicBase(ctx), purpose: "signin", meta });
      res.append("Set-Cookie", started.cookie);
      res.redirect(303, started.url);
    },
  ),
  defineRoute(
    {
      method: "get",
      path: "/sso/oidc/:id/callback",
      action: "public",
      tag,
      summary: "Where an OpenID Connect provider sends the browser back: signs in, then redirects to the console (or to the login page with a generic error)",
      params: providerIdParams,
      status: 303,
      responseDescription: "Redirect to the console (signed in, or the second-factor step), to the test result, or to the login page",
    },
    async ({ ctx, req, res, params, meta }) => {
      const base = publicBase(ctx);
      const binding = readCookie(req.get("cookie"), BROWSER_COOKIE);
      res.append("Set-Cookie", `${BROWSER_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0`);
      try {
        const done = await finishOidcSignIn(ctx, params.id, { currentUrl: new URL(req.originalUrl, base), browserBinding: binding, base, meta });
        if (done.kind === "tested") return res.redirect(303, `/#/sign-in-providers?test=${done.testId}&provider=${done.providerId}`);
        if (done.kind === "stepped-up") return res.redirect(303, `/#${done.returnTo}`);
        res.append("Set-Cookie", sessionCookie(done.outcome.session.token));
        res.redirect(303, done.outcome.mfaEnrollmentRequired ? "/#/mfa" : done.outcome.mfaRequired ? "/#/login" : "/#/");
      } catch (err) {
        // A refused step-up leaves the person signed in: the home page shows the reference.
        if (err instanceof ExternalSignInRefused && err.stepUp) return res.redirect(303, `/#/?sso_error=${encodeURIComponent(err.requestId ?? "")}`);
        refusedRedirect(res, err);
      }
    },
  ),
  defineRoute(
    {
      method: "post",
      path: "/sso/logout",
      action: "session",
      tag,
      summary: "End the current session; for a session made through an identity provider, also where to sign out there",
      response: ssoLogoutResponse,
    },
    async ({ ctx, res, meta }) => {
      const s = (res.locals.session ?? res.locals.pendingSession) as { id: string; user_id: string; role: string; tenant_id: string | null } | undefined;
      if (!s) throw new Unauthorized("sign in first");
      const { redirectUrl, samlBrowserToken } = await idpSignOut(ctx, { id: s.id, tenantId: s.tenant_id }, publicBase(ctx));
      await signOut(ctx, { sessionId: s.id, userId: s.user_id, role: s.role, tenantId: s.tenant_id }, meta);
      res.append("Set-Cookie", clearedSessionCookie());
      if (samlBrowserToken) res.append("Set-Cookie", samlBindingCookie(samlBrowserToken));
      return { redirectUrl };
    },
  ),

  defineRoute(
    {
      method: "post",
      path: "/sso/step-up",
      action: "authenticated",
      tag,
      summary:
        "Step-up at the identity provider: for a session made through an OpenID Connect or SAML provider whose role's MFA policy accepts the IdP's word, where to sign in again (OIDC prompt=login, max_age=0; SAML ForceAuthn) to confirm a sensitive action",
      body: stepUpRequest,
      response: stepUpStarted,
      status: 201,
      problems: {
        409: "The session cannot step up at its IdP (local session, disabled provider, or a role that must use its authenticator code)",
        503: "The identity provider cannot be reached",
      },
    },
    async ({ ctx, res, actor, body, meta }) => {
      const s = res.locals.session as { id: string } | undefined;
      if (actor.via !== "session" || !s || !actor.tenantId) throw new Conflict("only a person signed in through an identity provider can confirm there; API tokens cannot step up");
      const found = await idpStepUpRefusal(ctx, s.id, actor.tenantId);
      if ("refusal" in found) throw new Conflict(found.refusal);
      if (found.providerKind === "saml") {
        const started = await beginSamlStepUp(ctx, found.providerId, { sessionId: s.id, returnTo: body.returnTo ?? "/" });
        res.append("Set-Cookie", samlBindingCookie(started.browserToken));
        return { url: started.redirectUrl };
      }
      const started = await startOidcSignIn(ctx, found.providerId, {
        base: publicBase(ctx),
        purpose: "step_up",
        startedBy: actor,
        sessionId: s.id,
        ...(body.returnTo ? { returnTo: body.returnTo } : {}),
        meta,
      });
      res.append("Set-Cookie", started.cookie);
      return { url: started.url };
    },
  ),

  ...ldapRoutes,
  ...samlRoutes,

  // ---- admin: providers, rules, MFA policy, test sign-in -----------------------------------------
  defineRoute(
    { method: "get", path: "/identity-providers", action: "identity_provider:list", tag, summary: "The tenant's identity providers", response: providerList },
    async ({ ctx, actor }) => ({ providers: await listProviders(ctx, actor, publicBase(ctx)) }),
  ),
  defineRoute(
    {
      method: "post",
      path: "/identity-providers",
      action: "identity_provider:create",
      tag,
      summary: "Add an identity provider (disabled until enabled; test it first); needs step-up",
      body: createProviderRequest,
      response: providerView,
      status: 201,
      problems: { 409: "A provider with this name exists" },
    },
    ({ ctx, actor, body, meta }) => createProvider(ctx, actor, body, meta, publicBase(ctx)),
  ),
  // Fixed paths before /identity-providers/:id.
  defineRoute(
    {
      method: "get",
      path: "/identity-providers/rules",
      action: "identity_provider:list",
      tag,
      summary: "The ordered claim/group → role rules (first match wins)",
      response: ruleList,
    },
    async ({ ctx, actor }) => ({ rules: await listRules(ctx, actor) }),
  ),
  defineRoute(
    {
      method: "put",
      path: "/identity-providers/rules",
      action: "identity_provider:update",
      tag,
      summary: "Replace the ordered rules; rules granting owner, admin or auditor wait for a second admin's approval; needs step-up",
      body: saveRulesRequest,
      response: ruleList,
    },
    async ({ ctx, actor, body, meta }) => ({ rules: await saveRules(ctx, actor, body.rules, meta) }),
  ),
  defineRoute(
    {
      method: "post",
      path: "/identity-providers/rules/dry-run",
      action: "identity_provider:list",
      tag,
      summary: "What proposed rules would do to every linked account (nothing is saved)",
      body: saveRulesRequest,
      response: dryRunResult,
    },
    ({ ctx, actor, body }) => dryRunRules(ctx, actor, body.rules),
  ),
  defineRoute(
    {
      method: "post",
      path: "/identity-providers/rules/:id/approve",
      action: "identity_provider:approve_rule",
      tag,
      summary: "Approve a pending rule that grants a privileged role (a second admin, not the one who saved it); needs step-up",
      params: ruleIdParams,
      response: ruleView,
      problems: { 409: "The rule is not pending" },
    },
    ({ ctx, actor, params, meta }) => approveRule(ctx, actor, params.id, meta),
  ),
  defineRoute(
    {
      method: "post",
      path: "/identity-providers/rules/:id/reject",
      action: "identity_provider:approve_rule",
      tag,
      summary: "Turn down a pending rule that grants a privileged role: it is removed from the table; needs step-up",
      params: ruleIdParams,
      response: ruleList,
      problems: { 409: "The rule is not pending" },
    },
    async ({ ctx, actor, params, meta }) => ({ rules: await rejectRule(ctx, actor, params.id, meta) }),
  ),
  defineRoute(
    {
      method: "get",
      path: "/identity-providers/mfa-policy",
      action: "identity_provider:list",
      tag,
      summary: "Per role: accept the IdP's MFA, or ask for local TOTP as well",
      response: mfaPolicyView,
    },
    ({ ctx, actor }) => getMfaPolicy(ctx, actor),
  ),
  defineRoute(
    {
      method: "put",
      path: "/identity-providers/mfa-policy",
      action: "identity_provider:update",
      tag,
      summary: "Set the MFA policy of roles signing in through an IdP; needs step-up",
      body: mfaPolicyRequest,
      response: mfaPolicyView,
    },
    ({ ctx, actor, body, meta }) => setMfaPolicy(ctx, actor, body.roles, meta),
  ),
  defineRoute(
    { method: "get", path: "/identity-providers/:id", action: "identity_provider:list", tag, summary: "One identity provider", params: providerIdParams, response: providerView },
    ({ ctx, actor, params }) => getProvider(ctx, actor, params.id, publicBase(ctx)),
  ),
  defineRoute(
    {
      method: "patch",
      path: "/identity-providers/:id",
      action: "identity_provider:update",
      tag,
      summary: "Change, enable or disable an identity provider; needs step-up",
      params: providerIdParams,
      body: updateProviderRequest,
      response: providerView,
      problems: { 409: "A provider with this name exists" },
    },
    ({ ctx, actor, params, body, meta }) => updateProvider(ctx, actor, params.id, body, meta, publicBase(ctx)),
  ),
  defineRoute(
    {
      method: "delete",
      path: "/identity-providers/:id",
      action: "identity_provider:delete",
      tag,
      summary: "Remove an identity provider; sessions made through it end; needs step-up",
      params: providerIdParams,
    },
    async ({ ctx, actor, params, meta }) => {
      await deleteProvider(ctx, actor, params.id, meta);
    },
  ),
  defineRoute(
    {
      method: "post",
      path: "/identity-providers/:id/test",
      action: "identity_provider:test",
      tag,
      summary: "Start a test sign-in (also before the provider is enabled): open the URL, sign in at the IdP, then read what it sent",
      params: providerIdParams,
      response: testStarted,
      status: 201,
      problems: { 503: "The identity provider cannot be reached" },
    },
    async ({ ctx, res, actor, params, meta }) => {
      authorize(actor, "identity_provider:test", { tenantId: actor.tenantId });
      const started = await startOidcSignIn(ctx, params.id, { base: publicBase(ctx), purpose: "test", startedBy: actor, meta });
      res.append("Set-Cookie", started.cookie);
      return { testId: started.stateId, url: started.url };
    },
  ),
  defineRoute(
    {
      method: "get",
      path: "/identity-providers/:id/tests/:testId",
      action: "identity_provider:test",
      tag,
      summary: "What a test sign-in received: claims, groups, amr/acr and the role the rules give (or why it failed)",
      params: testParams,
      response: testResult,
    },
    ({ ctx, actor, params }) => oidcTestResult(ctx, actor, params.id, params.testId),
  ),
];

/** Routes that take a non-JSON body (the SAML ACS and the IdP's logout token form posts): mounted before the JSON-only gate. */
export const ssoFormRoutes = [
  ...samlPostRoutes,
  defineRoute(
    {
      method: "post",
      path: "/sso/oidc/:id/backchannel-logout",
      action: "public",
      tag,
      summary: "OpenID Connect Back-Channel Logout 1.0: the IdP posts a signed logout token; the appliance sessions of that IdP session (sid) or person (sub) end on every replica",
      params: providerIdParams,
      body: { mediaType: "application/x-www-form-urlencoded", description: "logout_token: the signed logout token (JWT)" },
      response: { mediaType: "text/plain", description: "Empty: the sessions the token names have ended (none is also a success)" },
      problems: { 400: "The logout token was refused (the reason is in the audit trail under the request id)", 413: "The posted form is too large" },
    },
    async ({ ctx, req, res, params, meta }) => {
      const form = await readForm(req);
      const outcome = await acceptBackchannelLogout(ctx, params.id, form.get("logout_token"), meta);
      res.set("Cache-Control", "no-store");
      // §2.8: 400 when the logout failed; the precise reason only in the audit trail.
      if (!outcome.ok) throw new Invalid("the logout token was not accepted", { reason: "logout_token_refused", ...(meta.requestId ? { reference: meta.requestId } : {}) });
      res.status(200).type("text/plain").send("");
    },
  ),
];
