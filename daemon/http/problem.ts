import type { ErrorRequestHandler, RequestHandler, Response } from "express";
import { z } from "zod";
import type { Logger } from "../log/logger.js";
import { DatabaseUnavailable } from "../db/circuit.js";
import { AppError, InternalError, Invalid, NotFound, PayloadTooLarge, UnsupportedMediaType } from "../kernel/errors.js";

/** What a 503 raised without a time of its own tells the client (a transient refusal: a key being rotated, the audit intake). */
const DEFAULT_RETRY_AFTER_SECONDS = 5;

export function sendProblem(res: Response, err: AppError) {
  const requestId = res.locals.requestId as string | undefined;
  // RFC 9110 §10.2.3: a 503 or 429 says when to come back; a 503 that did not say, in a few seconds.
  // (A guard that already set the header, as the sealed check does, keeps its own.)
  const retryAfter = err.extras.retryAfterSeconds ?? (err.status === 503 && !res.hasHeader("Retry-After") ? DEFAULT_RETRY_AFTER_SECONDS : undefined);
  if (typeof retryAfter === "number" && (err.status === 503 || err.status === 429)) res.setHeader("Retry-After", String(retryAfter));
  res
    .status(err.status)
    .type("application/problem+json")
    .json({
      type: err.type,
      title: err.title,
      status: err.status,
      detail: err.detail,
      instance: requestId ? `urn:wardkeep:request:${requestId}` : undefined,
      requestId,
      ...err.extras,
    });
}

/**
 * Field paths and rules only: the rejected values may be PHI, so they are never echoed. Routes
 * parse through kernel/input.ts, which already names unknown keys by count and the allowed ones;
 * a parse elsewhere still never sends the caller's key names back.
 */
function fromZod(err: z.ZodError): Invalid {
  const messageOf = (i: z.core.$ZodIssue) => (i.code === "unrecognized_keys" && i.keys.length ? `${i.keys.length} unknown key${i.keys.length === 1 ? "" : "s"}` : i.message);
  const errors = err.issues.slice(0, 20).map((i) => ({ path: i.path.map(String).join(".") || "(body)", message: messageOf(i), code: i.code }));
  return new Invalid(`${err.issues.length} field${err.issues.length === 1 ? "" : "s"} failed validation`, { errors });
}

/** body-parser and friends signal with `type`/`status` fields rather than classes. */
function fromHttpError(err: { type?: string; status?: number; statusCode?: number }): AppError | undefined {
  switch (err.type) {
    case "entity.too.large":
      return new PayloadTooLarge("the request body exceeds the configured limit");
    case "entity.parse.failed":
      return new Invalid("the request body is not valid JSON");
    case "encoding.unsupported":
    case "charset.unsupported":
      return new UnsupportedMediaType("the request body's encoding or charset is not supported; send UTF-8 JSON");
    case "request.aborted":
      return new Invalid("the request was aborted by the client");
    case "entity.verify.failed":
      return new Invalid("the request body could not be verified");
  }
  const status = err.status ?? err.statusCode;
  if (status === 400) return new Invalid("the request is malformed");
  // express.static (the admin UI's assets) signals a missing file this way.
  if (status === 404) return new NotFound("no such resource");
  return undefined;
}

export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  if (err instanceof z.ZodError) return fromZod(err);
  if (err && typeof err === "object") {
    const mapped = fromHttpError(err as { type?: string; status?: number });
    if (mapped) return mapped;
  }
  return new InternalError("an unexpected error occurred; quote the request id to your administrator");
}

export const notFoundHandler: RequestHandler = (req, _res, next) => {
  next(new NotFound("no such resource"));
};

export function problemMiddleware(log: Logger): ErrorRequestHandler {
  return (err, _req, res, _next) => {
    const problem = toAppError(err);
    // A database outage is logged once by the circuit, not once per refused request.
    if (problem.status >= 500 && !(problem instanceof DatabaseUnavailable)) {
      // The original error stays server-side (redacted by the logger); the client gets the request id.
      log.error("request failed", { requestId: res.locals.requestId, error: err });
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    sendProblem(res, problem);
  };
}
