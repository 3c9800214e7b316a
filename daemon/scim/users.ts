import { deprovisionAccount } from "../access/index.js";
import { recordAuthEvent } from "../audit/append.js";
import { applyScimGroupRules } from "../sso/index.js";
import type { ApplianceContext } from "../context.js";
import { inScope, isUniqueViolation, type Tx } from "../db/sql.js";
import { Conflict } from "../kernel/errors.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { applyPatch, invalid, listResponse, SCHEMA_USER, ScimError, scimBoolean, type EqFilter, type PatchOperation } from "./protocol.js";
import { scimActor, type ScimClient } from "./tokens.js";

/**
 * SCIM Users (RFC 7643 §4.1) over the tenant's human accounts. `userName` is the SCIM user name
 * when SCIM set one, else the account's email, so an IdP that looks an existing local account up
 * by its address links it instead of creating a second one. Service accounts and deleted
 * accounts are invisible here. SCIM sets no role itself: new accounts get the token's default role
 * until a group rule assigns another (docs/scim.md, groups.ts).
 */

type Json = Record<string, unknown>;

type UserRow = {
  id: string;
  tenant_id: string;
  email: string;
  display_name: string | null;
  status: "active" | "deactivated";
  source: string;
  scim_user_name: string | null;
  scim_external_id: string | null;
  scim_name: { givenName?: string; familyName?: string; formatted?: string } | null;
  created_at: Date;
  updated_at: Date;
};

const COLUMNS = "u.id, u.tenant_id, u.email, u.display_name, u.status, u.source, u.scim_user_name, u.scim_external_id, u.scim_name, u.created_at, u.updated_at";
/** What SCIM may see: the tenant's people; not service accounts, not break-glass accounts (they must outlive the directory), not what SCIM deleted. */
const VISIBLE = "u.kind = 'human' AND NOT u.break_glass_account AND u.scim_deleted_at IS NULL AND u.tenant_id = $1";

export function userResource(r: UserRow, baseUrl: string): Json {
  return {
    schemas: [SCHEMA_USER],
    id: r.id,
    ...(r.scim_external_id ? { externalId: r.scim_external_id } : {}),
    userName: r.scim_user_name ?? r.email,
    ...(r.scim_name ? { name: r.scim_name } : {}),
    ...(r.display_name ? { displayName: r.display_name } : {}),
    emails: [{ value: r.email, type: "work", primary: true }],
    active: r.status === "active",
    meta: {
      resourceType: "User",
      created: r.created_at.toISOString(),
      lastModified: r.updated_at.toISOString(),
      location: `${baseUrl}/Users/${r.id}`,
      version: `W/"${r.updated_at.getTime()}"`,
    },
  };
}

type UserInput = { userName: string; externalId: string | null; name: UserRow["scim_name"]; displayName: string | null; email: string; active: boolean };

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

function text(v: unknown, name: string, max: number): string | null {
  if (v === undefined || v === null || v === "") return null;
  if (typeof v !== "string" || v.length > max) throw invalid(`${name} must be a string of at most ${max} characters`);
  return v.trim() || null;
}

/** Reads the attributes we keep from a User resource (a POST or PUT body, or a patched representation). */
export function readUser(resource: Json): UserInput {
  const get = (name: string) => resource[Object.keys(resource).find((k) => k.toLowerCase() === name.toLowerCase()) ?? name];
  const userName = text(get("userName"), "userName", 254);
  if (!userName) throw invalid("userName is required");
  const rawName = get("name");
  let name: UserInput["name"] = null;
  if (rawName !== undefined && rawName !== null) {
    if (typeof rawName !== "object" || Array.isArray(rawName)) throw invalid("name must be an object");
    const n = rawName as Json;
    const pick = (k: string) => text(n[Object.keys(n).find((x) => x.toLowerCase() === k.toLowerCase()) ?? k], `name.${k}`, 200);
    const parts = { givenName: pick("givenName"), familyName: pick("familyName"), formatted: pick("formatted") };
    const kept = Object.fromEntries(Object.entries(parts).filter(([, v]) => v !== null)) as NonNullable<UserInput["name"]>;
    name = Object.keys(kept).length ? kept : null;
  }
  const emails = get("emails");
  if (emails !== undefined && emails !== null && !Array.isArray(emails)) throw invalid("emails must be an array");
  const list = ((emails as Json[] | undefined) ?? []).filter((e) => typeof e === "object" && e !== null && typeof e.value === "string" && e.value !== "");
  const chosen = list.find((e) => e.primary === true || e.primary === "True" || e.primary === "true") ?? list.find((e) => String(e.type).toLowerCase() === "work") ?? list[0];
  const email = (typeof chosen?.value === "string" ? chosen.value : userName.includes("@") ? userName : "").trim().toLowerCase();
  if (!EMAIL.test(email) || email.length > 254) throw invalid("an email address is needed (emails, or a userName that is one)");
  const active = get("active") === undefined ? true : scimBoolean(get("active"), "active");
  const displayName = text(get("displayName"), "displayName", 200) ?? name?.formatted ?? ([name?.givenName, name?.familyName].filter(Boolean).join(" ") || null);
  return { userName, externalId: text(get("externalId"), "externalId", 200), name, displayName, email, active };
}

async function loadUser(t: Tx, client: ScimClient, id: string, forUpdate = false): Promise<UserRow> {
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) throw new ScimError(404, "no such user");
  const [row] = await t.rows<UserRow>(`SELECT ${COLUMNS} FROM users u WHERE ${VISIBLE} AND u.id = $2${forUpdate ? " FOR UPDATE" : ""}`, [client.tenantId, id]);
  if (!row) throw new ScimError(404, "no such user");
  return row;
}

const scope = (client: ScimClient) => ({ kind: "tenant" as const, tenantId: client.tenantId });

function uniqueness(err: unknown): never {
  if (isUniqueViolation(err)) throw new ScimError(409, "another account already has this userName or email address", "uniqueness");
  throw err;
}

export async function getScimUser(ctx: ApplianceContext, client: ScimClient, id: string, baseUrl: string): Promise<Json> {
  return inScope(ctx.db.app, scope(client), async (t) => userResource(await loadUser(t, client, id), baseUrl));
}

export async function listScimUsers(ctx: ApplianceContext, client: ScimClient, filter: EqFilter | undefined, page: { startIndex: number; count: number }, baseUrl: string) {
  return inScope(ctx.db.app, scope(client), async (t) => {
    const where =
      filter?.attribute === "userName"
        ? " AND lower(coalesce(u.scim_user_name, u.email)) = lower($2)"
        : filter?.attribute === "externalId"
          ? " AND u.scim_external_id = $2"
          : " AND $2::text IS NULL";
    const values = [client.tenantId, filter?.value ?? null];
    const [{ n }] = (await t.rows<{ n: string }>(`SELECT count(*) AS n FROM users u WHERE ${VISIBLE}${where}`, values)) as [{ n: string }];
    const rows = await t.rows<UserRow>(`SELECT ${COLUMNS} FROM users u WHERE ${VISIBLE}${where} ORDER BY u.created_at, u.id OFFSET $3 LIMIT $4`, [
      ...values,
      page.startIndex - 1,
      page.count,
    ]);
    return listResponse(
      rows.map((r) => userResource(r, baseUrl)),
      Number(n),
      page.startIndex,
    );
  });
}

/**
 * POST /Users. A userName SCIM deleted earlier brings that account back (its email is unique
 * appliance-wide, and its history stays one account); one still present is a 409 uniqueness.
 */
export async function createScimUser(ctx: ApplianceContext, client: ScimClient, body: Json, baseUrl: string, meta: RequestMeta): Promise<Json> {
  const input = readUser(body);
  return inScope(ctx.db.app, scope(client), async (t) => {
    const now = ctx.clock.now();
    const [taken] = await t.rows<{ id: string }>(`SELECT u.id FROM users u WHERE ${VISIBLE} AND lower(coalesce(u.scim_user_name, u.email)) = lower($2)`, [
      client.tenantId,
      input.userName,
    ]);
    if (taken) throw new ScimError(409, "a user with this userName exists", "uniqueness");
    const [deleted] = await t.rows<{ id: string }>(
      "SELECT id FROM users WHERE tenant_id = $1 AND kind = 'human' AND scim_deleted_at IS NOT NULL AND lower(scim_user_name) = lower($2) ORDER BY scim_deleted_at DESC LIMIT 1 FOR UPDATE",
      [client.tenantId, input.userName],
    );
    let id: string;
    if (deleted) {
      id = deleted.id;
      await t
        .exec(
          `UPDATE users SET scim_deleted_at = NULL, email = $2, scim_user_name = $3, scim_external_id = $4, scim_name = $5, display_name = $6,
             status = CASE WHEN $7 THEN 'active' ELSE 'deactivated' END, deactivated_at = CASE WHEN $7 THEN NULL ELSE deactivated_at END,
             deactivated_reason = CASE WHEN $7 THEN NULL ELSE deactivated_reason END, updated_at = $8 WHERE id = $1`,
          [id, input.email, input.userName, input.externalId, input.name, input.displayName, input.active, now],
        )
        .catch(uniqueness);
    } else {
      const [row] = await t
        .rows<{ id: string }>(
          `INSERT INTO users (tenant_id, email, password_hash, role, kind, display_name, source, scim_user_name, scim_external_id, scim_name, status, deactivated_at, deactivated_reason, created_at, updated_at)
           VALUES ($1, $2, '!scim-provisioned', $3, 'human', $4, 'scim', $5, $6, $7, CASE WHEN $8 THEN 'active' ELSE 'deactivated' END,
                   CASE WHEN $8 THEN NULL ELSE $9::timestamptz END, CASE WHEN $8 THEN NULL ELSE 'scim' END, $9, $9) RETURNING id`,
          [client.tenantId, input.email, client.defaultRole, input.displayName, input.userName, input.externalId, input.name, input.active, now],
        )
        .catch(uniqueness);
      id = row!.id;
    }
    await recordAuthEvent(
      ctx,
      t,
      scimActor(client),
      { action: "scim.user.create", resourceType: "user", resourceId: id, outcome: "success", reason: deleted ? "restored a deleted account" : `role ${client.defaultRole}` },
      meta,
    );
    return userResource(await loadUser(t, client, id), baseUrl);
  });
}

/** Writes a changed User and carries out what `active` means: false deprovisions at once. */
async function saveUser(ctx: ApplianceContext, t: Tx, client: ScimClient, before: UserRow, next: UserInput, meta: RequestMeta): Promise<void> {
  const now = ctx.clock.now();
  const changed = [
    (before.scim_user_name ?? before.email).toLowerCase() !== next.userName.toLowerCase() && "userName",
    before.email !== next.email && "email",
    (before.scim_external_id ?? null) !== next.externalId && "externalId",
    JSON.stringify(before.scim_name ?? null) !== JSON.stringify(next.name) && "name",
    (before.display_name ?? null) !== next.displayName && "displayName",
  ].filter((c): c is string => typeof c === "string");
  if (changed.length) {
    await t
      .exec(
        `UPDATE users SET email = $2, scim_user_name = $3, scim_external_id = $4, scim_name = $5, display_name = $6, source = CASE WHEN source = 'local' THEN 'scim' ELSE source END, updated_at = $7 WHERE id = $1`,
        [before.id, next.email, next.userName, next.externalId, next.name, next.displayName, now],
      )
      .catch(uniqueness);
    // Which attributes changed, never their values (names and addresses stay out of the trail's text).
    await recordAuthEvent(
      ctx,
      t,
      scimActor(client),
      { action: "scim.user.update", resourceType: "user", resourceId: before.id, outcome: "success", reason: changed.join(" ") },
      meta,
    );
  }
  const wasActive = before.status === "active";
  if (wasActive && !next.active) await deprovision(ctx, t, client, before.id, meta);
  if (!wasActive && next.active) {
    await t.exec("UPDATE users SET status = 'active', deactivated_at = NULL, deactivated_reason = NULL, updated_at = $2 WHERE id = $1", [before.id, now]);
    await recordAuthEvent(ctx, t, scimActor(client), { action: "user.reactivate", resourceType: "user", resourceId: before.id, outcome: "success", reason: "scim" }, meta);
    // Group changes while it was inactive changed no role: the rules apply now.
    await applyScimGroupRules(ctx, t, scimActor(client), [before.id], client.defaultRole, meta);
  }
}

async function deprovision(ctx: ApplianceContext, t: Tx, client: ScimClient, userId: string, meta: RequestMeta) {
  try {
    await deprovisionAccount(ctx, t, scimActor(client), { userId, tenantId: client.tenantId }, "scim", meta);
  } catch (err) {
    if (err instanceof Conflict) throw new ScimError(409, err.message, "mutability");
    throw err;
  }
}

/** PUT /Users/{id}: the body replaces the attributes we keep (Okta sends profile updates this way). */
export async function replaceScimUser(ctx: ApplianceContext, client: ScimClient, id: string, body: Json, baseUrl: string, meta: RequestMeta): Promise<Json> {
  const next = readUser(body);
  return inScope(ctx.db.app, scope(client), async (t) => {
    const before = await loadUser(t, client, id, true);
    await saveUser(ctx, t, client, before, next, meta);
    return userResource(await loadUser(t, client, id), baseUrl);
  });
}

/** PATCH /Users/{id}: the operations are applied to the current representation, which is then saved like a PUT. */
export async function patchScimUser(ctx: ApplianceContext, client: ScimClient, id: string, ops: PatchOperation[], baseUrl: string, meta: RequestMeta): Promise<Json> {
  return inScope(ctx.db.app, scope(client), async (t) => {
    const before = await loadUser(t, client, id, true);
    const patched = applyPatch(userResource(before, baseUrl), ops);
    await saveUser(ctx, t, client, before, readUser(patched), meta);
    return userResource(await loadUser(t, client, id), baseUrl);
  });
}

/** DELETE /Users/{id}: deprovisions at once and hides the account from SCIM (404 afterwards); the row stays for the audit trail. */
export async function deleteScimUser(ctx: ApplianceContext, client: ScimClient, id: string, meta: RequestMeta): Promise<void> {
  await inScope(ctx.db.app, scope(client), async (t) => {
    const before = await loadUser(t, client, id, true);
    if (before.status === "active") await deprovision(ctx, t, client, id, meta);
    await t.exec("UPDATE users SET scim_deleted_at = $2, scim_user_name = coalesce(scim_user_name, email), updated_at = $2 WHERE id = $1", [id, ctx.clock.now()]);
    await t.exec("DELETE FROM scim_group_members WHERE user_id = $1", [id]);
    await recordAuthEvent(ctx, t, scimActor(client), { action: "scim.user.delete", resourceType: "user", resourceId: id, outcome: "success" }, meta);
  });
}
