import request from "supertest";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { openClinic, registerPatient, type Clinic } from "./helpers.js";

let app: TestAppliance;
let clinic: Clinic;
beforeAll(async () => {
  app = await startTestAppliance();
  clinic = await openClinic(app);
});
afterAll(async () => app?.close());

it("smoke", async () => {
  const doc = await request(app.baseUrl).get("/api/v1/openapi.json").ca(app.caPem);
  expect(doc.status).toBe(200);
  const p = await registerPatient(clinic, { mrn: "MRN-1", email: "A@x.org", birthDate: "1970-01-02" });
  const r = await clinic.frontDesk.agent.get(`/api/v1/patients/${p.id}`);
  console.log(r.status, r.headers.etag, r.body);
  const l = await clinic.frontDesk.agent.get(`/api/v1/patients?limit=1`);
  console.log(l.status, l.body);
  const s = await clinic.frontDesk.agent.post(`/api/v1/patients/search`).send({ email: "a@X.org" });
  console.log(s.status, s.body);
});
