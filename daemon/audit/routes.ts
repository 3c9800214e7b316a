import { pipeline } from "node:stream/promises";
import { Router } from "express";
import { z } from "zod";
import { currentActor } from "../kernel/actor.js";
import { guardedRoute } from "../access/index.js";
import type { ApplianceContext } from "../context.js";
import { jsonBody, jsonResponse, openApiRegistry } from "../http/openapi.js";
import { auditContextFrom } from "./append.js";
import { listCheckpoints } from "./checkpoints.js";
import { downloadExport, exportRequest, getExportJob, listExportJobs, startExportJob } from "./pack-jobs.js";
import { patientAccessTimeline, searchAuditEvents, searchQuery, timelineQuery } from "./search.js";
import { describeCheckpointKeys } from "./signing-key.js";
import { verifyAuditChain } from "./verify.js";

const API = "/api/v1";
const exportParam = z.object({ id: z.string().regex(/^audit-[0-9TZ]+-[0-9a-f]{8}$/) }).strict();
const patientParam = z.object({ patientId: z.string().min(1).max(200) }).strict();
const noQuery = z.object({}).strict();
const anyJson = z.object({}).passthrough();

function doc(method: "get" | "post", path: string, summary: string, opts: { body?: z.ZodType; query?: z.ZodObject; status?: number } = {}) {
  openApiRegistry.registerPath({
    method,
    path: `${API}${path}`.replace(/:(\w+)/g, "{$1}"),
    summary,
    tags: ["audit"],
    request: { ...(opts.body ? { body: jsonBody(opts.body) } : {}), ...(opts.query ? { query: opts.query } : {}) },
    responses: { [opts.status ?? 200]: jsonResponse(summary, anyJson) },
  });
}

doc("get", "/audit", "Search audit events (time range, actor, patient, action, outcome), newest first, cursor pagination", { query: searchQuery });
doc("get", "/audit/patients/:patientId/timeline", "Who accessed this patient's record, and when (oldest first)", { query: timelineQuery });
doc("get", "/audit/verify", "Verify the whole hash chain and the checkpoint signatures");
doc("get", "/audit/public-key", "The Ed25519 public key that signs checkpoints and evidence packs, and every key that still verifies older checkpoints");
doc("get", "/audit/checkpoints", "Signed checkpoints of the chain head");
doc("get", "/audit/exports", "Evidence packs requested over the API");
doc("post", "/audit/exports", "Start an evidence pack export (step-up); poll it, then download it", { body: exportRequest, status: 202 });
doc("get", "/audit/exports/:id", "An export's status and progress");
doc("get", "/audit/exports/:id/download", "The finished evidence pack as a tar archive");

/** Thin routes: parse, one service call, map the result (CONVENTIONS 2). */
export function auditRoutes(ctx: ApplianceContext): Router {
  const router = Router();
  const route = (spec: Parameters<typeof guardedRoute>[3], handler: Parameters<typeof guardedRoute>[4]) => guardedRoute(ctx, router, API, spec, handler);

  route({ method: "get", path: "/audit", action: "audit:read" }, async (req, res) => {
    res.json(await searchAuditEvents(ctx, currentActor(res), searchQuery.parse(req.query), auditContextFrom(req, res)));
  });
  route({ method: "get", path: "/audit/patients/:patientId/timeline", action: "audit:read" }, async (req, res) => {
    const { patientId } = patientParam.parse(req.params);
    res.json(await patientAccessTimeline(ctx, currentActor(res), patientId, timelineQuery.parse(req.query), auditContextFrom(req, res)));
  });
  route({ method: "get", path: "/audit/verify", action: "audit:verify" }, async (req, res) => {
    noQuery.parse(req.query);
    res.json(await verifyAuditChain(ctx));
  });
  route({ method: "get", path: "/audit/public-key", action: "audit:read" }, async (_req, res) => {
    res.json(await describeCheckpointKeys(ctx));
  });
  route({ method: "get", path: "/audit/checkpoints", action: "audit:read" }, async (_req, res) => {
    res.json({ checkpoints: (await listCheckpoints(ctx)).slice(-500) });
  });
  route({ method: "get", path: "/audit/exports", action: "audit:export" }, async (_req, res) => {
    res.json({ exports: await listExportJobs(ctx, currentActor(res)) });
  });
  route({ method: "post", path: "/audit/exports", action: "audit:export" }, async (req, res) => {
    const job = await startExportJob(ctx, currentActor(res), exportRequest.parse(req.body ?? {}), auditContextFrom(req, res));
    res.status(202).location(`${API}/audit/exports/${job.id}`).json(job);
  });
  route({ method: "get", path: "/audit/exports/:id", action: "audit:export" }, async (req, res) => {
    res.json(await getExportJob(ctx, currentActor(res), exportParam.parse(req.params).id));
  });
  route({ method: "get", path: "/audit/exports/:id/download", action: "audit:export" }, async (req, res) => {
    const { filename, stream, done } = await downloadExport(ctx, currentActor(res), exportParam.parse(req.params).id, auditContextFrom(req, res), res);
    res.status(200).type("application/x-tar").attachment(filename);
    await Promise.all([pipeline(stream, res), done]);
  });
  return router;
}
