import { defineRoute } from "../../kernel/define-route.js";
import { patientItemParams, patientParams } from "../http.js";
import { location, PHI_READ, PHI_WRITE } from "../route-kit.js";
import { consentGrant, consentListQuery, consentPage, consentRevoke, consentView, inForceAnswer, inForceQuery } from "./schema.js";
import { consentInForce, getConsent, grantConsent, listConsents, revokeConsent } from "./service.js";

/** Consent records: grants with their captured evidence, revocations as new events, "in force?" answers. */
export const consentRoutes = [
  defineRoute(
    {
      ...PHI_READ,
      method: "get",
      path: "/patients/:id/consents",
      action: "consent:list",
      summary: "The patient's consent history: grants (oldest first) with any revocation",
      params: patientParams,
      query: consentListQuery,
      response: consentPage,
      responseDescription: "Consents and the next page's cursor",
    },
    ({ ctx, actor, params, query, meta }) => listConsents(ctx, actor, params.id, query, meta),
  ),
  defineRoute(
    {
      ...PHI_WRITE,
      method: "post",
      path: "/patients/:id/consents",
      action: "consent:create",
      summary: "Record a consent grant with its captured signature or attestation",
      params: patientParams,
      body: consentGrant,
      response: consentView,
      status: 201,
    },
    async ({ ctx, actor, params, body, res, meta }) => {
      const consent = await grantConsent(ctx, actor, params.id, body, meta);
      res.location(location(`/patients/${params.id}/consents/${consent.id}`));
      return consent;
    },
  ),
  // Before /:itemId, which would otherwise take "in-force" for an id.
  defineRoute(
    {
      ...PHI_READ,
      method: "get",
      path: "/patients/:id/consents/in-force",
      action: "consent:read",
      summary: "Is consent X in force for this patient now (or at a given moment)?",
      params: patientParams,
      query: inForceQuery,
      response: inForceAnswer,
      responseDescription: "The answer and the grant behind it",
    },
    ({ ctx, actor, params, query, meta }) => consentInForce(ctx, actor, params.id, query, meta),
  ),
  defineRoute(
    {
      ...PHI_READ,
      method: "get",
      path: "/patients/:id/consents/:itemId",
      action: "consent:read",
      summary: "One consent with its evidence and revocation",
      params: patientItemParams,
      response: consentView,
    },
    ({ ctx, actor, params, meta }) => getConsent(ctx, actor, params.id, params.itemId, meta),
  ),
  defineRoute(
    {
      ...PHI_WRITE,
      method: "post",
      path: "/patients/:id/consents/:itemId/revocation",
      action: "consent:update",
      summary: "Revoke a consent: a new event with its own evidence; the grant stays as recorded",
      params: patientItemParams,
      body: consentRevoke,
      response: consentView,
      status: 201,
      responseDescription: "The consent with its revocation",
    },
    ({ ctx, actor, params, body, meta }) => revokeConsent(ctx, actor, params.id, params.itemId, body, meta),
  ),
];
