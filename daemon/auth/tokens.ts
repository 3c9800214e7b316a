import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/**
 * Bearer secrets (session cookies, API tokens, invite links, recovery codes) are random values
 * of at least 192 bits; the database keeps only their SHA-256, so reading a table never yields
 * a credential. A plain hash (not argon2) is right for them: they are not guessable, and a slow
 * hash on every request would be a denial-of-service lever.
 */
export function sha256(value: string | Buffer): Buffer {
  return createHash("sha256").update(value).digest();
}

export function randomToken(prefix: string, bytes = 32): string {
  return prefix + randomBytes(bytes).toString("base64url");
}

export function sameBytes(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

export function sameString(a: string, b: string): boolean {
  return sameBytes(Buffer.from(a), Buffer.from(b));
}

export const SESSION_COOKIE = "__Host-wardkeep_session";
export const SESSION_TOKEN_PREFIX = "wks_";
export const API_TOKEN_PREFIX = "wkt_";
export const CSRF_HEADER = "x-csrf-token";

/**
 * The CSRF token of a session: an HMAC of the session token, so it needs no storage and cannot be
 * computed by a page that cannot read the HttpOnly cookie (OWASP CSRF cheat sheet, "signed
 * double-submit cookie"). A cross-site form can neither set the header nor read the value.
 */
export function csrfTokenFor(sessionToken: string): string {
  return createHmac("sha256", sessionToken).update("wardkeep/csrf/v1").digest("base64url");
}

/** Reads one cookie from a Cookie header without a parser dependency (RFC 6265 §5.4 syntax). */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * `__Host-` prefix: the browser only accepts it with Secure, Path=/ and no Domain, so a sibling
 * host or a plain-HTTP page cannot plant or overwrite it. HttpOnly keeps it from scripts (XSS);
 * SameSite=Strict keeps it off cross-site requests. No Max-Age: the server decides expiry.
 */
export function sessionCookie(token: string): string {
  return `${SESSION_COOKIE}=${token}; Path=/; Secure; HttpOnly; SameSite=Strict`;
}

export function clearedSessionCookie(): string {
  return `${SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0`;
}
