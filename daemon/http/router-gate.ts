import type { RequestHandler, Router } from "express";

/**
 * Lets a capability's router be passed over by requests it cannot answer. Express tries every
 * route of every router mounted before the one that answers, matching each path pattern in turn,
 * a cost paid on every request (measured in docs/records.md, Performance). The gate enters the
 * router only when the request path's first segment is one its routes and middleware start with,
 * so the router sees exactly the requests it could match.
 *
 * The segments are read off the router's own layers at the first request (after every route is
 * mounted), so a new route needs no list kept by hand. A router with anything the gate cannot
 * read as a fixed first segment (path-less middleware, a parameter or pattern first) is always
 * entered, as if ungated. Paths compare case-insensitively, as Express routes match by default.
 */
type LayerLike = { rawPath?: unknown; slash?: boolean };

export function firstSegmentsOf(router: Router): Set<string> | null {
  const segments = new Set<string>();
  for (const layer of router.stack as unknown as LayerLike[]) {
    if (layer.slash) return null;
    for (const p of [layer.rawPath].flat(Infinity)) {
      if (typeof p !== "string") return null;
      const first = p.split("/")[1] ?? "";
      if (!/^[A-Za-z0-9._~-]+$/.test(first)) return null;
      segments.add(first.toLowerCase());
    }
  }
  return segments;
}

export function gatedByFirstSegment(router: Router): RequestHandler {
  let segments: Set<string> | null | undefined;
  return (req, res, next) => {
    if (segments === undefined) segments = firstSegmentsOf(router);
    if (segments === null) return router(req, res, next);
    const path = req.path;
    const end = path.indexOf("/", 1);
    const first = (end === -1 ? path.slice(1) : path.slice(1, end)).toLowerCase();
    if (segments.has(first)) return router(req, res, next);
    next();
  };
}
