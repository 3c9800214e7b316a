/**
 * The SCIM capability's public face (docs/scim.md): SCIM 2.0 provisioning of a tenant's accounts
 * and groups by its identity provider, and the tenant admin's SCIM tokens. The HTTP layer mounts
 * `scimTokenRoutes` and `scimProtocolRoutes` from routes.ts; the CLI manages tokens through these.
 */
export { createScimToken, listScimTokens, revokeScimToken, SCIM_TOKEN_PREFIX, type ScimClient } from "./tokens.js";
export { createScimTokenRequest, SCIM_DEFAULT_ROLES, type ScimTokenRes } from "./schema.js";
