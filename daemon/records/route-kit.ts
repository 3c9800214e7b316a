import { z } from "zod";
import type { ApplianceContext } from "../context.js";
import { requireUnsealed } from "../keys/index.js";

/**
 * What every records route's definition shares (spread into `defineRoute` specs): the records
 * tag, the seal gate (PHI: 503 while sealed, before anything else runs) and the problems a
 * records route may answer besides those `defineRoute` adds for its kind.
 */
const sealed = "The appliance is sealed, or the audit trail cannot be written";
/** docs/records.md "Undecryptable rows": a read of one such record; lists leave it out and count it. */
const shredded = "record-shredded: the record's data key was crypto-shredded (rows restored from an older snapshot); lists leave such rows out and count them in `undecryptable`";

export const PHI_READ = {
  tag: "records",
  use: (ctx: ApplianceContext) => [requireUnsealed(ctx)],
  problems: { 410: shredded, 503: sealed },
} as const;

export const PHI_WRITE = {
  ...PHI_READ,
  problems: { 409: "Conflicts with the current state (duplicate MRN, legal hold, already signed…)", 413: "Body too large", 503: sealed },
} as const;

/** Updates that need the ETag of the version read (RFC 9110 §13.1.1): lost-update protection. */
export const IF_MATCH = {
  ...PHI_WRITE,
  headers: z.object({ "if-match": z.string().describe("The ETag of the version you read (428 when missing, 412 when stale)") }),
  problems: { ...PHI_WRITE.problems, 412: "If-Match names another version (lost update prevented)", 428: "If-Match is missing" },
} as const;

/** Where a created resource lives, for its Location header. */
export const location = (path: string) => `/api/v1${path}`;
