import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import openapiTS, { astToString } from "openapi-typescript";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { signIn, type SignedIn } from "../../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { assignCareTeam, openClinic, registerPatient, type Clinic } from "../records/helpers.js";

/**
 * What a hospital integrator does with the OpenAPI document: generate a typed client from the
 * served document (openapi-typescript + openapi-fetch), type-check code written against it, and
 * use it to sign in and read a patient. A path parameter the document forgot, a response schema
 * that is an open object, or an operation missing from it breaks this test.
 */
const run = promisify(execFile);
let app: TestAppliance;
let clinic: Clinic;
let nurse: SignedIn;
let patientId: string;
let dir: string;

const CLIENT = `import createClient from "openapi-fetch";
import type { paths } from "./api.js";

const [baseUrl, email, password, patientId] = process.argv.slice(2) as [string, string, string, string];
const client = createClient<paths>({ baseUrl });

const login = await client.POST("/api/v1/auth/login", { body: { email, password } });
if (!login.data) throw new Error("sign-in failed: " + login.response.status);
const cookie = (login.response.headers.get("set-cookie") ?? "").split(";")[0]!;
const csrf: string = login.data.csrfToken;

const read = await client.GET("/api/v1/patients/{id}", { params: { path: { id: patientId } }, headers: { cookie } });
if (!read.data) throw new Error("read failed: " + read.response.status);
const name: string | null | undefined = read.data.name;

const logout = await client.POST("/api/v1/auth/logout", { headers: { cookie, "x-csrf-token": csrf } });
console.log(JSON.stringify({ name, id: read.data.id, logout: logout.response.status }));
`;

/** The same call without the path parameter the route needs: the generated types must refuse it. */
const MISSING_PARAM = `import createClient from "openapi-fetch";
import type { paths } from "./api.js";
const client = createClient<paths>({ baseUrl: "https://localhost" });
await client.GET("/api/v1/patients/{id}", {});
`;

const tsc = (file: string) =>
  run(
    join(process.cwd(), "node_modules", ".bin", "tsc"),
    ["--noEmit", "--strict", "--skipLibCheck", "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext", file],
    { cwd: dir },
  ).then(
    () => ({ ok: true, out: "" }),
    (err: { stdout?: string }) => ({ ok: false, out: err.stdout ?? "" }),
  );

beforeAll(async () => {
  app = await startTestAppliance();
  clinic = await openClinic(app, "Generated Client Clinic");
  // A practitioner without an authenticator (the tenant does not enforce MFA): password sign-in only.
  nurse = await signIn(app, { role: "practitioner", tenantId: clinic.tenant.id, mfa: false });
  patientId = (await registerPatient(clinic, { name: "Mary Seacole" })).id;
  await assignCareTeam(clinic, patientId, nurse);
  // Inside the checkout, so the generated code resolves openapi-fetch from node_modules.
  dir = mkdtempSync(join(process.cwd(), "test", ".generated-client-"));
  writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module" }));
  writeFileSync(join(dir, "ca.pem"), app.caPem);
});
afterAll(async () => {
  await app?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("a client generated from the served OpenAPI document", () => {
  it("type-checks, signs in and reads a patient", async () => {
    const res = await request(app.baseUrl).get("/api/v1/openapi.json").ca(app.caPem);
    expect(res.status).toBe(200);
    writeFileSync(join(dir, "api.d.ts"), astToString(await openapiTS(res.body)));
    writeFileSync(join(dir, "client.ts"), CLIENT);
    const checked = await tsc("client.ts");
    expect(checked.out).toBe("");
    expect(checked.ok).toBe(true);

    const { stdout } = await run(join(process.cwd(), "node_modules", ".bin", "tsx"), ["client.ts", app.baseUrl, nurse.user.email, nurse.password, patientId], {
      cwd: dir,
      env: { ...process.env, NODE_EXTRA_CA_CERTS: join(dir, "ca.pem") },
      timeout: 60_000,
    });
    expect(JSON.parse(stdout.trim())).toEqual({ name: "Mary Seacole", id: patientId, logout: 204 });
  });

  it("refuses, at compile time, a call that leaves out the route's path parameter", async () => {
    writeFileSync(join(dir, "missing-param.ts"), MISSING_PARAM);
    const checked = await tsc("missing-param.ts");
    expect(checked.ok).toBe(false);
    expect(checked.out).toMatch(/missing-param\.ts.*error TS\d+/s);
    expect(checked.out).toMatch(/params/);
  });
});
