import type { RequestHandler } from "express";
import { rateLimit } from "express-rate-limit";
import { defineRoute } from "../kernel/define-route.js";
import { authorize } from "../kernel/policy.js";
import type { ApplianceContext } from "../context.js";
import { TooManyRequests } from "../kernel/errors.js";
import { operatorOf, recordKeyEventAlone } from "../audit/append.js";
import { flushNonceCounts } from "./keyring.js";
import { rewrapPending, rotateKek } from "./rotation.js";
import { continueTenantRotation, startTenantRotation } from "./tenant-rotation.js";
import { rotateDataKey, tenantKeyId } from "./data-key-rotation.js";
import { AUDIT_SIGNING_KEY_ID } from "./audit-signing.js";
import { cancelShred, listShredSchedule } from "./shred.js";
import { keyStatusResponse, rotateRequest, rotationStarted, sealProgressView, sealRequest, shredCancelled, shredScheduleResponse, shredSubject, unsealRequest } from "./schema.js";
import { describeKeys } from "./status.js";
import { sealAppliance, sealProgress, submitUnseal, unsealProblem, UnsealError } from "./unseal/index.js";

/**
 * Unseal attempts per client address per minute, in this replica's memory: unseal state is
 * per replica too (each holds its own keys), and argon2id already makes each passphrase guess
 * cost 64 MiB and tens of milliseconds.
 */
function unsealRateLimit(ctx: ApplianceContext): RequestHandler {
  return rateLimit({
    windowMs: 60_000,
    limit: ctx.config.keys.unsealAttemptsPerMinute,
    standardHeaders: "draft-8",
    legacyHeaders: false,
    validate: { trustProxy: false, xForwardedForHeader: false },
    handler: (_req, _res, next) => next(new TooManyRequests("too many unseal attempts from this address; wait a minute")),
  });
}

/** Starts the follow-up work of a rotation now rather than at the next maintenance pass (which retries on failure). */
function inBackground(ctx: ApplianceContext, what: string, work: () => Promise<unknown>) {
  void work().catch((err: unknown) => ctx.log.warn(`${what} after rotation stopped; key maintenance continues it`, { error: (err as Error).message }));
}

const tag = "keys";

/** Seal state, unseal and seal, key status, rotation and the crypto-shredding schedule. */
export const keysRoutes = [
  defineRoute(
    {
      method: "get",
      path: "/keys/seal-status",
      action: "public",
      tag,
      summary: "Seal state of this replica and Shamir unseal progress (public, like Vault's seal-status)",
      response: sealProgressView,
    },
    ({ ctx }) => sealProgress(ctx),
  ),
  defineRoute(
    {
      method: "post",
      path: "/keys/unseal",
      action: "public",
      tag,
      summary: "Unseal this replica: a passphrase, or one Shamir share per call until the threshold; {} retries a key file or HSM",
      description: "Unauthenticated (the secret is the credential) and rate-limited per client address.",
      body: unsealRequest,
      response: sealProgressView,
      problems: {
        403: "Wrong passphrase or shares (Shamir progress is reset)",
        409: "The key store is not initialised",
        429: "Too many attempts from this address",
        503: "Key file or HSM unavailable",
      },
      use: (ctx) => [unsealRateLimit(ctx)],
    },
    async ({ ctx, body, req, res }) => {
      const by = operatorOf(req, res);
      try {
        const state = await submitUnseal(ctx, body);
        if (!state.sealed && !body.reset)
          await recordKeyEventAlone(ctx, by, { action: "keys.unseal", resourceId: state.mode, tenantId: null, outcome: "success" }).catch(() => undefined);
        return state;
      } catch (err) {
        if (!(err instanceof UnsealError)) throw err;
        if (err.kind === "wrong-secret") {
          // A wrong secret is worth an auditor's attention; the event says which mode, never the input.
          await recordKeyEventAlone(ctx, by, { action: "keys.unseal", resourceId: ctx.rootKey.mode, tenantId: null, outcome: "failure", reason: "wrong secret" }).catch(
            () => undefined,
          );
        }
        throw unsealProblem(err);
      }
    },
  ),

  defineRoute(
    {
      method: "get",
      path: "/keys",
      action: "key:read",
      tag,
      summary: "Key versions, dates, what each protects (counts), rotation progress, seal state (super-admin; owners see their tenant)",
      response: keyStatusResponse,
    },
    async ({ ctx, actor }) => {
      const status = await describeKeys(ctx);
      if (actor.tenantId === null) return status;
      // Tenant owners see their own tenant's keys and the appliance's seal state, nothing of other tenants.
      return {
        seal: status.seal,
        kek: status.kek,
        tenants: status.tenants.filter((t) => t.tenantId === actor.tenantId),
        rotations: status.rotations.filter((r) => r.keyId === tenantKeyId(actor.tenantId!)),
        tenantRotations: status.tenantRotations.filter((r) => r.tenantId === actor.tenantId),
      };
    },
  ),
  defineRoute(
    {
      method: "post",
      path: "/keys/seal",
      action: "key:seal",
      tag,
      summary: "Seal this replica now (zeroes keys in memory; PHI routes answer 503 until unsealed)",
      body: sealRequest,
      response: sealProgressView,
    },
    async ({ ctx, actor, body, req, res }) => {
      await flushNonceCounts(ctx).catch(() => undefined);
      await recordKeyEventAlone(ctx, operatorOf(req, res, actor), {
        action: "keys.seal",
        resourceId: ctx.rootKey.mode,
        tenantId: null,
        outcome: "success",
        reason: body.reason ?? null,
      });
      sealAppliance(ctx, `sealed by an operator${body.reason ? `: ${body.reason}` : ""}`);
      return sealProgress(ctx);
    },
  ),
  defineRoute(
    {
      method: "post",
      path: "/keys/rotate",
      action: "key:rotate",
      tag,
      summary: "Rotate the KEK, a tenant's data keys or the audit signing key, online (step-up MFA required)",
      description:
        "KEK and audit signing key: answers once the new version is active; rewrapping continues in the background. Tenant: starts (or continues) a tenant rotation, which gives every data key of the tenant (one per patient) a new version and re-encrypts what they cover in the background; its progress is in `GET /keys` `tenantRotations`.",
      body: rotateRequest,
      response: rotationStarted,
      status: 202,
      problems: { 404: "No such key yet", 503: "Sealed" },
    },
    async ({ ctx, actor, body, req, res }) => {
      const by = operatorOf(req, res, actor);
      if (body.target === "tenant") {
        authorize(actor, "key:rotate", { tenantId: body.tenantId });
        const { rotation, resumed } = await startTenantRotation(ctx, body.tenantId, by);
        inBackground(ctx, "tenant key rotation", () => continueTenantRotation(ctx, rotation.id, { by }));
        return { keyId: tenantKeyId(body.tenantId), tenantRotation: rotation, resumed };
      }
      authorize(actor, "key:rotate", { tenantId: null });
      if (body.target === "kek") {
        const rotated = await rotateKek(ctx, by);
        inBackground(ctx, "KEK rewrap", () => rewrapPending(ctx));
        return rotated;
      }
      return rotateDataKey(ctx, AUDIT_SIGNING_KEY_ID, "operator", by);
    },
  ),
  defineRoute(
    {
      method: "get",
      path: "/keys/shred-schedule",
      action: "key:read",
      tag,
      summary: "Subjects waiting for crypto-shredding and when their keys will be destroyed",
      response: shredScheduleResponse,
    },
    async ({ ctx, actor }) => {
      const all = await listShredSchedule(ctx);
      return { schedule: actor.tenantId === null ? all : all.filter((s) => s.tenantId === actor.tenantId) };
    },
  ),
  defineRoute(
    {
      method: "post",
      path: "/keys/shred-schedule/cancel",
      action: "key:cancel_shred",
      tag,
      summary: "Cancel a scheduled crypto-shredding before its grace period ends",
      body: shredSubject,
      response: shredCancelled,
      problems: { 404: "Nothing scheduled", 409: "Already destroyed" },
    },
    ({ ctx, actor, body, req, res }) => {
      authorize(actor, "key:cancel_shred", { tenantId: body.tenantId });
      return cancelShred(ctx, body, operatorOf(req, res, actor));
    },
  ),
];
