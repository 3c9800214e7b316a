import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { type Tx } from "../db/sql.js";
import { z } from "zod";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { Conflict, Forbidden } from "../kernel/errors.js";
import { recordAuthEvent } from "../audit/append.js";
import { SYSTEM_META } from "../kernel/request-meta.js";
import { argon2ParamsFrom, assertPasswordAcceptable, hashPassword } from "./passwords.js";
import { setupRequest, superAdminInput } from "./schema.js";

/**
 * First run, like Grafana's or Jenkins': until a super-admin exists the appliance holds one
 * setup token, printed once at start; whoever presents it may create the first super-admin.
 * Only its SHA-256 is stored, so a database read does not reveal it.
 */
export const TOKEN_PREFIX = "wks_setup_";

export { setupRequest, superAdminInput };
export type SuperAdminInput = z.infer<typeof superAdminInput>;

function digest(token: string): Buffer {
  return createHash("sha256").update(token).digest();
}

export async function superAdminExists(ctx: ApplianceContext): Promise<boolean> {
  return inScope(ctx.db.app, { kind: "appliance" }, async (transaction) => {
    const rows = await transaction.rows("SELECT 1 FROM users WHERE role = 'super_admin' LIMIT 1");
    return rows.length > 0;
  });
}

/**
 * Serialises setup across replicas and requests (a transaction-scoped advisory lock), so two
 * replicas starting together do not each print a token and two setups cannot both succeed.
 * Returns true when a super-admin already exists.
 */
async function lockSetupAndCheckDone(ctx: ApplianceContext, transaction: Tx): Promise<boolean> {
  await transaction.exec("SELECT pg_advisory_xact_lock(7301002)");
  const admins = await transaction.rows("SELECT 1 FROM users WHERE role = 'super_admin' LIMIT 1");
  return admins.length > 0;
}

export type SetupTokenOutcome = { state: "complete" } | { state: "issued"; token: string; expiresAt: Date } | { state: "pending"; expiresAt: Date };

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
      await transaction.exec("UPDATE setup_tokens SET expires_at = $1 WHERE used_at IS NULL AND expires_at > $1", [now]);
    } else {
      const open = await transaction.rows<{ expires_at: Date }>("SELECT expires_at FROM setup_tokens WHERE used_at IS NULL AND expires_at > $1 ORDER BY expires_at DESC LIMIT 1", [
        now,
      ]);
      if (open[0]) return { state: "pending" as const, expiresAt: open[0].expires_at };
    }
    const token = TOKEN_PREFIX + randomBytes(24).toString("base64url");
    const expiresAt = new Date(now.getTime() + ctx.config.setup.tokenTtlHours * 3_600_000);
    await transaction.exec("INSERT INTO setup_tokens (token_hash, created_at, expires_at) VALUES ($1, $2, $3)", [digest(token), now, expiresAt]);
    return { state: "issued" as const, token, expiresAt };
  });
}

async function insertSuperAdmin(ctx: ApplianceContext, input: SuperAdminInput, transaction: Tx) {
  assertPasswordAcceptable(input.password, { email: input.email });
  const hash = await hashPassword(input.password, argon2ParamsFrom(ctx.config));
  const rows = await transaction.rows<{ id: string }>("INSERT INTO users (email, password_hash, role) VALUES ($1, $2, 'super_admin') ON CONFLICT (email) DO NOTHING RETURNING id", [
    input.email,
    hash,
  ]);
  if (!rows[0]) throw new Conflict("an account with this email already exists");
  const who = { userId: rows[0].id, role: "super_admin", tenantId: null };
  await recordAuthEvent(
    ctx,
    transaction,
    who,
    { action: "user.create", resourceType: "user", resourceId: rows[0].id, outcome: "success", reason: "first super-admin" },
    SYSTEM_META,
  );
  return { id: rows[0].id, email: input.email };
}

/** `POST /api/v1/setup`: trades the setup token for the first super-admin account. */
export async function completeSetup(ctx: ApplianceContext, input: z.infer<typeof setupRequest>) {
  return inScope(ctx.db.app, { kind: "appliance" }, async (transaction) => {
    if (await lockSetupAndCheckDone(ctx, transaction)) throw new Conflict("setup is already complete; sign in instead");
    const now = ctx.clock.now();
    const presented = digest(input.token);
    const rows = await transaction.rows<{ id: string; token_hash: Buffer }>("SELECT id, token_hash FROM setup_tokens WHERE used_at IS NULL AND expires_at > $1", [now]);
    const match = rows.find((r) => timingSafeEqual(r.token_hash, presented));
    if (!match) throw new Forbidden("the setup token is invalid, used or expired; run `wardkeep admin setup-token` for a new one");
    const admin = await insertSuperAdmin(ctx, input, transaction);
    await transaction.exec("UPDATE setup_tokens SET used_at = $1, used_by = $2 WHERE id = $3", [now, admin.id, match.id]);
    return admin;
  });
}

/** `wardkeep admin create`: the first super-admin for automated installs, without the token. */
export async function createFirstSuperAdmin(ctx: ApplianceContext, input: SuperAdminInput) {
  return inScope(ctx.db.app, { kind: "appliance" }, async (transaction) => {
    if (await lockSetupAndCheckDone(ctx, transaction)) throw new Conflict("a super-admin already exists; further accounts are created by a signed-in administrator");
    const admin = await insertSuperAdmin(ctx, input, transaction);
    // The printed token is now useless: retire it.
    await transaction.exec("UPDATE setup_tokens SET expires_at = $1 WHERE used_at IS NULL AND expires_at > $1", [ctx.clock.now()]);
    return admin;
  });
}
