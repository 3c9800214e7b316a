import type { Request, RequestHandler, Response } from "express";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { recordAuthEvent } from "../audit/append.js";
import { requestMeta } from "../kernel/request-meta.js";
import { requireRecentMfa, StepUpRequired } from "../auth/index.js";
import { AppError, Forbidden } from "../kernel/errors.js";
import { currentActor, scopeOf } from "../kernel/actor.js";
import { definedRoutes, isPolicyAction, type RouteBinding } from "../kernel/define-route.js";
import { ACTIONS, can, denialMessage, STEP_UP_ACTIONS, type Action } from "../kernel/policy.js";

/** One guarded route: what the permission-matrix test walks (test/integration/access/permission-matrix.test.ts). */
export type GuardedRoute = { method: "get" | "post" | "put" | "patch" | "delete"; path: string; action: Action };

/** Every route bound to a policy action (defineRoute), by full path (`/api/v1/users/:id`). */
export function guardedRoutes(): GuardedRoute[] {
  return definedRoutes()
    .filter((r) => isPolicyAction(r.action))
    .map((r) => ({ method: r.method, path: r.path, action: r.action as Action }));
}

/** Writes a denial to the audit trail in its own transaction (the request's work never starts). */
export async function recordDenial(ctx: ApplianceContext, req: Request, res: Response, action: string, why?: string): Promise<void> {
  const actor = currentActor(res);
  await inScope(ctx.db.app, scopeOf(actor), (t) =>
    recordAuthEvent(
      ctx,
      t,
      actor,
      { action: "access.denied", resourceType: action.split(":")[0]!, outcome: "denied", reason: why ? `${action}: ${why}` : action },
      requestMeta(req, res),
    ),
  );
}

/**
 * Route-level authorisation: 401 without an actor, 403 (audited) when the policy says no for
 * this kind of resource, step-up for sensitive actions. Services then check the specific
 * resource with `authorize(actor, action, attrs)`.
 */
export function guard(ctx: ApplianceContext, action: Action): RequestHandler {
  return async (req, res, next) => {
    const actor = currentActor(res);
    if (!can(actor, action)) {
      await recordDenial(ctx, req, res, action);
      throw new Forbidden(denialMessage(actor, action), { action });
    }
    if (STEP_UP_ACTIONS.has(action)) {
      try {
        requireRecentMfa(actor, ctx);
      } catch (err) {
        await recordDenial(ctx, req, res, action, "step-up required");
        throw err;
      }
    }
    next();
  };
}

function isDenial(err: unknown): err is AppError {
  return err instanceof Forbidden || err instanceof StepUpRequired;
}

/**
 * How routes meet the policy: `defineRoute` (daemon/kernel/define-route.ts) mounts every route
 * with a policy action behind `guard`, and hands its handler's errors to `refused`.
 */
export const policyBinding: RouteBinding = {
  knows: (action) => (ACTIONS as string[]).includes(action),
  authorize: (ctx, action) => guard(ctx, action as Action),
  async refused(ctx, req, res, action, err) {
    // A service's own check (this user, this patient, this role) said no: audited like the guard's.
    if (isDenial(err)) {
      const detailed = (err.extras as { action?: string }).action ?? action;
      await recordDenial(ctx, req, res, detailed, err instanceof StepUpRequired ? "step-up required" : undefined);
    }
  },
};
