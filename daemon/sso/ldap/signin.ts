import type { ApplianceContext } from "../../context.js";
import type { RequestMeta } from "../../kernel/request-meta.js";
import type { ExternalIdentity } from "../identity.js";
import { completeExternalSignIn, refuseExternalSignIn, type ExternalSignInOutcome } from "../signin.js";
import { loadProvider } from "../providers.js";
import type { LdapProviderConfig, LdapSecrets } from "./config.js";
import { authenticateLdap } from "./directory.js";
import type { LdapLoginReq } from "../schema.js";

/**
 * Sign-in with a directory user name and password through an LDAP / AD provider: the directory
 * checks them (./directory.ts), then the shared path makes the session (rules → account → MFA).
 * Every refusal is audited with its precise reason ("wrong password", "account disabled in the
 * directory …", "no rule matched") and answered with the one generic error.
 */
export async function signInWithLdap(ctx: ApplianceContext, providerId: string, input: LdapLoginReq, meta: RequestMeta): Promise<ExternalSignInOutcome> {
  const provider = await loadProvider(ctx, providerId);
  if (!provider || provider.kind !== "ldap") return refuseExternalSignIn(ctx, { providerId: null, tenantId: null }, "unknown LDAP provider", meta);
  const who = { providerId: provider.id, tenantId: provider.tenantId };
  if (!provider.enabled) return refuseExternalSignIn(ctx, who, "identity provider is disabled", meta);
  if (!provider.secrets) return refuseExternalSignIn(ctx, who, "the provider has no service account password", meta);
  const result = await authenticateLdap(provider.config as LdapProviderConfig, provider.secrets as LdapSecrets, input.username, input.password);
  if (!result.ok) {
    if (result.reason.startsWith("directory unavailable")) ctx.log.warn("ldap directory unavailable", { providerId: provider.id, reason: result.reason });
    return refuseExternalSignIn(ctx, who, `ldap: ${result.reason}`, meta);
  }
  const user = result.user;
  const identity: ExternalIdentity = {
    providerId: provider.id,
    tenantId: provider.tenantId,
    subject: user.subject,
    username: user.username,
    ...(user.email ? { email: user.email } : {}),
    ...(user.displayName ? { displayName: user.displayName } : {}),
    groups: user.groups,
    claims: { dn: user.dn, groupLookup: user.groupLookup.mode, groupsTruncated: user.groupLookup.truncated },
    // The directory checked a password, nothing more: local TOTP applies as the MFA policy says.
    authnContext: { amr: ["pwd"] },
  };
  return completeExternalSignIn(ctx, identity, meta);
}
