import pg from "pg";
import type request from "supertest";
import { expect } from "vitest";
import type { TestAppliance } from "../../helpers/appliance.js";
import { createTenant, signIn, type SignedIn, type TenantRef } from "../../helpers/actors.js";

/** A tenant with one person per role that matters to records, signed in over HTTPS. */
export type Clinic = {
  tenant: TenantRef;
  owner: SignedIn;
  admin: SignedIn;
  frontDesk: SignedIn;
  doctor: SignedIn;
  /** A practitioner on no care team unless a test puts them there. */
  otherDoctor: SignedIn;
  auditor: SignedIn;
};

export async function openClinic(app: TestAppliance, name = "Records General"): Promise<Clinic> {
  const tenant = await createTenant(app, name);
  const [owner, admin, frontDesk, doctor, otherDoctor, auditor] = await Promise.all([
    signIn(app, { role: "owner", tenantId: tenant.id }),
    signIn(app, { role: "admin", tenantId: tenant.id }),
    signIn(app, { role: "front_desk", tenantId: tenant.id }),
    signIn(app, { role: "practitioner", tenantId: tenant.id, displayName: "Dr Grey" }),
    signIn(app, { role: "practitioner", tenantId: tenant.id }),
    signIn(app, { role: "auditor", tenantId: tenant.id }),
  ]);
  return { tenant, owner, admin, frontDesk, doctor, otherDoctor, auditor };
}

/** Registers a patient through the API as front desk; returns the created body. */
export async function registerPatient(clinic: Clinic, body: Record<string, unknown> = {}): Promise<{ id: string; version: number } & Record<string, unknown>> {
  const res = await clinic.frontDesk.agent.post("/api/v1/patients").send({ name: "Test Patient", ...body });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body;
}

export async function assignCareTeam(clinic: Clinic, patientId: string, who: SignedIn = clinic.doctor): Promise<void> {
  const res = await clinic.admin.agent.post(`/api/v1/patients/${patientId}/care-team`).send({ userId: who.user.id });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
}

/** An RFC 9457 answer of this status and problem slug, with no stack trace or SQL in it. */
export function expectProblem(res: request.Response, status: number, slug?: string) {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.headers["content-type"]).toMatch(/application\/problem\+json/);
  if (slug) expect(res.body.type).toBe(`urn:wardkeep:problem:${slug}`);
  const text = JSON.stringify(res.body);
  expect(text).not.toMatch(/\bat .+\.(ts|js):\d+|SELECT |INSERT |UPDATE |DELETE FROM|sequelize|violates/);
}

/** Runs SQL as the PostgreSQL superuser (sees every row, bypasses row-level security). */
export async function asSuperuser<T extends pg.QueryResultRow = Record<string, unknown>>(app: TestAppliance, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: app.db.superuserUrl });
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

/** Collects a binary response body (supertest otherwise tries to parse it). */
export const binary = (raw: unknown, cb: (err: Error | null, body: Buffer) => void) => {
  const res = raw as import("node:http").IncomingMessage;
  const chunks: Buffer[] = [];
  let done = false;
  const finish = (err: Error | null) => {
    if (done) return;
    done = true;
    cb(err, Buffer.concat(chunks));
  };
  res.on("data", (c: Buffer) => chunks.push(c));
  res.on("end", () => finish(null));
  res.on("error", (err) => finish(err));
  res.on("aborted", () => finish(new Error("aborted")));
};

/**
 * A raw HTTPS request whose body is written in chunks without a Content-Length (chunked
 * transfer), as a client streaming a recording would. Resolves with the answer, or with the
 * error when the server closed the connection before answering.
 */
export async function streamRequest(
  app: TestAppliance,
  opts: { method: string; path: string; headers: Record<string, string>; chunks: number; chunkBytes: number; fill?: number },
): Promise<{ status: number; body: unknown } | { error: string }> {
  const https = await import("node:https");
  return new Promise((resolve) => {
    const url = new URL(opts.path, app.baseUrl);
    const req = https.request({ hostname: url.hostname, port: url.port, path: url.pathname + url.search, method: opts.method, headers: opts.headers, ca: app.caPem }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          /* not JSON */
        }
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.on("error", (err) => resolve({ error: (err as NodeJS.ErrnoException).code ?? err.message }));
    let sent = 0;
    const chunk = Buffer.alloc(opts.chunkBytes, opts.fill ?? 0x41);
    const pump = () => {
      while (sent < opts.chunks) {
        sent++;
        if (!req.write(chunk)) return void req.once("drain", pump);
      }
      req.end();
    };
    pump();
  });
}

/** The ETag of an answer, for the next request's If-Match. */
export function tag(res: request.Response): string {
  const etag = res.headers.etag as string | undefined;
  if (!etag) throw new Error(`no ETag in the answer (status ${res.status})`);
  return etag;
}
