import { z } from "zod";

/** `POST /api/v1/sso/ldap/{id}/login`: the directory user name and password. */
export const ldapLoginRequest = z.strictObject({
  /** The directory user name (sAMAccountName or uid), as people type it at work. */
  username: z.string().trim().min(1).max(256),
  /** The directory password; sent to the directory only, over TLS, never stored. */
  password: z.string().max(1024),
});
export type LdapLoginReq = z.infer<typeof ldapLoginRequest>;

/** What a sign-in through an IdP answers: the same stages as a password sign-in. */
export const ssoLoginResponse = z.object({
  /** The session waits for a TOTP or recovery code (POST /auth/mfa). */
  mfaRequired: z.boolean(),
  /** The session waits for authenticator enrollment (POST /auth/mfa/enroll). */
  mfaEnrollmentRequired: z.boolean(),
  /** Send as X-CSRF-Token with every cookie-authenticated change. */
  csrfToken: z.string(),
  /** The session's absolute end. */
  expiresAt: z.string().describe("ISO 8601 instant"),
});
export type SsoLoginRes = z.infer<typeof ssoLoginResponse>;

export const ssoProviderParams = z.object({
  /** Identity provider id. */
  id: z.uuid(),
});
