import { AppError } from "../kernel/errors.js";

/**
 * RFC 6585 §3: an update without `If-Match`. Lost-update protection only works when every writer
 * says which version it read, so the records API refuses blind overwrites instead of guessing.
 */
export class PreconditionRequired extends AppError {
  readonly status = 428;
  readonly slug = "precondition-required";
  readonly title = "An If-Match header is required";
}

/** A legal hold stands on the patient: deletion and purge wait until it is released. */
export class LegalHoldActive extends AppError {
  readonly status = 409;
  readonly slug = "legal-hold";
  readonly title = "The record is under legal hold";
}
