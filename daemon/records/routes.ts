import { Router } from "express";
import type { ApplianceContext } from "../context.js";
import { requireUnsealed } from "../keys/index.js";
import { mountAttachmentRoutes } from "./attachments/routes.js";
import { mountConsentRoutes } from "./consents/routes.js";
import { mountDataRightsRoutes } from "./data-rights/routes.js";
import { mountNoteRoutes } from "./notes/routes.js";
import { mountPatientRoutes } from "./patients/routes.js";
import { mountScheduleRoutes } from "./schedule/routes.js";

export { attachmentUploadRoutes } from "./attachments/routes.js";

/** Paths of the records capability: PHI, so they answer 503 while the appliance is sealed. */
export const RECORDS_PATHS = ["/patients", "/schedule", "/exports", "/legal-holds", "/deletion-requests", "/tenant/deletion"];

/**
 * The records API (docs/records.md), mounted under /api/v1 after authentication: patients,
 * schedule, notes, consents, attachment metadata and downloads, data rights. The attachment
 * upload route is separate (`attachmentUploadRoutes`): it streams its body, so it is mounted
 * ahead of the JSON body parser.
 */
export function recordsRoutes(ctx: ApplianceContext): Router {
  const router = Router();
  router.use(RECORDS_PATHS, requireUnsealed(ctx));
  mountPatientRoutes(ctx, router);
  mountNoteRoutes(ctx, router);
  mountConsentRoutes(ctx, router);
  mountAttachmentRoutes(ctx, router);
  mountScheduleRoutes(ctx, router);
  mountDataRightsRoutes(ctx, router);
  return router;
}
