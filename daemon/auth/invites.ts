import { randomBytes, randomUUID } from "node:crypto";
import { z } from "zod";
import { accountIdOf, scopeOf, type Actor, type Role } from "../kernel/actor.js";
import { authorize } from "../kernel/policy.js";
import type { ApplianceContext } from "../context.js";
import { inScope, type Scope, type Tx } from "../db/sql.js";
import { Conflict, Invalid, NotFound, TooManyRequests } from "../kernel/errors.js";
import { hmacSha256 } from "../keys/index.js";
import { recordAuthEvent } from "../audit/append.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { InviteExpired, InviteInvalid, InviteRevoked, InviteUsed } from "./errors.js";
import { stageFor } from "./login.js";
import { tenantAuthPolicy } from "./tenant-policy.js";
import { argon2ParamsFrom, assertPasswordAcceptable, hashPassword } from "./passwords.js";
import { deriveAuthKey } from "./secret-box.js";
import { issueSession, type IssuedSession } from "./sessions.js";
import { buckets, countFailure, ipRule, readThrottle } from "./throttle.js";
import { sameBytes, sha256 } from "./tokens.js";
import { acceptInviteRequest, createInviteRequest } from "./schema.js";

/**
 * Invites: an admin names an email address and a role; the person gets a link carrying a signed,
 * single-use token that expires (`auth.inviteTtlHours`, 72 h by default). Accepting sets the
 * password and, where the tenant enforces MFA, leads straight into authenticator enrollment
 * before any full session exists.
 *
 * Token: `wki_` + base64url(invite id (16 bytes) || 24 random bytes) + `.` + base64url(HMAC-SHA-256).
 * The HMAC key is derived from the root KEK, so a token altered in any way is refused before the
 * database is asked; the table keeps only the SHA-256 of the whole token.
 */
export const INVITE_PREFIX = "wki_";

export { createInviteRequest };
export type CreateInviteRequest = z.infer<typeof createInviteRequest>;

export { acceptInviteRequest };
export type AcceptInviteRequest = z.infer<typeof acceptInviteRequest>;

export type InviteView = {
  id: string;
  tenantId: string | null;
  email: string;
  role: Role;
  createdAt: string;
  expiresAt: string;
  status: "pending" | "accepted" | "expired" | "revoked";
};

type InviteRow = {
  id: string;
  tenant_id: string | null;
  email: string;
  role: Role;
  token_hash: Buffer;
  created_at: Date;
  expires_at: Date;
  accepted_at: Date | null;
  revoked_at: Date | null;
};

function viewOf(row: InviteRow, now: Date): InviteView {
  const status = row.accepted_at ? "accepted" : row.revoked_at ? "revoked" : row.expires_at <= now ? "expired" : "pending";
  return { id: row.id, tenantId: row.tenant_id, email: row.email, role: row.role, createdAt: row.created_at.toISOString(), expiresAt: row.expires_at.toISOString(), status };
}

function uuidBytes(id: string): Buffer {
  return Buffer.from(id.replaceAll("-", ""), "hex");
}

function uuidFromBytes(b: Buffer): string {
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function signInvite(ctx: ApplianceContext, payload: Buffer): Buffer {
  const key = deriveAuthKey(ctx.rootKey, "invite-signing");
  try {
    return hmacSha256(key, Buffer.concat([Buffer.from("wardkeep/invite/v1:"), payload]));
  } finally {
    key.fill(0);
  }
}

function mintInviteToken(ctx: ApplianceContext, inviteId: string): string {
  const payload = Buffer.concat([uuidBytes(inviteId), randomBytes(24)]);
  return `${INVITE_PREFIX}${payload.toString("base64url")}.${signInvite(ctx, payload).toString("base64url")}`;
}

/** The invite id a token names, or null when it is malformed or its signature does not match. */
export function verifyInviteToken(ctx: ApplianceContext, token: string): string | null {
  const m = /^wki_([A-Za-z0-9_-]{54})\.([A-Za-z0-9_-]{43})$/.exec(token);
  if (!m) return null;
  const payload = Buffer.from(m[1]!, "base64url");
  const signature = Buffer.from(m[2]!, "base64url");
  if (payload.length !== 40 || !sameBytes(signature, signInvite(ctx, payload))) return null;
  return uuidFromBytes(payload.subarray(0, 16));
}

const APPLIANCE_ROLES: Role[] = ["super_admin", "support"];

/** The tenant an invite goes to: none for appliance roles, the actor's own, or the one a super-admin names. */
function inviteTenant(actor: Actor, input: CreateInviteRequest): string | null {
  if (APPLIANCE_ROLES.includes(input.role)) {
    if (input.tenantId) throw new Invalid("super-admins and support staff belong to no tenant: leave tenantId out");
    return null;
  }
  if (actor.tenantId) {
    if (input.tenantId && input.tenantId !== actor.tenantId) throw new NotFound("no such tenant");
    return actor.tenantId;
  }
  if (!input.tenantId) throw new Invalid("name the tenant (tenantId) to invite into");
  return input.tenantId;
}

// Email addresses are unique across the appliance, so this check needs a transaction in appliance scope.
async function assertEmailFree(t: Tx, email: string): Promise<void> {
  const taken = await t.rows("SELECT 1 FROM users WHERE email = $1", [email]);
  if (taken.length) throw new Conflict("an account with this email address already exists");
}

export type CreatedInvite = { invite: InviteView; token: string };

export async function createInvite(ctx: ApplianceContext, actor: Actor, input: CreateInviteRequest, meta: RequestMeta): Promise<CreatedInvite> {
  const tenantId = inviteTenant(actor, input);
  authorize(actor, "invite:create", { tenantId, targetRole: input.role });
  await inScope(ctx.db.app, { kind: "appliance" }, (t) => assertEmailFree(t, input.email));
  const scope: Scope = tenantId ? { kind: "tenant", tenantId } : { kind: "appliance" };
  return inScope(ctx.db.app, scope, (t) => insertInvite(ctx, t, actor, tenantId, input, meta));
}

/**
 * An invite written in the caller's transaction, which runs in appliance scope: a new tenant and
 * its owner's invite commit together or not at all (access/tenants.ts).
 */
export async function inviteInTransaction(ctx: ApplianceContext, t: Tx, actor: Actor, input: CreateInviteRequest, meta: RequestMeta): Promise<CreatedInvite> {
  const tenantId = inviteTenant(actor, input);
  authorize(actor, "invite:create", { tenantId, targetRole: input.role });
  await assertEmailFree(t, input.email);
  return insertInvite(ctx, t, actor, tenantId, input, meta);
}

async function insertInvite(ctx: ApplianceContext, t: Tx, actor: Actor, tenantId: string | null, input: CreateInviteRequest, meta: RequestMeta): Promise<CreatedInvite> {
  const now = ctx.clock.now();
  const id = randomUUID();
  const token = mintInviteToken(ctx, id);
  const expiresAt = new Date(now.getTime() + ctx.config.auth.inviteTtlHours * 3_600_000);
  if (tenantId) {
    const tenant = await t.rows("SELECT 1 FROM tenants WHERE id = $1 AND status = 'active'", [tenantId]);
    if (!tenant.length) throw new NotFound("no such active tenant");
  }
  // A new invite replaces an outstanding one for the same address: only the latest link works.
  await t.exec("UPDATE invites SET revoked_at = $2 WHERE email = $1 AND accepted_at IS NULL AND revoked_at IS NULL", [input.email, now]);
  const [inserted] = await t.rows<InviteRow>(
    `INSERT INTO invites (id, tenant_id, email, role, token_hash, created_by, created_at, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *`,
    // The host's command line has no account (created_by NULL, migration 0020).
    [id, tenantId, input.email, input.role, sha256(token), accountIdOf(actor), now, expiresAt],
  );
  await recordAuthEvent(ctx, t, actor, { action: "invite.create", resourceType: "invite", resourceId: id, tenantId, outcome: "success", reason: `role ${input.role}` }, meta);
  return { invite: viewOf(inserted!, now), token };
}

export async function listInvites(ctx: ApplianceContext, actor: Actor): Promise<InviteView[]> {
  authorize(actor, "invite:list", { tenantId: actor.tenantId });
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    // Appliance staff see appliance-level invites here; a tenant's invites are seen inside the tenant.
    const rows = await t.rows<InviteRow>(
      `SELECT * FROM invites WHERE ${actor.tenantId ? "tenant_id = $1" : "tenant_id IS NULL AND $1::uuid IS NULL"} ORDER BY created_at DESC LIMIT 500`,
      [actor.tenantId],
    );
    const now = ctx.clock.now();
    return rows.map((r) => viewOf(r, now));
  });
}

export async function revokeInvite(ctx: ApplianceContext, actor: Actor, inviteId: string, meta: RequestMeta): Promise<InviteView> {
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const [row] = await t.rows<InviteRow>("SELECT * FROM invites WHERE id = $1 FOR UPDATE", [inviteId]);
    if (!row) throw new NotFound("no such invite");
    authorize(actor, "invite:revoke", { tenantId: row.tenant_id });
    if (row.accepted_at) throw new Conflict("the invite was already accepted; deactivate the account instead");
    const now = ctx.clock.now();
    const [updated] = await t.rows<InviteRow>("UPDATE invites SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1 RETURNING *", [inviteId, now]);
    await recordAuthEvent(ctx, t, actor, { action: "invite.revoke", resourceType: "invite", resourceId: inviteId, tenantId: row.tenant_id, outcome: "success" }, meta);
    return viewOf(updated!, now);
  });
}

export type AcceptedInvite = { userId: string; tenantId: string | null; role: Role; session: IssuedSession; mfaEnrollmentRequired: boolean };

/**
 * Trades an invite token for an account and its first session. Reuse, expiry, withdrawal and
 * tampering each fail with their own problem type; every failure is audited and counts towards
 * the source IP's limit (guessing tokens).
 */
export async function acceptInvite(ctx: ApplianceContext, input: AcceptInviteRequest, meta: RequestMeta): Promise<AcceptedInvite> {
  // Phase 1 (appliance scope: the tenant is not known until the invite is found): rate limit,
  // signature, state. Failures commit their audit event and count, then throw.
  const checked = await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const ipBucket = buckets.sourceIp(meta.sourceIp);
    const limited = await readThrottle(ctx, t, ipBucket);
    if (limited.locked) return { error: new TooManyRequests("too many attempts from this address; wait and try again", { retryAfterSeconds: limited.retryAfterSeconds }) };
    const fail = async (error: Error, reason: string, invite?: InviteRow) => {
      await countFailure(ctx, t, ipBucket, ipRule(ctx));
      await recordAuthEvent(
        ctx,
        t,
        null,
        { action: "invite.accept", resourceType: "invite", resourceId: invite?.id ?? null, tenantId: invite?.tenant_id ?? null, outcome: "failure", reason },
        meta,
      );
      return { error };
    };
    const inviteId = verifyInviteToken(ctx, input.token);
    if (!inviteId) return fail(new InviteInvalid("the invite link is damaged or was altered; ask for a new invite"), "malformed or tampered token");
    const [invite] = await t.rows<InviteRow>("SELECT * FROM invites WHERE id = $1", [inviteId]);
    if (!invite || !sameBytes(invite.token_hash, sha256(input.token))) return fail(new InviteInvalid("the invite link is not valid; ask for a new invite"), "unknown token");
    if (invite.accepted_at) return fail(new InviteUsed("this invite has already been used; sign in instead"), "token reused", invite);
    if (invite.revoked_at) return fail(new InviteRevoked("this invite was withdrawn or replaced by a newer one"), "invite revoked", invite);
    if (invite.expires_at <= ctx.clock.now()) return fail(new InviteExpired("this invite has expired; ask an administrator for a new one"), "invite expired", invite);
    return { invite, policy: await tenantAuthPolicy(t, invite.tenant_id) };
  });
  if ("error" in checked) throw checked.error;
  const invite = checked.invite;
  assertPasswordAcceptable(input.password, { email: invite.email, minLength: checked.policy.passwordMinLength });
  const passwordHash = await hashPassword(input.password, argon2ParamsFrom(ctx.config));

  // Phase 2, in the invite's own scope: the row lock makes the token single-use even when two
  // acceptances race.
  const scope: Scope = invite.tenant_id ? { kind: "tenant", tenantId: invite.tenant_id } : { kind: "appliance" };
  return inScope(ctx.db.app, scope, async (t) => {
    const [locked] = await t.rows<InviteRow>("SELECT * FROM invites WHERE id = $1 FOR UPDATE", [invite.id]);
    if (!locked || locked.accepted_at) throw new InviteUsed("this invite has already been used; sign in instead");
    if (locked.revoked_at) throw new InviteRevoked("this invite was withdrawn or replaced by a newer one");
    const now = ctx.clock.now();
    let tenantMfaRequired: boolean | null = null;
    let tenantMfaRoles: string[] = [];
    if (invite.tenant_id) {
      const [tenant] = await t.rows<{ status: string; mfa_required: boolean; mfa_roles: string[] }>("SELECT status, mfa_required, mfa_roles FROM tenants WHERE id = $1", [
        invite.tenant_id,
      ]);
      if (!tenant || tenant.status !== "active") throw new InviteRevoked("the organisation this invite is for is no longer active");
      tenantMfaRequired = tenant.mfa_required;
      tenantMfaRoles = tenant.mfa_roles;
    }
    const [user] = await t.rows<{ id: string }>(
      `INSERT INTO users (tenant_id, email, password_hash, role, display_name, password_changed_at, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $6, $6) ON CONFLICT (email) DO NOTHING RETURNING id`,
      [invite.tenant_id, invite.email, passwordHash, invite.role, input.displayName ?? null, now],
    );
    if (!user) throw new Conflict("an account with this email address already exists; sign in instead");
    await t.exec("UPDATE invites SET accepted_at = $2, accepted_user_id = $3 WHERE id = $1", [invite.id, now, user.id]);
    const stage = stageFor(ctx, { role: invite.role, mfa_enrolled: false, tenant_mfa_required: tenantMfaRequired, tenant_mfa_roles: tenantMfaRoles });
    if (stage === "active") await t.exec("UPDATE users SET last_login_at = $2 WHERE id = $1", [user.id, now]);
    const session = await issueSession(ctx, t, { userId: user.id, tenantId: invite.tenant_id, stage }, meta);
    const who = { userId: user.id, role: invite.role, tenantId: invite.tenant_id };
    await recordAuthEvent(ctx, t, who, { action: "invite.accept", resourceType: "invite", resourceId: invite.id, outcome: "success" }, meta);
    await recordAuthEvent(ctx, t, who, { action: "user.create", resourceType: "user", resourceId: user.id, outcome: "success", reason: `role ${invite.role} by invite` }, meta);
    return { userId: user.id, tenantId: invite.tenant_id, role: invite.role, session, mfaEnrollmentRequired: stage === "mfa_enrollment_required" };
  });
}
