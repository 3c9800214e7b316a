import express, { Router, type Express } from "express";
import { accessRoutes } from "../access/routes.js";
import { authenticate } from "../auth/index.js";
import { rejectInvalidUtf8 } from "../records/index.js";
import { authRoutes } from "../auth/routes.js";
import { setupRoutes } from "../auth/setup-routes.js";
import type { ApplianceContext } from "../context.js";
import { accessLog, httpMetrics, noStore, requestId, requireJsonBody, securityHeaders } from "./middleware.js";
import { adminUiRoutes } from "./admin-ui.js";
import { buildOpenApiDocument } from "./openapi.js";
import { notFoundHandler, problemMiddleware } from "./problem.js";
import { gatedByFirstSegment } from "./router-gate.js";
import { healthRoutes } from "./routes/health.js";
import { keysRoutes } from "../keys/routes.js";
import { backupRoutes } from "../backups/routes.js";
import { attachmentUploadRoutes, recordsRoutes } from "../records/routes.js";
import { auditRoutes } from "../audit/routes.js";
import { APP_VERSION } from "../version.js";

/**
 * The Express application: middleware in the order a request meets it, then one router per
 * capability under /api/v1, then 404 and the one error-to-problem+json mapping.
 */
export function createHttpApp(ctx: ApplianceContext): Express {
  const app = express();
  app.disable("x-powered-by");
  app.set("trust proxy", ctx.config.server.trustProxy);
  app.set("etag", false);
  app.use(requestId);
  app.use(securityHeaders());
  app.use(httpMetrics(ctx.metrics));
  app.use(accessLog(ctx.log));

  app.use(gatedByFirstSegment(healthRoutes(ctx)));

  const api = Router();
  api.use(noStore);
  // Streams raw (non-JSON) attachment bodies, so it sits before the JSON-only gate; it authenticates itself.
  api.use(gatedByFirstSegment(attachmentUploadRoutes(ctx)));
  api.use(requireJsonBody);
  api.use(express.json({ limit: ctx.config.server.bodyLimit, strict: true, type: ["application/json", "application/*+json"], verify: rejectInvalidUtf8 }));
  api.get("/openapi.json", (_req, res) => {
    res.json(buildOpenApiDocument(APP_VERSION));
  });
  api.use(gatedByFirstSegment(setupRoutes(ctx)));
  // Everything after this line knows its caller (res.locals.actor) or answers 401 through the policy guard.
  api.use(authenticate(ctx));
  // Each capability's router is entered only by paths it could answer (daemon/http/router-gate.ts).
  for (const routes of [authRoutes, accessRoutes, keysRoutes, backupRoutes, recordsRoutes, auditRoutes]) api.use(gatedByFirstSegment(routes(ctx)));
  app.use("/api/v1", api);

  app.use(adminUiRoutes());

  app.use(notFoundHandler);
  app.use(problemMiddleware(ctx.log));
  return app;
}
