import { Router } from "express";
import type { ApplianceContext } from "../context.js";
import { requireUnsealed } from "../keys/index.js";
import { mountPatientRoutes } from "./patients/routes.js";

/** Paths of the records capability: PHI, so they answer 503 while the appliance is sealed. */
export const RECORDS_PATHS = ["/patients", "/schedule", "/exports", "/legal-holds", "/deletion-requests", "/tenant/deletion"];

/**
 * The records API (docs/records.md), mounted under /api/v1 after authentication: patients,
 * schedule, notes, consents, attachment metadata and downloads, data rights.
 */
export function recordsRoutes(ctx: ApplianceContext): Router {
  const router = Router();
  router.use(RECORDS_PATHS, requireUnsealed(ctx));
  mountPatientRoutes(ctx, router);
  return router;
}
