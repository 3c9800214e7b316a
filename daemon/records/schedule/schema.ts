import { z } from "zod";
import { instant, pageQuery, uuid, undecryptableCount } from "../http.js";

/** The schedule: time, patient and practitioner — no clinical content, so front desk may see it. */

export const APPOINTMENT_STATUSES = ["booked", "arrived", "completed", "cancelled", "no_show"] as const;

export const appointmentCreate = z
  .object({
    patientId: uuid,
    /** A practitioner of the tenant. */
    practitionerId: uuid,
    startsAt: instant,
    endsAt: instant,
    status: z.enum(APPOINTMENT_STATUSES).default("booked"),
  })
  .strict()
  // zod runs object refinements even when a field already failed: check the types first.
  .refine((a) => !(a.startsAt instanceof Date && a.endsAt instanceof Date) || a.endsAt > a.startsAt, { path: ["endsAt"], message: "must be after startsAt" })
  .refine((a) => !(a.startsAt instanceof Date && a.endsAt instanceof Date) || a.endsAt.getTime() - a.startsAt.getTime() <= 86_400_000, {
    path: ["endsAt"],
    message: "an appointment lasts at most 24 hours",
  });

export const appointmentUpdate = z
  .object({
    practitionerId: uuid.optional(),
    startsAt: instant.optional(),
    endsAt: instant.optional(),
    status: z.enum(APPOINTMENT_STATUSES).optional(),
  })
  .strict()
  .refine((u) => Object.keys(u).length > 0, "change at least one field");

export const scheduleQuery = z
  .object({
    /** Start of the window (inclusive); default: now minus 12 hours. */
    from: instant.optional(),
    /** End of the window (exclusive); default: from plus 7 days; at most 92 days after from. */
    to: instant.optional(),
    practitionerId: uuid.optional(),
    ...pageQuery,
  })
  .strict();

export const appointmentView = z.object({
  /** Appointment id. */
  id: z.uuid(),
  /** The patient. */
  patientId: z.uuid(),
  /** The patient's name. */
  patientName: z.string(),
  /** The practitioner seen. */
  practitionerId: z.uuid(),
  /** The practitioner's display name. */
  practitionerName: z.string().nullable(),
  /** Start. */
  startsAt: z.string(),
  /** End. */
  endsAt: z.string(),
  /** booked, arrived, completed, cancelled or no_show. */
  status: z.enum(APPOINTMENT_STATUSES),
  /** Row version behind the ETag. */
  version: z.number().int(),
  /** When it was booked. */
  createdAt: z.string(),
  /** When it last changed. */
  updatedAt: z.string(),
});
export const appointmentPage = z.object({ items: z.array(appointmentView), nextCursor: z.string().nullable(), undecryptable: undecryptableCount });

export type AppointmentCreate = z.infer<typeof appointmentCreate>;
export type AppointmentUpdate = z.infer<typeof appointmentUpdate>;
export type ScheduleQuery = z.infer<typeof scheduleQuery>;
export type AppointmentView = z.infer<typeof appointmentView>;
