import type { Request, Response, Router } from "express";
import type { z } from "zod";
import { guardedRoute, type GuardedRoute } from "../access/index.js";
import type { ApplianceContext } from "../context.js";
import { jsonBody, jsonResponse, openApiRegistry, problemResponse } from "../http/openapi.js";

export const API = "/api/v1";

export type Handler = (req: Request, res: Response) => Promise<void> | void;
/** Mounts one guarded route (policy check, audited denials, permission matrix) on the records router. */
export type Mount = (spec: GuardedRoute, handler: Handler) => void;

export function mountOn(ctx: ApplianceContext, router: Router): Mount {
  return (spec, handler) => guardedRoute(ctx, router, API, spec, handler);
}

type DocSpec = {
  summary: string;
  description?: string;
  params?: z.ZodObject;
  query?: z.ZodObject;
  body?: z.ZodType;
  /** Non-JSON request body (attachments): media type → description. */
  rawBody?: string;
  ok: { status: number; description: string; schema?: z.ZodType; mediaType?: string };
  /** Sends/needs an ETag (reads) or If-Match (updates). */
  etag?: "sends" | "if-match";
};

const COMMON_PROBLEMS = {
  400: problemResponse("Invalid input (unknown fields, wrong types, bad cursor, invalid UTF-8); nothing was changed"),
  401: problemResponse("Not signed in"),
  403: problemResponse("The policy does not allow this (audited), or step-up MFA is required"),
  404: problemResponse("No such patient or record in your tenant"),
  503: problemResponse("The appliance is sealed, or the audit trail cannot be written"),
};

/** Registers one records path in the OpenAPI description (the same zod schemas validate requests). */
export function doc(method: GuardedRoute["method"], path: string, spec: DocSpec): void {
  const headers = spec.etag === "if-match" ? [{ name: "If-Match", in: "header" as const, required: true, schema: { type: "string" as const }, description: "The ETag of the version you read (428 when missing, 412 when stale)" }] : [];
  openApiRegistry.registerPath({
    method,
    path: `${API}${path}`.replace(/:(\w+)/g, "{$1}"),
    summary: spec.summary,
    ...(spec.description ? { description: spec.description } : {}),
    tags: ["records"],
    parameters: headers,
    request: {
      ...(spec.params ? { params: spec.params } : {}),
      ...(spec.query ? { query: spec.query } : {}),
      ...(spec.body ? { body: jsonBody(spec.body) } : {}),
      ...(spec.rawBody ? { body: { required: true, content: { "application/octet-stream": { schema: { type: "string", format: "binary" } } }, description: spec.rawBody } } : {}),
    },
    responses: {
      [spec.ok.status]: spec.ok.mediaType
        ? { description: spec.ok.description, content: { [spec.ok.mediaType]: { schema: { type: "string" as const } } } }
        : spec.ok.schema
          ? jsonResponse(spec.ok.description, spec.ok.schema)
          : { description: spec.ok.description },
      ...COMMON_PROBLEMS,
      ...(spec.etag === "if-match" ? { 412: problemResponse("If-Match names another version (lost update prevented)"), 428: problemResponse("If-Match is missing") } : {}),
      ...(method !== "get" ? { 409: problemResponse("Conflicts with the current state (duplicate MRN, legal hold, already signed…)"), 413: problemResponse("Body too large") } : {}),
    },
  });
}
