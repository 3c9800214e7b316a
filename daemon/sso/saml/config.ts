import { z } from "zod";

const LOOPBACK = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$/i;

/** https://, or http:// on the loopback interface only (a test IdP on the appliance itself). */
const webUrl = (what: string) =>
  z
    .string()
    .max(2048)
    .refine((s) => {
      try {
        const u = new URL(s);
        return u.protocol === "https:" || (u.protocol === "http:" && LOOPBACK.test(u.hostname));
      } catch {
        return false;
      }
    }, `${what} must be an https:// URL`);

const pem = z
  .string()
  .max(16_384)
  .refine((s) => /-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----/.test(s), "must be a PEM certificate (-----BEGIN CERTIFICATE-----)");

/**
 * Configuration of a SAML 2.0 sign-in provider (`identity_providers.config` where kind = "saml";
 * docs/sso.md "SAML 2.0"). The IdP's signing certificates are pinned here: an assertion counts
 * only when one of them signed it, whatever certificate the message itself carries. Two pinned
 * certificates let the IdP roll its key over without an outage.
 */
export const samlProviderConfig = z
  .object({
    /** Replaced by the appliance-wide `server.publicUrl`, which every SP URL is made from; refused with a line saying so. */
    spBaseUrl: z.never({ error: "spBaseUrl was replaced by the appliance's server.publicUrl (configuration); remove it from the provider" }).optional(),
    /** The SP entity id the IdP knows this appliance by; the metadata URL when absent. */
    spEntityId: z.string().min(1).max(1024).optional(),
    /** The IdP's entity id: the Issuer every response must carry. */
    idpEntityId: z.string().min(1).max(1024),
    /** The IdP's single sign-on URL (HTTP-Redirect binding). */
    idpSsoUrl: webUrl("idpSsoUrl"),
    /**
     * The IdP's single logout URL (HTTP-Redirect binding): signing out at the appliance sends a
     * signed LogoutRequest there, and IdP-initiated logouts are answered there. Absent: no single logout.
     */
    idpSloUrl: webUrl("idpSloUrl").optional(),
    /** The IdP's signing certificates (PEM): one, or two during a key rollover. */
    idpCertificates: z.array(pem).min(1).max(2),
    /** Accept responses the IdP sends without a request from this appliance (IdP-initiated): off, as they cannot be bound to a browser. */
    allowIdpInitiated: z.boolean().default(false),
    /** Refuse an assertion the IdP did not encrypt to the appliance's encryption certificate (in the SP metadata). */
    requireEncryptedAssertions: z.boolean().default(false),
    /** Clock difference tolerated on NotBefore / NotOnOrAfter. */
    clockSkewSeconds: z.number().int().min(0).max(300).default(60),
    /** An assertion older than this (from its IssueInstant) is refused even when NotOnOrAfter is later. */
    maxAssertionAgeMinutes: z.number().int().min(1).max(60).default(10),
    /** The attribute that carries group names (Entra ID: http://schemas.microsoft.com/ws/2008/06/identity/claims/groups). */
    groupsAttribute: z.string().min(1).max(512).default("groups"),
    /** The attribute with the email address; the NameID when it looks like one and this is absent from the assertion. */
    emailAttribute: z.string().min(1).max(512).default("email"),
    /** The attribute with the display name. */
    displayNameAttribute: z.string().min(1).max(512).default("displayName"),
    /** The attribute with the user name; the NameID when absent from the assertion. */
    usernameAttribute: z.string().min(1).max(512).optional(),
  })
  .strict();

export type SamlProviderConfig = z.infer<typeof samlProviderConfig>;

/** The appliance's URLs for one SAML provider, made from the appliance's public address (`server.publicUrl`). */
export function spUrls(publicUrl: string, c: Pick<SamlProviderConfig, "spEntityId">, providerId: string) {
  const base = `${publicUrl}/api/v1/sso/saml/${providerId}`;
  return { acs: `${base}/acs`, slo: `${base}/slo`, metadata: `${base}/metadata`, login: `${base}/login`, entityId: c.spEntityId ?? `${base}/metadata` };
}
