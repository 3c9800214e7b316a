import { z } from "zod";
import { pageQuery, undecryptableCount } from "../http.js";

/** Attachments: audio recordings, scanned documents, images — streamed, encrypted in segments. */
export const ATTACHMENT_KINDS = ["audio", "document", "image", "other"] as const;

export const uploadQuery = z.object({ kind: z.enum(ATTACHMENT_KINDS).default("other") }).strict();
export const attachmentListQuery = z.object(pageQuery).strict();

export const attachmentView = z.object({
  /** Attachment id. */
  id: z.uuid(),
  /** The patient. */
  patientId: z.uuid(),
  /** audio, document, image or other. */
  kind: z.enum(ATTACHMENT_KINDS),
  /** The media type it was uploaded with. */
  mediaType: z.string(),
  /** Its file name, if one was given. */
  filename: z.string().nullable(),
  /** Size of the content. */
  sizeBytes: z.number().int(),
  sha256: z.string().describe("SHA-256 of the content, hex (also sent as Repr-Digest on download)"),
  /** When it was uploaded. */
  createdAt: z.string(),
  /** Who uploaded it. */
  createdBy: z.uuid(),
});
export const attachmentPage = z.object({ items: z.array(attachmentView), nextCursor: z.string().nullable(), undecryptable: undecryptableCount });

export type AttachmentView = z.infer<typeof attachmentView>;
