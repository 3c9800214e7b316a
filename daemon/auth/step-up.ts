import type { Actor } from "../kernel/actor.js";
import type { ApplianceContext } from "../context.js";
import { StepUpRequired } from "./errors.js";

/**
 * Step-up for sensitive actions (key rotation, exports, role changes, restore): the actor must
 * have entered a TOTP or recovery code within `maxAgeMs` (default `auth.stepUpMaxAgeMinutes`),
 * so a hijacked or unattended session cannot do them. API tokens cannot step up, so never can.
 * Answer with `POST /api/v1/auth/mfa {code}` and retry.
 */
export function requireRecentMfa(actor: Actor, ctx: ApplianceContext, maxAgeMs = ctx.config.auth.stepUpMaxAgeMinutes * 60_000): void {
  if (actor.via !== "session") throw new StepUpRequired("this action needs a person signed in with a second factor; API tokens cannot do it");
  if (actor.impersonatorId) throw new StepUpRequired("support access cannot perform sensitive actions");
  const at = actor.mfaVerifiedAt?.getTime();
  if (at === undefined) throw new StepUpRequired("set up an authenticator app and confirm with a code to do this", { stepUp: { maxAgeSeconds: Math.round(maxAgeMs / 1000) } });
  if (ctx.clock.now().getTime() - at > maxAgeMs) {
    throw new StepUpRequired("confirm with a fresh code from your authenticator app (POST /api/v1/auth/mfa), then retry", {
      stepUp: { maxAgeSeconds: Math.round(maxAgeMs / 1000) },
    });
  }
}
