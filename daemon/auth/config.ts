import { z } from "zod";

/**
 * Settings of the identity capability (`auth:` in config/default.yaml). Kept beside the code
 * that reads them; daemon/config/schema.ts includes this section.
 */
export const authSchema = z
  .object({
    argon2MemoryKib: z
      .number()
      .int()
      .min(19_456)
      .max(4_194_304)
      .default(19_456)
      .describe("argon2id memory cost in KiB (OWASP minimum 19456 = 19 MiB); hashes are upgraded at the next login when raised."),
    argon2TimeCost: z.number().int().min(2).max(20).default(2).describe("argon2id iterations (OWASP minimum 2 at 19 MiB)."),
    argon2Parallelism: z.number().int().min(1).max(16).default(1).describe("argon2id lanes."),
    idleTimeoutMinutes: z
      .number()
      .int()
      .min(5)
      .max(240)
      .default(15)
      .describe("Automatic logoff after this much inactivity (45 CFR 164.312(a)(2)(iii)); tenants may set their own, 5 to 240."),
    absoluteLifetimeHours: z.number().int().min(1).max(24).default(12).describe("A session ends this long after sign-in, active or not."),
    stepUpMaxAgeMinutes: z
      .number()
      .int()
      .min(1)
      .max(60)
      .default(10)
      .describe("Sensitive actions (key rotation, exports, role changes, restore) need a TOTP code at most this old."),
    inviteTtlHours: z.number().int().min(1).max(720).default(72).describe("How long an invite link stays valid."),
    lockoutMaxFailures: z.number().int().min(3).max(50).default(5).describe("Failed sign-ins (or MFA codes) on one account before it is locked."),
    lockoutWindowMinutes: z.number().int().min(1).max(1440).default(15).describe("Window in which failures are counted."),
    lockoutMinutes: z.number().int().min(1).max(1440).default(15).describe("How long a locked account refuses sign-in."),
    ipMaxAttempts: z
      .number()
      .int()
      .min(5)
      .max(10_000)
      .default(50)
      .describe(
        "Failed sign-ins and invite acceptances from one client address per ipWindowMinutes, by browsers the account does not recognise, before that address is refused to them (password spraying). Recognised browsers behind the same address keep signing in.",
      ),
    ipWindowMinutes: z.number().int().min(1).max(1440).default(15).describe("Window of ipMaxAttempts; also the longest refusal of a spraying address."),
    ipLockSeconds: z
      .number()
      .int()
      .min(1)
      .max(86_400)
      .default(60)
      .describe("First refusal of an address that reached ipMaxAttempts; it doubles each time the address trips again without a quiet window, up to ipWindowMinutes."),
    knownDeviceDays: z
      .number()
      .int()
      .min(1)
      .max(400)
      .default(90)
      .describe(
        "A browser that signed in to an account is recognised for this long (a device cookie): exempt from the per-address limit and from a lockout others caused; its own failures lock only itself.",
      ),
    apiTokenCacheSeconds: z
      .number()
      .int()
      .min(0)
      .max(30)
      .default(2)
      .describe(
        "A verified API token is trusted for this many seconds before PostgreSQL is asked again (0: every request asks). Revoking a token, or changing its account or tenant, takes effect at once on the replica that made the change and within this time on the others.",
      ),
    mfaIssuer: z.string().min(1).max(64).default("Wardkeep").describe("Issuer name authenticator apps show next to the account."),
    mfaRequiredForApplianceStaff: z.boolean().default(true).describe("Super-admins and support staff must enrol TOTP before their first session."),
  })
  .strict();

export type AuthConfig = z.infer<typeof authSchema>;
