import { z } from "zod";

/** Settings of an OpenID Connect provider (docs/sso.md "OpenID Connect"); stored in identity_providers.config. */
export const oidcConfigSchema = z.strictObject({
  /** The issuer identifier; discovery reads `<issuer>/.well-known/openid-configuration`. HTTPS (plain HTTP only on loopback). */
  issuer: z.url().refine(
    (u) => {
      const url = new URL(u);
      return url.protocol === "https:" || (url.protocol === "http:" && ["127.0.0.1", "localhost", "[::1]"].includes(url.hostname));
    },
    { message: "the issuer must be an https:// URL (http:// only on loopback, for a test IdP on this host)" },
  ),
  /** The client id registered at the IdP for this appliance. */
  clientId: z.string().min(1).max(200),
  /** How the appliance authenticates at the token endpoint. */
  tokenEndpointAuthMethod: z.enum(["client_secret_basic", "client_secret_post", "none"]).default("client_secret_basic"),
  /** Scopes asked for; `openid` is always added. */
  scopes: z
    .array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]{1,100}$/))
    .max(20)
    .default(["openid", "profile", "email"]),
  /** Claim names: where the username, email, display name and groups come from. */
  claims: z
    .strictObject({
      username: z.string().min(1).max(100).default("preferred_username"),
      email: z.string().min(1).max(100).default("email"),
      displayName: z.string().min(1).max(100).default("name"),
      groups: z.string().min(1).max(100).default("groups"),
    })
    .default({ username: "preferred_username", email: "email", displayName: "name", groups: "groups" }),
  /** Also read the userinfo endpoint (claims not in the ID token, e.g. groups at Okta). */
  fetchUserinfo: z.boolean().default(true),
  /** Seconds of clock difference tolerated on exp/iat/nbf (RFC 7519 §4.1.4 "small leeway"). */
  clockToleranceSeconds: z.number().int().min(0).max(300).default(60),
  /** Signing algorithm required of ID tokens; default: the first the IdP's metadata lists (never `none`). */
  idTokenSigningAlg: z
    .string()
    .regex(/^(RS|PS|ES)(256|384|512)$|^EdDSA$|^Ed25519$/)
    .optional(),
  /** Sign out at the IdP too (RP-initiated logout) when it offers an end_session_endpoint. */
  rpInitiatedLogout: z.boolean().default(true),
});
export type OidcConfig = z.infer<typeof oidcConfigSchema>;

export const oidcSecretsSchema = z.strictObject({
  /** The client secret (absent for tokenEndpointAuthMethod none). */
  clientSecret: z.string().min(1).max(4096).optional(),
});
export type OidcSecrets = z.infer<typeof oidcSecretsSchema>;
