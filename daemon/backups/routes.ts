import { Router, type Request, type Response } from "express";
import { z } from "zod";
import { currentActor } from "../kernel/actor.js";
import { guardedRoute } from "../access/index.js";
import { requestMeta } from "../kernel/request-meta.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { jsonBody, jsonResponse, openApiRegistry, problemResponse } from "../http/openapi.js";
import { appendAuditEvent } from "../audit/append.js";
import { policyInputSchema, policyView, readPolicyRow, writePolicy } from "./policy.js";
import {
  getDrill,
  getSnapshotRecord,
  listDrills,
  listSnapshotRecords,
  openAlerts,
  restoreSnapshotById,
  startDrill,
  startSnapshot,
  verifySnapshotById,
  wormSelfTest,
  type AuditMeta,
} from "./service.js";

const API = "/api/v1";
const snapshotId = z.string().regex(/^\d{8}T\d{6}Z-[0-9a-f]{8}$/, "a snapshot id such as 20250101T120000Z-1a2b3c4d");
const idParam = z.object({ id: snapshotId }).strict();
const drillParam = z.object({ id: z.uuid() }).strict();
const targetParam = z.object({ name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,39}$/) }).strict();

export const verifyRequest = z
  .object({
    /** Target to read from; omitted: the first configured target that holds the snapshot. */
    target: z.string().max(40).optional(),
  })
  .strict();
export const restoreRequest = z
  .object({
    /** Owner connection (postgres://) to an EMPTY database; a non-empty one is refused. */
    intoUrl: z.string().regex(/^postgres(ql)?:\/\//, "a postgres:// URL").max(2000),
    /** Target to read from; omitted: the first that holds the snapshot. */
    target: z.string().max(40).optional(),
  })
  .strict();
export const drillRequest = z
  .object({
    /** Snapshot to drill; omitted: the latest complete one. */
    snapshotId: snapshotId.optional(),
    /** Target to read from; omitted: the first configured target. */
    target: z.string().max(40).optional(),
  })
  .strict();

const anyObject = z.object({}).passthrough();

function doc(method: "get" | "post" | "put", path: string, summary: string, extra: { body?: z.ZodType; response?: z.ZodType; status?: number; problems?: Record<number, string> } = {}) {
  openApiRegistry.registerPath({
    method,
    path: `${API}${path}`.replace(/:(\w+)/g, "{$1}"),
    summary,
    tags: ["backups"],
    ...(extra.body ? { request: { body: jsonBody(extra.body) } } : {}),
    responses: {
      [extra.status ?? 200]: jsonResponse(summary, extra.response ?? anyObject),
      ...Object.fromEntries(Object.entries(extra.problems ?? {}).map(([code, text]) => [code, problemResponse(text)])),
    },
  });
}

doc("get", "/backups", "Snapshots this appliance recorded (newest first) and open backup alerts", { response: z.object({ snapshots: z.array(anyObject), alerts: z.array(anyObject) }) });
doc("post", "/backups", "Take a snapshot now; answers at once with its id (poll GET /backups/{id})", {
  status: 202,
  response: z.object({ id: snapshotId, status: z.literal("running") }),
  problems: { 409: "A snapshot is already running, or no target is configured", 503: "Sealed" },
});
doc("get", "/backups/policy", "Schedules, targets (without secrets), retention and alert limits", { response: anyObject });
doc("put", "/backups/policy", "Change the backup policy (fields omitted stay as they are)", { body: policyInputSchema, response: anyObject, problems: { 400: "Invalid policy" } });
doc("post", "/backups/targets/:name/worm-test", "WORM self-test: write a retained object and try to delete it; only a refusal passes", { response: anyObject });
doc("get", "/backups/:id", "One snapshot: status, targets, sizes, phases, audit head", { response: anyObject, problems: { 404: "Unknown snapshot" } });
doc("post", "/backups/:id/verify", "Download and check every digest, tag and row count without restoring", {
  body: verifyRequest,
  response: anyObject,
  problems: { 404: "Not on any target", 422: "Integrity or key failure" },
});
doc("post", "/backups/:id/restore", "Restore into an empty database (needs step-up MFA)", {
  body: restoreRequest,
  response: anyObject,
  problems: { 403: "Step-up required", 409: "Database not empty or schema mismatch", 422: "Integrity or key failure" },
});
doc("get", "/drills", "Recovery drills (newest first) with RTO, RPO, phases and checks", { response: z.array(anyObject) });
doc("post", "/drills", "Run a recovery drill now; answers at once with its id", { body: drillRequest, status: 202, response: z.object({ id: z.uuid(), status: z.literal("running") }) });
doc("get", "/drills/:id", "One recovery drill", { response: anyObject, problems: { 404: "Unknown drill" } });

function metaOf(req: Request, res: Response): AuditMeta {
  const actor = currentActor(res);
  return { actor: { userId: actor.userId, role: actor.role, impersonatorId: actor.impersonatorId ?? null }, ...requestMeta(req, res) };
}

/** Runs in the background after a 202: failures are recorded on the run's row, the alert and the log. */
function detach(ctx: ApplianceContext, what: string, done: Promise<unknown>) {
  done.catch((err: unknown) => ctx.log.error(`backup: ${what} failed: ${(err as Error).message}`));
}

export function backupRoutes(ctx: ApplianceContext): Router {
  const router = Router();
  const route = (spec: Parameters<typeof guardedRoute>[3], handler: Parameters<typeof guardedRoute>[4]) => guardedRoute(ctx, router, API, spec, handler);

  route({ method: "get", path: "/backups", action: "backup:read" }, async (_req, res) => {
    res.json({ snapshots: await listSnapshotRecords(ctx), alerts: await openAlerts(ctx) });
  });
  route({ method: "post", path: "/backups", action: "backup:run" }, async (req, res) => {
    const { id, done } = await startSnapshot(ctx, { trigger: "manual", meta: metaOf(req, res) });
    detach(ctx, `snapshot ${id}`, done);
    res.status(202).json({ id, status: "running" });
  });
  route({ method: "get", path: "/backups/policy", action: "backup:read" }, async (_req, res) => {
    res.json(await inScope(ctx.db.app, { kind: "appliance" }, async (t) => policyView(ctx, await readPolicyRow(ctx, t))));
  });
  route({ method: "put", path: "/backups/policy", action: "backup:configure" }, async (req, res) => {
    const input = policyInputSchema.parse(req.body);
    const meta = metaOf(req, res);
    const policy = await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
      const p = await writePolicy(ctx, t, input, meta.actor.userId);
      await appendAuditEvent(ctx, t, { tenantId: null, actor: meta.actor, action: "backup.policy.update", resourceType: "backup_policy", outcome: "success", ...requestMeta(req, res) });
      return p;
    });
    res.json(policy);
  });
  route({ method: "post", path: "/backups/targets/:name/worm-test", action: "backup:configure" }, async (req, res) => {
    const { name } = targetParam.parse(req.params);
    res.json(await wormSelfTest(ctx, name, metaOf(req, res)));
  });
  route({ method: "get", path: "/backups/:id", action: "backup:read" }, async (req, res) => {
    res.json(await getSnapshotRecord(ctx, idParam.parse(req.params).id));
  });
  route({ method: "post", path: "/backups/:id/verify", action: "backup:run" }, async (req, res) => {
    const { id } = idParam.parse(req.params);
    const body = verifyRequest.parse(req.body ?? {});
    res.json(await verifySnapshotById(ctx, id, { target: body.target, meta: metaOf(req, res) }));
  });
  route({ method: "post", path: "/backups/:id/restore", action: "backup:restore" }, async (req, res) => {
    const { id } = idParam.parse(req.params);
    const body = restoreRequest.parse(req.body);
    res.json(await restoreSnapshotById(ctx, id, { intoUrl: body.intoUrl, target: body.target, meta: metaOf(req, res) }));
  });
  route({ method: "get", path: "/drills", action: "drill:read" }, async (_req, res) => {
    res.json(await listDrills(ctx));
  });
  route({ method: "post", path: "/drills", action: "drill:run" }, async (req, res) => {
    const body = drillRequest.parse(req.body ?? {});
    const { id, done } = await startDrill(ctx, { trigger: "manual", snapshotId: body.snapshotId, target: body.target, meta: metaOf(req, res) });
    detach(ctx, `drill ${id}`, done);
    res.status(202).json({ id, status: "running" });
  });
  route({ method: "get", path: "/drills/:id", action: "drill:read" }, async (req, res) => {
    res.json(await getDrill(ctx, drillParam.parse(req.params).id));
  });
  return router;
}
