import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTenant, signIn, type SignedIn, type TenantRef } from "../../helpers/actors.js";
import { startTestAppliance, tempDir, testEnv, type TestAppliance } from "../../helpers/appliance.js";
import { runCli } from "../../helpers/daemon-process.js";

/**
 * `wardkeep data-rights erasures [list|request|cancel]|holds [list|place|release]|export` against a running appliance's database, as the host
 * operator acting as the tenant's owner: what the console's Data rights page shows, from the host.
 */
let app: TestAppliance;
let env: Record<string, string>;
let tenant: TenantRef;
let owner: SignedIn;
let held: string;
let erased: string;
let free: string;
let spare: string;
const SLOW = 150_000;

beforeAll(async () => {
  app = await startTestAppliance();
  env = testEnv(app.db, app.dataDir);
  tenant = await createTenant(app, "Data Rights CLI Clinic");
  owner = await signIn(app, { role: "owner", tenantId: tenant.id });
  const desk = await signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false });
  held = (await desk.agent.post("/api/v1/patients").send({ name: "Hana Held" }).expect(201)).body.id;
  erased = (await desk.agent.post("/api/v1/patients").send({ name: "Ezra Erased" }).expect(201)).body.id;
  free = (await desk.agent.post("/api/v1/patients").send({ name: "Fay Free" }).expect(201)).body.id;
  spare = (await desk.agent.post("/api/v1/patients").send({ name: "Sam Spare" }).expect(201)).body.id;
  const hold = await owner.agent.post(`/api/v1/patients/${held}/legal-holds`).send({ reason: "Matter 2026-77" }).expect(201);
  await owner.agent.post(`/api/v1/patients/${held}/legal-holds/${hold.body.id}/release`).send({ reason: "Matter settled" }).expect(200);
  await owner.agent.post(`/api/v1/patients/${held}/legal-holds`).send({ reason: "Matter 2026-78" }).expect(201);
  await owner.agent.delete(`/api/v1/patients/${erased}`).expect(202);
});
afterAll(async () => {
  await app?.close();
});

describe("wardkeep data-rights", () => {
  it(
    "lists erasures with the time left, patient holds with their reasons, and writes one patient's export to a file",
    async () => {
      const out = path.join(tempDir("wardkeep-export-"), "export.json");
      const [erasures, human, holds, exported] = await Promise.all([
        runCli(["data-rights", "erasures", "--tenant", tenant.slug, "--json"], env),
        runCli(["data-rights", "erasures", "--tenant", tenant.id], env),
        runCli(["data-rights", "holds", "--tenant", tenant.slug, "--json"], env),
        runCli(["data-rights", "export", "--tenant", tenant.slug, "--patient", held, "--out-file", out], env),
      ]);
      expect(erasures.stderr).toBe("");
      expect(JSON.parse(erasures.stdout).erasures).toEqual([expect.objectContaining({ subject: "patient", patientId: erased, status: "pending" })]);
      const grace = app.config.records.deletionGraceDays;
      expect(human.stdout).toMatch(new RegExp(`^[0-9a-f-]{36}  patient ${erased} +pending +purge after \\S+  (${grace - 1} days 23|${grace} days 0) h left\\n$`));

      expect(holds.stderr).toBe("");
      const list = JSON.parse(holds.stdout).holds as Array<{ reason: string; active: boolean; releaseReason: string | null }>;
      expect(list.map((h) => [h.reason, h.active, h.releaseReason])).toEqual([
        ["Matter 2026-78", true, null],
        ["Matter 2026-77", false, "Matter settled"],
      ]);

      expect(exported.stderr).toBe("");
      expect(exported.code).toBe(0);
      expect(exported.stdout).toBe(`wrote the export of patient ${held} to ${out} (PHI: keep it as you keep the records)\n`);
      const doc = JSON.parse(fs.readFileSync(out, "utf8"));
      expect(doc).toMatchObject({ format: "wardkeep-records-export/v1", scope: "patient", tenantId: tenant.id });
      expect(doc.patients).toEqual([expect.objectContaining({ patient: expect.objectContaining({ id: held, name: "Hana Held" }) })]);
      expect(fs.statSync(out).mode & 0o777).toBe(0o600);
      // The export is audited as the host operator's read of that patient.
      const events = (await owner.agent.get(`/api/v1/audit?action=patient.export&patient=${held}`).expect(200)).body.events;
      expect(events).toEqual([expect.objectContaining({ patientId: held, actor: expect.objectContaining({ role: "host_operator" }) })]);
    },
    SLOW,
  );

  it(
    "refuses an unknown patient, a taken output file and a bad status in one line each, exit 1, leaving no file behind",
    async () => {
      const dir = tempDir("wardkeep-export-");
      const taken = path.join(dir, "taken.json");
      fs.writeFileSync(taken, "keep me");
      const [unknown, exists, status, notId] = await Promise.all([
        runCli(["data-rights", "export", "--tenant", tenant.slug, "--patient", "00000000-0000-4000-8000-000000000000", "--out-file", path.join(dir, "x.json")], env),
        runCli(["data-rights", "export", "--tenant", tenant.slug, "--patient", held, "--out-file", taken], env),
        runCli(["data-rights", "erasures", "--tenant", tenant.slug, "--status", "gone"], env),
        runCli(["data-rights", "holds", "--tenant", tenant.slug, "--patient", "Hana"], env),
      ]);
      expect([unknown.code, unknown.stderr]).toEqual([1, "wardkeep: no such patient\n"]);
      expect(fs.existsSync(path.join(dir, "x.json"))).toBe(false);
      expect([exists.code, exists.stderr]).toEqual([1, `wardkeep: --out-file: ${taken} exists; choose a new file\n`]);
      expect(fs.readFileSync(taken, "utf8")).toBe("keep me");
      expect(status.code).toBe(1);
      expect(status.stderr).toMatch(/^wardkeep: --status: .+\n$/);
      expect([notId.code, notId.stderr]).toEqual([1, "wardkeep: --patient: not a patient id (a UUID)\n"]);
    },
    SLOW,
  );

  it(
    "places and releases a hold, requests and cancels an erasure, as the console does (host operator, no account); refusals in one line, exit 1",
    async () => {
      const pending = (await owner.agent.get("/api/v1/deletion-requests?status=pending").expect(200)).body.items as Array<{ id: string; patientId: string }>;
      const erasedRequest = pending.find((r) => r.patientId === erased)!.id;
      const [placed, requested, cancelled, blocked, neither, shortReason] = await Promise.all([
        runCli(["data-rights", "holds", "place", "--tenant", tenant.slug, "--patient", free, "--reason", "Matter CLI-9", "--json"], env),
        runCli(["data-rights", "erasures", "request", "--tenant", tenant.slug, "--patient", spare], env),
        runCli(["data-rights", "erasures", "cancel", "--tenant", tenant.slug, "--request", erasedRequest, "--json"], env),
        runCli(["data-rights", "erasures", "request", "--tenant", tenant.slug, "--patient", held], env),
        runCli(["data-rights", "erasures", "request", "--tenant", tenant.slug], env),
        runCli(["data-rights", "holds", "place", "--tenant", tenant.slug, "--patient", free, "--reason", "no"], env),
      ]);
      expect(placed.stderr).toBe("");
      const hold = JSON.parse(placed.stdout).hold as { id: string; reason: string; placedBy: string | null; active: boolean };
      expect(hold).toMatchObject({ patientId: free, reason: "Matter CLI-9", placedBy: null, active: true });
      expect([requested.code, requested.stderr]).toEqual([0, ""]);
      const grace = app.config.records.deletionGraceDays;
      expect(requested.stdout).toMatch(
        new RegExp(`^erasure requested: [0-9a-f-]{36}  patient ${spare} +pending +purge after \\S+  (${grace - 1} days 23|${grace} days 0) h left\\n$`),
      );
      expect(JSON.parse(cancelled.stdout).erasure).toMatchObject({ id: erasedRequest, status: "cancelled", cancelledBy: null });
      expect([blocked.code, blocked.stderr]).toEqual([1, "wardkeep: deleting this patient is blocked by 1 active legal hold(s)\n"]);
      expect([neither.code, neither.stderr]).toEqual([1, "wardkeep: give --patient ID or --whole-tenant (one of them)\n"]);
      expect(shortReason.code).toBe(1);
      expect(shortReason.stderr).toMatch(/^wardkeep: --reason: .+\n$/);

      const released = await runCli(["data-rights", "holds", "release", "--tenant", tenant.slug, "--patient", free, "--hold", hold.id, "--reason", "Matter CLI-9 closed"], env);
      expect([released.code, released.stderr]).toEqual([0, ""]);
      expect(released.stdout).toMatch(new RegExp(`^legal hold released: ${hold.id}  patient ${free}  released \\S+  Matter CLI-9  \\(released: Matter CLI-9 closed\\)\\n$`));

      // What the console's Data rights page reads back through the API.
      const holds = (await owner.agent.get(`/api/v1/legal-holds?patientId=${free}`).expect(200)).body.items;
      expect(holds).toEqual([
        expect.objectContaining({ id: hold.id, reason: "Matter CLI-9", releaseReason: "Matter CLI-9 closed", active: false, placedBy: null, releasedBy: null }),
      ]);
      const requests = (await owner.agent.get("/api/v1/deletion-requests").expect(200)).body.items as Array<{ patientId: string; status: string; requestedBy: string | null }>;
      expect(requests.filter((r) => r.patientId === spare)).toEqual([expect.objectContaining({ status: "pending", requestedBy: null })]);
      expect(requests.filter((r) => r.patientId === erased)).toEqual([expect.objectContaining({ status: "cancelled" })]);
      const events = (await owner.agent.get(`/api/v1/audit?action=legal_hold.place&patient=${free}`).expect(200)).body.events;
      expect(events).toEqual([expect.objectContaining({ patientId: free, actor: expect.objectContaining({ role: "host_operator" }) })]);
    },
    SLOW,
  );
});
