import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import express, { Router } from "express";
import { Unavailable } from "../kernel/errors.js";

// Sources run from daemon/http, the build from dist/daemon/http.
const candidates = ["../../admin-ui/dist", "../../../admin-ui/dist"].map((p) => fileURLToPath(new URL(p, import.meta.url)));

export function adminUiDirectory(): string | undefined {
  return candidates.find((dir) => fs.existsSync(path.join(dir, "index.html")));
}

/**
 * Serves the built admin UI from the same origin as the API (one thing to install, and the
 * strict CSP's 'self' covers it). Hashed assets are immutable; index.html is never cached so
 * an upgrade takes effect at once. Unknown non-API paths get index.html (client-side routes).
 */
export function adminUiRoutes(dir: string | undefined = adminUiDirectory()): Router {
  const router = Router();
  if (!dir) {
    router.get("/", (_req, _res, next) => next(new Unavailable("the admin UI is not built; run `npm run build:ui`")));
    return router;
  }
  router.use("/assets", express.static(path.join(dir, "assets"), { immutable: true, maxAge: "365d", index: false, fallthrough: false }));
  router.get(/^\/(?!api\/|assets\/|healthz|readyz|metrics).*/, (_req, res) => {
    res.setHeader("Cache-Control", "no-cache");
    res.sendFile(path.join(dir, "index.html"));
  });
  return router;
}
