import type { Router } from "express";
import { currentActor } from "../../kernel/actor.js";
import { requestMeta } from "../../kernel/request-meta.js";
import type { ApplianceContext } from "../../context.js";
import { ifMatchVersion, patientParams, setEtag } from "../http.js";
import { doc, mountOn } from "../route-kit.js";
import { patientCreate, patientListQuery, patientPage, patientSearch, patientSearchResult, patientUpdate, patientView } from "./schema.js";
import { createPatient, getPatient, listPatients, searchPatients, updatePatient } from "./service.js";

doc("get", "/patients", {
  summary: "A page of patients (front desk: all; practitioners: their care team and break-glass grants); each one shown is audited",
  query: patientListQuery,
  ok: { status: 200, description: "Patients and the cursor of the next page (null at the end)", schema: patientPage },
});
doc("post", "/patients", { summary: "Register a patient (demographics are encrypted per field)", body: patientCreate, ok: { status: 201, description: "The patient, with its ETag", schema: patientView } });
doc("post", "/patients/search", {
  summary: "Find patients by MRN or email (exact, through a blind index; identifiers stay out of URLs)",
  body: patientSearch,
  ok: { status: 200, description: "Matches; those you may not open are bare ids", schema: patientSearchResult },
});
doc("get", "/patients/:id", { summary: "A patient's demographics (audited)", params: patientParams, etag: "sends", ok: { status: 200, description: "The patient", schema: patientView } });
doc("patch", "/patients/:id", {
  summary: "Change demographics (If-Match required)",
  params: patientParams,
  body: patientUpdate,
  etag: "if-match",
  ok: { status: 200, description: "The patient after the change", schema: patientView },
});

export function mountPatientRoutes(ctx: ApplianceContext, router: Router): void {
  const route = mountOn(ctx, router);
  route({ method: "get", path: "/patients", action: "patient:list" }, async (req, res) => {
    res.json(await listPatients(ctx, currentActor(res), patientListQuery.parse(req.query), requestMeta(req, res)));
  });
  route({ method: "post", path: "/patients", action: "patient:create" }, async (req, res) => {
    const patient = await createPatient(ctx, currentActor(res), patientCreate.parse(req.body), requestMeta(req, res));
    setEtag(res, patient.version);
    res.status(201).location(`/api/v1/patients/${patient.id}`).json(patient);
  });
  route({ method: "post", path: "/patients/search", action: "patient:list" }, async (req, res) => {
    res.json(await searchPatients(ctx, currentActor(res), patientSearch.parse(req.body), requestMeta(req, res)));
  });
  route({ method: "get", path: "/patients/:id", action: "patient:read" }, async (req, res) => {
    const patient = await getPatient(ctx, currentActor(res), patientParams.parse(req.params).id, requestMeta(req, res));
    setEtag(res, patient.version);
    res.json(patient);
  });
  route({ method: "patch", path: "/patients/:id", action: "patient:update" }, async (req, res) => {
    const { id } = patientParams.parse(req.params);
    const body = patientUpdate.parse(req.body);
    const patient = await updatePatient(ctx, currentActor(res), id, ifMatchVersion(req), body, requestMeta(req, res));
    setEtag(res, patient.version);
    res.json(patient);
  });
}

