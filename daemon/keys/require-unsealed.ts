import type { RequestHandler } from "express";
import type { ApplianceContext } from "../context.js";
import { Sealed } from "../kernel/errors.js";

/**
 * For PHI routes (records capability): while sealed, answer 503 problem+json naming the state
 * instead of failing deeper with a less useful error. `Retry-After` tells clients to come back.
 */
export function requireUnsealed(ctx: ApplianceContext): RequestHandler {
  return (_req, res, next) => {
    const state = ctx.rootKey.state;
    if (!state.sealed) return next();
    res.setHeader("Retry-After", "30");
    next(
      new Sealed(`the appliance is sealed (${state.reason}); PHI cannot be read or written until an operator unseals it with \`wardkeep unseal\``, {
        sealState: "sealed",
        unsealMode: state.mode,
      }),
    );
  };
}
