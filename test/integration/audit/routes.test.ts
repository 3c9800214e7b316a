import pg from "pg";
import { extract } from "tar-stream";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appendAuditEvent } from "../../../daemon/audit/append.js";
import { inScope } from "../../../daemon/db/sql.js";
import { createTenant, signIn, type SignedIn, type TenantRef } from "../../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";

let app: TestAppliance;
let north: TenantRef;
let south: TenantRef;
let auditor: SignedIn;
const patient = "5f0f6c1e-1111-4a4a-8b8b-222233334444";

async function seed(tenantId: string, n: number, over: Record<string, unknown> = {}) {
  for (let i = 0; i < n; i++) {
    await inScope(app.ctx.db.app, { kind: "tenant", tenantId }, (t) =>
      appendAuditEvent(app.ctx, t, {
        tenantId,
        actor: { userId: `clinician-${i % 2}`, role: "practitioner", breakGlass: i === 3 },
        action: i % 2 ? "note.read" : "patient.read",
        resourceType: i % 2 ? "note" : "patient",
        resourceId: `r-${i}`,
        patientId: patient,
        outcome: i === 4 ? "denied" : "success",
        reason: i === 3 ? "emergency: unconscious patient" : null,
        ...over,
      }),
    );
  }
}

beforeAll(async () => {
  app = await startTestAppliance();
  north = await createTenant(app, "North Clinic");
  south = await createTenant(app, "South Clinic");
  auditor = await signIn(app, { role: "auditor", tenantId: north.id });
  await seed(north.id, 6);
  await seed(south.id, 3);
});
afterAll(async () => {
  await app?.close();
});

describe("audit routes", () => {
  it("lets a tenant's auditor search only that tenant's events, filtered and paged", async () => {
    const all = await auditor.agent.get(`/api/v1/audit?patient=${patient}`).expect(200);
    expect(all.body.events).toHaveLength(6);
    expect(all.body.events.every((e: { tenantId: string }) => e.tenantId === north.id)).toBe(true);
    const denied = await auditor.agent.get(`/api/v1/audit?outcome=denied&patient=${patient}`).expect(200);
    expect(denied.body.events.map((e: { resourceId: string }) => e.resourceId)).toEqual(["r-4"]);
    const notes = await auditor.agent.get("/api/v1/audit?action=note.*").expect(200);
    expect(notes.body.events.map((e: { action: string }) => e.action)).toEqual(["note.read", "note.read", "note.read"]);
    const page1 = await auditor.agent.get(`/api/v1/audit?patient=${patient}&limit=4`).expect(200);
    expect(page1.body.events).toHaveLength(4);
    const page2 = await auditor.agent.get(`/api/v1/audit?patient=${patient}&limit=4&cursor=${page1.body.nextCursor}`).expect(200);
    expect(page2.body.events).toHaveLength(2);
    expect(page2.body.nextCursor).toBeNull();
    const seqs = [...page1.body.events, ...page2.body.events].map((e: { seq: string }) => Number(e.seq));
    expect(seqs).toEqual([...seqs].sort((a, b) => b - a));
  });

  it("refuses unknown query fields and a cross-tenant filter from a tenant auditor", async () => {
    const bad = await auditor.agent.get("/api/v1/audit?patientName=Jane").expect(400);
    expect(bad.headers["content-type"]).toContain("application/problem+json");
    await auditor.agent.get(`/api/v1/audit?tenant=${south.id}`).expect(400);
  });

  it("shows a patient's access timeline oldest first, with break-glass and its reason, and audits the look", async () => {
    const res = await auditor.agent.get(`/api/v1/audit/patients/${patient}/timeline`).expect(200);
    expect(res.body.entries).toHaveLength(6);
    expect(res.body.entries[3]).toMatchObject({ actor: { userId: "clinician-1", breakGlass: true }, reason: "emergency: unconscious patient" });
    const looks = await auditor.agent.get(`/api/v1/audit?action=audit.timeline`).expect(200);
    expect(looks.body.events[0]).toMatchObject({ actor: { userId: auditor.user.id, role: "auditor" }, resourceId: `patient:${patient}`, patientId: null });
  });

  it("forbids the audit trail to roles that are not auditors, and audits the denial", async () => {
    const clerk = await signIn(app, { role: "front_desk", tenantId: north.id });
    const res = await clerk.agent.get("/api/v1/audit").expect(403);
    expect(res.headers["content-type"]).toContain("application/problem+json");
    const denials = await auditor.agent.get("/api/v1/audit?action=access.denied").expect(200);
    expect(denials.body.events.some((e: { actor: { userId: string } }) => e.actor.userId === clerk.user.id)).toBe(true);
  });

  it("shows events committed before the search even while another chainer holds the chain head", async () => {
    // A chainer batch in flight elsewhere (another replica): the head row stays locked for 300 ms.
    const other = new pg.Client({ connectionString: app.db.superuserUrl });
    await other.connect();
    try {
      await other.query("BEGIN");
      await other.query("SELECT 1 FROM audit_chain_head FOR UPDATE");
      await seed(north.id, 1, { action: "record.export", resourceId: "held-head" });
      const release = new Promise((r) => setTimeout(r, 300)).then(() => other.query("COMMIT"));
      const found = await auditor.agent.get("/api/v1/audit?action=record.export").expect(200);
      await release;
      expect(found.body.events.map((e: { resourceId: string }) => e.resourceId)).toContain("held-head");
    } finally {
      await other.end();
    }
  });

  it("verifies the chain and shows the checkpoint public key", async () => {
    const res = await auditor.agent.get("/api/v1/audit/verify").expect(200);
    expect(res.body).toMatchObject({ intact: true, keyTrust: "keyring" });
    expect(res.body.summary).toMatch(/^intact up to seq \d+, head [0-9a-f]{64}$/);
    const key = await auditor.agent.get("/api/v1/audit/public-key").expect(200);
    expect(key.body.algorithm).toBe("Ed25519");
    expect(key.body.publicKeyPem).toContain("BEGIN PUBLIC KEY");
    // The keyring's current version signs; it and the legacy key are listed for verification.
    expect(key.body).toMatchObject({ keyringVersion: 1, legacy: false });
    expect(key.body.verificationKeys).toEqual([
      expect.objectContaining({ keyId: key.body.keyId, keyringVersion: 1, legacy: false, retiredAt: null }),
      expect.objectContaining({ keyringVersion: null, legacy: true }),
    ]);
  });

  it("exports an evidence pack in the background and downloads it as a tar", async () => {
    await auditor.stepUp();
    const from = new Date(Date.now() - 3_600_000).toISOString();
    const to = new Date(Date.now() + 3_600_000).toISOString();
    const started = await auditor.agent
      .post("/api/v1/audit/exports")
      .send({ from, to, formats: ["csv", "fhir"] })
      .expect(202);
    expect(started.headers.location).toBe(`/api/v1/audit/exports/${started.body.id}`);
    let job = started.body;
    for (let i = 0; i < 100 && job.status === "running"; i++) {
      await new Promise((r) => setTimeout(r, 100));
      job = (await auditor.agent.get(`/api/v1/audit/exports/${started.body.id}`).expect(200)).body;
    }
    expect(job.status).toBe("done");
    expect(job.manifest.tenantId).toBe(north.id);
    expect(job.progress.done).toBe(job.progress.total);
    const dl = await auditor.agent
      .get(`/api/v1/audit/exports/${job.id}/download`)
      .buffer(true)
      .parse((res, cb) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => {
          chunks.push(c);
        });
        res.on("end", () => cb(null, Buffer.concat(chunks)));
      });
    expect(dl.status).toBe(200);
    expect(dl.headers["content-type"]).toContain("application/x-tar");
    const names: string[] = [];
    let events = "";
    await new Promise<void>((resolve, reject) => {
      const ex = extract();
      ex.on("entry", (header, stream, next) => {
        names.push(header.name);
        const parts: Buffer[] = [];
        stream.on("data", (c: unknown) => {
          parts.push(c as Buffer);
        });
        stream.on("end", () => {
          if (header.name.endsWith("events.jsonl")) events = Buffer.concat(parts).toString();
          next();
        });
      });
      ex.on("finish", resolve);
      ex.on("error", reject);
      Readable.from([dl.body as Buffer]).pipe(ex);
    });
    expect(names.map((n) => n.split("/")[1]).sort()).toContain("manifest.sig");
    expect(events).not.toContain(south.id);
    expect(events).toContain('"redacted":true');
  });

  it("answers 503 problem+json and does no work when the audit event cannot be written", async () => {
    const su = new pg.Client({ connectionString: app.db.superuserUrl });
    await su.connect();
    try {
      await su.query("REVOKE INSERT ON audit_intake FROM wardkeep_app");
      const res = await auditor.agent.get("/api/v1/audit").expect(503);
      expect(res.headers["content-type"]).toContain("application/problem+json");
      expect(res.body.type).toBe("urn:wardkeep:problem:unavailable");
    } finally {
      await su.query("GRANT INSERT ON audit_intake TO wardkeep_app");
      await su.end();
    }
  });
});
