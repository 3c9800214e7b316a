import { z } from "zod";

/**
 * Responses of the health routes (`/healthz`, `/readyz`). Leaf module (zod only): the admin UI
 * imports its types, so the status page reads exactly the fields the daemon sends.
 */

const check = z.object({
  /** The check passed. */
  ok: z.boolean(),
  /** What was found, for people. */
  detail: z.string(),
});

/** What /readyz checks: the database as the app role, pending migrations, the key barrier. */
export const readinessChecks = z.object({
  /** Reachable as the app role. */
  database: check,
  /** Every migration applied (pending lists the others). */
  migrations: check.extend({ pending: z.array(z.string()) }),
  /** Unsealed. */
  keys: check,
});

/** `GET /readyz` 200: ready to serve requests in full. */
export const readinessResponse = z.object({
  /** Always ready (not ready is a 503 problem). */
  status: z.literal("ready"),
  /** Each check and what it found. */
  checks: readinessChecks,
});

/** `GET /readyz` 503: a problem+json document whose `checks` say which check fails. */
export const notReadyProblem = z.object({
  /** urn:wardkeep:problem:not-ready. */
  type: z.string(),
  /** Not ready. */
  title: z.string(),
  /** Always 503. */
  status: z.literal(503),
  /** The failing checks, in a sentence. */
  detail: z.string(),
  /** Each check and what it found. */
  checks: readinessChecks,
});

export const livenessResponse = z.object({ status: z.literal("ok") });

export type ReadinessRes = z.infer<typeof readinessResponse>;
export type NotReadyProblem = z.infer<typeof notReadyProblem>;
export type ReadinessChecks = z.infer<typeof readinessChecks>;
