import type { Request, Response } from "express";
import { pipeline } from "node:stream/promises";
import { currentActor } from "../../kernel/actor.js";
import { authenticate } from "../../auth/index.js";
import { requestMeta } from "../../kernel/request-meta.js";
import type { ApplianceContext } from "../../context.js";
import { Invalid, PayloadTooLarge, UnsupportedMediaType } from "../../kernel/errors.js";
import { requireUnsealed } from "../../keys/index.js";
import { patientItemParams, patientParams } from "../http.js";
import { defineRoute } from "../../kernel/define-route.js";
import { location, PHI_READ, PHI_WRITE } from "../route-kit.js";
import { attachmentListQuery, attachmentPage, attachmentView, uploadQuery } from "./schema.js";
import { deleteAttachment, getAttachment, listAttachments, openDownload, uploadAttachment } from "./service.js";

const UPLOAD_PATH = "/patients/:id/attachments";

/** Form encodings are what a cross-site form can send; attachments come as their own media type. */
const REFUSED_TYPES = new Set(["multipart/form-data", "application/x-www-form-urlencoded"]);
const MEDIA_TYPE = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,62}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}$/;

function mediaTypeOf(req: Request): string {
  const raw = req.get("content-type");
  if (!raw) throw new UnsupportedMediaType("send the attachment's media type as Content-Type (e.g. audio/mpeg, application/pdf)");
  const type = raw.split(";")[0]!.trim().toLowerCase();
  if (REFUSED_TYPES.has(type)) throw new UnsupportedMediaType("send the file's bytes as the raw body with the file's own media type, not a form encoding");
  if (!MEDIA_TYPE.test(type)) throw new UnsupportedMediaType("Content-Type is not a valid media type");
  return type;
}

const BIDI_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

/**
 * Types a browser may render or run when the download is opened in a tab. Anything else is sent as
 * application/octet-stream: an uploaded HTML or SVG file must never execute script on the
 * appliance's origin, whatever Content-Disposition and the CSP say (nosniff is on every response).
 */
const PASSIVE_TYPE = /^(audio|video)\/|^image\/(png|jpeg|gif|webp|tiff|bmp|heic|heif|avif)$|^application\/(pdf|dicom|zip)$|^text\/(plain|csv)$/;

export function servedMediaType(stored: string): string {
  return PASSIVE_TYPE.test(stored) ? stored : "application/octet-stream";
}

/** RFC 6266 filename from Content-Disposition (`filename*` in RFC 8187 UTF-8 form wins over `filename`). */
export function filenameOf(header: string | undefined): string | null {
  if (!header) return null;
  const invalid = (message: string) => new Invalid(message, { errors: [{ path: "Content-Disposition", message, code: "custom" }] });
  let name: string | undefined;
  const extended = /filename\*\s*=\s*UTF-8''([^;\s]+)/i.exec(header);
  if (extended) {
    try {
      name = decodeURIComponent(extended[1]!);
    } catch {
      throw invalid("the filename is not valid percent-encoded UTF-8");
    }
  } else {
    const plain = /filename\s*=\s*"([^"]*)"|filename\s*=\s*([^;\s]+)/i.exec(header);
    name = plain ? (plain[1] ?? plain[2]) : undefined;
  }
  if (name === undefined) return null;
  if (!(name as unknown as { isWellFormed(): boolean }).isWellFormed()) throw invalid("the filename is not valid UTF-8");
  name = name.trim();
  if (name.length === 0 || name.length > 255) throw invalid("the filename must be 1 to 255 characters");
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f/\\]/.test(name)) throw invalid("the filename must not contain path separators or control characters");
  // Bidirectional overrides and isolates make "invoice\u202Efdp.exe" display as "invoiceexe.pdf" (CVE-2021-42574's trick).
  if (BIDI_CONTROLS.test(name)) throw invalid("the filename must not contain bidirectional control characters");
  return name;
}

function contentDisposition(filename: string | null): string {
  if (!filename) return "attachment";
  const ascii = filename.replace(/[^\x20-\x7e]|["\\%]/g, "_");
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(filename)}`;
}

/**
 * The upload route: mounted ahead of the JSON body parser (the body is a stream of bytes, never
 * buffered) and so it authenticates on its own path, before the policy guard.
 */
export const attachmentUploadRoutes = [
  defineRoute(
    {
      ...PHI_WRITE,
      method: "post",
      path: UPLOAD_PATH,
      action: "attachment:create",
      summary: "Upload an attachment as the raw request body (streamed and encrypted as it arrives; care team only)",
      description:
        "Send the file's bytes as the body with its media type as Content-Type (not multipart or form encoding) and, optionally, its name in " +
        "`Content-Disposition: attachment; filename*=UTF-8''<percent-encoded>`. Bodies over records.attachmentMaxBytes get 413 and nothing is kept.",
      params: patientParams,
      query: uploadQuery,
      body: { mediaType: "application/octet-stream", description: "The attachment's bytes (any media type, sent as Content-Type)" },
      response: attachmentView,
      status: 201,
      responseDescription: "The attachment's metadata",
      problems: { ...PHI_WRITE.problems, 415: "A form encoding or an invalid Content-Type" },
      use: (ctx) => [requireUnsealed(ctx), authenticate(ctx)],
    },
    async ({ ctx, actor, params, query, req, res, meta }) => {
      const mediaType = mediaTypeOf(req);
      const filename = filenameOf(req.get("content-disposition"));
      const declared = Number(req.get("content-length") ?? NaN);
      const limit = ctx.config.records.attachmentMaxBytes;
      if (Number.isFinite(declared) && declared > limit) throw new PayloadTooLarge(`the attachment exceeds the limit of ${limit} bytes`, { limitBytes: limit });
      const attachment = await uploadAttachment(ctx, actor, params.id, { kind: query.kind, mediaType, filename }, req, meta);
      res.location(location(`/patients/${params.id}/attachments/${attachment.id}`));
      return attachment;
    },
  ),
];

async function sendDownload(ctx: ApplianceContext, req: Request, res: Response): Promise<void> {
  const p = patientItemParams.parse(req.params);
  const dl = await openDownload(ctx, currentActor(res), p.id, p.itemId, requestMeta(req, res));
  res.status(200);
  res.setHeader("Content-Type", servedMediaType(dl.attachment.mediaType));
  res.setHeader("Content-Length", String(dl.attachment.sizeBytes));
  res.setHeader("Content-Disposition", contentDisposition(dl.attachment.filename));
  res.setHeader("Repr-Digest", `sha-256=:${Buffer.from(dl.attachment.sha256, "hex").toString("base64")}:`);
  try {
    await pipeline(dl.content(), res);
  } catch (err) {
    // Headers are gone: the only honest signal left is an incomplete response.
    ctx.log.error("attachment download failed mid-stream", { attachmentId: p.itemId, error: (err as Error).name });
    res.destroy();
  }
}

/** Attachment metadata, downloads and deletion (care team only). */
export const attachmentRoutes = [
  defineRoute(
    {
      ...PHI_READ,
      method: "get",
      path: UPLOAD_PATH,
      action: "attachment:list",
      summary: "A page of the patient's attachments (metadata)",
      params: patientParams,
      query: attachmentListQuery,
      response: attachmentPage,
    },
    ({ ctx, actor, params, query, meta }) => listAttachments(ctx, actor, params.id, query, meta),
  ),
  defineRoute(
    {
      ...PHI_READ,
      method: "get",
      path: "/patients/:id/attachments/:itemId",
      action: "attachment:read",
      summary: "One attachment's metadata",
      params: patientItemParams,
      response: attachmentView,
    },
    ({ ctx, actor, params, meta }) => getAttachment(ctx, actor, params.id, params.itemId, meta),
  ),
  defineRoute(
    {
      ...PHI_READ,
      method: "get",
      path: "/patients/:id/attachments/:itemId/content",
      action: "attachment:read",
      summary: "Download an attachment (streamed, decrypted segment by segment, audited before the first byte)",
      description:
        "Repr-Digest (RFC 9530) carries the SHA-256 of the content. A stored file that fails authentication ends the response early instead of sending unauthenticated bytes.",
      params: patientItemParams,
      response: {
        mediaType: "application/octet-stream",
        description:
          "The content, with its stored media type as Content-Type when that type is passive (audio, video, raster images, PDF, plain text); otherwise application/octet-stream",
      },
    },
    ({ ctx, req, res }) => sendDownload(ctx, req, res),
  ),
  defineRoute(
    {
      ...PHI_WRITE,
      method: "delete",
      path: "/patients/:id/attachments/:itemId",
      action: "attachment:delete",
      summary: "Delete an attachment and its stored file (refused under legal hold)",
      params: patientItemParams,
    },
    async ({ ctx, actor, params, meta }) => {
      await deleteAttachment(ctx, actor, params.id, params.itemId, meta);
    },
  ),
];
