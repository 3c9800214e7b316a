import { randomUUID } from "node:crypto";
import type { RequestHandler } from "express";
import helmet from "helmet";
import { Counter, Histogram, type Registry } from "prom-client";
import type { Logger } from "../log/logger.js";
import { UnsupportedMediaType } from "../kernel/errors.js";
import { assertNotInMaintenance } from "../kernel/maintenance.js";
import type { ApplianceContext } from "../context.js";

const INBOUND_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Accepts a well-formed X-Request-Id from a proxy (to correlate logs), otherwise makes one. */
export const requestId: RequestHandler = (req, res, next) => {
  const inbound = req.get("x-request-id");
  const id = inbound && INBOUND_ID.test(inbound) ? inbound : randomUUID();
  res.locals.requestId = id;
  res.setHeader("X-Request-Id", id);
  next();
};

/**
 * Strict CSP with no inline script (XSS is the path to session theft in an admin UI), HSTS for
 * two years, frame denial (clickjacking), no-sniff, no referrer (URLs must never leak outward).
 */
export function securityHeaders(): RequestHandler {
  return helmet({
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'", "data:"],
        fontSrc: ["'self'"],
        connectSrc: ["'self'"],
        objectSrc: ["'none'"],
        baseUri: ["'none'"],
        formAction: ["'self'"],
        frameAncestors: ["'none'"],
        upgradeInsecureRequests: [],
      },
    },
    strictTransportSecurity: { maxAge: 63_072_000, includeSubDomains: true },
    frameguard: { action: "deny" },
    referrerPolicy: { policy: "no-referrer" },
    crossOriginResourcePolicy: { policy: "same-origin" },
    crossOriginOpenerPolicy: { policy: "same-origin" },
  });
}

/** API answers may carry PHI: no shared or browser cache may keep them. */
export const noStore: RequestHandler = (_req, res, next) => {
  res.setHeader("Cache-Control", "no-store");
  res.setHeader("Pragma", "no-cache");
  next();
};

/** Bodies are JSON only; anything else is refused before parsing (no form-encoded CSRF vector). */
export const requireJsonBody: RequestHandler = (req, _res, next) => {
  const hasBody = Number(req.get("content-length") ?? 0) > 0 || req.get("transfer-encoding") !== undefined;
  if (hasBody && !req.is(["application/json", "application/*+json"])) {
    next(new UnsupportedMediaType("send the request body as application/json"));
    return;
  }
  next();
};

/** The route pattern (not the URL: URLs can carry identifiers), or a fixed label when unmatched. */
function routeLabel(req: Parameters<RequestHandler>[0]): string {
  const pattern = (req.route as { path?: string } | undefined)?.path;
  return pattern ? `${req.baseUrl}${pattern}` : "unmatched";
}

export function httpMetrics(registry: Registry): RequestHandler {
  const labelNames = ["method", "route", "status"] as const;
  const requests = new Counter({ name: "wardkeep_http_requests_total", help: "HTTP requests by route and status", labelNames, registers: [registry] });
  const duration = new Histogram({
    name: "wardkeep_http_request_duration_seconds",
    help: "HTTP request duration",
    labelNames,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  return (req, res, next) => {
    const end = duration.startTimer();
    res.on("finish", () => {
      const labels = { method: req.method, route: routeLabel(req), status: String(res.statusCode) };
      requests.inc(labels);
      end(labels);
    });
    next();
  };
}

/** One line per request: never the query string or body, which may hold PHI. */
export function accessLog(log: Logger): RequestHandler {
  return (req, res, next) => {
    const started = process.hrtime.bigint();
    res.on("finish", () => {
      log.info("request", {
        requestId: res.locals.requestId,
        method: req.method,
        route: routeLabel(req),
        status: res.statusCode,
        durationMs: Number((process.hrtime.bigint() - started) / 1_000_000n),
      });
    });
    next();
  };
}

/** While the appliance is in maintenance (kernel/maintenance.ts: an in-place restore), 503 `maintenance` with Retry-After. */
export function maintenanceGate(ctx: ApplianceContext): RequestHandler {
  return (_req, _res, next) => {
    try {
      assertNotInMaintenance(ctx);
      next();
    } catch (err) {
      next(err);
    }
  };
}
