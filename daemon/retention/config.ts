import { z } from "zod";

const days = (d: number, what: string) => z.number().int().min(1).max(36500).default(d).describe(what);

/** Settings of the retention register (`retention:` in config/default.yaml); docs/retention.md explains them. */
export const retentionSchema = z
  .object({
    defaults: z
      .object({
        noteDays: days(2192, "Clinical notes (and every version) are kept this many days after creation unless the tenant's rule says otherwise (6 years)."),
        audioDays: days(365, "Audio recordings are kept this many days after upload (1 year)."),
        attachmentDays: days(2192, "Other attachments (documents, images) are kept this many days after upload (6 years)."),
        appointmentDays: days(2192, "Appointments are kept this many days after they ended (6 years)."),
        sessionDays: days(30, "Ended sessions are kept this many days after they expired."),
        inviteDays: days(30, "Invites never accepted are kept this many days after they expired."),
      })
      .strict()
      .prefault({})
      .describe("Default retention per record class; a tenant's rule replaces it. Audit events follow audit.retentionYears (7 years)."),
    batchSize: z.number().int().min(1).max(50_000).default(2000).describe("Rows deleted per purge transaction (short transactions, SKIP LOCKED)."),
  })
  .strict();

export type RetentionConfig = z.infer<typeof retentionSchema>;
