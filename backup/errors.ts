import { AppError } from "../daemon/kernel/errors.js";

/**
 * Errors of the snapshot engine. They extend the daemon's AppError so routes map them to
 * problem+json once (daemon/http/problem.ts), and their text never carries data, key bytes or
 * PHI: only object names, segment numbers and snapshot ids.
 */

/** A snapshot object or manifest failed authentication: tampered with, truncated, reordered or damaged. */
export class SnapshotIntegrityError extends AppError {
  readonly status = 422;
  readonly slug = "snapshot-integrity";
  readonly title = "The snapshot failed its integrity check";
}

/** The key offered cannot open this snapshot (another appliance's KEK, another recovery key). */
export class SnapshotKeyError extends AppError {
  readonly status = 422;
  readonly slug = "snapshot-key";
  readonly title = "The snapshot cannot be opened with this key";
}

/** A restore or snapshot was refused before it changed anything (non-empty database, schema mismatch). */
export class RestoreRefused extends AppError {
  readonly status = 409;
  readonly slug = "restore-refused";
  readonly title = "The restore was refused";
}

/** A storage target failed (unreachable, full, permission denied). */
export class TargetError extends AppError {
  readonly status = 502;
  readonly slug = "backup-target";
  readonly title = "The backup target failed";
}

/** The named snapshot is not (completely) on the target. */
export class SnapshotNotFound extends AppError {
  readonly status = 404;
  readonly slug = "not-found";
  readonly title = "Not found";
}

/** A snapshot was refused before anything was written (the database would not be captured whole). */
export class SnapshotRefused extends AppError {
  readonly status = 409;
  readonly slug = "snapshot-refused";
  readonly title = "The snapshot was refused";
}
