import { Router } from "express";
import { z } from "zod";
import type { ApplianceContext } from "../../context.js";
import { problemType } from "../../kernel/errors.js";
import { jsonResponse, openApiRegistry, problemResponse } from "../openapi.js";
import { checkReadiness } from "../readiness.js";

const readinessSchema = z.object({
  status: z.enum(["ready", "not-ready"]),
  checks: z.record(z.string(), z.object({ ok: z.boolean(), detail: z.string() }).passthrough()),
});

openApiRegistry.registerPath({
  method: "get",
  path: "/healthz",
  summary: "Liveness: the process is up and serving",
  responses: { 200: jsonResponse("Alive", z.object({ status: z.literal("ok") })) },
});
openApiRegistry.registerPath({
  method: "get",
  path: "/readyz",
  summary: "Readiness: database reachable, migrations current, keys unsealed",
  responses: { 200: jsonResponse("Ready", readinessSchema), 503: problemResponse("Not ready; `checks` says why") },
});
openApiRegistry.registerPath({
  method: "get",
  path: "/metrics",
  summary: "Prometheus metrics (no PHI)",
  responses: { 200: { description: "Prometheus text exposition format", content: { "text/plain": { schema: z.string() } } } },
});

export function healthRoutes(ctx: ApplianceContext): Router {
  const router = Router();
  router.get("/healthz", (_req, res) => {
    res.json({ status: "ok" });
  });
  router.get("/readyz", async (_req, res) => {
    const { ready, checks } = await checkReadiness(ctx);
    if (ready) {
      res.json({ status: "ready", checks });
      return;
    }
    const failing = Object.entries(checks)
      .filter(([, c]) => !c.ok)
      .map(([name, c]) => `${name}: ${c.detail}`);
    res
      .status(503)
      .type("application/problem+json")
      .json({ type: problemType("not-ready"), title: "Not ready", status: 503, detail: failing.join("; "), checks });
  });
  router.get("/metrics", async (_req, res) => {
    res.type(ctx.metrics.contentType).send(await ctx.metrics.metrics());
  });
  return router;
}
