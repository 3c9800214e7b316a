import express, { type ErrorRequestHandler } from "express";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import type { ApplianceContext } from "../../../daemon/context.js";
import { createRouteBook, mountRoutes, operationIdOf, type Route, type RouteBinding } from "../../../daemon/kernel/define-route.js";
import { buildOpenApiDocument } from "../../../daemon/kernel/openapi.js";

/**
 * defineRoute's own contract, on a bare Express app: parsed input, the declared status, the
 * policy binding around the handler, and the failures a route author can make. The appliance's
 * routes are covered end to end by the integration suites and test/integration/http/openapi.test.ts.
 */
const ctx = {} as ApplianceContext;
/** The routes of this file, apart from the appliance's (files share a worker's modules). */
const book = createRouteBook();
const defineRoute = book.define;

/** A binding like access/guard.ts: lets a request through only with `x-allow: <action>`. */
function headerBinding(refusals: string[]): RouteBinding {
  return {
    knows: (action) => action === "patient:read" || action === "patient:create",
    authorize: (_ctx, action) => (req, res, next) => {
      if (req.get("x-allow") === action) return next();
      res.status(403).json({ denied: action });
    },
    refused: async (_ctx, _req, _res, action, err) => {
      refusals.push(`${action}: ${(err as Error).message}`);
    },
  };
}

const errors: ErrorRequestHandler = (err: Error & { status?: number }, _req, res, _next) => {
  res.status(err instanceof z.ZodError ? 400 : (err.status ?? 500)).json({ error: err instanceof z.ZodError ? "invalid" : err.message });
};

function appWith(routes: Route[], refusals: string[] = []) {
  const app = express();
  app.use(express.json());
  app.use("/api/v1", mountRoutes(ctx, routes, headerBinding(refusals)));
  app.use(errors);
  return app;
}

const made = defineRoute(
  {
    method: "post",
    path: "/kernel-test/things/:id",
    action: "patient:create",
    tag: "records",
    summary: "Make a thing",
    params: z.object({ id: z.uuid() }).strict(),
    body: z.object({ name: z.string().min(1) }).strict(),
    response: z.object({ id: z.string(), name: z.string(), at: z.string() }),
    status: 201,
  },
  ({ params, body }) => {
    if (body.name === "boom") throw new Error("service said no");
    return { id: params.id, name: body.name, at: new Date("2025-01-01T00:00:00Z") };
  },
);
const ID = "7d5e2a4c-2f7e-4c8b-9a51-0c7e3f1d2b6a";

describe("defineRoute", () => {
  it("answers with the declared status and the handler's result, dates as ISO strings", async () => {
    const res = await request(appWith([made]))
      .post(`/api/v1/kernel-test/things/${ID}`)
      .set("x-allow", "patient:create")
      .send({ name: "a" });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({ id: ID, name: "a", at: "2025-01-01T00:00:00.000Z" });
  });

  it("sends JSON as Express does: its type with charset, its length, HEAD without a body, 304 to a conditional GET of an answer with an ETag, the handler's own type kept", async () => {
    const tagged = defineRoute(
      { method: "get", path: "/kernel-test/tagged", action: "public", tag: "records", summary: "With an ETag", response: z.object({ word: z.string() }) },
      ({ res }) => {
        res.setHeader("ETag", '"v7"');
        return { word: "café" };
      },
    );
    const typed = defineRoute(
      { method: "get", path: "/kernel-test/typed", action: "public", tag: "records", summary: "Its own type", response: z.object({ word: z.string() }) },
      ({ res }) => {
        res.type("application/fhir+json");
        return { word: "typed" };
      },
    );
    const app = appWith([made, tagged, typed]);
    const made201 = await request(app).post(`/api/v1/kernel-test/things/${ID}`).set("x-allow", "patient:create").send({ name: "é" });
    expect(made201.headers["content-type"]).toBe("application/json; charset=utf-8");
    expect(made201.text).toBe(JSON.stringify({ id: ID, name: "é", at: "2025-01-01T00:00:00.000Z" }));
    expect(Number(made201.headers["content-length"])).toBe(Buffer.byteLength(made201.text));
    const plain = await request(app).get("/api/v1/kernel-test/tagged");
    expect(plain.status).toBe(200);
    expect(plain.body).toEqual({ word: "café" });
    const head = await request(app).head("/api/v1/kernel-test/tagged");
    expect(head.status).toBe(200);
    expect(head.text ?? "").toBe("");
    const cached = await request(app).get("/api/v1/kernel-test/tagged").set("if-none-match", '"v7"');
    expect(cached.status).toBe(304);
    expect(cached.text ?? "").toBe("");
    expect((await request(app).get("/api/v1/kernel-test/tagged").set("if-none-match", '"v6"')).body).toEqual({ word: "café" });
    const own = await request(app).get("/api/v1/kernel-test/typed");
    expect(own.headers["content-type"]).toBe("application/fhir+json; charset=utf-8");
    expect(JSON.parse(own.text)).toEqual({ word: "typed" });
  });

  it("checks the policy before parsing anything, and parses params and body before the handler", async () => {
    const app = appWith([made]);
    expect((await request(app).post("/api/v1/kernel-test/things/not-a-uuid").send({ name: "a" })).status).toBe(403);
    expect((await request(app).post("/api/v1/kernel-test/things/not-a-uuid").set("x-allow", "patient:create").send({ name: "a" })).status).toBe(400);
    expect((await request(app).post(`/api/v1/kernel-test/things/${ID}`).set("x-allow", "patient:create").send({ name: "a", extra: 1 })).status).toBe(400);
  });

  it("hands a handler's error to the binding (to audit a service's denial) and passes it on", async () => {
    const refusals: string[] = [];
    const res = await request(appWith([made], refusals))
      .post(`/api/v1/kernel-test/things/${ID}`)
      .set("x-allow", "patient:create")
      .send({ name: "boom" });
    expect(res.status).toBe(500);
    expect(refusals).toEqual(["patient:create: service said no"]);
  });

  it("answers 204 without a response schema, and refuses a JSON route whose handler sends nothing", async () => {
    const gone = defineRoute({ method: "delete", path: "/kernel-test/gone", action: "public", tag: "records", summary: "Forget it" }, () => undefined);
    const silent = defineRoute(
      { method: "get", path: "/kernel-test/silent", action: "public", tag: "records", summary: "Says nothing", response: z.object({ ok: z.boolean() }) },
      // A handler that forgot to return its result.
      () => undefined,
    );
    const app = appWith([gone, silent]);
    expect((await request(app).delete("/api/v1/kernel-test/gone")).status).toBe(204);
    const res = await request(app).get("/api/v1/kernel-test/silent");
    expect(res.status).toBe(500);
    expect(res.body.error).toMatch(/sent no response/);
  });

  it("closes the connection when it refuses a streamed body it has not read", async () => {
    const upload = defineRoute(
      {
        method: "post",
        path: "/kernel-test/uploads",
        action: "public",
        tag: "records",
        summary: "Upload bytes",
        query: z.object({ kind: z.enum(["audio"]) }).strict(),
        body: { mediaType: "application/octet-stream", description: "bytes" },
      },
      () => undefined,
    );
    const app = express();
    app.use("/api/v1", mountRoutes(ctx, [upload], headerBinding([])));
    app.use(errors);
    const res = await request(app)
      .post("/api/v1/kernel-test/uploads?kind=video")
      .set("Content-Type", "application/octet-stream")
      .send(Buffer.alloc(4 * 1024 * 1024));
    expect(res.status).toBe(400);
    expect(res.headers.connection).toBe("close");
  });

  it("sends the documented status from a handler that writes its own answer, and records a success sent with another", async () => {
    const raw = { mediaType: "text/plain", description: "A report" } as const;
    const streamed = defineRoute({ method: "post", path: "/kernel-test/reports", action: "public", tag: "records", summary: "Stream", response: raw, status: 201 }, ({ res }) => {
      res.type("text/plain").end("made");
    });
    const liar = defineRoute({ method: "post", path: "/kernel-test/liar", action: "public", tag: "records", summary: "Lies", response: raw, status: 201 }, ({ res }) => {
      res.status(200).type("text/plain").end("made");
    });
    const app = appWith([streamed, liar]);
    const first = await request(app).post("/api/v1/kernel-test/reports").expect(201);
    expect(first.text).toBe("made");
    expect(book.undocumented).toEqual([]);
    await request(app).post("/api/v1/kernel-test/liar").expect(200);
    expect(book.undocumented).toEqual(["POST /api/v1/kernel-test/liar sent 200, documents 201"]);
  });

  it("refuses a second definition of the same method and path, and an action the policy does not know", () => {
    expect(() => defineRoute({ method: "post", path: "/kernel-test/things/:id", action: "public", tag: "records", summary: "Again" }, () => undefined)).toThrow(/defined twice/);
    const unknown = defineRoute({ method: "get", path: "/kernel-test/unknown", action: "patient:list", tag: "records", summary: "Unknown action" }, () => undefined);
    expect(() => appWith([unknown])).toThrow(/no action patient:list/);
  });

  it("names operations after their method and path, and documents them with security and problems", () => {
    expect(operationIdOf("post", "/patients/:id/notes")).toBe("postPatientsNotesById");
    expect(operationIdOf("get", "/patients/:id/notes/:itemId")).toBe("getPatientsNotesByIdAndItemId");
    expect(operationIdOf("get", "/audit/public-key")).toBe("getAuditPublicKey");
    const op = (buildOpenApiDocument("test", book.openApi).paths as Record<string, Record<string, Record<string, unknown>>>)["/api/v1/kernel-test/things/{id}"]!.post!;
    expect(op.operationId).toBe("postKernelTestThingsById");
    expect(op.security).toEqual([{ sessionCookie: [], csrfToken: [] }, { apiToken: [] }]);
    expect(Object.keys(op.responses as object).sort()).toEqual(["201", "400", "401", "403", "404", "415"]);
    expect(op["x-wardkeep-action"]).toBe("patient:create");
  });
});

describe("mountRoutes: one table for the routes in place of Express's router stack", () => {
  /** Routes that answer with what they matched; `use` records which routes' middleware ran. */
  const ran: string[] = [];
  const echo = (method: "get" | "post", path: string) =>
    defineRoute(
      {
        method,
        path,
        action: "public",
        tag: "records",
        summary: `Echo ${method} ${path}`,
        response: { mediaType: "text/plain", description: "what matched" },
        use: () => [
          (req, _res, next) => {
            ran.push(`${method} ${path} ${req.originalUrl}`);
            next();
          },
        ],
      },
      ({ req, res }) => {
        res.type("text/plain").send(`${method} ${path} ${JSON.stringify(req.params)} ${(req.route as { path: string }).path}`);
      },
    );
  const routes = [echo("get", "/dispatch-test/fixed"), echo("get", "/dispatch-test/:id"), echo("post", "/dispatch-test/:id"), echo("get", "/dispatch-test/:id/items/:itemId")];
  const app = express();
  app.use("/api/v1", mountRoutes(ctx, routes, headerBinding([])));
  app.use("/api/v1", (_req, res) => void res.status(404).send("after the table"));
  app.use(errors);

  it("matches as Express's routes did: fixed segments before a parameter, case-insensitively, a trailing slash, decoded parameters, HEAD by GET", async () => {
    ran.length = 0;
    expect((await request(app).get("/api/v1/dispatch-test/fixed")).text).toBe("get /dispatch-test/fixed {} /dispatch-test/fixed");
    expect((await request(app).get("/api/v1/DISPATCH-TEST/Fixed/")).text).toBe("get /dispatch-test/fixed {} /dispatch-test/fixed");
    expect((await request(app).get("/api/v1/dispatch-test/A%20b")).text).toBe('get /dispatch-test/:id {"id":"A b"} /dispatch-test/:id');
    expect((await request(app).post("/api/v1/dispatch-test/7")).text).toBe('post /dispatch-test/:id {"id":"7"} /dispatch-test/:id');
    expect((await request(app).get("/api/v1/dispatch-test/7/items/x%2Fy")).text).toBe(
      'get /dispatch-test/:id/items/:itemId {"id":"7","itemId":"x/y"} /dispatch-test/:id/items/:itemId',
    );
    const head = await request(app).head("/api/v1/dispatch-test/7");
    expect(head.status).toBe(200);
    expect(head.headers["content-type"]).toMatch(/^text\/plain/);
    // Only the matched route's own middleware ran, once per request.
    expect(ran).toEqual([
      "get /dispatch-test/fixed /api/v1/dispatch-test/fixed",
      "get /dispatch-test/fixed /api/v1/DISPATCH-TEST/Fixed/",
      "get /dispatch-test/:id /api/v1/dispatch-test/A%20b",
      "post /dispatch-test/:id /api/v1/dispatch-test/7",
      "get /dispatch-test/:id/items/:itemId /api/v1/dispatch-test/7/items/x%2Fy",
      "get /dispatch-test/:id /api/v1/dispatch-test/7",
    ]);
  });

  it("passes on what no route matches, answers OPTIONS with the path's methods, and refuses a parameter that does not decode (400)", async () => {
    ran.length = 0;
    for (const path of ["/api/v1/dispatch-test", "/api/v1/dispatch-test/7/items", "/api/v1/dispatch-test//x", "/api/v1/other/7", "/api/v1/"]) {
      const res = await request(app).get(path);
      expect([path, res.status, res.text]).toEqual([path, 404, "after the table"]);
    }
    expect((await request(app).delete("/api/v1/dispatch-test/7")).text).toBe("after the table");
    const options = await request(app).options("/api/v1/dispatch-test/7");
    expect([options.status, options.headers.allow, options.text]).toEqual([200, "GET, HEAD, POST", "GET, HEAD, POST"]);
    expect((await request(app).options("/api/v1/elsewhere")).status).toBe(404);
    expect((await request(app).get("/api/v1/dispatch-test/%E0%A4%A")).status).toBe(400);
    expect(ran).toEqual([]);
  });
});
