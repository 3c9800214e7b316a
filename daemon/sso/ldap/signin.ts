import type { ApplianceContext } from "../../context.js";
import type { RequestMeta } from "../../kernel/request-meta.js";
import type { ExternalIdentity } from "../identity.js";
import { completeExternalSignIn, refuseExternalSignIn, type ExternalSignInOutcome } from "../signin.js";
import { inScope } from "../../db/sql.js";
import type { Actor } from "../../kernel/actor.js";
import { Invalid, NotFound } from "../../kernel/errors.js";
import { loadProvider, type LoadedProvider } from "../providers.js";
import { failedTest, openTestRecord, saveTestResult, testIdentityView } from "../tests.js";
import type { LdapProviderConfig, LdapSecrets } from "./config.js";
import { authenticateLdap, type LdapUser } from "./directory.js";
import type { LdapLoginReq, TestSignInReq } from "../schema.js";

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
  return completeExternalSignIn(ctx, identityOf(provider, result.user), meta);
}

function identityOf(provider: LoadedProvider, user: LdapUser): ExternalIdentity {
  return {
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
}

/**
 * An admin's test sign-in through an LDAP provider (also a disabled one), with a test user's name
 * and password typed in the console: the directory checks them exactly as at sign-in, and the
 * test keeps the entry's attributes, its groups (nested ones included) and the role the rules
 * would give. The password goes to the directory only: it is never stored, logged or audited.
 */
export async function testLdapSignIn(ctx: ApplianceContext, actor: Actor, providerId: string, input: TestSignInReq): Promise<{ testId: string; url: null }> {
  if (!input.username || !input.password) {
    const missing = !input.username ? "username" : "password";
    throw new Invalid("a test sign-in through a directory needs the test user's name and password", { errors: [{ path: missing, message: "required" }] });
  }
  const provider = await loadProvider(ctx, providerId);
  if (!provider || provider.kind !== "ldap" || provider.tenantId !== actor.tenantId) throw new NotFound("no such identity provider in your tenant");
  const test = await inScope(ctx.db.app, { kind: "tenant", tenantId: provider.tenantId }, (t) => openTestRecord(ctx, t, provider, actor, null));
  if (!provider.secrets) {
    await saveTestResult(ctx, test, async () => failedTest("ldap: the provider has no service account password"));
    return { testId: test.id, url: null };
  }
  const result = await authenticateLdap(provider.config as LdapProviderConfig, provider.secrets as LdapSecrets, input.username, input.password, { entryAttributes: true });
  await saveTestResult(ctx, test, async (t) =>
    result.ok
      ? { status: "received", error: null, identity: await testIdentityView(t, identityOf(provider, result.user), result.user.attributes) }
      : failedTest(`ldap: ${result.reason}`),
  );
  return { testId: test.id, url: null };
}
