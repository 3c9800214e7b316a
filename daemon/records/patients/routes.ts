import { defineRoute } from "../../kernel/define-route.js";
import { ifMatchVersion, patientParams, setEtag } from "../http.js";
import { IF_MATCH, location, PHI_READ, PHI_WRITE } from "../route-kit.js";
import { patientCreate, patientListQuery, patientPage, patientSearch, patientSearchResult, patientUpdate, patientView } from "./schema.js";
import { createPatient, getPatient, listPatients, searchPatients, updatePatient } from "./service.js";

/** Patients: demographics (each field encrypted), listing, exact lookup and changes. */
export const patientRoutes = [
  defineRoute(
    {
      ...PHI_READ,
      method: "get",
      path: "/patients",
      action: "patient:list",
      summary: "A page of patients (front desk: all; practitioners: their care team and break-glass grants); each one shown is audited",
      query: patientListQuery,
      response: patientPage,
      responseDescription: "Patients and the cursor of the next page (null at the end)",
    },
    ({ ctx, actor, query, meta }) => listPatients(ctx, actor, query, meta),
  ),
  defineRoute(
    {
      ...PHI_WRITE,
      method: "post",
      path: "/patients",
      action: "patient:create",
      summary: "Register a patient (demographics are encrypted per field)",
      body: patientCreate,
      response: patientView,
      status: 201,
      responseDescription: "The patient, with its ETag",
    },
    async ({ ctx, actor, body, res, meta }) => {
      const patient = await createPatient(ctx, actor, body, meta);
      setEtag(res, patient.version);
      res.location(location(`/patients/${patient.id}`));
      return patient;
    },
  ),
  defineRoute(
    {
      ...PHI_READ,
      method: "post",
      path: "/patients/search",
      action: "patient:list",
      summary: "Find patients by MRN or email (exact, through a blind index; identifiers stay out of URLs)",
      body: patientSearch,
      response: patientSearchResult,
      responseDescription: "Matches; those you may not open are bare ids",
    },
    ({ ctx, actor, body, meta }) => searchPatients(ctx, actor, body, meta),
  ),
  defineRoute(
    {
      ...PHI_READ,
      method: "get",
      path: "/patients/:id",
      action: "patient:read",
      summary: "A patient's demographics (audited), with its ETag",
      params: patientParams,
      response: patientView,
    },
    async ({ ctx, actor, params, res, meta }) => {
      const patient = await getPatient(ctx, actor, params.id, meta);
      setEtag(res, patient.version);
      return patient;
    },
  ),
  defineRoute(
    {
      ...IF_MATCH,
      method: "patch",
      path: "/patients/:id",
      action: "patient:update",
      summary: "Change demographics (If-Match required)",
      params: patientParams,
      body: patientUpdate,
      response: patientView,
      responseDescription: "The patient after the change",
    },
    async ({ ctx, actor, params, body, req, res, meta }) => {
      const patient = await updatePatient(ctx, actor, params.id, ifMatchVersion(req), body, meta);
      setEtag(res, patient.version);
      return patient;
    },
  ),
];
