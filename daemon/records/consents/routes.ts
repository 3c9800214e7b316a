import type { Router } from "express";
import { currentActor } from "../../kernel/actor.js";
import { requestMeta } from "../../kernel/request-meta.js";
import type { ApplianceContext } from "../../context.js";
import { patientItemParams, patientParams } from "../http.js";
import { doc, mountOn } from "../route-kit.js";
import { consentGrant, consentListQuery, consentPage, consentRevoke, consentView, inForceAnswer, inForceQuery } from "./schema.js";
import { consentInForce, getConsent, grantConsent, listConsents, revokeConsent } from "./service.js";

doc("get", "/patients/:id/consents", {
  summary: "The patient's consent history: grants (oldest first) with any revocation",
  params: patientParams,
  query: consentListQuery,
  ok: { status: 200, description: "Consents and the next page's cursor", schema: consentPage },
});
doc("post", "/patients/:id/consents", { summary: "Record a consent grant with its captured signature or attestation", params: patientParams, body: consentGrant, ok: { status: 201, description: "The consent", schema: consentView } });
doc("get", "/patients/:id/consents/in-force", {
  summary: "Is consent X in force for this patient now (or at a given moment)?",
  params: patientParams,
  query: inForceQuery,
  ok: { status: 200, description: "The answer and the grant behind it", schema: inForceAnswer },
});
doc("get", "/patients/:id/consents/:itemId", { summary: "One consent with its evidence and revocation", params: patientItemParams, ok: { status: 200, description: "The consent", schema: consentView } });
doc("post", "/patients/:id/consents/:itemId/revocation", {
  summary: "Revoke a consent: a new event with its own evidence; the grant stays as recorded",
  params: patientItemParams,
  body: consentRevoke,
  ok: { status: 201, description: "The consent with its revocation", schema: consentView },
});

export function mountConsentRoutes(ctx: ApplianceContext, router: Router): void {
  const route = mountOn(ctx, router);
  route({ method: "get", path: "/patients/:id/consents", action: "consent:list" }, async (req, res) => {
    const { id } = patientParams.parse(req.params);
    res.json(await listConsents(ctx, currentActor(res), id, consentListQuery.parse(req.query), requestMeta(req, res)));
  });
  route({ method: "post", path: "/patients/:id/consents", action: "consent:create" }, async (req, res) => {
    const { id } = patientParams.parse(req.params);
    const consent = await grantConsent(ctx, currentActor(res), id, consentGrant.parse(req.body), requestMeta(req, res));
    res.status(201).location(`/api/v1/patients/${id}/consents/${consent.id}`).json(consent);
  });
  // Before /:itemId, which would otherwise take "in-force" for an id.
  route({ method: "get", path: "/patients/:id/consents/in-force", action: "consent:read" }, async (req, res) => {
    const { id } = patientParams.parse(req.params);
    res.json(await consentInForce(ctx, currentActor(res), id, inForceQuery.parse(req.query), requestMeta(req, res)));
  });
  route({ method: "get", path: "/patients/:id/consents/:itemId", action: "consent:read" }, async (req, res) => {
    const p = patientItemParams.parse(req.params);
    res.json(await getConsent(ctx, currentActor(res), p.id, p.itemId, requestMeta(req, res)));
  });
  route({ method: "post", path: "/patients/:id/consents/:itemId/revocation", action: "consent:update" }, async (req, res) => {
    const p = patientItemParams.parse(req.params);
    res.status(201).json(await revokeConsent(ctx, currentActor(res), p.id, p.itemId, consentRevoke.parse(req.body), requestMeta(req, res)));
  });
}
