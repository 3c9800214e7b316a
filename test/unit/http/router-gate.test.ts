import express, { Router } from "express";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { firstSegmentsOf, gatedByFirstSegment } from "../../../daemon/http/router-gate.js";

/** A router that records every request its middleware sees, behind the gate, under /api. */
function gatedApp(build: (r: Router) => void) {
  const seen: string[] = [];
  const router = Router();
  router.use(["/patients", "/schedule"], (req, _res, next) => {
    seen.push(req.originalUrl);
    next();
  });
  build(router);
  const api = Router();
  api.use(gatedByFirstSegment(router));
  api.get("/other/:id", (_req, res) => void res.send("other"));
  const app = express();
  app.use("/api", api);
  app.use((_req, res) => void res.status(404).send("none"));
  return { app, seen, router };
}

describe("router gate", () => {
  it("enters a router only for the first segments its routes start with, case-insensitively", async () => {
    const { app, seen, router } = gatedApp((r) => {
      r.get("/patients/:id", (req, res) => void res.send(`patient ${req.params.id}`));
      r.post("/schedule", (_req, res) => void res.send("booked"));
    });
    expect(firstSegmentsOf(router)).toEqual(new Set(["patients", "schedule"]));
    expect((await request(app).get("/api/patients/7")).text).toBe("patient 7");
    expect((await request(app).get("/api/PATIENTS/8")).text).toBe("patient 8");
    expect((await request(app).post("/api/schedule")).text).toBe("booked");
    expect((await request(app).get("/api/other/1")).text).toBe("other");
    expect((await request(app).get("/api/patientsx/1")).status).toBe(404);
    expect((await request(app).get("/api/")).status).toBe(404);
    // The router's own middleware never saw the requests it could not answer.
    expect(seen).toEqual(["/api/patients/7", "/api/PATIENTS/8", "/api/schedule"]);
  });

  it("enters on every request a router it cannot read a fixed first segment from", async () => {
    for (const build of [
      (r: Router) => r.use((_req, _res, next) => next()),
      (r: Router) => r.get("/:anything", (_req, res) => void res.send("param first")),
      (r: Router) => r.get(/^\/re/, (_req, res) => void res.send("pattern")),
    ]) {
      const { router } = gatedApp(build);
      expect(firstSegmentsOf(router)).toBeNull();
    }
    const { app } = gatedApp((r) => r.get("/:anything", (_req, res) => void res.send("param first")));
    expect((await request(app).get("/api/whatever")).text).toBe("param first");
  });
});
