import express, { Router, type Express } from "express";
import { accessRoutes } from "../access/routes.js";
import { authenticate } from "../auth/index.js";
import { setupRoutes } from "../auth/setup-routes.js";
import { policyBinding } from "../access/index.js";
import { authRoutes } from "../auth/routes.js";
import type { ApplianceContext } from "../context.js";
import { accessLog, httpMetrics, maintenanceGate, noStore, requestId, requireJsonBody, securityHeaders } from "./middleware.js";
import { adminUiRoutes } from "./admin-ui.js";
import { notFoundHandler, problemMiddleware } from "./problem.js";
import { apiDescriptionRoutes, healthRoutes } from "./routes/health.js";
import { keysRoutes } from "../keys/routes.js";
import { backupRoutes } from "../backups/routes.js";
import { attachmentUploadRoutes, recordsRoutes } from "../records/routes.js";
import { rejectInvalidUtf8 } from "../records/index.js";
import { auditRoutes } from "../audit/routes.js";
import { alertRoutes } from "../alerts/routes.js";
import { jobsRoutes } from "../jobs/routes.js";
import { retentionRoutes } from "../retention/routes.js";
import { ssoFormRoutes, ssoRoutes } from "../sso/routes.js";
import { mountRoutes, type Route } from "../kernel/define-route.js";
import { inboundWebhookRoutes, webhookRoutes } from "../webhooks/routes.js";
import { scimProtocolRoutes, scimTokenRoutes } from "../scim/routes.js";

/**
 * The Express application: middleware in the order a request meets it, then one router per
 * capability under /api/v1, then 404 and the one error-to-problem+json mapping.
 */
export function createHttpApp(ctx: ApplianceContext): Express {
  const app = express();
  // Each group of routes as one middleware over a table of its routes (kernel/define-route.ts, mountRoutes).
  const mount = (routes: readonly Route[]) => mountRoutes(ctx, routes, policyBinding);
  app.disable("x-powered-by");
  // X-Forwarded-For is believed only from the configured proxies (anyone else could name any
  // address and escape the per-address sign-in limits); the rightmost untrusted hop is the client.
  app.set("trust proxy", ctx.config.server.trustedProxies.length > 0 ? ctx.config.server.trustedProxies : false);
  app.set("etag", false);
  app.use(requestId);
  app.use(securityHeaders());
  app.use(httpMetrics(ctx.metrics));
  app.use(accessLog(ctx.log));

  app.use(mount(healthRoutes));
  // An in-place restore replaces the database under every request: they wait outside (503, Retry-After).
  app.use(["/api/v1", "/scim"], maintenanceGate(ctx));
  // SCIM 2.0 (RFC 7644) at /scim/v2: its own bearer tokens, media type and error schema (docs/scim.md).
  app.use(mount(scimProtocolRoutes));

  const api = Router();
  api.use(noStore);
  // Streams raw (non-JSON) attachment bodies, so it sits before the JSON-only gate; it authenticates itself.
  api.use(mount(attachmentUploadRoutes));
  // Signed raw bodies (the signature covers the exact bytes): before the JSON gate, public, verified by their signature.
  api.use(mount(inboundWebhookRoutes));
  // The SAML ACS takes the IdP's form post: public, verified by the assertion's signature.
  api.use(mount(ssoFormRoutes));
  api.use(requireJsonBody);
  api.use(express.json({ limit: ctx.config.server.bodyLimit, strict: true, type: ["application/json", "application/*+json"], verify: rejectInvalidUtf8 }));
  api.use(mount(apiDescriptionRoutes));
  api.use(mount(setupRoutes));
  // Everything after this line knows its caller (res.locals.actor) or answers 401 through the policy guard.
  api.use(authenticate(ctx));
  // Every capability's routes in one table, so a request finds its route in one look-up.
  api.use(
    mount([
      ...authRoutes,
      ...accessRoutes,
      ...keysRoutes,
      ...backupRoutes,
      ...recordsRoutes,
      ...auditRoutes,
      ...alertRoutes,
      ...webhookRoutes,
      ...jobsRoutes,
      ...retentionRoutes,
      ...scimTokenRoutes,
      ...ssoRoutes,
    ]),
  );
  app.use("/api/v1", api);

  app.use(adminUiRoutes());

  app.use(notFoundHandler);
  app.use(problemMiddleware(ctx.log));
  return app;
}
