import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { definedRoutes, isPolicyAction } from "../../../daemon/kernel/define-route.js";
import { ACTIONS } from "../../../daemon/kernel/policy.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";

/**
 * The OpenAPI document is what hospital integrators generate clients from: it must list exactly
 * the routes the appliance serves, each with an operationId, its security, every path parameter
 * and its problem answers, and pass a standard linter with no errors.
 */
type Operation = {
  operationId?: string;
  security?: Record<string, string[]>[];
  parameters?: { name: string; in: string; required?: boolean }[];
  responses: Record<string, { content?: Record<string, unknown> }>;
  "x-wardkeep-action"?: string;
};
type Document = { paths: Record<string, Record<string, Operation>>; components: { securitySchemes: Record<string, unknown> } };

let app: TestAppliance;
let doc: Document;
const METHODS = ["get", "post", "put", "patch", "delete"];
const operations = () =>
  Object.entries(doc.paths).flatMap(([path, ops]) =>
    Object.entries(ops)
      .filter(([method]) => METHODS.includes(method))
      .map(([method, op]) => ({ method, path, op })),
  );
const openApiPath = (expressPath: string) => expressPath.replace(/:(\w+)/g, "{$1}");
const PLACEHOLDER = "00000000-0000-4000-8000-000000000000";

beforeAll(async () => {
  app = await startTestAppliance();
  const res = await request(app.baseUrl).get("/api/v1/openapi.json").ca(app.caPem);
  expect(res.status).toBe(200);
  doc = res.body as Document;
});
afterAll(async () => {
  await app?.close();
});

describe("the OpenAPI document", () => {
  it("lists every defined route, and nothing that is not one", () => {
    const defined = definedRoutes().map((r) => `${r.method} ${openApiPath(r.path)}`);
    const documented = operations().map((o) => `${o.method} ${o.path}`);
    expect(defined.length).toBeGreaterThan(90);
    expect(new Set(defined).size).toBe(defined.length);
    expect([...documented].sort()).toEqual([...defined].sort());
  });

  it("has no API route mounted by hand, outside defineRoute (only the admin UI's pages are)", () => {
    const byHand = /\b\w+\.(get|post|put|patch|delete|all)\(\s*["'/`]/;
    const offenders: string[] = [];
    const walk = (dir: string): void => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) walk(path);
        else if (entry.name.endsWith(".ts") && !path.endsWith(join("http", "admin-ui.ts"))) {
          readFileSync(path, "utf8")
            .split("\n")
            .forEach((line, i) => {
              if (byHand.test(line) && /router|app\b|api\b/i.test(line)) offenders.push(`${path}:${i + 1}: ${line.trim()}`);
            });
        }
      }
    };
    walk(join(process.cwd(), "daemon"));
    expect(offenders).toEqual([]);
  });

  it("has every documented operation answered by a mounted route, not the catch-all 404", async () => {
    const unanswered: string[] = [];
    for (const { method, path } of operations()) {
      const url = path.replace(/\{(\w+)\}/g, PLACEHOLDER);
      const res = await request(app.baseUrl)[method as "get"](url).ca(app.caPem);
      if (res.status === 404 && res.body?.detail === "no such resource") unanswered.push(`${method.toUpperCase()} ${path}`);
    }
    expect(unanswered).toEqual([]);
  });

  it("gives each operation a unique operationId, its security and a policy action the policy table knows", () => {
    const ids = operations().map((o) => o.op.operationId);
    expect(ids.every((id) => typeof id === "string" && /^[a-z][A-Za-z0-9]+$/.test(id))).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    expect(Object.keys(doc.components.securitySchemes).sort()).toEqual(["apiToken", "csrfToken", "sessionCookie"]);
    for (const { method, path, op } of operations()) {
      expect(op.security, `${method} ${path}`).toBeDefined();
      const action = op["x-wardkeep-action"];
      if (action !== undefined) expect(ACTIONS, `${method} ${path}`).toContain(action);
    }
    // Changes made with the session cookie need the CSRF header; API tokens do not.
    expect(doc.paths["/api/v1/patients"]!.post!.security).toEqual([{ sessionCookie: [], csrfToken: [] }, { apiToken: [] }]);
    expect(doc.paths["/api/v1/patients"]!.get!.security).toEqual([{ sessionCookie: [] }, { apiToken: [] }]);
    expect(doc.paths["/api/v1/auth/login"]!.post!.security).toEqual([]);
    expect(doc.paths["/healthz"]!.get!.security).toEqual([]);
  });

  it("declares every path parameter, and the problems and success status a client must handle", () => {
    for (const { method, path, op } of operations()) {
      const inPath = [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
      const declared = (op.parameters ?? []).filter((p) => p.in === "path" && p.required).map((p) => p.name);
      expect(declared.sort(), `${method} ${path}`).toEqual(inPath.sort());
      const problems = Object.keys(op.responses).filter((s) => s.startsWith("4"));
      if (inPath.length > 0) expect(problems, `${method} ${path}`).toContain("404");
      const route = definedRoutes().find((r) => r.method === method && openApiPath(r.path) === path)!;
      if (route.action !== "public") expect(problems, `${method} ${path}`).toContain("401");
      if (isPolicyAction(route.action)) expect(problems, `${method} ${path}`).toContain("403");
      expect(op.responses[String(route.status)], `${method} ${path}`).toBeDefined();
      for (const status of problems) expect(Object.keys(op.responses[status]!.content ?? {}), `${method} ${path} ${status}`).toEqual(["application/problem+json"]);
    }
    expect(Object.keys(doc.paths["/api/v1/patients"]!.post!.responses)).toContain("201");
    expect(Object.keys(doc.paths["/api/v1/backups"]!.post!.responses)).toContain("202");
    expect(Object.keys(doc.paths["/api/v1/sessions/{id}"]!.delete!.responses)).toContain("204");
  });

  it("describes what a route really sends, not an open object", () => {
    const users = doc.paths["/api/v1/users"]!.get!.responses["200"]!.content!["application/json"] as { schema: { type: string; items: { properties: Record<string, unknown> } } };
    expect(users.schema.type).toBe("array");
    expect(Object.keys(users.schema.items.properties)).toEqual(expect.arrayContaining(["id", "email", "role", "mfaEnabled"]));
  });

  it("passes redocly lint with the recommended ruleset, offline, with no errors", async () => {
    const dir = mkdtempSync(join(tmpdir(), "wardkeep-openapi-"));
    try {
      const file = join(dir, "openapi.json");
      writeFileSync(file, JSON.stringify(doc));
      const cli = join(process.cwd(), "node_modules", ".bin", "redocly");
      // No network: a proxy that refuses every connection; no telemetry or update check.
      const env = {
        ...process.env,
        REDOCLY_TELEMETRY: "off",
        REDOCLY_SUPPRESS_UPDATE_NOTICE: "true",
        HTTPS_PROXY: "http://127.0.0.1:9",
        HTTP_PROXY: "http://127.0.0.1:9",
        https_proxy: "http://127.0.0.1:9",
        http_proxy: "http://127.0.0.1:9",
      };
      const result = await promisify(execFile)(cli, ["lint", file, "--extends=recommended", "--format=json"], { env, cwd: dir, timeout: 120_000 }).catch(
        (err: { stdout?: string; stderr?: string; code?: number }) => err,
      );
      const report = JSON.parse(result.stdout ?? "{}") as {
        totals?: { errors: number; warnings: number };
        problems?: { ruleId: string; severity: string; message: string; location: { pointer: string }[] }[];
      };
      const errors = (report.problems ?? []).filter((p) => p.severity === "error").map((p) => `${p.ruleId}: ${p.message} at ${p.location[0]?.pointer}`);
      expect(errors).toEqual([]);
      expect(report.totals?.errors, result.stderr).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
