/**
 * The access capability's public face (docs/architecture.md): care-team facts for records'
 * checks, and the guard that binds a route to its policy action. The policy table itself is
 * kernel/policy.ts, shared by every capability.
 */
export { authorizePatient, patientAccessFor, type PatientAccess } from "./care-team.js";
export { guard, guardedRoutes, policyBinding, recordDenial, type GuardedRoute } from "./guard.js";
export { createTenant, listTenants, updateTenant, type TenantView, type CreatedTenantView } from "./tenants.js";
export { createTenantRequest, updateTenantRequest } from "./schema.js";
export { deprovisionAccount, listUsers, updateUser, type Deprovisioned, type UserView } from "./users.js";
export { decideEntry, exportCampaignEvidence, getCampaign, listCampaigns, startCampaign } from "./reviews.js";
export { reviewDecisionRequest, startCampaignRequest, type CampaignEvidenceRes, type CampaignRes, type CampaignSummaryRes } from "./schema.js";
export { decidePrivilegedAccess, endPrivilegedAccess, listPrivilegedAccess } from "./privileged-access.js";
export type { PrivilegedAccessRes } from "./schema.js";
