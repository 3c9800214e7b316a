import { z } from "zod";
import { pageQuery, text, uuid, undecryptableCount } from "../http.js";

/** Clinical notes and transcriptions: encrypted bodies, every version kept, sign-off. */

export const noteCreate = z
  .object({
    kind: z.enum(["note", "transcription"]).default("note"),
    /** The note text (up to 100,000 characters). */
    body: text(1, 100_000),
    /** For a transcription: the audio attachment (of the same patient) it transcribes. */
    sourceAttachmentId: uuid.optional(),
  })
  .strict();

export const noteRevise = z
  .object({
    body: text(1, 100_000),
    /** Required once the note is signed: why it is amended (kept with the amendment). */
    reason: text(1, 500).optional(),
  })
  .strict();

export const noteSign = z.object({}).strict();

export const noteListQuery = z.object(pageQuery).strict();

export const noteView = z.object({
  id: z.uuid(),
  patientId: z.uuid(),
  kind: z.enum(["note", "transcription"]),
  status: z.enum(["draft", "signed", "amended"]).describe("draft: editable; signed: current version signed off; amended: signed note with a newer unsigned amendment"),
  body: z.string().describe("The current version's text"),
  currentVersion: z.number().int(),
  signedVersion: z.number().int().nullable(),
  signedBy: z.uuid().nullable(),
  signedAt: z.string().nullable(),
  sourceAttachmentId: z.uuid().nullable(),
  version: z.number().int().describe("Row version behind the ETag"),
  createdAt: z.string(),
  createdBy: z.uuid(),
  updatedAt: z.string(),
});
export const notePage = z.object({ items: z.array(noteView), nextCursor: z.string().nullable(), undecryptable: undecryptableCount });

export const noteVersionView = z.object({
  version: z.number().int(),
  change: z.enum(["original", "edit", "amendment"]),
  body: z.string(),
  reason: z.string().nullable(),
  createdAt: z.string(),
  createdBy: z.uuid(),
  signed: z.boolean().describe("This is the version that was signed off"),
});
export const noteHistory = z.object({ noteId: z.uuid(), versions: z.array(noteVersionView) });

export type NoteCreate = z.infer<typeof noteCreate>;
export type NoteRevise = z.infer<typeof noteRevise>;
export type NoteView = z.infer<typeof noteView>;
export type NoteVersionView = z.infer<typeof noteVersionView>;
