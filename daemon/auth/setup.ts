import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { QueryTypes, type Transaction } from "sequelize";
import { z } from "zod";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/tenant-scope.js";
import { Conflict, Forbidden } from "../kernel/errors.js";
import { recordAuthEvent } from "../audit/append.js";
import { SYSTEM_META } from "../kernel/request-meta.js";
import { argon2ParamsFrom, assertPasswordAcceptable, hashPassword } from "./passwords.js";

/**
 * First run, like Grafana's or Jenkins': until a super-admin exists the appliance holds one
 * setup token, printed once at start; whoever presents it may create the first super-admin.
 * Only its SHA-256 is stored, so a database read does not reveal it.
 */
export const TOKEN_PREFIX = "wks_setup_";

export const superAdminInput = z
  .object({
    /** Work email of the appliance administrator. */
    email: z.string().trim().toLowerCase().pipe(z.email()).pipe(z.string().max(254)),
    /** At least 12 characters. */
    password: z.string().min(1).max(256),
  })
  .strict();
export type SuperAdminInput = z.infer<typeof superAdminInput>;

export const setupRequest = superAdminInput.extend({ /** Token printed at first start. */ token: z.string().min(1).max(200) }).strict();

function digest(token: string): Buffer {
  return createHash("sha256").update(token).digest();
}

export async function superAdminExists(ctx: ApplianceContext): Promise<boolean> {
  return inScope(ctx.db.app, { kind: "appliance" }, async (transaction) => {
    const rows = await ctx.db.app.query("SELECT 1 FROM users WHERE role = 'super_admin' LIMIT 1", { type: QueryTypes.SELECT, transaction });
    return rows.length > 0;
  });
}

/**
 * Serialises setup across replicas and requests (a transaction-scoped advisory lock), so two
 * replicas starting together do not each print a token and two setups cannot both succeed.
 * Returns true when a super-admin already exists.
 */
async function lockSetupAndCheckDone(ctx: ApplianceContext, transaction: Transaction): Promise<boolean> {
  await ctx.db.app.query("SELECT pg_advisory_xact_lock(7301002)", { transaction });
  const admins = await ctx.db.app.query("SELECT 1 FROM users WHERE role = 'super_admin' LIMIT 1", { type: QueryTypes.SELECT, transaction });
  return admins.length > 0;
}

export type SetupTokenOutcome =
  | { state: "complete" }
  | { state: "issued"; token: string; expiresAt: Date }
  | { state: "pending"; expiresAt: Date };

/**
 * Called at every start. Issues a token only when no super-admin exists and no unexpired token
 * is outstanding, so the token is printed once; `reissue` replaces an outstanding one
 * (`wardkeep admin setup-token`).
 */
export async function ensureSetupToken(ctx: ApplianceContext, opts: { reissue?: boolean } = {}): Promise<SetupTokenOutcome> {
  return inScope(ctx.db.app, { kind: "appliance" }, async (transaction) => {
    if (await lockSetupAndCheckDone(ctx, transaction)) return { state: "complete" as const };
    const now = ctx.clock.now();
    if (opts.reissue) {
      await ctx.db.app.query("UPDATE setup_tokens SET expires_at = $1 WHERE used_at IS NULL AND expires_at > $1", { bind: [now], transaction });
    } else {
      const open = await ctx.db.app.query<{ expires_at: Date }>(
        "SELECT expires_at FROM setup_tokens WHERE used_at IS NULL AND expires_at > $1 ORDER BY expires_at DESC LIMIT 1",
        { bind: [now], type: QueryTypes.SELECT, transaction },
      );
      if (open[0]) return { state: "pending" as const, expiresAt: open[0].expires_at };
    }
    const token = TOKEN_PREFIX + randomBytes(24).toString("base64url");
    const expiresAt = new Date(now.getTime() + ctx.config.setup.tokenTtlHours * 3_600_000);
    await ctx.db.app.query("INSERT INTO setup_tokens (token_hash, created_at, expires_at) VALUES ($1, $2, $3)", {
      bind: [digest(token), now, expiresAt],
      transaction,
    });
    return { state: "issued" as const, token, expiresAt };
  });
}

async function insertSuperAdmin(ctx: ApplianceContext, input: SuperAdminInput, transaction: Transaction) {
  assertPasswordAcceptable(input.password, { email: input.email });
  const hash = await hashPassword(input.password, argon2ParamsFrom(ctx.config));
  const rows = await ctx.db.app.query<{ id: string }>(
    "INSERT INTO users (email, password_hash, role) VALUES ($1, $2, 'super_admin') ON CONFLICT (email) DO NOTHING RETURNING id",
    { bind: [input.email, hash], type: QueryTypes.SELECT, transaction },
  );
  if (!rows[0]) throw new Conflict("an account with this email already exists");
  const who = { userId: rows[0].id, role: "super_admin", tenantId: null };
  await recordAuthEvent(ctx, transaction, who, { action: "user.create", resourceType: "user", resourceId: rows[0].id, outcome: "success", reason: "first super-admin" }, SYSTEM_META);
  return { id: rows[0].id, email: input.email };
}

/** `POST /api/v1/setup`: trades the setup token for the first super-admin account. */
export async function completeSetup(ctx: ApplianceContext, input: z.infer<typeof setupRequest>) {
  return inScope(ctx.db.app, { kind: "appliance" }, async (transaction) => {
    if (await lockSetupAndCheckDone(ctx, transaction)) throw new Conflict("setup is already complete; sign in instead");
    const now = ctx.clock.now();
    const presented = digest(input.token);
    const rows = await ctx.db.app.query<{ id: string; token_hash: Buffer }>(
      "SELECT id, token_hash FROM setup_tokens WHERE used_at IS NULL AND expires_at > $1",
      { bind: [now], type: QueryTypes.SELECT, transaction },
    );
    const match = rows.find((r) => timingSafeEqual(r.token_hash, presented));
    if (!match) throw new Forbidden("the setup token is invalid, used or expired; run `wardkeep admin setup-token` for a new one");
    const admin = await insertSuperAdmin(ctx, input, transaction);
    await ctx.db.app.query("UPDATE setup_tokens SET used_at = $1, used_by = $2 WHERE id = $3", { bind: [now, admin.id, match.id], transaction });
    return admin;
  });
}

/** `wardkeep admin create`: the first super-admin for automated installs, without the token. */
export async function createFirstSuperAdmin(ctx: ApplianceContext, input: SuperAdminInput) {
  return inScope(ctx.db.app, { kind: "appliance" }, async (transaction) => {
    if (await lockSetupAndCheckDone(ctx, transaction)) throw new Conflict("a super-admin already exists; further accounts are created by a signed-in administrator");
    const admin = await insertSuperAdmin(ctx, input, transaction);
    // The printed token is now useless: retire it.
    await ctx.db.app.query("UPDATE setup_tokens SET expires_at = $1 WHERE used_at IS NULL AND expires_at > $1", { bind: [ctx.clock.now()], transaction });
    return admin;
  });
}
