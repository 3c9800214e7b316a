import fs from "node:fs";
import { fileURLToPath } from "node:url";
import type { Request, Response } from "express";
import { z } from "zod";
import { appendAuditEvent } from "../audit/append.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { currentActor } from "../kernel/actor.js";
import { defineRoute } from "../kernel/define-route.js";
import { requestMeta } from "../kernel/request-meta.js";
import { policyInputSchema, policyView, readPolicyRow, writePolicy } from "./policy.js";
import {
  backupListResponse,
  backupPolicyView,
  drillParams,
  drillRecord,
  drillRequest,
  restoreOutcome,
  restoreRequest,
  runStartedResponse,
  snapshotParams,
  snapshotRecord,
  targetParams,
  pitrDrillRecord,
  pitrStatusView,
  targetTestRequest,
  targetTestResult,
  verifyRequest,
  verifyResult,
  wormCheck,
} from "./schema.js";
import {
  getDrill,
  getSnapshotRecord,
  listDrills,
  listSnapshotRecords,
  openAlerts,
  restoreSnapshotById,
  settleAlertsForPolicy,
  startDrill,
  startSnapshot,
  verifySnapshotById,
  wormSelfTest,
  type AuditMeta,
} from "./service.js";
import { testTargetConnection } from "./target-test.js";
import { pitrStatus } from "./pitr.js";
import { listPitrDrills } from "./pitr-drill.js";
import { NotFound } from "../kernel/errors.js";
import { applianceName, restoreInPlace } from "./restore-in-place.js";

// Sources run from daemon/backups, the build from dist/daemon/backups; the image copies the script beside dist/.
const recoveryScriptCandidates = ["../../backup/recover-standalone.mjs", "../../../backup/recover-standalone.mjs"].map((p) => fileURLToPath(new URL(p, import.meta.url)));

function metaOf(req: Request, res: Response): AuditMeta {
  const actor = currentActor(res);
  return { actor: { userId: actor.userId, role: actor.role, impersonatorId: actor.impersonatorId ?? null }, ...requestMeta(req, res) };
}

/** Runs in the background after a 202: failures are recorded on the run's row, the alert and the log. */
function detach(ctx: ApplianceContext, what: string, done: Promise<unknown>) {
  done.catch((err: unknown) => ctx.log.error(`backup: ${what} failed: ${(err as Error).message}`));
}

const tag = "backups";

/** Snapshots, the backup policy, WORM self-tests, verify, restore and recovery drills (appliance operators). */
export const backupRoutes = [
  defineRoute(
    {
      method: "get",
      path: "/backups",
      action: "backup:read",
      tag,
      summary: "Snapshots this appliance recorded (newest first) and open backup alerts",
      response: backupListResponse,
    },
    async ({ ctx }) => ({ snapshots: await listSnapshotRecords(ctx), alerts: await openAlerts(ctx), applianceName: applianceName(ctx) }),
  ),
  defineRoute(
    {
      method: "post",
      path: "/backups",
      action: "backup:run",
      tag,
      summary: "Take a snapshot now; answers at once with its id (poll GET /backups/{id})",
      response: runStartedResponse,
      status: 202,
      problems: { 409: "A snapshot is already running, or no target is configured", 503: "Sealed" },
    },
    async ({ ctx, req, res }) => {
      const { id, done } = await startSnapshot(ctx, { trigger: "manual", meta: metaOf(req, res) });
      detach(ctx, `snapshot ${id}`, done);
      return { id, status: "running" as const };
    },
  ),
  defineRoute(
    { method: "get", path: "/backups/policy", action: "backup:read", tag, summary: "Schedules, targets (without secrets), retention and alert limits", response: backupPolicyView },
    ({ ctx }) => inScope(ctx.db.app, { kind: "appliance" }, async (t) => policyView(ctx, await readPolicyRow(ctx, t))),
  ),
  defineRoute(
    {
      method: "put",
      path: "/backups/policy",
      action: "backup:configure",
      tag,
      summary: "Change the backup policy (fields omitted stay as they are)",
      body: policyInputSchema,
      response: backupPolicyView,
    },
    ({ ctx, body, req, res }) => {
      const meta = metaOf(req, res);
      return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
        const p = await writePolicy(ctx, t, body, meta.actor.userId);
        await settleAlertsForPolicy(ctx, t, p);
        await appendAuditEvent(ctx, t, {
          tenantId: null,
          actor: meta.actor,
          action: "backup.policy.update",
          resourceType: "backup_policy",
          outcome: "success",
          ...requestMeta(req, res),
        });
        return p;
      });
    },
  ),
  defineRoute(
    {
      method: "post",
      path: "/backups/targets/:name/worm-test",
      action: "backup:configure",
      tag,
      summary: "WORM self-test: write a retained object and try to delete it; only a refusal passes",
      params: targetParams,
      response: wormCheck,
    },
    ({ ctx, params, req, res }) => wormSelfTest(ctx, params.name, metaOf(req, res)),
  ),
  defineRoute(
    {
      method: "post",
      path: "/backups/targets/test",
      action: "backup:configure",
      tag,
      summary: "Test a target's connection before saving it: list, write, read back and delete a probe object",
      body: targetTestRequest,
      response: targetTestResult,
    },
    ({ ctx, body, req, res }) => testTargetConnection(ctx, body, metaOf(req, res)),
  ),
  defineRoute(
    {
      method: "get",
      path: "/backups/pitr",
      action: "backup:read",
      tag,
      summary: "Point-in-time recovery: the newest archived WAL on each target and its age, the spool, PostgreSQL's archiver",
      response: pitrStatusView,
    },
    ({ ctx }) => pitrStatus(ctx),
  ),
  defineRoute(
    {
      method: "get",
      path: "/backups/pitr/drills",
      action: "drill:read",
      tag,
      summary: "PITR drills (newest 50 first): the time chosen, the recovery point achieved, the RTO by phase, each check and the error",
      response: z.array(pitrDrillRecord),
    },
    ({ ctx }) => listPitrDrills(ctx),
  ),
  defineRoute(
    {
      method: "get",
      path: "/backups/recovery-script",
      action: "backup:read",
      tag,
      summary: "The standalone recovery script (Node.js only, no Wardkeep): decrypts a snapshot with the recovery kit",
      response: { mediaType: "text/javascript", description: "recover-standalone.mjs (backup/FORMAT.md)" },
      problems: { 404: "This installation does not ship the script" },
    },
    ({ res }) => {
      const file = recoveryScriptCandidates.find((f) => fs.existsSync(f));
      if (!file) throw new NotFound("this installation does not ship backup/recover-standalone.mjs");
      res.status(200).type("text/javascript").attachment("wardkeep-recover-standalone.mjs").send(fs.readFileSync(file));
    },
  ),
  defineRoute(
    {
      method: "get",
      path: "/backups/:id",
      action: "backup:read",
      tag,
      summary: "One snapshot: status, targets, sizes, phases, audit head",
      params: snapshotParams,
      response: snapshotRecord,
    },
    ({ ctx, params }) => getSnapshotRecord(ctx, params.id),
  ),
  defineRoute(
    {
      method: "post",
      path: "/backups/:id/verify",
      action: "backup:run",
      tag,
      summary: "Download and check every digest, tag and row count without restoring",
      params: snapshotParams,
      body: verifyRequest,
      response: verifyResult,
      problems: { 404: "Not on any target", 422: "Integrity or key failure" },
    },
    ({ ctx, params, body, req, res }) => verifySnapshotById(ctx, params.id, { target: body.target, meta: metaOf(req, res) }),
  ),
  defineRoute(
    {
      method: "post",
      path: "/backups/:id/restore",
      action: "backup:restore",
      tag,
      summary: "Restore into an empty database, a new scratch database, or in place of the live one (needs step-up MFA; in place: the appliance's name typed as confirm)",
      params: snapshotParams,
      body: restoreRequest,
      response: restoreOutcome,
      problems: {
        400: "Wrong confirmation",
        409: "Database not empty, schema mismatch, or the safety snapshot failed",
        422: "Integrity or key failure",
        503: "In maintenance (another in-place restore)",
      },
    },
    ({ ctx, params, body, req, res }) =>
      body.inPlace
        ? restoreInPlace(ctx, params.id, { confirm: body.confirm ?? "", target: body.target, meta: metaOf(req, res) })
        : restoreSnapshotById(ctx, params.id, { intoUrl: body.intoUrl, scratch: body.scratch, target: body.target, meta: metaOf(req, res) }),
  ),
  defineRoute(
    { method: "get", path: "/drills", action: "drill:read", tag, summary: "Recovery drills (newest first) with RTO, RPO, phases and checks", response: z.array(drillRecord) },
    ({ ctx }) => listDrills(ctx),
  ),
  defineRoute(
    {
      method: "post",
      path: "/drills",
      action: "drill:run",
      tag,
      summary: "Run a recovery drill now; answers at once with its id",
      body: drillRequest,
      response: runStartedResponse,
      status: 202,
      problems: { 409: "A drill is already running, or there is nothing to drill" },
    },
    async ({ ctx, body, req, res }) => {
      const { id, done } = await startDrill(ctx, { trigger: "manual", snapshotId: body.snapshotId, target: body.target, meta: metaOf(req, res) });
      detach(ctx, `drill ${id}`, done);
      return { id, status: "running" as const };
    },
  ),
  defineRoute({ method: "get", path: "/drills/:id", action: "drill:read", tag, summary: "One recovery drill", params: drillParams, response: drillRecord }, ({ ctx, params }) =>
    getDrill(ctx, params.id),
  ),
];
