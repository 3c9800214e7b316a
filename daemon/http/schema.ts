import { z } from "zod";

/**
 * Responses of the health routes (`/healthz`, `/readyz`). Leaf module (zod only): the admin UI
 * imports its types, so the status page reads exactly the fields the daemon sends.
 */

const check = z.object({ ok: z.boolean(), detail: z.string() });

/** What /readyz checks: the database as the app role, pending migrations, the key barrier. */
export const readinessChecks = z.object({
  database: check,
  migrations: check.extend({ pending: z.array(z.string()) }),
  keys: check,
});

/** `GET /readyz` 200: ready to serve requests in full. */
export const readinessResponse = z.object({
  status: z.literal("ready"),
  checks: readinessChecks,
});

/** `GET /readyz` 503: a problem+json document whose `checks` say which check fails. */
export const notReadyProblem = z.object({
  type: z.string(),
  title: z.string(),
  status: z.literal(503),
  detail: z.string(),
  checks: readinessChecks,
});

export const livenessResponse = z.object({ status: z.literal("ok") });

export type ReadinessRes = z.infer<typeof readinessResponse>;
export type NotReadyProblem = z.infer<typeof notReadyProblem>;
export type ReadinessChecks = z.infer<typeof readinessChecks>;
