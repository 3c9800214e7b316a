import type { Request, Response } from "express";
import { sessionCookie } from "../../auth/index.js";
import { defineRoute } from "../../kernel/define-route.js";
import { PayloadTooLarge } from "../../kernel/errors.js";
import { ExternalSignInRefused, refusedSignInPath } from "../identity.js";
import { ssoProviderParams } from "../schema.js";
import type { SamlLogoutInput } from "./sp.js";
import { acceptSamlLogout, beginSamlSignIn, completeSamlSignIn, samlMetadata } from "./signin.js";

/**
 * The SAML service provider's browser-facing routes. The binding cookie ties a response to the
 * browser that started the sign-in; it must come along on the IdP's cross-site form post, so it is
 * SameSite=None (it holds no session: only a random value whose hash the request row keeps).
 */
const BINDING_COOKIE = "__Host-wardkeep_saml";
const MAX_FORM_BYTES = 512 * 1024;

export function samlBindingCookie(value: string, maxAgeSeconds = 600): string {
  return `${BINDING_COOKIE}=${value}; Path=/; Secure; HttpOnly; SameSite=None; Max-Age=${maxAgeSeconds}`;
}

function cookieValue(req: Request, name: string): string | null {
  for (const part of (req.get("cookie") ?? "").split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return v.join("=") || null;
  }
  return null;
}

export async function readForm(req: Request): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) throw new PayloadTooLarge("the SAML response is larger than 512 KiB");
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
}

/** Where the browser lands after a refused logout message: the sign-in page, with the reference to quote. */
const refusedLogoutPath = (reference: string | null) => `/#/login?slo_error=${encodeURIComponent(reference ?? "")}`;

const SLO_SUMMARY =
  "SAML single logout service: the IdP's LogoutResponse to the appliance's LogoutRequest, or an IdP-initiated LogoutRequest (ends the person's sessions on every replica, answered with a signed LogoutResponse)";

/** Sends the browser on after a logout message: to the IdP with the signed answer, or to the sign-in page. */
async function answerLogout(ctx: Parameters<typeof acceptSamlLogout>[0], id: string, input: SamlLogoutInput, meta: Parameters<typeof acceptSamlLogout>[3], res: Response) {
  const outcome = await acceptSamlLogout(ctx, id, input, meta);
  res.set("Cache-Control", "no-store");
  // The binding cookie of the appliance's LogoutRequest is single-use, as a sign-in's is.
  if (input.samlResponse !== null) res.append("Set-Cookie", samlBindingCookie("", 0));
  res.redirect(303, outcome.ok ? outcome.location : refusedLogoutPath(outcome.reference));
}

/** Metadata and the start of a sign-in: JSON-free GETs, mounted with the other sso routes. */
export const samlRoutes = [
  defineRoute(
    {
      method: "get",
      path: "/sso/saml/:id/metadata",
      action: "public",
      tag: "sso",
      summary: "SAML service-provider metadata of a provider (entity id, ACS URL; assertions must be signed), for the IdP's administrators",
      params: ssoProviderParams,
      response: { mediaType: "application/samlmetadata+xml", description: "SAML 2.0 metadata (EntityDescriptor)" },
    },
    async ({ ctx, params, res }) => {
      const xml = await samlMetadata(ctx, params.id);
      res.type("application/samlmetadata+xml").send(xml);
    },
  ),
  defineRoute(
    {
      method: "get",
      path: "/sso/saml/:id/login",
      action: "public",
      tag: "sso",
      summary: "Start a SAML sign-in: redirects the browser to the IdP with an AuthnRequest (HTTP-Redirect binding)",
      params: ssoProviderParams,
      response: { mediaType: "text/plain", description: "A 302 redirect to the IdP; a refused start redirects to the sign-in page" },
    },
    async ({ ctx, params, res, meta }) => {
      try {
        const { redirectUrl, browserToken } = await beginSamlSignIn(ctx, params.id, meta);
        res.append("Set-Cookie", samlBindingCookie(browserToken, 600));
        res.redirect(302, redirectUrl);
      } catch (err) {
        if (!(err instanceof ExternalSignInRefused)) throw err;
        res.redirect(303, refusedSignInPath(meta.requestId ?? null));
      }
    },
  ),
  defineRoute(
    {
      method: "get",
      path: "/sso/saml/:id/slo",
      action: "public",
      tag: "sso",
      summary: `${SLO_SUMMARY} (HTTP-Redirect binding; the message must be signed)`,
      params: ssoProviderParams,
      response: { mediaType: "text/plain", description: "A 303 redirect to the IdP (the signed LogoutResponse) or to the sign-in page (a refusal names a reference)" },
    },
    async ({ ctx, req, params, res, meta }) => {
      const rawQuery = req.originalUrl.split("?")[1] ?? "";
      const q = new URLSearchParams(rawQuery);
      await answerLogout(
        ctx,
        params.id,
        {
          binding: "redirect",
          samlRequest: q.get("SAMLRequest"),
          samlResponse: q.get("SAMLResponse"),
          relayState: q.get("RelayState"),
          rawQuery,
          signature: q.get("Signature"),
          sigAlg: q.get("SigAlg"),
          browserToken: cookieValue(req, BINDING_COOKIE),
        },
        meta,
        res,
      );
    },
  ),
];

/** The ACS takes the IdP's form post (application/x-www-form-urlencoded), so it is mounted before the JSON-only gate. */
export const samlPostRoutes = [
  defineRoute(
    {
      method: "post",
      path: "/sso/saml/:id/acs",
      action: "public",
      tag: "sso",
      summary: "SAML assertion consumer service (HTTP-POST binding): validates the response, sets the session cookie and redirects to the console",
      params: ssoProviderParams,
      body: { mediaType: "application/x-www-form-urlencoded", description: "SAMLResponse (and RelayState) as the IdP posts them" },
      response: { mediaType: "text/plain", description: "A 303 redirect to the console (signed in, or the sign-in page with a generic error)" },
      problems: { 413: "The posted form is too large" },
    },
    async ({ ctx, req, params, res, meta }) => {
      const form = await readForm(req);
      // The binding cookie is single-use either way.
      res.append("Set-Cookie", samlBindingCookie("", 0));
      try {
        const done = await completeSamlSignIn(ctx, params.id, { samlResponse: form.get("SAMLResponse"), browserToken: cookieValue(req, BINDING_COOKIE) }, meta);
        if (done.kind === "stepped-up") return res.redirect(303, `/#${done.returnTo}`);
        const { outcome } = done;
        res.append("Set-Cookie", sessionCookie(outcome.session.token));
        res.redirect(303, outcome.mfaEnrollmentRequired ? "/#/mfa" : outcome.mfaRequired ? "/#/login" : "/#/");
      } catch (err) {
        if (!(err instanceof ExternalSignInRefused)) throw err;
        // A refused step-up leaves the person signed in: the home page shows the reference.
        if (err.stepUp) return res.redirect(303, `/#/?sso_error=${encodeURIComponent(err.requestId ?? "")}`);
        res.redirect(303, refusedSignInPath(meta.requestId ?? null));
      }
    },
  ),
  defineRoute(
    {
      method: "post",
      path: "/sso/saml/:id/slo",
      action: "public",
      tag: "sso",
      summary: `${SLO_SUMMARY} (HTTP-POST binding, as the SP metadata advertises it)`,
      params: ssoProviderParams,
      body: { mediaType: "application/x-www-form-urlencoded", description: "SAMLRequest or SAMLResponse (and RelayState) as the IdP posts them" },
      response: { mediaType: "text/plain", description: "A 303 redirect to the IdP (the signed LogoutResponse) or to the sign-in page (a refusal names a reference)" },
      problems: { 413: "The posted form is too large" },
    },
    async ({ ctx, req, params, res, meta }) => {
      const form = await readForm(req);
      await answerLogout(
        ctx,
        params.id,
        {
          binding: "post",
          samlRequest: form.get("SAMLRequest"),
          samlResponse: form.get("SAMLResponse"),
          relayState: form.get("RelayState"),
          browserToken: cookieValue(req, BINDING_COOKIE),
        },
        meta,
        res,
      );
    },
  ),
];
