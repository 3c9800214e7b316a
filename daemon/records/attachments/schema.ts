import { z } from "zod";
import { pageQuery, undecryptableCount } from "../http.js";

/** Attachments: audio recordings, scanned documents, images — streamed, encrypted in segments. */
export const ATTACHMENT_KINDS = ["audio", "document", "image", "other"] as const;

export const uploadQuery = z.object({ kind: z.enum(ATTACHMENT_KINDS).default("other") }).strict();
export const attachmentListQuery = z.object(pageQuery).strict();

export const attachmentView = z.object({
  id: z.uuid(),
  patientId: z.uuid(),
  kind: z.enum(ATTACHMENT_KINDS),
  mediaType: z.string(),
  filename: z.string().nullable(),
  sizeBytes: z.number().int(),
  sha256: z.string().describe("SHA-256 of the content, hex (also sent as Repr-Digest on download)"),
  createdAt: z.string(),
  createdBy: z.uuid(),
});
export const attachmentPage = z.object({ items: z.array(attachmentView), nextCursor: z.string().nullable(), undecryptable: undecryptableCount });

export type AttachmentView = z.infer<typeof attachmentView>;
