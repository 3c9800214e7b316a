import { Router, type RequestHandler } from "express";
import { rateLimit } from "express-rate-limit";
import { z } from "zod";
import { currentActor } from "../kernel/actor.js";
import { guardedRoute } from "../access/index.js";
import { authorize } from "../kernel/policy.js";
import type { ApplianceContext } from "../context.js";
import { TooManyRequests } from "../kernel/errors.js";
import { jsonBody, jsonResponse, openApiRegistry, problemResponse } from "../http/openapi.js";
import { operatorOf, recordKeyEventAlone } from "../audit/append.js";
import { flushNonceCounts } from "./keyring.js";
import { reencryptPending, rewrapPending, rotateKek } from "./rotation.js";
import { rotateDataKey, tenantKeyId } from "./data-key-rotation.js";
import { AUDIT_SIGNING_KEY_ID } from "./audit-signing.js";
import { cancelShred, listShredSchedule } from "./shred.js";
import { describeKeys } from "./status.js";
import { sealAppliance, sealProgress, submitUnseal, unsealProblem, UnsealError } from "./unseal/index.js";

const API = "/api/v1";

export const unsealRequest = z
  .object({
    /** The unseal passphrase (passphrase mode). */
    passphrase: z.string().min(1).max(1024).optional(),
    /** One custodian's share (shamir mode), e.g. `wks1-3-2-K7QD-…-9F3A`. */
    share: z.string().min(1).max(1024).optional(),
    /** Discard the shares entered so far on this replica. */
    reset: z.literal(true).optional(),
  })
  .strict()
  .refine((b) => [b.passphrase, b.share, b.reset].filter((v) => v !== undefined).length <= 1, { message: "send one of passphrase, share or reset" });

export const sealStatusSchema = z.object({
  sealed: z.boolean(),
  mode: z.enum(["keyfile", "passphrase", "shamir", "pkcs11"]),
  initialised: z.boolean(),
  reason: z.string().optional(),
  unsealedAt: z.string().optional(),
  progress: z.object({ provided: z.number().int(), threshold: z.number().int(), shares: z.number().int() }).optional(),
});

export const rotateRequest = z.discriminatedUnion("target", [
  z.object({ /** Rotate the root key-encryption key (rewraps every data key in the background). */ target: z.literal("kek") }).strict(),
  z.object({ /** Rotate one tenant's data key (old ciphertexts are re-encrypted in the background). */ target: z.literal("tenant"), tenantId: z.uuid() }).strict(),
  z.object({ /** Rotate the audit checkpoint signing key pair. */ target: z.literal("audit-signing") }).strict(),
]);

export const sealRequest = z.object({ /** Why (shown in /readyz and 503 answers; no PHI). */ reason: z.string().min(1).max(200).optional() }).strict();

export const shredSubject = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("tenant"), tenantId: z.uuid() }).strict(),
  z.object({ kind: z.literal("patient"), tenantId: z.uuid(), patientId: z.uuid() }).strict(),
]);

const anyJson = z.object({}).passthrough();
const tags = ["keys"];

openApiRegistry.registerPath({
  method: "get",
  path: `${API}/keys`,
  summary: "Key versions, dates, what each protects (counts), rotation progress, seal state (super-admin; owners see their tenant)",
  tags,
  responses: { 200: jsonResponse("Key status (never key material)", anyJson), 401: problemResponse("Not signed in"), 403: problemResponse("Not allowed") },
});
openApiRegistry.registerPath({
  method: "get",
  path: `${API}/keys/seal-status`,
  summary: "Seal state of this replica and Shamir unseal progress (public, like Vault's seal-status)",
  tags,
  responses: { 200: jsonResponse("Seal state", sealStatusSchema) },
});
openApiRegistry.registerPath({
  method: "post",
  path: `${API}/keys/unseal`,
  summary: "Unseal this replica: a passphrase, or one Shamir share per call until the threshold; {} retries a key file or HSM; unauthenticated (the secret is the credential), rate-limited",
  tags,
  request: { body: jsonBody(unsealRequest) },
  responses: {
    200: jsonResponse("Seal state after this step", sealStatusSchema),
    400: problemResponse("Malformed or duplicate share, or missing input"),
    403: problemResponse("Wrong passphrase or shares (Shamir progress is reset)"),
    409: problemResponse("The key store is not initialised"),
    429: problemResponse("Too many attempts from this address"),
    503: problemResponse("Key file or HSM unavailable"),
  },
});
openApiRegistry.registerPath({
  method: "post",
  path: `${API}/keys/seal`,
  summary: "Seal this replica now (zeroes keys in memory; PHI routes answer 503 until unsealed)",
  tags,
  request: { body: jsonBody(sealRequest) },
  responses: { 200: jsonResponse("Seal state", sealStatusSchema), 403: problemResponse("Not allowed") },
});
openApiRegistry.registerPath({
  method: "post",
  path: `${API}/keys/rotate`,
  summary: "Rotate the KEK, a tenant's data key or the audit signing key, online (step-up MFA required)",
  tags,
  request: { body: jsonBody(rotateRequest) },
  responses: {
    202: jsonResponse("Rotated; rewrapping or re-encryption continues in the background", anyJson),
    403: problemResponse("Not allowed, or step-up MFA needed"),
    404: problemResponse("No such key yet"),
    503: problemResponse("Sealed"),
  },
});
openApiRegistry.registerPath({
  method: "get",
  path: `${API}/keys/shred-schedule`,
  summary: "Subjects waiting for crypto-shredding and when their keys will be destroyed",
  tags,
  responses: { 200: jsonResponse("Scheduled destructions", anyJson) },
});
openApiRegistry.registerPath({
  method: "post",
  path: `${API}/keys/shred-schedule/cancel`,
  summary: "Cancel a scheduled crypto-shredding before its grace period ends",
  tags,
  request: { body: jsonBody(shredSubject) },
  responses: { 200: jsonResponse("Cancelled", anyJson), 404: problemResponse("Nothing scheduled"), 409: problemResponse("Already destroyed") },
});

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

export function keysRoutes(ctx: ApplianceContext): Router {
  const router = Router();
  const route = (spec: Parameters<typeof guardedRoute>[3], handler: Parameters<typeof guardedRoute>[4]) => guardedRoute(ctx, router, API, spec, handler);

  router.get("/keys/seal-status", async (_req, res) => {
    res.json(await sealProgress(ctx));
  });

  router.post("/keys/unseal", unsealRateLimit(ctx), async (req, res) => {
    const body = unsealRequest.parse(req.body);
    const by = operatorOf(req, res);
    try {
      const state = await submitUnseal(ctx, body);
      if (!state.sealed && !body.reset) await recordKeyEventAlone(ctx, by, { action: "keys.unseal", resourceId: state.mode, tenantId: null, outcome: "success" }).catch(() => undefined);
      res.json(state);
    } catch (err) {
      if (!(err instanceof UnsealError)) throw err;
      if (err.kind === "wrong-secret") {
        // A wrong secret is worth an auditor's attention; the event says which mode, never the input.
        await recordKeyEventAlone(ctx, by, { action: "keys.unseal", resourceId: ctx.rootKey.mode, tenantId: null, outcome: "failure", reason: "wrong secret" }).catch(() => undefined);
      }
      throw unsealProblem(err);
    }
  });

  route({ method: "get", path: "/keys", action: "key:read" }, async (_req, res) => {
    const actor = currentActor(res);
    const status = await describeKeys(ctx);
    if (actor.tenantId === null) {
      res.json(status);
      return;
    }
    // Tenant owners see their own tenant's keys and the appliance's seal state, nothing of other tenants.
    res.json({ seal: status.seal, kek: status.kek, tenants: status.tenants.filter((t) => t.tenantId === actor.tenantId), rotations: status.rotations.filter((r) => r.keyId === tenantKeyId(actor.tenantId!)) });
  });

  route({ method: "post", path: "/keys/seal", action: "key:seal" }, async (req, res) => {
    const body = sealRequest.parse(req.body ?? {});
    const actor = currentActor(res);
    await flushNonceCounts(ctx).catch(() => undefined);
    await recordKeyEventAlone(ctx, operatorOf(req, res, actor), { action: "keys.seal", resourceId: ctx.rootKey.mode, tenantId: null, outcome: "success", reason: body.reason ?? null });
    sealAppliance(ctx, `sealed by an operator${body.reason ? `: ${body.reason}` : ""}`);
    res.json(await sealProgress(ctx));
  });

  route({ method: "post", path: "/keys/rotate", action: "key:rotate" }, async (req, res) => {
    const body = rotateRequest.parse(req.body);
    const actor = currentActor(res);
    const by = operatorOf(req, res, actor);
    if (body.target === "tenant") {
      authorize(actor, "key:rotate", { tenantId: body.tenantId });
      res.status(202).json(await rotateDataKey(ctx, tenantKeyId(body.tenantId), "operator", by));
      inBackground(ctx, "re-encryption", () => reencryptPending(ctx));
      return;
    }
    authorize(actor, "key:rotate", { tenantId: null });
    if (body.target === "kek") {
      res.status(202).json(await rotateKek(ctx, by));
      inBackground(ctx, "KEK rewrap", () => rewrapPending(ctx));
    } else res.status(202).json(await rotateDataKey(ctx, AUDIT_SIGNING_KEY_ID, "operator", by));
  });

  route({ method: "get", path: "/keys/shred-schedule", action: "key:read" }, async (_req, res) => {
    const actor = currentActor(res);
    const all = await listShredSchedule(ctx);
    res.json({ schedule: actor.tenantId === null ? all : all.filter((s) => s.tenantId === actor.tenantId) });
  });

  route({ method: "post", path: "/keys/shred-schedule/cancel", action: "key:cancel_shred" }, async (req, res) => {
    const subject = shredSubject.parse(req.body);
    const actor = currentActor(res);
    authorize(actor, "key:cancel_shred", { tenantId: subject.tenantId });
    res.json(await cancelShred(ctx, subject, operatorOf(req, res, actor)));
  });

  return router;
}
