import express, { type Request, type RequestHandler, type Response } from "express";
import { z } from "zod";
import { appliancePublicUrl } from "../config/public-url.js";
import type { ApplianceContext } from "../context.js";
import { isUniqueViolation } from "../db/sql.js";
import { defineRoute, type Method } from "../kernel/define-route.js";
import { AppError } from "../kernel/errors.js";
import { requestMeta, type RequestMeta } from "../kernel/request-meta.js";
import { resourceTypes, schemas, serviceProviderConfig } from "./discovery.js";
import { createScimGroup, deleteScimGroup, getScimGroup, listScimGroups, patchScimGroup, replaceScimGroup } from "./groups.js";
import { invalid, listResponse, pageOf, parseEqFilter, patchOperationsOf, SCIM_MEDIA_TYPE, ScimError } from "./protocol.js";
import { createdScimToken, createScimTokenRequest, idParams, scimTokenList, scimTokenView } from "./schema.js";
import { createScimToken, listScimTokens, resolveScimToken, revokeScimToken, type ScimClient } from "./tokens.js";
import { createScimUser, deleteScimUser, getScimUser, listScimUsers, patchScimUser, replaceScimUser } from "./users.js";

const tag = "scim";
export const SCIM_BASE_PATH = "/scim/v2";

/** The SCIM base URL at the appliance's public address (the IdP is given exactly this); never the request's Host. */
function baseUrlOf(ctx: ApplianceContext): string {
  return `${appliancePublicUrl(ctx)}${SCIM_BASE_PATH}`;
}

// ---- the admin side: SCIM tokens (/api/v1/scim-tokens) ------------------------------------------

/** A tenant admin gives the IdP's provisioning client its bearer token. */
export const scimTokenRoutes = [
  defineRoute(
    { method: "get", path: "/scim-tokens", action: "scim_token:list", tag, summary: "The tenant's SCIM provisioning tokens and the SCIM base URL", response: scimTokenList },
    async ({ ctx, actor }) => ({ baseUrl: baseUrlOf(ctx), tokens: await listScimTokens(ctx, actor) }),
  ),
  defineRoute(
    {
      method: "post",
      path: "/scim-tokens",
      action: "scim_token:create",
      tag,
      summary: "Create a SCIM provisioning token (shown once; needs step-up)",
      body: createScimTokenRequest,
      response: createdScimToken,
      status: 201,
    },
    async ({ ctx, actor, body, meta }) => ({ ...(await createScimToken(ctx, actor, body, meta)), baseUrl: baseUrlOf(ctx) }),
  ),
  defineRoute(
    {
      method: "delete",
      path: "/scim-tokens/:id",
      action: "scim_token:revoke",
      tag,
      summary: "Revoke a SCIM token (refused on its next request)",
      params: idParams,
      response: scimTokenView,
    },
    ({ ctx, actor, params, meta }) => revokeScimToken(ctx, actor, params.id, meta),
  ),
];

// ---- the protocol: /scim/v2 (RFC 7644) ------------------------------------------------------------

type Json = Record<string, unknown>;
type ScimCall = {
  ctx: ApplianceContext;
  client: ScimClient;
  req: Request;
  res: Response;
  id: string;
  body: Json;
  query: Record<string, unknown>;
  baseUrl: string;
  meta: RequestMeta;
};

/** Parses JSON sent as application/scim+json (or application/json); a parse failure is answered in SCIM's error format. */
const scimBody = (ctx: ApplianceContext): RequestHandler[] => {
  const parse = express.json({ type: [SCIM_MEDIA_TYPE, "application/json"], limit: ctx.config.server.bodyLimit, strict: true });
  return [
    (req, res, next) =>
      parse(req, res, (err?: unknown) => {
        if (err) res.locals.scimBodyError = err;
        next();
      }),
  ];
};

function scimErrorOf(err: unknown): ScimError | undefined {
  if (err instanceof ScimError) return err;
  if (isUniqueViolation(err)) return new ScimError(409, "the value is taken", "uniqueness");
  if (err instanceof AppError && err.status < 500) return new ScimError(err.status, err.detail, err.status === 400 ? "invalidValue" : undefined);
  if (err instanceof AppError) return new ScimError(err.status, err.detail);
  return undefined;
}

function sendScim(res: Response, status: number, body: unknown) {
  res.status(status).setHeader("Cache-Control", "no-store");
  res.type(SCIM_MEDIA_TYPE).send(JSON.stringify(body));
}

const scimResponse = { mediaType: SCIM_MEDIA_TYPE, description: "The SCIM resource or message; errors use SCIM's Error schema (urn:ietf:params:scim:api:messages:2.0:Error)" };
const scimRequest = { mediaType: SCIM_MEDIA_TYPE, description: "A SCIM resource or PatchOp message" };
const idParam = z.object({ /** The resource's id. */ id: z.string().max(200) }).strict();

/**
 * One SCIM route: authenticated by the tenant's SCIM bearer token (not a session or API token),
 * answered as application/scim+json, every failure in SCIM's error schema.
 */
function scimRoute(
  spec: { method: Method; path: string; summary: string; status?: 200 | 201 | 204; body?: boolean; params?: boolean },
  handler: (call: ScimCall) => Promise<unknown>,
) {
  return defineRoute(
    {
      method: spec.method,
      path: `${SCIM_BASE_PATH}${spec.path}`,
      root: true,
      action: "public",
      tag,
      summary: spec.summary,
      description: "Authenticated by a tenant's SCIM bearer token (`Authorization: Bearer wkscim_…`); see docs/scim.md.",
      ...(spec.params ? { params: idParam } : {}),
      ...(spec.body ? { body: scimRequest } : {}),
      ...(spec.status === 204 ? {} : { response: scimResponse }),
      status: spec.status ?? 200,
      use: scimBody,
    },
    async ({ ctx, req, res }) => {
      try {
        const m = /^Bearer\s+(\S+)$/i.exec(req.get("authorization") ?? "");
        const client = m ? await resolveScimToken(ctx, m[1]!) : null;
        if (!client) {
          res.setHeader("WWW-Authenticate", 'Bearer realm="wardkeep-scim"');
          throw new ScimError(401, "a valid SCIM bearer token is required");
        }
        if (res.locals.scimBodyError) throw invalid("the body is not valid JSON", "invalidSyntax");
        const body = (req.body && typeof req.body === "object" && !Buffer.isBuffer(req.body) ? req.body : {}) as Json;
        if (spec.body && (Array.isArray(req.body) || Object.keys(body).length === 0)) throw invalid("a JSON object body is required", "invalidSyntax");
        const baseUrl = baseUrlOf(ctx);
        const result = await handler({
          ctx,
          client,
          req,
          res,
          id: String(req.params.id ?? ""),
          body,
          query: req.query as Record<string, unknown>,
          baseUrl,
          meta: requestMeta(req, res),
        });
        const status = spec.status ?? 200;
        if (status === 204) {
          res.status(204).end();
          return;
        }
        const location = (result as { meta?: { location?: string } }).meta?.location;
        if (status === 201 && location) res.setHeader("Location", location);
        sendScim(res, status, result);
      } catch (err) {
        const scim = scimErrorOf(err);
        if (!scim) {
          ctx.log.error("SCIM request failed", { requestId: res.locals.requestId, error: err });
          sendScim(res, 500, new ScimError(500, "an unexpected error occurred; quote the request id to your administrator").body());
          return;
        }
        sendScim(res, scim.status, scim.body());
      }
    },
  );
}

const USER_FILTERS = ["userName", "externalId"] as const;
const GROUP_FILTERS = ["displayName", "externalId"] as const;
/** `excludedAttributes=members` (Entra ID asks for groups without their member lists). */
const withMembers = (q: Record<string, unknown>) =>
  !String(q.excludedAttributes ?? "")
    .split(",")
    .some((a) => a.trim().toLowerCase() === "members");

export const scimProtocolRoutes = [
  scimRoute({ method: "get", path: "/ServiceProviderConfig", summary: "SCIM: what this server supports" }, async ({ baseUrl }) => serviceProviderConfig(baseUrl)),
  scimRoute({ method: "get", path: "/ResourceTypes", summary: "SCIM: the resource types (User, Group)" }, async ({ baseUrl }) => {
    const types = resourceTypes(baseUrl);
    return listResponse(types, types.length, 1);
  }),
  scimRoute({ method: "get", path: "/Schemas", summary: "SCIM: the attributes this server keeps" }, async ({ baseUrl }) => {
    const list = schemas(baseUrl);
    return listResponse(list, list.length, 1);
  }),

  scimRoute({ method: "get", path: "/Users", summary: "SCIM: list or find users (filter userName eq or externalId eq)" }, ({ ctx, client, query, baseUrl }) =>
    listScimUsers(ctx, client, parseEqFilter(query.filter, USER_FILTERS), pageOf(query), baseUrl),
  ),
  scimRoute({ method: "post", path: "/Users", summary: "SCIM: create a user", status: 201, body: true }, ({ ctx, client, body, baseUrl, meta }) =>
    createScimUser(ctx, client, body, baseUrl, meta),
  ),
  scimRoute({ method: "get", path: "/Users/:id", summary: "SCIM: one user", params: true }, ({ ctx, client, id, baseUrl }) => getScimUser(ctx, client, id, baseUrl)),
  scimRoute({ method: "put", path: "/Users/:id", summary: "SCIM: replace a user's attributes", params: true, body: true }, ({ ctx, client, id, body, baseUrl, meta }) =>
    replaceScimUser(ctx, client, id, body, baseUrl, meta),
  ),
  scimRoute(
    { method: "patch", path: "/Users/:id", summary: "SCIM: change a user (active: false deprovisions at once)", params: true, body: true },
    ({ ctx, client, id, body, baseUrl, meta }) => patchScimUser(ctx, client, id, patchOperationsOf(body), baseUrl, meta),
  ),
  scimRoute({ method: "delete", path: "/Users/:id", summary: "SCIM: deprovision and remove a user", status: 204, params: true }, ({ ctx, client, id, meta }) =>
    deleteScimUser(ctx, client, id, meta),
  ),

  scimRoute({ method: "get", path: "/Groups", summary: "SCIM: list or find groups (filter displayName eq or externalId eq)" }, ({ ctx, client, query, baseUrl }) =>
    listScimGroups(ctx, client, parseEqFilter(query.filter, GROUP_FILTERS), pageOf(query), withMembers(query), baseUrl),
  ),
  scimRoute({ method: "post", path: "/Groups", summary: "SCIM: create a group", status: 201, body: true }, ({ ctx, client, body, baseUrl, meta }) =>
    createScimGroup(ctx, client, body, baseUrl, meta),
  ),
  scimRoute({ method: "get", path: "/Groups/:id", summary: "SCIM: one group", params: true }, ({ ctx, client, id, query, baseUrl }) =>
    getScimGroup(ctx, client, id, withMembers(query), baseUrl),
  ),
  scimRoute({ method: "put", path: "/Groups/:id", summary: "SCIM: replace a group", params: true, body: true }, ({ ctx, client, id, body, baseUrl, meta }) =>
    replaceScimGroup(ctx, client, id, body, baseUrl, meta),
  ),
  scimRoute(
    { method: "patch", path: "/Groups/:id", summary: "SCIM: rename a group or add and remove members", params: true, body: true },
    ({ ctx, client, id, body, baseUrl, meta }) => patchScimGroup(ctx, client, id, patchOperationsOf(body), baseUrl, meta),
  ),
  scimRoute({ method: "delete", path: "/Groups/:id", summary: "SCIM: delete a group", status: 204, params: true }, ({ ctx, client, id, meta }) =>
    deleteScimGroup(ctx, client, id, meta),
  ),
];
