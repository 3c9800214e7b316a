/**
 * The one error hierarchy (CONVENTIONS 4). Services throw these; `problemMiddleware` maps them
 * to RFC 9457 application/problem+json once. A `type` is a stable URN that clients and the
 * admin UI may switch on; `detail` is a human sentence that never carries PHI, SQL or a stack.
 */
export type ProblemExtras = Record<string, unknown>;

export abstract class AppError extends Error {
  abstract readonly status: number;
  abstract readonly slug: string;
  abstract readonly title: string;
  constructor(
    readonly detail: string,
    readonly extras: ProblemExtras = {},
  ) {
    super(detail);
    this.name = new.target.name;
  }
  get type(): string {
    return problemType(this.slug);
  }
}

export function problemType(slug: string): string {
  return `urn:wardkeep:problem:${slug}`;
}

export class Invalid extends AppError {
  readonly status = 400;
  readonly slug = "invalid-request";
  readonly title = "The request is not valid";
}
export class Unauthorized extends AppError {
  readonly status = 401;
  readonly slug = "unauthorized";
  readonly title = "Authentication is required";
}
export class Forbidden extends AppError {
  readonly status = 403;
  readonly slug = "forbidden";
  readonly title = "Not allowed";
}
export class NotFound extends AppError {
  readonly status = 404;
  readonly slug = "not-found";
  readonly title = "Not found";
}
export class Conflict extends AppError {
  readonly status = 409;
  readonly slug = "conflict";
  readonly title = "Conflicts with the current state";
}
export class PreconditionFailed extends AppError {
  readonly status = 412;
  readonly slug = "precondition-failed";
  readonly title = "The resource changed since it was read";
}
export class PayloadTooLarge extends AppError {
  readonly status = 413;
  readonly slug = "payload-too-large";
  readonly title = "The request body is too large";
}
export class UnsupportedMediaType extends AppError {
  readonly status = 415;
  readonly slug = "unsupported-media-type";
  readonly title = "Unsupported content type";
}
export class TooManyRequests extends AppError {
  readonly status = 429;
  readonly slug = "too-many-requests";
  readonly title = "Too many requests";
}
/** The root key is sealed: PHI cannot be read or written until an operator unseals it. */
export class Sealed extends AppError {
  readonly status = 503;
  readonly slug = "sealed";
  readonly title = "The appliance is sealed";
}
export class Unavailable extends AppError {
  readonly status = 503;
  readonly slug = "unavailable";
  readonly title = "Temporarily unavailable";
}
export class InternalError extends AppError {
  readonly status = 500;
  readonly slug = "internal-error";
  readonly title = "Internal error";
}
