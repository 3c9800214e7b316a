import { z } from "zod";
import { pageQuery, text, undecryptableCount } from "../http.js";

/** Patients: demographics, every field encrypted; lookups by MRN or email through blind indexes. */

const birthDate = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, "a date as YYYY-MM-DD")
  .refine((s) => {
    const d = new Date(`${s}T00:00:00Z`);
    return !Number.isNaN(d.getTime()) && d.toISOString().slice(0, 10) === s && d.getUTCFullYear() >= 1850;
  }, "a real calendar date from 1850 on");
const mrn = text(1, 64).pipe(z.string().regex(/^[\p{L}\p{N}][\p{L}\p{N} ._/-]*$/u, "letters, digits, spaces and . _ / -"));
const phone = text(3, 32).pipe(z.string().regex(/^\+?[0-9 ().-]{3,32}(\s*(x|ext\.?)\s*\d{1,6})?$/i, "digits, spaces, + ( ) . - and an optional extension"));
const email = z.email().max(254);

export const patientCreate = z
  .object({
    /** Full name as the patient gives it. */
    name: text(1, 200),
    /** Date of birth, YYYY-MM-DD. */
    birthDate: birthDate.optional(),
    /** Medical record number; unique within the tenant. */
    mrn: mrn.optional(),
    phone: phone.optional(),
    email: email.optional(),
    /** Postal address, free text (lines separated by newlines). */
    address: text(1, 500).optional(),
  })
  .strict();

export const patientUpdate = z
  .object({
    name: text(1, 200).optional(),
    /** null removes the value. */
    birthDate: birthDate.nullable().optional(),
    mrn: mrn.nullable().optional(),
    phone: phone.nullable().optional(),
    email: email.nullable().optional(),
    address: text(1, 500).nullable().optional(),
  })
  .strict()
  .refine((u) => Object.keys(u).length > 0, "change at least one field");

/** Exact lookup by one identifier. In the body, never the URL: identifiers are PHI. */
export const patientSearch = z.union([z.object({ mrn }).strict(), z.object({ email }).strict()]);

export const patientListQuery = z.object(pageQuery).strict();

export const patientView = z.object({
  /** Patient id. */
  id: z.uuid(),
  /** Full name. */
  name: z.string(),
  /** Date of birth, YYYY-MM-DD. */
  birthDate: z.string().nullable(),
  /** Medical record number. */
  mrn: z.string().nullable(),
  /** Phone number. */
  phone: z.string().nullable(),
  /** Email address. */
  email: z.string().nullable(),
  /** Postal address. */
  address: z.string().nullable(),
  /** Row version behind the ETag. */
  version: z.number().int(),
  /** When the patient was registered. */
  createdAt: z.string(),
  /** When the demographics last changed. */
  updatedAt: z.string(),
});

export const patientPage = z.object({ items: z.array(patientView), nextCursor: z.string().nullable(), undecryptable: undecryptableCount });

/** A match the caller may not open: only the id, so a practitioner can decide on break-glass. */
export const patientSearchResult = z.object({
  items: z.array(z.union([patientView.extend({ accessible: z.literal(true) }), z.object({ id: z.uuid(), accessible: z.literal(false) })])),
  undecryptable: undecryptableCount,
});

export type PatientCreate = z.infer<typeof patientCreate>;
export type PatientUpdate = z.infer<typeof patientUpdate>;
export type PatientSearch = z.infer<typeof patientSearch>;
export type PatientView = z.infer<typeof patientView>;
