/**
 * The sso capability's public face (docs/sso.md, docs/architecture.md): what every protocol
 * module (OIDC here; SAML and LDAP beside it) needs to turn a validated sign-in into a session,
 * and the registry of provider kinds that share the one `identity_providers` table.
 *
 *   registerProviderKind("saml", { configSchema, secretsSchema, browserSignIn, redirectUri });
 *   const provider = await loadProvider(ctx, providerId);          // settings parsed, secrets opened
 *   ... validate the protocol's answer; on a failed check:
 *   await refuseExternalSignIn(ctx, { providerId, tenantId }, "audience mismatch", meta); // throws
 *   const outcome = await completeExternalSignIn(ctx, identity, meta);  // rules → JIT → MFA → session
 */
export { type ExternalIdentity, ExternalSignInRefused } from "./identity.js";
import "./kinds.js";
export { completeExternalSignIn, refuseExternalSignIn, idpAssertsMfa, type ExternalSignInOutcome, type IdpSessionHint } from "./signin.js";
export { registerProviderKind, registeredKinds, loadProvider, type LoadedProvider, type ProviderKind } from "./providers.js";
export { applyScimGroupRules, firstMatch, type RuleSubject } from "./rules.js";
// What the command line (`wardkeep idp`) calls: the same services as the admin routes.
export { listProviders, createProvider, updateProvider } from "./providers.js";
export { parseIdpMetadata, MetadataRefused } from "./saml/metadata.js";
export { listRules, dryRunRules } from "./rules.js";
export { checkProvider, type ProviderCheck } from "./check.js";
export { createProviderRequest, saveRulesRequest, type ProviderView, type RuleView, type DryRunRes } from "./schema.js";
// Provider kinds register themselves when their module loads.
import "./oidc/index.js";
