import { AppError } from "../kernel/errors.js";

/**
 * Problems specific to identity, each with its own stable `type` so the admin UI and clients can
 * tell "this invite was already used" from "it expired" from "it was tampered with".
 * problemMiddleware maps them like every other AppError.
 */
export class InviteInvalid extends AppError {
  readonly status = 400;
  readonly slug = "invite-invalid";
  readonly title = "The invite link is not valid";
}
export class InviteUsed extends AppError {
  readonly status = 409;
  readonly slug = "invite-used";
  readonly title = "The invite has already been used";
}
export class InviteExpired extends AppError {
  readonly status = 410;
  readonly slug = "invite-expired";
  readonly title = "The invite has expired";
}
export class InviteRevoked extends AppError {
  readonly status = 410;
  readonly slug = "invite-revoked";
  readonly title = "The invite was withdrawn";
}
/** A sensitive action needs a TOTP code entered within the last few minutes (`POST /api/v1/auth/mfa`). */
export class StepUpRequired extends AppError {
  readonly status = 403;
  readonly slug = "step-up-required";
  readonly title = "Confirm with your authenticator code";
}
export class CsrfRejected extends AppError {
  readonly status = 403;
  readonly slug = "csrf-rejected";
  readonly title = "Missing or wrong CSRF token";
}
