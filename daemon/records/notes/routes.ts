import type { Router } from "express";
import { currentActor } from "../../kernel/actor.js";
import { requestMeta } from "../../kernel/request-meta.js";
import type { ApplianceContext } from "../../context.js";
import { ifMatchVersion, patientItemParams, patientParams, setEtag } from "../http.js";
import { doc, mountOn } from "../route-kit.js";
import { noteCreate, noteHistory as noteHistorySchema, noteListQuery, notePage, noteRevise, noteSign, noteView } from "./schema.js";
import { createNote, getNote, listNotes, noteHistory, reviseNote, signNote } from "./service.js";

doc("get", "/patients/:id/notes", {
  summary: "A page of the patient's notes and transcriptions with their current text (care team only; each audited)",
  params: patientParams,
  query: noteListQuery,
  ok: { status: 200, description: "Notes, oldest first", schema: notePage },
});
doc("post", "/patients/:id/notes", { summary: "Write a note or transcription (care team only)", params: patientParams, body: noteCreate, ok: { status: 201, description: "The note", schema: noteView } });
doc("get", "/patients/:id/notes/:itemId", { summary: "One note, current version", params: patientItemParams, etag: "sends", ok: { status: 200, description: "The note", schema: noteView } });
doc("put", "/patients/:id/notes/:itemId", {
  summary: "Revise a note: a new version (an edit of a draft, or an amendment with a reason once signed); earlier versions are kept",
  params: patientItemParams,
  body: noteRevise,
  etag: "if-match",
  ok: { status: 200, description: "The note with its new current version", schema: noteView },
});
doc("post", "/patients/:id/notes/:itemId/sign", {
  summary: "Sign off the current version (its author only; If-Match required)",
  params: patientItemParams,
  body: noteSign,
  etag: "if-match",
  ok: { status: 200, description: "The signed note", schema: noteView },
});
doc("get", "/patients/:id/notes/:itemId/versions", {
  summary: "Every version of a note, the original included",
  params: patientItemParams,
  ok: { status: 200, description: "Versions, oldest first", schema: noteHistorySchema },
});

export function mountNoteRoutes(ctx: ApplianceContext, router: Router): void {
  const route = mountOn(ctx, router);
  route({ method: "get", path: "/patients/:id/notes", action: "note:list" }, async (req, res) => {
    const { id } = patientParams.parse(req.params);
    res.json(await listNotes(ctx, currentActor(res), id, noteListQuery.parse(req.query), requestMeta(req, res)));
  });
  route({ method: "post", path: "/patients/:id/notes", action: "note:create" }, async (req, res) => {
    const { id } = patientParams.parse(req.params);
    const note = await createNote(ctx, currentActor(res), id, noteCreate.parse(req.body), requestMeta(req, res));
    setEtag(res, note.version);
    res.status(201).location(`/api/v1/patients/${id}/notes/${note.id}`).json(note);
  });
  route({ method: "get", path: "/patients/:id/notes/:itemId", action: "note:read" }, async (req, res) => {
    const p = patientItemParams.parse(req.params);
    const note = await getNote(ctx, currentActor(res), p.id, p.itemId, requestMeta(req, res));
    setEtag(res, note.version);
    res.json(note);
  });
  route({ method: "put", path: "/patients/:id/notes/:itemId", action: "note:update" }, async (req, res) => {
    const p = patientItemParams.parse(req.params);
    const body = noteRevise.parse(req.body);
    const note = await reviseNote(ctx, currentActor(res), p.id, p.itemId, ifMatchVersion(req), body, requestMeta(req, res));
    setEtag(res, note.version);
    res.json(note);
  });
  route({ method: "post", path: "/patients/:id/notes/:itemId/sign", action: "note:sign" }, async (req, res) => {
    const p = patientItemParams.parse(req.params);
    noteSign.parse(req.body ?? {});
    const note = await signNote(ctx, currentActor(res), p.id, p.itemId, ifMatchVersion(req), requestMeta(req, res));
    setEtag(res, note.version);
    res.json(note);
  });
  route({ method: "get", path: "/patients/:id/notes/:itemId/versions", action: "note:read" }, async (req, res) => {
    const p = patientItemParams.parse(req.params);
    res.json(await noteHistory(ctx, currentActor(res), p.id, p.itemId, requestMeta(req, res)));
  });
}
