import type { RequestHandler } from "express";
import type { ApplianceContext } from "../context.js";
import { Unauthorized } from "../kernel/errors.js";
import { requestMeta } from "../kernel/request-meta.js";
import { resolveApiToken } from "./api-tokens.js";
import { CsrfRejected } from "./errors.js";
import { resolveSession, type ResolvedSession } from "./sessions.js";
import { clearedSessionCookie, CSRF_HEADER, csrfTokenFor, readCookie, SESSION_COOKIE, sameString } from "./tokens.js";

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/** The response header that marks every response given under support access (the UI shows a banner). */
export const SUPPORT_ACCESS_HEADER = "Wardkeep-Support-Access";

/**
 * Requests the console makes on a timer, not because a person did something: the session state
 * (the logout warning) and the open-alert count (the top bar's badge). They must not keep a
 * session alive, or automatic logoff would never come while a console is open.
 */
const BACKGROUND_POLLS = new Set(["/auth/session", "/alerts/summary"]);

function isSessionPoll(method: string, path: string): boolean {
  return method === "GET" && BACKGROUND_POLLS.has(path);
}

/**
 * Establishes who is calling, for every route under /api/v1 after the public setup routes:
 * - `Authorization: Bearer wkt_…` (API token of a service account): an unknown, expired or
 *   revoked token is refused at once with 401;
 * - the `__Host-wardkeep_session` cookie: an active session sets `res.locals.actor`; a session
 *   still waiting for its second factor is kept in `res.locals.pendingSession` for the MFA routes;
 *   an ended one (idle, lifetime, revoked) leaves the reason in `res.locals.authGap`, which the
 *   401 from `currentActor` reports, and clears the cookie.
 * Cookie-authenticated writes must carry `X-CSRF-Token` (from `GET /api/v1/auth/session`);
 * token-authenticated requests are exempt, since no browser attaches a bearer token by itself.
 *
 * Requests without credentials pass through: public routes (sign-in, invite acceptance) work,
 * and every guarded route answers 401 through `currentActor`.
 */
export function authenticate(ctx: ApplianceContext): RequestHandler {
  return async (req, res, next) => {
    const authorization = req.get("authorization");
    if (authorization !== undefined) {
      const m = /^Bearer\s+(\S+)$/i.exec(authorization);
      const actor = m ? await resolveApiToken(ctx, m[1]!) : null;
      if (!actor) throw new Unauthorized("the API token is invalid, expired or revoked", { reason: "invalid_token" });
      res.locals.actor = actor;
      next();
      return;
    }

    const token = readCookie(req.get("cookie"), SESSION_COOKIE);
    if (!token) {
      next();
      return;
    }
    const lookup = await resolveSession(ctx, token, { touch: !isSessionPoll(req.method, req.path), meta: requestMeta(req, res) });
    if (lookup.state === "none" || lookup.state === "ended") {
      if (lookup.state === "ended") res.locals.authGap = lookup.gap;
      res.append("Set-Cookie", clearedSessionCookie());
      next();
      return;
    }
    if (!SAFE_METHODS.has(req.method)) {
      const presented = req.get(CSRF_HEADER);
      if (!presented || !sameString(presented, csrfTokenFor(token))) {
        throw new CsrfRejected("cookie-authenticated changes need the X-CSRF-Token header from GET /api/v1/auth/session");
      }
    }
    res.locals.sessionToken = token;
    if (lookup.state === "pending") {
      res.locals.pendingSession = lookup.session satisfies ResolvedSession;
      res.locals.authGap = lookup.gap;
    } else {
      res.locals.actor = lookup.actor;
      res.locals.session = lookup.session satisfies ResolvedSession;
      const support = lookup.actor.supportAccess;
      if (support) res.setHeader(SUPPORT_ACCESS_HEADER, `request=${support.requestId}; expires=${support.expiresAt.toISOString()}`);
    }
    next();
  };
}
