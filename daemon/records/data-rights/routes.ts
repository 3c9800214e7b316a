import type { Request, Response, Router } from "express";
import { z } from "zod";
import { currentActor } from "../../kernel/actor.js";
import { requestMeta } from "../../kernel/request-meta.js";
import type { ApplianceContext } from "../../context.js";
import { itemParams, patientItemParams, patientParams } from "../http.js";
import { doc, mountOn } from "../route-kit.js";
import { cancelDeletion, deletionListQuery, deletionRequestView, listDeletionRequests, requestPatientDeletion, requestTenantDeletion } from "./deletion.js";
import { exportQuery, streamExport } from "./export.js";
import { legalHoldPlace, legalHoldQuery, legalHoldView, listLegalHolds, placeLegalHold, releaseLegalHold } from "./legal-holds.js";

const emptyBody = z.object({}).strict();

doc("delete", "/patients/:id", {
  summary: "Request erasure of a patient (owner, step-up): purged and crypto-shredded after the grace period unless cancelled; refused under legal hold",
  params: patientParams,
  ok: { status: 202, description: "The pending deletion request", schema: deletionRequestView },
});
doc("post", "/tenant/deletion", {
  summary: "Request erasure of the whole tenant (owner, step-up); refused while any legal hold stands",
  body: emptyBody,
  ok: { status: 202, description: "The pending deletion request", schema: deletionRequestView },
});
doc("get", "/deletion-requests", { summary: "Deletion requests of the tenant", query: deletionListQuery, ok: { status: 200, description: "Requests, newest first", schema: z.object({ items: z.array(deletionRequestView) }) } });
doc("post", "/deletion-requests/:itemId/cancel", { summary: "Cancel a pending deletion (owner)", params: itemParams, body: emptyBody, ok: { status: 200, description: "The cancelled request", schema: deletionRequestView } });
doc("get", "/legal-holds", { summary: "Legal holds of the tenant", query: legalHoldQuery, ok: { status: 200, description: "Holds, newest first", schema: z.object({ items: z.array(legalHoldView) }) } });
doc("post", "/patients/:id/legal-holds", { summary: "Place a legal hold: blocks deletion and purge (audited)", params: patientParams, body: legalHoldPlace, ok: { status: 201, description: "The hold", schema: legalHoldView } });
doc("post", "/patients/:id/legal-holds/:itemId/release", { summary: "Release a legal hold (step-up; audited)", params: patientItemParams, body: emptyBody, ok: { status: 200, description: "The released hold", schema: legalHoldView } });
doc("get", "/exports/patients/:id", {
  summary: "Export one patient's records (owner/admin, step-up): JSON with everything, or CSV one record type at a time; streamed and audited",
  params: patientParams,
  query: exportQuery,
  ok: { status: 200, description: "The export, as a download", mediaType: "application/json" },
});
doc("get", "/exports/tenant", {
  summary: "Export the whole tenant's records (owner/admin, step-up), streamed in batches; every patient read is audited",
  query: exportQuery,
  ok: { status: 200, description: "The export, as a download", mediaType: "application/json" },
});

async function sendExport(ctx: ApplianceContext, req: Request, res: Response, scope: { kind: "patient"; patientId: string } | { kind: "tenant" }): Promise<void> {
  const q = exportQuery.parse(req.query);
  let started = false;
  try {
    await streamExport(
      ctx,
      currentActor(res),
      scope,
      q,
      {
        out: res,
        begin(contentType, filename) {
          started = true;
          res.status(200).setHeader("Content-Type", contentType);
          res.setHeader("Content-Disposition", `attachment; filename="${filename}"`);
        },
      },
      requestMeta(req, res),
    );
  } catch (err) {
    if (!started) throw err;
    ctx.log.error("export failed mid-stream", { requestId: res.locals.requestId, error: (err as Error).name });
    res.destroy();
  }
}

export function mountDataRightsRoutes(ctx: ApplianceContext, router: Router): void {
  const route = mountOn(ctx, router);
  route({ method: "delete", path: "/patients/:id", action: "patient:delete" }, async (req, res) => {
    res.status(202).json(await requestPatientDeletion(ctx, currentActor(res), patientParams.parse(req.params).id, requestMeta(req, res)));
  });
  route({ method: "post", path: "/tenant/deletion", action: "deletion:request_tenant" }, async (req, res) => {
    emptyBody.parse(req.body ?? {});
    res.status(202).json(await requestTenantDeletion(ctx, currentActor(res), requestMeta(req, res)));
  });
  route({ method: "get", path: "/deletion-requests", action: "deletion:list" }, async (req, res) => {
    res.json(await listDeletionRequests(ctx, currentActor(res), deletionListQuery.parse(req.query)));
  });
  route({ method: "post", path: "/deletion-requests/:itemId/cancel", action: "deletion:cancel" }, async (req, res) => {
    const { itemId } = itemParams.parse(req.params);
    emptyBody.parse(req.body ?? {});
    res.json(await cancelDeletion(ctx, currentActor(res), itemId, requestMeta(req, res)));
  });
  route({ method: "get", path: "/legal-holds", action: "legal_hold:list" }, async (req, res) => {
    res.json(await listLegalHolds(ctx, currentActor(res), legalHoldQuery.parse(req.query), requestMeta(req, res)));
  });
  route({ method: "post", path: "/patients/:id/legal-holds", action: "legal_hold:place" }, async (req, res) => {
    const { id } = patientParams.parse(req.params);
    res.status(201).json(await placeLegalHold(ctx, currentActor(res), id, legalHoldPlace.parse(req.body), requestMeta(req, res)));
  });
  route({ method: "post", path: "/patients/:id/legal-holds/:itemId/release", action: "legal_hold:release" }, async (req, res) => {
    const p = patientItemParams.parse(req.params);
    emptyBody.parse(req.body ?? {});
    res.json(await releaseLegalHold(ctx, currentActor(res), p.id, p.itemId, requestMeta(req, res)));
  });
  route({ method: "get", path: "/exports/patients/:id", action: "data_export:patient" }, (req, res) => sendExport(ctx, req, res, { kind: "patient", patientId: patientParams.parse(req.params).id }));
  route({ method: "get", path: "/exports/tenant", action: "data_export:tenant" }, (req, res) => sendExport(ctx, req, res, { kind: "tenant" }));
}
