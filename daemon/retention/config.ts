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
        consentDays: days(2192, "Consents are kept this many days after they ended (revoked or expired; 6 years); a consent in force is never purged."),
        patientDays: days(
          2557,
          "A patient's record (demographics) is kept this many days after the last encounter (7 years), and only once nothing else of theirs is left; then it becomes a tombstone and the patient's keys are crypto-shredded after keys.shredGraceDays.",
        ),
        sessionDays: days(30, "Ended sessions are kept this many days after they expired."),
        inviteDays: days(30, "Invites never accepted are kept this many days after they expired."),
        supportRequestDays: days(365, "Support access requests are kept this many days after they ended (denied, ended or expired)."),
        exportFileDays: days(90, "A tenant's audit evidence packs (files under audit.exportDir) are kept this many days after they were made."),
      })
      .strict()
      .prefault({})
      .describe("Default retention per record class; a tenant's rule replaces it. Audit events follow audit.retentionYears (7 years)."),
    ageOfMajorityYears: z
      .number()
      .int()
      .min(14)
      .max(25)
      .default(18)
      .describe("The age of majority for rules on the trigger age_of_majority: a minor's records are kept until this age plus the rule's period."),
    batchSize: z
      .number()
      .int()
      .min(1)
      .max(50_000)
      .default(500)
      .describe(
        "Rows deleted per purge transaction (short transactions, SKIP LOCKED). Each commit flushes its batch's WAL, which requests committing then wait behind: 500 kept reads' p99 within 2x where 2000 did not (docs/retention.md, Session 8).",
      ),
    dutyCycle: z
      .number()
      .min(0.05)
      .max(1)
      .default(1)
      .describe(
        "Share of the time the purge works: after a batch that took t, it pauses t × (1 − dutyCycle) / dutyCycle, leaving the database to the requests (1: no pause; docs/retention.md, Benchmark).",
      ),
    purgeConnections: z
      .number()
      .int()
      .min(0)
      .max(8)
      .default(1)
      .describe(
        "Database connections of the purge's own, opened for a run and closed after it (0: it borrows the request pool's). More than 1 purges notes, attachments, appointments and consents with that many workers at once, each on its own range (notes: of creation order; the others: of ids); docs/retention.md, The purge's connections.",
      ),
    purgeNice: z
      .number()
      .int()
      .min(0)
      .max(19)
      .default(0)
      .describe(
        "OS scheduling priority (nice) of the purge's own database backends where PostgreSQL runs on this host (0: unchanged). Needs retention.purgeConnections ≥ 1; skipped with one log line when the backend is not on this host or the system refuses. docs/retention.md, The purge's connections.",
      ),
    victimOrder: z
      .enum(["creation", "id"])
      .default("creation")
      .describe(
        "The order in which the purge takes expired notes: creation (oldest first, by the creation-order index: a batch touches about a tenth of the table pages that id order does) or id (random UUIDs, the order before session 7); a run keeps the order it started with. docs/retention.md, The purge.",
      ),
  })
  .strict();

export type RetentionConfig = z.infer<typeof retentionSchema>;
