import { defineRoute } from "../../kernel/define-route.js";
import { sessionCookie } from "../../auth/index.js";
import { ldapLoginRequest, ssoLoginResponse, ssoProviderParams } from "../schema.js";
import { signInWithLdap } from "./signin.js";

/** Sign-in with a directory user name and password (LDAP / Active Directory providers). */
export const ldapRoutes = [
  defineRoute(
    {
      method: "post",
      path: "/sso/ldap/:id/login",
      action: "public",
      tag: "sso",
      summary: "Sign in with a directory user name and password through an LDAP / Active Directory provider; sets the session cookie",
      params: ssoProviderParams,
      body: ldapLoginRequest,
      response: ssoLoginResponse,
      problems: { 401: "Refused (the same answer whatever the reason; the audit trail has the reason)" },
    },
    async ({ ctx, params, body, res, meta }) => {
      const outcome = await signInWithLdap(ctx, params.id, body, meta);
      res.append("Set-Cookie", sessionCookie(outcome.session.token));
      return {
        mfaRequired: outcome.mfaRequired,
        mfaEnrollmentRequired: outcome.mfaEnrollmentRequired,
        csrfToken: outcome.session.csrfToken,
        expiresAt: outcome.session.expiresAt,
      };
    },
  ),
];
