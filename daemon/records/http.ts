/**
 * What every records route shares: request schema building blocks, ETag / If-Match handling and
 * signed pagination cursors. docs/records.md ("API conventions") describes the contract.
 */
import { isUtf8 } from "node:buffer";
import { createHmac, timingSafeEqual } from "node:crypto";
import type { Request, Response } from "express";
import { z } from "zod";
import type { ApplianceContext } from "../context.js";
import { Invalid, PreconditionFailed } from "../kernel/errors.js";
import { hkdfSha256 } from "../keys/index.js";
import { PreconditionRequired } from "./errors.js";

// ---- schema building blocks --------------------------------------------------------------------

// Lone surrogates (from JSON "\ud800" escapes) would be turned into U+FFFD by UTF-8 encoding:
// two different strings, one stored value. Refused as invalid input instead.
const isWellFormed = (s: string): boolean => (s as unknown as { isWellFormed(): boolean }).isWellFormed();

/** Free text (PHI or not): well-formed Unicode, trimmed, within bounds. */
export const text = (min: number, max: number) =>
  z
    .string()
    .max(max)
    .refine(isWellFormed, { message: "must be well-formed Unicode text" })
    .transform((s) => s.trim())
    .pipe(z.string().min(min));

export const uuid = z.uuid().transform((s) => s.toLowerCase());
export const patientParams = z.object({ id: uuid }).strict();
export const patientItemParams = z.object({ id: uuid, itemId: uuid }).strict();
export const itemParams = z.object({ itemId: uuid }).strict();

/** ISO 8601 instant with an offset (`2025-03-01T09:30:00Z`); nothing a client's locale could reinterpret. */
export const instant = z.iso.datetime({ offset: true }).transform((s) => new Date(s));

// ---- ETag / If-Match ---------------------------------------------------------------------------

/** A strong validator from the row's version counter (RFC 9110 §8.8.3). */
export function etagOf(version: number): string {
  return `"${version}"`;
}

export function setEtag(res: Response, version: number): void {
  res.setHeader("ETag", etagOf(version));
}

/**
 * The version an update is based on, from `If-Match` (RFC 9110 §13.1.1). Missing → 428 (RFC 6585):
 * a blind overwrite is refused. `*` and weak tags cannot protect against lost updates, so they
 * are refused (412) like a tag that names another version. The service compares the number with
 * the row, under a row lock, and answers 412 when it moved on.
 */
export function ifMatchVersion(req: Request): number {
  const header = req.get("if-match");
  if (header === undefined || header.trim() === "") {
    throw new PreconditionRequired("send If-Match with the ETag from your last read of this resource (lost-update protection)");
  }
  const m = /^\s*"(\d{1,9})"\s*$/.exec(header);
  if (!m) throw new PreconditionFailed("If-Match must be the single strong ETag of the version you read (not *, a weak tag or a list)");
  return Number(m[1]);
}

export function assertVersion(current: number, expected: number): void {
  if (current !== expected) {
    throw new PreconditionFailed("the resource changed since you read it; read it again and reapply your change", { currentETag: etagOf(current) });
  }
}

// ---- cursor pagination -------------------------------------------------------------------------

/** Largest page; anything above is refused (400) rather than silently capped, so clients notice. */
export const MAX_PAGE_SIZE = 100;

export const pageQuery = {
  limit: z.coerce.number().int().min(1).max(MAX_PAGE_SIZE).default(25),
  cursor: z.string().max(1024).optional(),
};

/** The `undecryptable` field of every records list response (see `ListPage`). */
export const undecryptableCount = z
  .number()
  .int()
  .min(0)
  .describe("Rows of this page left out because they cannot be decrypted (crypto-shredded or damaged); each is audited by id. The cursor moves past them.");

export type Page<T> = { items: T[]; nextCursor: string | null };
/**
 * A page as the API sends it: `undecryptable` counts the rows of this page left out because they
 * cannot be decrypted (audited; docs/records.md "Undecryptable rows"). The cursor still moves past them.
 */
export type ListPage<T> = Page<T> & { undecryptable: number };

const CURSOR_SHAPE = /^[A-Za-z0-9_-]{1,900}\.[A-Za-z0-9_-]{22}$/;
const cursorPayload = z.object({ p: z.string(), k: z.array(z.union([z.string().max(64), z.number()])).max(4) }).strict();

function cursorKey(ctx: ApplianceContext): Buffer {
  return hkdfSha256(ctx.rootKey.material(), Buffer.from("wardkeep/records"), Buffer.from("wardkeep/records/cursor/v1"), 32);
}

function tagOf(ctx: ApplianceContext, payload: string): Buffer {
  const key = cursorKey(ctx);
  try {
    return createHmac("sha256", key).update(payload).digest().subarray(0, 16);
  } finally {
    key.fill(0);
  }
}

/**
 * Opaque, signed cursors: the position (sort keys: a time and an id, never PHI) plus the listing
 * it belongs to (`purpose` names the tenant, the route and its filters), MACed with a key derived
 * from the appliance's internal key. A forged, altered or borrowed cursor is a 400, not a query
 * with attacker-chosen bounds.
 */
export function encodeCursor(ctx: ApplianceContext, purpose: string, keys: Array<string | number>): string {
  const payload = Buffer.from(JSON.stringify({ p: purpose, k: keys })).toString("base64url");
  return `${payload}.${tagOf(ctx, payload).toString("base64url")}`;
}

export function decodeCursor(ctx: ApplianceContext, purpose: string, cursor: string | undefined): Array<string | number> | undefined {
  if (cursor === undefined) return undefined;
  const invalid = () =>
    new Invalid("the cursor is not valid for this listing; start again without it", { errors: [{ path: "cursor", message: "invalid cursor", code: "invalid_cursor" }] });
  if (!CURSOR_SHAPE.test(cursor)) throw invalid();
  const [payload, tag] = cursor.split(".") as [string, string];
  const expected = tagOf(ctx, payload);
  const given = Buffer.from(tag, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw invalid();
  let parsed: z.infer<typeof cursorPayload>;
  try {
    parsed = cursorPayload.parse(JSON.parse(Buffer.from(payload, "base64url").toString("utf8")));
  } catch {
    throw invalid();
  }
  if (parsed.p !== purpose) throw invalid();
  return parsed.k;
}

/** A (time, id) keyset position from a cursor. */
export function timeIdPosition(keys: Array<string | number> | undefined): { at: Date; id: string } | undefined {
  if (!keys) return undefined;
  const [at, id] = keys;
  if (typeof at !== "string" || typeof id !== "string" || Number.isNaN(Date.parse(at)) || !/^[0-9a-f-]{36}$/.test(id)) {
    throw new Invalid("the cursor is not valid for this listing; start again without it");
  }
  return { at: new Date(at), id };
}

/** Cuts a fetched `limit + 1` rows into a page and the next cursor. */
export function pageOf<R, T>(ctx: ApplianceContext, purpose: string, rows: R[], limit: number, position: (r: R) => Array<string | number>, view: (r: R) => T): Page<T> {
  const more = rows.length > limit;
  const kept = more ? rows.slice(0, limit) : rows;
  return { items: kept.map(view), nextCursor: more ? encodeCursor(ctx, purpose, position(kept[kept.length - 1]!)) : null };
}

// ---- request body encoding ---------------------------------------------------------------------

/**
 * `verify` hook for express.json: body-parser would decode invalid UTF-8 into U+FFFD and store
 * something the client never sent. RFC 8259 §8.1 makes JSON text UTF-8, so such a body is not
 * valid JSON: 400 (`entity.parse.failed`), before any handler runs.
 */
export function rejectInvalidUtf8(_req: unknown, _res: unknown, buf: Buffer): void {
  if (!isUtf8(buf)) throw Object.assign(new Error("request body is not valid UTF-8"), { status: 400, type: "entity.parse.failed" });
}
