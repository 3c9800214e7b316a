import type { Request, Response } from "express";
import { z } from "zod";
import { currentActor } from "../../kernel/actor.js";
import { requestMeta } from "../../kernel/request-meta.js";
import type { ApplianceContext } from "../../context.js";
import { itemParams, patientItemParams, patientParams } from "../http.js";
import { defineRoute } from "../../kernel/define-route.js";
import { PHI_READ, PHI_WRITE } from "../route-kit.js";
import { cancelDeletion, listDeletionRequests, requestPatientDeletion, requestTenantDeletion } from "./deletion.js";
import { streamExport } from "./export.js";
import { listLegalHolds, placeLegalHold, releaseLegalHold } from "./legal-holds.js";
import {
  deletionListQuery,
  deletionRequestList,
  deletionRequestView,
  emptyBody,
  exportQuery,
  legalHoldList,
  legalHoldPlace,
  legalHoldQuery,
  legalHoldRelease,
  legalHoldView,
} from "./schema.js";

async function sendExport(
  ctx: ApplianceContext,
  req: Request,
  res: Response,
  q: z.output<typeof exportQuery>,
  scope: { kind: "patient"; patientId: string } | { kind: "tenant" },
): Promise<void> {
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

const exportDownload = { mediaType: "application/json", description: "The export as a download: JSON with everything, or CSV (text/csv) of one record type" };

/** Data rights: erasure with a grace period, legal holds, and exports (owners and admins, step-up). */
export const dataRightsRoutes = [
  defineRoute(
    {
      ...PHI_WRITE,
      method: "delete",
      path: "/patients/:id",
      action: "patient:delete",
      summary: "Request erasure of a patient (owner, step-up): purged and crypto-shredded after the grace period unless cancelled; refused under legal hold",
      params: patientParams,
      response: deletionRequestView,
      status: 202,
      responseDescription: "The pending deletion request",
    },
    ({ ctx, actor, params, meta }) => requestPatientDeletion(ctx, actor, params.id, meta),
  ),
  defineRoute(
    {
      ...PHI_WRITE,
      method: "post",
      path: "/tenant/deletion",
      action: "deletion:request_tenant",
      summary: "Request erasure of the whole tenant (owner, step-up); refused while any legal hold stands",
      body: emptyBody,
      response: deletionRequestView,
      status: 202,
      responseDescription: "The pending deletion request",
    },
    ({ ctx, actor, meta }) => requestTenantDeletion(ctx, actor, meta),
  ),
  defineRoute(
    {
      ...PHI_READ,
      method: "get",
      path: "/deletion-requests",
      action: "deletion:list",
      summary: "Deletion requests of the tenant",
      query: deletionListQuery,
      response: deletionRequestList,
    },
    ({ ctx, actor, query }) => listDeletionRequests(ctx, actor, query),
  ),
  defineRoute(
    {
      ...PHI_WRITE,
      method: "post",
      path: "/deletion-requests/:itemId/cancel",
      action: "deletion:cancel",
      summary: "Cancel a pending deletion (owner)",
      params: itemParams,
      body: emptyBody,
      response: deletionRequestView,
      responseDescription: "The cancelled request",
    },
    ({ ctx, actor, params, meta }) => cancelDeletion(ctx, actor, params.itemId, meta),
  ),
  defineRoute(
    { ...PHI_READ, method: "get", path: "/legal-holds", action: "legal_hold:list", summary: "Legal holds of the tenant", query: legalHoldQuery, response: legalHoldList },
    ({ ctx, actor, query, meta }) => listLegalHolds(ctx, actor, query, meta),
  ),
  defineRoute(
    {
      ...PHI_WRITE,
      method: "post",
      path: "/patients/:id/legal-holds",
      action: "legal_hold:place",
      summary: "Place a legal hold: blocks deletion and purge (audited)",
      params: patientParams,
      body: legalHoldPlace,
      response: legalHoldView,
      status: 201,
    },
    ({ ctx, actor, params, body, meta }) => placeLegalHold(ctx, actor, params.id, body, meta),
  ),
  defineRoute(
    {
      ...PHI_WRITE,
      method: "post",
      path: "/patients/:id/legal-holds/:itemId/release",
      action: "legal_hold:release",
      summary: "Release a legal hold with a reason (step-up; audited)",
      params: patientItemParams,
      body: legalHoldRelease,
      response: legalHoldView,
      responseDescription: "The released hold",
    },
    ({ ctx, actor, params, body, meta }) => releaseLegalHold(ctx, actor, params.id, params.itemId, body, meta),
  ),
  defineRoute(
    {
      ...PHI_READ,
      method: "get",
      path: "/exports/patients/:id",
      action: "data_export:patient",
      summary: "Export one patient's records (owner/admin, step-up): JSON with everything, or CSV one record type at a time; streamed and audited",
      params: patientParams,
      query: exportQuery,
      response: exportDownload,
    },
    ({ ctx, params, query, req, res }) => sendExport(ctx, req, res, query, { kind: "patient", patientId: params.id }),
  ),
  defineRoute(
    {
      ...PHI_READ,
      method: "get",
      path: "/exports/tenant",
      action: "data_export:tenant",
      summary: "Export the whole tenant's records (owner/admin, step-up), streamed in batches; every patient read is audited",
      query: exportQuery,
      response: exportDownload,
    },
    ({ ctx, query, req, res }) => sendExport(ctx, req, res, query, { kind: "tenant" }),
  ),
];
