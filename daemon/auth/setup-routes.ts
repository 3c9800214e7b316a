import { Router } from "express";
import { z } from "zod";
import type { ApplianceContext } from "../context.js";
import { jsonBody, jsonResponse, openApiRegistry, problemResponse } from "../http/openapi.js";
import { completeSetup, setupRequest, superAdminExists } from "./setup.js";

const setupStatus = z.object({ setupRequired: z.boolean() });
const createdAdmin = z.object({ id: z.uuid(), email: z.string() });

openApiRegistry.registerPath({
  method: "get",
  path: "/api/v1/setup",
  summary: "Whether first-run setup is still open (no super-admin yet)",
  responses: { 200: jsonResponse("Setup state", setupStatus) },
});
openApiRegistry.registerPath({
  method: "post",
  path: "/api/v1/setup",
  summary: "Create the first super-admin with the one-time setup token printed at first start",
  request: { body: jsonBody(setupRequest) },
  responses: {
    201: jsonResponse("Super-admin created", createdAdmin),
    400: problemResponse("Invalid body"),
    403: problemResponse("Token invalid, used or expired"),
    409: problemResponse("Setup already complete"),
  },
});

export function setupRoutes(ctx: ApplianceContext): Router {
  const router = Router();
  router.get("/setup", async (_req, res) => {
    res.json({ setupRequired: !(await superAdminExists(ctx)) });
  });
  router.post("/setup", async (req, res) => {
    const admin = await completeSetup(ctx, setupRequest.parse(req.body));
    res.status(201).json(admin);
  });
  return router;
}
