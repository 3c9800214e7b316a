import type { Request } from "express";
import { sessionCookie } from "../../auth/index.js";
import { defineRoute } from "../../kernel/define-route.js";
import { PayloadTooLarge } from "../../kernel/errors.js";
import { ExternalSignInRefused, refusedSignInPath } from "../identity.js";
import { ssoProviderParams } from "../schema.js";
import { beginSamlSignIn, completeSamlSignIn, samlMetadata } from "./signin.js";

/**
 * The SAML service provider's browser-facing routes. The binding cookie ties a response to the
 * browser that started the sign-in; it must come along on the IdP's cross-site form post, so it is
 * SameSite=None (it holds no session: only a random value whose hash the request row keeps).
 */
const BINDING_COOKIE = "__Host-wardkeep_saml";
const MAX_FORM_BYTES = 512 * 1024;

export function bindingCookie(value: string, maxAgeSeconds: number): string {
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
        res.append("Set-Cookie", bindingCookie(browserToken, 600));
        res.redirect(302, redirectUrl);
      } catch (err) {
        if (!(err instanceof ExternalSignInRefused)) throw err;
        res.redirect(303, refusedSignInPath(meta.requestId ?? null));
      }
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
      response: { mediaType: "text/plain", description: "A 303 redirect to the console (signed in, a test sign-in's result, or the sign-in page with a generic error)" },
      problems: { 413: "The posted form is too large" },
    },
    async ({ ctx, req, params, res, meta }) => {
      const form = await readForm(req);
      // The binding cookie is single-use either way.
      res.append("Set-Cookie", bindingCookie("", 0));
      try {
        const done = await completeSamlSignIn(
          ctx,
          params.id,
          { samlResponse: form.get("SAMLResponse"), browserToken: cookieValue(req, BINDING_COOKIE), relayState: form.get("RelayState") },
          meta,
        );
        if (done.kind === "tested") return res.redirect(303, `/#/sign-in-providers?test=${done.testId}&provider=${done.providerId}`);
        const outcome = done.outcome;
        res.append("Set-Cookie", sessionCookie(outcome.session.token));
        res.redirect(303, outcome.mfaEnrollmentRequired ? "/#/mfa" : outcome.mfaRequired ? "/#/login" : "/#/");
      } catch (err) {
        if (!(err instanceof ExternalSignInRefused)) throw err;
        res.redirect(303, refusedSignInPath(meta.requestId ?? null));
      }
    },
  ),
];
