import { z } from "zod";

/** Settings of the access capability (`access:` in config/default.yaml). */
export const accessSchema = z
  .object({
    breakGlassMinutes: z.number().int().min(5).max(1440).default(60).describe("How long a practitioner's break-glass access to a patient outside their care team lasts."),
    supportAccessMinutes: z.number().int().min(5).max(480).default(30).describe("How long an approved support-access request lets support staff act inside a tenant."),
    privilegedAccessMaxMinutes: z
      .number()
      .int()
      .min(5)
      .max(1440)
      .default(120)
      .describe("The longest a just-in-time privileged role (admin, auditor) may be requested for; it ends by itself after the approved time."),
    inactiveUserDays: z.number().int().min(7).max(3650).default(90).describe("Accounts unused this many days are deactivated by the access-review job; tenants may set their own."),
    reviewDeadlineDays: z
      .number()
      .int()
      .min(1)
      .max(90)
      .default(14)
      .describe("Days reviewers have to decide on every account of an access review campaign; at the deadline, accounts nobody reviewed are deactivated."),
    reviewReminderDays: z
      .array(z.number().int().min(1).max(90))
      .max(5)
      .default([3, 1])
      .describe(
        "Days before an access review campaign's deadline when the tenant's alert channels remind its reviewers of the accounts still to decide (ids and counts only); empty: no reminder.",
      ),
    inactivityCheckMinutes: z
      .number()
      .int()
      .min(1)
      .max(1440)
      .default(60)
      .describe(
        "How often each replica runs the inactive-users job (unused accounts, access review deadlines; also once at start); running it on several replicas at once is safe.",
      ),
  })
  .strict();

export type AccessConfig = z.infer<typeof accessSchema>;
