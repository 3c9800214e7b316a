/**
 * The auth capability's public face (docs/architecture.md): who is calling (the authenticate
 * middleware), step-up for sensitive actions, and what account administration in access/ needs
 * to end sessions, clear a second factor or drop cached API-token answers.
 */
export { authenticate } from "./authenticate.js";
export { requireRecentMfa } from "./step-up.js";
export { StepUpRequired, CsrfRejected, InviteExpired, InviteInvalid, InviteRevoked, InviteUsed } from "./errors.js";
export { revokeUserSessions } from "./sessions.js";
export { clearMfa } from "./mfa.js";
export { forgetResolvedApiTokens } from "./api-tokens.js";
export { createFirstSuperAdmin, ensureSetupToken, superAdminExists, superAdminInput, type SuperAdminInput } from "./setup.js";
export { createInvite, inviteInTransaction, type CreatedInvite } from "./invites.js";
export { createApiToken, listApiTokens, revokeApiToken, revokeApiTokensIn, type ApiTokenView } from "./api-tokens.js";
export { createApiTokenRequest } from "./schema.js";
export { createInviteRequest } from "./schema.js";
export { listSessions, revokeAllSessions, type SessionView } from "./account.js";
export { revokeAllRequest } from "./schema.js";
// Sign-in through an identity provider (daemon/sso) ends in the same session and MFA stages as a password sign-in.
export { issueSession, type IssuedSession } from "./sessions.js";
export { stageFor, signOut } from "./login.js";
export { sessionCookie, clearedSessionCookie, readCookie } from "./tokens.js";
