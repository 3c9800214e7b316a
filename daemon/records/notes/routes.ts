import { defineRoute } from "../../kernel/define-route.js";
import { ifMatchVersion, patientItemParams, patientParams, setEtag } from "../http.js";
import { IF_MATCH, location, PHI_READ, PHI_WRITE } from "../route-kit.js";
import { noteCreate, noteHistory as noteHistorySchema, noteListQuery, notePage, noteRevise, noteSign, noteView } from "./schema.js";
import { createNote, getNote, listNotes, noteHistory, reviseNote, signNote } from "./service.js";

/** Clinical notes and transcriptions: encrypted bodies, every version kept, sign-off (care team only). */
export const noteRoutes = [
  defineRoute(
    {
      ...PHI_READ,
      method: "get",
      path: "/patients/:id/notes",
      action: "note:list",
      summary: "A page of the patient's notes and transcriptions with their current text (care team only; each audited)",
      params: patientParams,
      query: noteListQuery,
      response: notePage,
      responseDescription: "Notes, oldest first",
    },
    ({ ctx, actor, params, query, meta }) => listNotes(ctx, actor, params.id, query, meta),
  ),
  defineRoute(
    {
      ...PHI_WRITE,
      method: "post",
      path: "/patients/:id/notes",
      action: "note:create",
      summary: "Write a note or transcription (care team only)",
      params: patientParams,
      body: noteCreate,
      response: noteView,
      status: 201,
    },
    async ({ ctx, actor, params, body, res, meta }) => {
      const note = await createNote(ctx, actor, params.id, body, meta);
      setEtag(res, note.version);
      res.location(location(`/patients/${params.id}/notes/${note.id}`));
      return note;
    },
  ),
  defineRoute(
    {
      ...PHI_READ,
      method: "get",
      path: "/patients/:id/notes/:itemId",
      action: "note:read",
      summary: "One note, current version, with its ETag",
      params: patientItemParams,
      response: noteView,
    },
    async ({ ctx, actor, params, res, meta }) => {
      const note = await getNote(ctx, actor, params.id, params.itemId, meta);
      setEtag(res, note.version);
      return note;
    },
  ),
  defineRoute(
    {
      ...IF_MATCH,
      method: "put",
      path: "/patients/:id/notes/:itemId",
      action: "note:update",
      summary: "Revise a note: a new version (an edit of a draft, or an amendment with a reason once signed); earlier versions are kept",
      params: patientItemParams,
      body: noteRevise,
      response: noteView,
      responseDescription: "The note with its new current version",
    },
    async ({ ctx, actor, params, body, req, res, meta }) => {
      const note = await reviseNote(ctx, actor, params.id, params.itemId, ifMatchVersion(req), body, meta);
      setEtag(res, note.version);
      return note;
    },
  ),
  defineRoute(
    {
      ...IF_MATCH,
      method: "post",
      path: "/patients/:id/notes/:itemId/sign",
      action: "note:sign",
      summary: "Sign off the current version (its author only; If-Match required)",
      params: patientItemParams,
      body: noteSign,
      response: noteView,
      responseDescription: "The signed note",
    },
    async ({ ctx, actor, params, req, res, meta }) => {
      const note = await signNote(ctx, actor, params.id, params.itemId, ifMatchVersion(req), meta);
      setEtag(res, note.version);
      return note;
    },
  ),
  defineRoute(
    {
      ...PHI_READ,
      method: "get",
      path: "/patients/:id/notes/:itemId/versions",
      action: "note:read",
      summary: "Every version of a note, the original included",
      params: patientItemParams,
      response: noteHistorySchema,
      responseDescription: "Versions, oldest first",
    },
    ({ ctx, actor, params, meta }) => noteHistory(ctx, actor, params.id, params.itemId, meta),
  ),
];
