import { z } from "zod";
import { defineRoute } from "../../kernel/define-route.js";
import { buildOpenApiDocument } from "../../kernel/openapi.js";
import { APP_VERSION } from "../../version.js";
import { problemType } from "../../kernel/errors.js";
import { checkReadiness } from "../readiness.js";
import { livenessResponse, readinessResponse } from "../schema.js";

/** Health and metrics for monitoring: public, at the server root, no PHI. */
export const healthRoutes = [
  defineRoute(
    { method: "get", path: "/healthz", root: true, action: "public", tag: "health", summary: "Liveness: the process is up and serving", response: livenessResponse },
    () => ({ status: "ok" as const }),
  ),
  defineRoute(
    {
      method: "get",
      path: "/readyz",
      root: true,
      action: "public",
      tag: "health",
      summary: "Readiness: database reachable, migrations current, keys unsealed",
      response: readinessResponse,
      problems: { 503: "Not ready; `checks` says which check fails" },
    },
    async ({ ctx, res }) => {
      const { ready, checks } = await checkReadiness(ctx);
      if (ready) return { status: "ready" as const, checks };
      const failing = Object.entries(checks)
        .filter(([, c]) => !c.ok)
        .map(([name, c]) => `${name}: ${c.detail}`);
      if (!checks.database.ok) res.setHeader("Retry-After", String(ctx.config.database.retryAfterSeconds));
      res
        .status(503)
        .type("application/problem+json")
        .json({ type: problemType("not-ready"), title: "Not ready", status: 503, detail: failing.join("; "), checks });
    },
  ),
  defineRoute(
    {
      method: "get",
      path: "/metrics",
      root: true,
      action: "public",
      tag: "health",
      summary: "Prometheus metrics (no PHI)",
      response: { mediaType: "text/plain", description: "Prometheus text exposition format" },
    },
    async ({ ctx, res }) => {
      res.type(ctx.metrics.contentType).send(await ctx.metrics.metrics());
    },
  ),
];

/** The API description, generated from the route definitions. */
export const apiDescriptionRoutes = [
  defineRoute(
    {
      method: "get",
      path: "/openapi.json",
      action: "public",
      tag: "health",
      summary: "This API's OpenAPI 3.1 description, generated from the route definitions",
      response: z.record(z.string(), z.unknown()).describe("An OpenAPI 3.1 document"),
    },
    () => buildOpenApiDocument(APP_VERSION) as unknown as Record<string, unknown>,
  ),
];
