import type { ApplianceContext } from "../context.js";
import { AppError } from "./errors.js";

/**
 * The appliance's maintenance state: while work that replaces what every request reads is under
 * way (an in-place restore, docs/backups.md), the API and SCIM answer 503 `maintenance` with
 * Retry-After instead of serving, so nothing is written that the work would then lose. Held per
 * context (one daemon process); the HTTP layer's gate reads it, the capability doing the work sets
 * and clears it. The request that started the work is already past the gate.
 */
export class InMaintenance extends AppError {
  readonly status = 503;
  readonly slug = "maintenance";
  readonly title = "The appliance is in maintenance";
}

export type MaintenanceState = { reason: string; since: Date; retryAfterSeconds: number };

const states = new WeakMap<ApplianceContext, MaintenanceState>();

/** Enters maintenance; refuses when something else already holds it (one such job at a time). */
export function enterMaintenance(ctx: ApplianceContext, reason: string, retryAfterSeconds: number): void {
  const held = states.get(ctx);
  if (held) throw new InMaintenance(`the appliance is already in maintenance (${held.reason}, since ${held.since.toISOString()})`, { retryAfterSeconds: held.retryAfterSeconds });
  states.set(ctx, { reason, since: ctx.clock.now(), retryAfterSeconds });
}

export function leaveMaintenance(ctx: ApplianceContext): void {
  states.delete(ctx);
}

export function maintenanceOf(ctx: ApplianceContext): MaintenanceState | undefined {
  return states.get(ctx);
}

/** Throws the 503 while in maintenance (the HTTP gate calls this for every API and SCIM request). */
export function assertNotInMaintenance(ctx: ApplianceContext): void {
  const s = states.get(ctx);
  if (s) throw new InMaintenance(`the appliance is in maintenance: ${s.reason}; sessions end with it, sign in again afterwards`, { retryAfterSeconds: s.retryAfterSeconds });
}
