import { Unauthorized } from "../kernel/errors.js";

/**
 * What every protocol (OIDC, SAML, LDAP) produces once it has validated a sign-in. Everything
 * after this point — rules, just-in-time accounts, MFA policy, the session — is the same for all
 * of them (./signin.ts).
 */
export type ExternalIdentity = {
  /** identity_providers.id */
  providerId: string;
  tenantId: string;
  /** Stable id at the IdP: OIDC sub, SAML NameID, LDAP entryUUID/objectGUID or DN. */
  subject: string;
  /** preferred_username / uid / sAMAccountName */
  username: string;
  email?: string;
  displayName?: string;
  /** Group names or DNs as the IdP sends them (nested groups already expanded). */
  groups: string[];
  /** For rules and the "test sign-in" display; never logged. */
  claims: Record<string, unknown>;
  /** SAML AuthnContextClassRef goes into acr. */
  authnContext: { amr?: string[]; acr?: string };
};

/**
 * The one answer a browser gets when a sign-in through an IdP is refused, whatever the reason:
 * a precise reason ("wrong nonce", "issuer mismatch") would help an attacker probe the checks.
 * The precise reason is in the audit trail, found by the request id this answer carries.
 */
export class ExternalSignInRefused extends Unauthorized {
  constructor(
    readonly requestId: string | null,
    /** A refused step-up at the IdP (the person stays signed in), not a refused sign-in. */
    readonly stepUp = false,
  ) {
    super("signing in through your organisation's identity provider did not work; try again, or ask your administrator", {
      reason: "sso_refused",
      ...(requestId ? { reference: requestId } : {}),
    });
  }
}

/** Where a browser lands after a refused sign-in: the login page, with the one generic message and the request id to quote. */
export function refusedSignInPath(requestId: string | null): string {
  return `/#/login?sso_error=${encodeURIComponent(requestId ?? "")}`;
}
