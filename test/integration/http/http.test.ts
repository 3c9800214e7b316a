import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import express from "express";
import { adminUiRoutes } from "../../../daemon/http/admin-ui.js";
import { KEEP_ALIVE_TIMEOUT_MS } from "../../../daemon/http/server.js";
import { notFoundHandler, problemMiddleware } from "../../../daemon/http/problem.js";
import tls from "node:tls";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { setupTokenFrom, startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { freePort } from "../../helpers/postgres.js";

let app: TestAppliance;

beforeAll(async () => {
  app = await startTestAppliance({ env: { WARDKEEP_SERVER_REDIRECT_PORT: String(await freePort()) } });
});
afterAll(async () => {
  await app?.close();
});

const get = (p: string) => request(app.baseUrl).get(p).ca(app.caPem);
const post = (p: string) => request(app.baseUrl).post(p).ca(app.caPem);

function expectSecurityHeaders(res: request.Response) {
  const csp = res.headers["content-security-policy"] as string;
  expect(csp).toContain("default-src 'self'");
  expect(csp).toContain("script-src 'self'");
  expect(csp).not.toContain("unsafe-inline");
  expect(csp).toContain("frame-ancestors 'none'");
  expect(res.headers["strict-transport-security"]).toMatch(/max-age=\d{8}; includeSubDomains/);
  expect(res.headers["x-frame-options"]).toBe("DENY");
  expect(res.headers["x-content-type-options"]).toBe("nosniff");
  expect(res.headers["referrer-policy"]).toBe("no-referrer");
  expect(res.headers["x-powered-by"]).toBeUndefined();
  expect(res.headers["x-request-id"]).toMatch(/^[A-Za-z0-9._:-]+$/);
}

export function expectProblem(res: request.Response, status: number, slug: string) {
  expect(res.status).toBe(status);
  expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
  expect(res.body).toMatchObject({ type: `urn:wardkeep:problem:${slug}`, status, title: expect.any(String), detail: expect.any(String) });
  expect(res.body.requestId).toBe(res.headers["x-request-id"]);
  const text = JSON.stringify(res.body);
  expect(text).not.toMatch(/\bat .+\.(ts|js):\d+/); // no stack frames
  expect(text).not.toMatch(/SELECT|INSERT|UPDATE|relation "/i); // no SQL
}

describe("HTTPS and security headers", () => {
  it("sends the security headers on every kind of response", async () => {
    const responses = await Promise.all([
      get("/healthz"),
      get("/readyz"),
      get("/metrics"),
      get("/api/v1/openapi.json"),
      get("/api/v1/setup"),
      get("/no/such/route"),
      post("/api/v1/setup").set("content-type", "application/json").send("{not json"),
    ]);
    for (const res of responses) expectSecurityHeaders(res);
  });

  it("marks API answers as not cacheable", async () => {
    const res = await get("/api/v1/setup");
    expect(res.headers["cache-control"]).toBe("no-store");
  });

  it("refuses a TLS 1.1 handshake and accepts TLS 1.2 and 1.3", async () => {
    const attempt = (opts: tls.ConnectionOptions) =>
      new Promise<string>((resolve, reject) => {
        const socket = tls.connect({ host: "127.0.0.1", port: app.server.port, ca: app.caPem, servername: "localhost", ...opts }, () => {
          const protocol = socket.getProtocol() ?? "";
          socket.end();
          resolve(protocol);
        });
        socket.on("error", reject);
      });
    await expect(attempt({ minVersion: "TLSv1.1", maxVersion: "TLSv1.1", ciphers: "DEFAULT@SECLEVEL=0" })).rejects.toThrow();
    await expect(attempt({ minVersion: "TLSv1.2", maxVersion: "TLSv1.2" })).resolves.toBe("TLSv1.2");
    await expect(attempt({})).resolves.toBe("TLSv1.3");
  });

  it("serves a certificate that chains to the internal CA and nothing else", async () => {
    expect((await get("/healthz")).status).toBe(200);
    await expect(request(app.baseUrl).get("/healthz")).rejects.toThrow(/self[- ]signed|unable to verify|certificate/i);
  });

  it("announces its keep-alive timeout and closes a connection idle past it, which a client that honours the hint never writes on", async () => {
    // A pool whose own timeout lets Node apply the server's hint (docs/hardening.md, "Keep-alive").
    const agent = new https.Agent({ keepAlive: true, ca: app.caPem, timeout: 30_000 });
    const closedAt = new Map<object, number>();
    const once = () =>
      new Promise<{ status: number; keepAlive: string | undefined; reused: boolean }>((resolve, reject) => {
        const req = https.get(`${app.baseUrl}/healthz`, { agent }, (res) => {
          res.resume();
          res.on("end", () => resolve({ status: res.statusCode ?? 0, keepAlive: res.headers["keep-alive"] as string | undefined, reused: req.reusedSocket }));
        });
        // A reused connection is handed to each of its requests: one entry per connection.
        req.on("socket", (socket) => socket.once("close", () => closedAt.set(socket, Date.now())));
        req.on("error", reject);
      });
    try {
      const first = await once();
      expect(first).toEqual({ status: 200, keepAlive: `timeout=${KEEP_ALIVE_TIMEOUT_MS / 1000}`, reused: false });
      const idleFrom = Date.now();
      expect(await once()).toMatchObject({ status: 200, reused: true });
      // Past the announced timeout the pooled connection is gone (the agent dropped it a second
      // early), so the next request opens a new one instead of meeting a reset.
      await new Promise((r) => setTimeout(r, KEEP_ALIVE_TIMEOUT_MS + 500));
      const closed = [...closedAt.values()];
      expect(closed.length).toBe(1);
      expect(closed[0]! - idleFrom).toBeLessThan(KEEP_ALIVE_TIMEOUT_MS);
      expect(await once()).toMatchObject({ status: 200, reused: false });
    } finally {
      agent.destroy();
    }
  });

  it("only redirects on the plain HTTP port, to the configured host name whatever Host says, keeping path and query", async () => {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) =>
      http.get({ host: "127.0.0.1", port: app.server.redirectPort, path: "/api/v1/setup?x=1", headers: { host: "evil.example.org" } }, resolve).on("error", reject),
    );
    expect(res.statusCode).toBe(308);
    expect(res.headers.location).toBe(`https://${app.config.server.publicHostname}:${app.server.port}/api/v1/setup?x=1`);
  });
});

describe("problem+json errors", () => {
  it("answers an unknown route with 404 problem+json", async () => {
    expectProblem(await get("/api/v1/nothing-here"), 404, "not-found");
  });

  it("answers malformed JSON with 400 problem+json", async () => {
    expectProblem(await post("/api/v1/setup").set("content-type", "application/json").send('{"email": '), 400, "invalid-request");
  });

  it("answers a body over the limit with 413 problem+json", async () => {
    const big = JSON.stringify({ token: "x", email: "a@b.org", password: "p".repeat(1_100_000) });
    expectProblem(await post("/api/v1/setup").set("content-type", "application/json").send(big), 413, "payload-too-large");
  });

  it("answers a non-JSON body with 415 problem+json", async () => {
    expectProblem(await post("/api/v1/setup").set("content-type", "application/x-www-form-urlencoded").send("token=a&email=b"), 415, "unsupported-media-type");
  });

  it("lists failing fields without echoing their values", async () => {
    const res = await post("/api/v1/setup").send({ token: "t", email: "zebulon.quaxworth-at-example.org", password: 42, extra: true });
    expectProblem(res, 400, "invalid-request");
    const paths = (res.body.errors as { path: string }[]).map((e) => e.path);
    expect(paths).toEqual(expect.arrayContaining(["email", "password"]));
    expect(JSON.stringify(res.body)).not.toContain("zebulon");
  });
});

describe("input is never echoed, and text stays as sent", () => {
  it("names unknown keys by count and lists the allowed ones, never the caller's key", async () => {
    const res = await post("/api/v1/setup").send({ token: "t", email: "a@b.org", password: "p", "Jane Roe, HIV positive": 1, "MRN 8812": 2 });
    expectProblem(res, 400, "invalid-request");
    const unknown = (res.body.errors as { path: string; message: string; code: string }[]).find((e) => e.code === "unrecognized_keys");
    expect(unknown).toEqual({ path: "(body)", code: "unrecognized_keys", message: "2 unknown keys; allowed: email, password, token" });
    expect(JSON.stringify(res.body)).not.toMatch(/Jane|HIV|8812/);
  });

  it("refuses a lone surrogate on an identity route instead of rewriting it", async () => {
    const res = await post("/api/v1/auth/login").send({ email: "someone@hospital.example", password: "correct\ud800horse" });
    expectProblem(res, 400, "invalid-request");
    expect(res.body.detail).toContain("not well-formed Unicode");
  });

  it("answers a missing admin UI asset with 404 problem+json", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wardkeep-ui-"));
    fs.mkdirSync(path.join(dir, "assets"));
    fs.writeFileSync(path.join(dir, "index.html"), "<!doctype html><title>x</title>");
    fs.writeFileSync(path.join(dir, "assets", "app.js"), "export {};");
    const ui = express().use(adminUiRoutes(dir)).use(notFoundHandler).use(problemMiddleware(app.ctx.log));
    try {
      expect((await request(ui).get("/assets/app.js")).status).toBe(200);
      const res = await request(ui).get("/assets/missing-0123abcd.js");
      expect(res.status).toBe(404);
      expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
      expect(res.body).toMatchObject({ type: "urn:wardkeep:problem:not-found", status: 404 });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("first-run setup", () => {
  it("prints a setup token once and trades it for the first super-admin", async () => {
    const token = setupTokenFrom(app.announcements.join("\n"));
    expect(token).toBeDefined();
    expect(app.logLines.join("\n")).not.toContain(token!);
    expect((await get("/api/v1/setup")).body).toEqual({ setupRequired: true });

    expectProblem(await post("/api/v1/setup").send({ token: "wks_setup_wrong", email: "it@hospital.example", password: "correct horse battery" }), 403, "forbidden");
    expectProblem(await post("/api/v1/setup").send({ token, email: "it@hospital.example", password: "short" }), 400, "invalid-request");

    const created = await post("/api/v1/setup").send({ token, email: "IT@Hospital.example", password: "correct horse battery" });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ email: "it@hospital.example", id: expect.stringMatching(/^[0-9a-f-]{36}$/) });
    expect((await get("/api/v1/setup")).body).toEqual({ setupRequired: false });

    expectProblem(await post("/api/v1/setup").send({ token, email: "other@hospital.example", password: "correct horse battery" }), 409, "conflict");
  });
});

describe("health, metrics and API description", () => {
  it("reports ready with every check named", async () => {
    const res = await get("/readyz");
    expect(res.status).toBe(200);
    expect(res.body.checks).toMatchObject({ database: { ok: true }, migrations: { ok: true }, keys: { ok: true } });
  });

  it("exposes Prometheus metrics by route pattern", async () => {
    await get("/healthz");
    const res = await get("/metrics");
    expect(res.text).toMatch(/wardkeep_http_requests_total\{method="GET",route="\/healthz",status="200"\} \d+/);
    expect(res.text).toContain("wardkeep_sealed 0");
  });

  it("publishes an OpenAPI 3.1 document generated from the request schemas", async () => {
    const res = await get("/api/v1/openapi.json");
    expect(res.body.openapi).toBe("3.1.0");
    const setup = res.body.paths["/api/v1/setup"].post;
    expect(setup.requestBody.content["application/json"].schema.properties).toHaveProperty("token");
    expect(Object.keys(res.body.paths)).toEqual(expect.arrayContaining(["/healthz", "/readyz", "/metrics"]));
  });

  it("answers 500 problem+json without SQL or stack when the database goes away, and readiness says so", async () => {
    const other = await startTestAppliance({ db: app.db });
    try {
      await other.ctx.db.app.close();
      const res = await request(other.baseUrl).get("/api/v1/setup").ca(other.caPem);
      expectProblem(res, 500, "internal-error");
      const ready = await request(other.baseUrl).get("/readyz").ca(other.caPem);
      expect(ready.status).toBe(503);
      expect(ready.body.checks.database.ok).toBe(false);
    } finally {
      await other.close();
    }
  });
});
