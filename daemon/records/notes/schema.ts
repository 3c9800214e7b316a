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
  /** Note id. */
  id: z.uuid(),
  /** The patient. */
  patientId: z.uuid(),
  /** A note, or a transcription of an audio attachment. */
  kind: z.enum(["note", "transcription"]),
  status: z.enum(["draft", "signed", "amended"]).describe("draft: editable; signed: current version signed off; amended: signed note with a newer unsigned amendment"),
  body: z.string().describe("The current version's text"),
  /** Number of the current version. */
  currentVersion: z.number().int(),
  /** The version that was signed off. */
  signedVersion: z.number().int().nullable(),
  /** Who signed it off (its author). */
  signedBy: z.uuid().nullable(),
  /** When it was signed off. */
  signedAt: z.string().nullable(),
  /** For a transcription: the audio attachment it transcribes. */
  sourceAttachmentId: z.uuid().nullable(),
  version: z.number().int().describe("Row version behind the ETag"),
  /** When it was written. */
  createdAt: z.string(),
  /** Its author. */
  createdBy: z.uuid(),
  /** When it last changed. */
  updatedAt: z.string(),
});
export const notePage = z.object({ items: z.array(noteView), nextCursor: z.string().nullable(), undecryptable: undecryptableCount });

export const noteVersionView = z.object({
  /** Version number. */
  version: z.number().int(),
  /** The original, an edit of a draft, or an amendment after sign-off. */
  change: z.enum(["original", "edit", "amendment"]),
  /** The version's text. */
  body: z.string(),
  /** Why it was amended. */
  reason: z.string().nullable(),
  /** When it was written. */
  createdAt: z.string(),
  /** Who wrote it. */
  createdBy: z.uuid(),
  signed: z.boolean().describe("This is the version that was signed off"),
});
export const noteHistory = z.object({ noteId: z.uuid(), versions: z.array(noteVersionView) });

export type NoteCreate = z.infer<typeof noteCreate>;
export type NoteRevise = z.infer<typeof noteRevise>;
export type NoteView = z.infer<typeof noteView>;
export type NoteVersionView = z.infer<typeof noteVersionView>;
