import { attachmentRoutes } from "./attachments/routes.js";
import { consentRoutes } from "./consents/routes.js";
import { dataRightsRoutes } from "./data-rights/routes.js";
import { noteRoutes } from "./notes/routes.js";
import { patientRoutes } from "./patients/routes.js";
import { scheduleRoutes } from "./schedule/routes.js";

export { attachmentUploadRoutes } from "./attachments/routes.js";

/**
 * The records API (docs/records.md), mounted under /api/v1 after authentication: patients,
 * schedule, notes, consents, attachment metadata and downloads, data rights. Every route is PHI,
 * so each answers 503 while the appliance is sealed (route-kit.ts). The attachment upload route
 * is separate (`attachmentUploadRoutes`): it streams its body, so it is mounted ahead of the
 * JSON body parser.
 */
export const recordsRoutes = [...patientRoutes, ...noteRoutes, ...consentRoutes, ...attachmentRoutes, ...scheduleRoutes, ...dataRightsRoutes];
