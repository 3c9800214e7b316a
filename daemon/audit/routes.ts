import { pipeline } from "node:stream/promises";
import { z } from "zod";
import { API_BASE } from "../kernel/openapi.js";
import { defineRoute } from "../kernel/define-route.js";
import { auditContextFrom } from "./append.js";
import { listCheckpoints } from "./checkpoints.js";
import { downloadExport, getExportJob, listExportJobs, startExportJob } from "./pack-jobs.js";
import {
  auditNamesRequest,
  auditNamesResponse,
  auditSearchResponse,
  checkpointListResponse,
  exportJob,
  exportListResponse,
  exportParams,
  exportRequest,
  publicKeyResponse,
  searchQuery,
  timelineParams,
  timelineQuery,
  timelineResponse,
  verifyReport,
} from "./schema.js";
import { resolveAuditNames } from "./names.js";
import { patientAccessTimeline, searchAuditEvents } from "./search.js";
import { describeCheckpointKeys } from "./signing-key.js";
import { verifyAuditChain } from "./verify.js";

const tag = "audit";

/** The audit trail: search, a patient's access timeline, verification, signing keys, checkpoints, evidence packs. */
export const auditRoutes = [
  defineRoute(
    {
      method: "get",
      path: "/audit",
      action: "audit:read",
      tag,
      summary: "Search audit events (time range, actor, patient, action, outcome), newest first, cursor pagination",
      query: searchQuery,
      response: auditSearchResponse,
    },
    ({ ctx, actor, query, req, res }) => searchAuditEvents(ctx, actor, query, auditContextFrom(req, res)),
  ),
  defineRoute(
    {
      method: "post",
      path: "/audit/names",
      action: "audit:read",
      tag,
      summary: "Names for the ids on a page of events: accounts and tenants the viewer may see; patients only for roles that may read their names (each an audited PHI read)",
      body: auditNamesRequest,
      response: auditNamesResponse,
    },
    ({ ctx, actor, body, meta }) => resolveAuditNames(ctx, actor, body, meta),
  ),
  defineRoute(
    {
      method: "get",
      path: "/audit/patients/:patientId/timeline",
      action: "audit:read",
      tag,
      summary: "Who accessed this patient's record, and when (oldest first)",
      params: timelineParams,
      query: timelineQuery,
      response: timelineResponse,
    },
    ({ ctx, actor, params, query, req, res }) => patientAccessTimeline(ctx, actor, params.patientId, query, auditContextFrom(req, res)),
  ),
  defineRoute(
    {
      method: "get",
      path: "/audit/verify",
      action: "audit:verify",
      tag,
      summary: "Verify the whole hash chain and the checkpoint signatures",
      query: z.object({}).strict(),
      response: verifyReport,
    },
    ({ ctx }) => verifyAuditChain(ctx),
  ),
  defineRoute(
    {
      method: "get",
      path: "/audit/public-key",
      action: "audit:read",
      tag,
      summary: "The Ed25519 public key that signs checkpoints and evidence packs, and every key that still verifies older checkpoints",
      response: publicKeyResponse,
    },
    ({ ctx }) => describeCheckpointKeys(ctx),
  ),
  defineRoute(
    { method: "get", path: "/audit/checkpoints", action: "audit:read", tag, summary: "Signed checkpoints of the chain head (the newest 500)", response: checkpointListResponse },
    async ({ ctx }) => ({ checkpoints: (await listCheckpoints(ctx)).slice(-500) }),
  ),
  defineRoute(
    { method: "get", path: "/audit/exports", action: "audit:export", tag, summary: "Evidence packs requested over the API", response: exportListResponse },
    async ({ ctx, actor }) => ({ exports: await listExportJobs(ctx, actor) }),
  ),
  defineRoute(
    {
      method: "post",
      path: "/audit/exports",
      action: "audit:export",
      tag,
      summary: "Start an evidence pack export (step-up); poll it, then download it",
      body: exportRequest,
      response: exportJob,
      status: 202,
    },
    async ({ ctx, actor, body, req, res }) => {
      const job = await startExportJob(ctx, actor, body, auditContextFrom(req, res));
      res.location(`${API_BASE}/audit/exports/${job.id}`);
      return job;
    },
  ),
  defineRoute(
    { method: "get", path: "/audit/exports/:id", action: "audit:export", tag, summary: "An export's status and progress", params: exportParams, response: exportJob },
    ({ ctx, actor, params }) => getExportJob(ctx, actor, params.id),
  ),
  defineRoute(
    {
      method: "get",
      path: "/audit/exports/:id/download",
      action: "audit:export",
      tag,
      summary: "The finished evidence pack as a tar archive",
      params: exportParams,
      response: { mediaType: "application/x-tar", description: "The evidence pack (verifiable offline with standard tools)" },
      problems: { 409: "The export is not done yet, or this replica does not hold its files" },
    },
    async ({ ctx, actor, params, req, res }) => {
      const { filename, stream, done } = await downloadExport(ctx, actor, params.id, auditContextFrom(req, res), res);
      res.status(200).type("application/x-tar").attachment(filename);
      await Promise.all([pipeline(stream, res), done]);
    },
  ),
];
