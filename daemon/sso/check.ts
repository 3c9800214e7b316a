import { X509Certificate } from "node:crypto";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import type { Actor } from "../kernel/actor.js";
import { Invalid, NotFound } from "../kernel/errors.js";
import { authorize } from "../kernel/policy.js";
import type { LdapProviderConfig, LdapSecrets } from "./ldap/config.js";
import { probeDirectory } from "./ldap/directory.js";
import { oidcConfiguration } from "./oidc/client.js";
import type { OidcConfig, OidcSecrets } from "./oidc/settings.js";
import { loadProviderIn, type LoadedProvider } from "./providers.js";
import type { SamlProviderConfig } from "./saml/config.js";
import { describePinned } from "./saml/metadata.js";

/**
 * Can the appliance use a provider, without anyone signing in: the OIDC issuer's discovery
 * document (issuer checked against the settings), the LDAP service account's bind, the SAML
 * pinned certificates' validity. The command line's `wardkeep idp test` (a test *sign-in*, with
 * the claims received, needs a browser: the console's "Test sign-in"). Settings and secrets are
 * never part of the answer.
 */
export type ProviderCheck = { ok: boolean; kind: string; name: string; details: string[] };

export async function checkProvider(ctx: ApplianceContext, actor: Actor, id: string): Promise<ProviderCheck> {
  authorize(actor, "identity_provider:test");
  if (!actor.tenantId) throw new Invalid("identity providers belong to a tenant; act inside one");
  const provider = await inScope(ctx.db.app, { kind: "tenant", tenantId: actor.tenantId }, (t) => loadProviderIn(ctx, t, id));
  if (!provider) throw new NotFound("no such identity provider in your tenant");
  const at = { kind: provider.kind, name: provider.name };
  switch (provider.kind) {
    case "oidc":
      return { ...at, ...(await checkOidc(ctx, provider as LoadedProvider<OidcConfig, OidcSecrets>)) };
    case "ldap":
      return { ...at, ...(await checkLdap(provider as LoadedProvider<LdapProviderConfig, LdapSecrets>)) };
    case "saml":
      return { ...at, ...checkSaml(ctx, provider as LoadedProvider<SamlProviderConfig>) };
    default:
      return { ...at, ok: false, details: [`no check for providers of kind ${provider.kind}`] };
  }
}

async function checkOidc(ctx: ApplianceContext, provider: LoadedProvider<OidcConfig, OidcSecrets>): Promise<Omit<ProviderCheck, "kind" | "name">> {
  try {
    const server = (await oidcConfiguration(ctx, provider)).serverMetadata();
    return {
      ok: true,
      details: [
        `discovery: issuer ${server.issuer} answered`,
        `authorization endpoint ${server.authorization_endpoint ?? "(none)"}`,
        `ID token algorithms ${(server.id_token_signing_alg_values_supported ?? []).join(", ") || "(not listed)"}`,
        `end-session endpoint ${server.end_session_endpoint ?? "(none: no sign-out at the IdP)"}`,
      ],
    };
  } catch (err) {
    return { ok: false, details: [`discovery failed: ${err instanceof Error ? err.message.split("\n")[0] : String(err)}`] };
  }
}

async function checkLdap(provider: LoadedProvider<LdapProviderConfig, LdapSecrets>): Promise<Omit<ProviderCheck, "kind" | "name">> {
  if (!provider.secrets) return { ok: false, details: ["no service account password stored (secrets.bindPassword)"] };
  const probe = await probeDirectory(provider.config, provider.secrets);
  return probe.ok
    ? { ok: true, details: [`service account bound at ${provider.config.url}`, `nested groups: ${probe.groupMode}`] }
    : { ok: false, details: [`directory not usable: ${probe.reason}`] };
}

function checkSaml(ctx: ApplianceContext, provider: LoadedProvider<SamlProviderConfig>): Omit<ProviderCheck, "kind" | "name"> {
  const now = ctx.clock.now().getTime();
  const fingerprints = describePinned(provider.config.idpCertificates);
  let usable = 0;
  const details = provider.config.idpCertificates.map((pem, i) => {
    try {
      const cert = new X509Certificate(pem);
      const valid = Date.parse(cert.validFrom) <= now && now < Date.parse(cert.validTo);
      if (valid) usable++;
      return `pinned certificate ${fingerprints[i]} ${valid ? "valid" : "NOT valid now"} until ${new Date(cert.validTo).toISOString()}`;
    } catch {
      return `pinned certificate ${i + 1} cannot be read`;
    }
  });
  return { ok: usable > 0, details: [`IdP ${provider.config.idpEntityId} at ${provider.config.idpSsoUrl}`, ...details] };
}
