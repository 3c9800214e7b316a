import { recordAuthEvent } from "../audit/append.js";
import { applyScimGroupRules } from "../sso/index.js";
import type { ApplianceContext } from "../context.js";
import { inScope, isUniqueViolation, type Tx } from "../db/sql.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { applyPatch, invalid, listResponse, SCHEMA_GROUP, ScimError, type EqFilter, type PatchOperation } from "./protocol.js";
import { scimActor, type ScimClient } from "./tokens.js";

/**
 * SCIM Groups (RFC 7643 §4.2): the directory's groups and their members, as the IdP pushes them.
 * Membership feeds the tenant's group-to-role rules (docs/sso.md): after each change, the accounts
 * whose groups changed get the role the rules give them (`applyScimGroupRules`).
 */

type Json = Record<string, unknown>;
type GroupRow = { id: string; tenant_id: string; display_name: string; external_id: string | null; created_at: Date; updated_at: Date };
type MemberRow = { group_id: string; user_id: string; display: string | null };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const scope = (client: ScimClient) => ({ kind: "tenant" as const, tenantId: client.tenantId });

function groupResource(g: GroupRow, members: MemberRow[] | null, baseUrl: string): Json {
  return {
    schemas: [SCHEMA_GROUP],
    id: g.id,
    displayName: g.display_name,
    ...(g.external_id ? { externalId: g.external_id } : {}),
    ...(members ? { members: members.map((m) => ({ value: m.user_id, $ref: `${baseUrl}/Users/${m.user_id}`, ...(m.display ? { display: m.display } : {}) })) } : {}),
    meta: {
      resourceType: "Group",
      created: g.created_at.toISOString(),
      lastModified: g.updated_at.toISOString(),
      location: `${baseUrl}/Groups/${g.id}`,
      version: `W/"${g.updated_at.getTime()}"`,
    },
  };
}

async function membersOf(t: Tx, groupIds: string[]): Promise<MemberRow[]> {
  if (groupIds.length === 0) return [];
  return t.rows<MemberRow>(
    `SELECT m.group_id, m.user_id, coalesce(u.display_name, u.scim_user_name, u.email) AS display
       FROM scim_group_members m JOIN users u ON u.id = m.user_id WHERE m.group_id = ANY($1::uuid[]) ORDER BY m.added_at, m.user_id`,
    [groupIds],
  );
}

async function loadGroup(t: Tx, client: ScimClient, id: string, forUpdate = false): Promise<GroupRow> {
  if (!UUID.test(id)) throw new ScimError(404, "no such group");
  const [row] = await t.rows<GroupRow>(`SELECT * FROM scim_groups WHERE tenant_id = $1 AND id = $2${forUpdate ? " FOR UPDATE" : ""}`, [client.tenantId, id]);
  if (!row) throw new ScimError(404, "no such group");
  return row;
}

type GroupInput = { displayName: string; externalId: string | null; members: string[] | null };

function readGroup(resource: Json): GroupInput {
  const get = (name: string) => resource[Object.keys(resource).find((k) => k.toLowerCase() === name.toLowerCase()) ?? name];
  const displayName = get("displayName");
  if (typeof displayName !== "string" || !displayName.trim() || displayName.length > 256) throw invalid("displayName is required (at most 256 characters)");
  const externalId = get("externalId");
  if (externalId !== undefined && externalId !== null && (typeof externalId !== "string" || externalId.length > 200)) throw invalid("externalId must be a string");
  const raw = get("members");
  if (raw !== undefined && raw !== null && !Array.isArray(raw)) throw invalid("members must be an array");
  const members = raw === undefined || raw === null ? null : (raw as unknown[]).map((m) => String((m as Json)?.value ?? ""));
  if (members?.some((m) => !UUID.test(m))) throw invalid("a member's value is the id of a User of this tenant");
  return { displayName: displayName.trim(), externalId: (externalId as string | undefined) || null, members: members ? [...new Set(members.map((m) => m.toLowerCase()))] : null };
}

const uniqueness = (err: unknown): never => {
  if (isUniqueViolation(err)) throw new ScimError(409, "a group with this displayName exists", "uniqueness");
  throw err;
};

/** Sets the member list to exactly `wanted`; every id must be a visible account of the tenant. Returns who joined and who left. */
async function setMembers(ctx: ApplianceContext, t: Tx, client: ScimClient, groupId: string, wanted: string[]): Promise<{ added: string[]; removed: string[] }> {
  if (wanted.length) {
    const known = await t.rows<{ id: string }>("SELECT id FROM users WHERE tenant_id = $1 AND kind = 'human' AND scim_deleted_at IS NULL AND id = ANY($2::uuid[])", [
      client.tenantId,
      wanted,
    ]);
    if (known.length !== wanted.length) throw invalid(`${wanted.length - known.length} member(s) are not Users of this tenant`);
  }
  const removed = await t.rows<{ user_id: string }>("DELETE FROM scim_group_members WHERE group_id = $1 AND NOT (user_id = ANY($2::uuid[])) RETURNING user_id", [groupId, wanted]);
  const added = await t.rows<{ user_id: string }>(
    `INSERT INTO scim_group_members (tenant_id, group_id, user_id, added_at) SELECT $1, $2, unnest($3::uuid[]), $4 ON CONFLICT DO NOTHING RETURNING user_id`,
    [client.tenantId, groupId, wanted, ctx.clock.now()],
  );
  return { added: added.map((r) => r.user_id), removed: removed.map((r) => r.user_id) };
}

/** Group changes feed the sign-in rules (docs/sso.md): the accounts whose groups changed get the role the rules give them now. */
async function applyRoles(ctx: ApplianceContext, t: Tx, client: ScimClient, userIds: string[], meta: RequestMeta): Promise<void> {
  await applyScimGroupRules(ctx, t, scimActor(client), userIds, client.defaultRole, meta);
}

export async function getScimGroup(ctx: ApplianceContext, client: ScimClient, id: string, withMembers: boolean, baseUrl: string): Promise<Json> {
  return inScope(ctx.db.app, scope(client), async (t) => {
    const g = await loadGroup(t, client, id);
    return groupResource(g, withMembers ? await membersOf(t, [g.id]) : null, baseUrl);
  });
}

export async function listScimGroups(
  ctx: ApplianceContext,
  client: ScimClient,
  filter: EqFilter | undefined,
  page: { startIndex: number; count: number },
  withMembers: boolean,
  baseUrl: string,
) {
  return inScope(ctx.db.app, scope(client), async (t) => {
    const where =
      filter?.attribute === "displayName" ? " AND lower(display_name) = lower($2)" : filter?.attribute === "externalId" ? " AND external_id = $2" : " AND $2::text IS NULL";
    const values = [client.tenantId, filter?.value ?? null];
    const [{ n }] = (await t.rows<{ n: string }>(`SELECT count(*) AS n FROM scim_groups WHERE tenant_id = $1${where}`, values)) as [{ n: string }];
    const rows = await t.rows<GroupRow>(`SELECT * FROM scim_groups WHERE tenant_id = $1${where} ORDER BY created_at, id OFFSET $3 LIMIT $4`, [
      ...values,
      page.startIndex - 1,
      page.count,
    ]);
    const members = withMembers
      ? await membersOf(
          t,
          rows.map((r) => r.id),
        )
      : [];
    return listResponse(
      rows.map((g) => groupResource(g, withMembers ? members.filter((m) => m.group_id === g.id) : null, baseUrl)),
      Number(n),
      page.startIndex,
    );
  });
}

export async function createScimGroup(ctx: ApplianceContext, client: ScimClient, body: Json, baseUrl: string, meta: RequestMeta): Promise<Json> {
  const input = readGroup(body);
  return inScope(ctx.db.app, scope(client), async (t) => {
    const now = ctx.clock.now();
    const [g] = await t
      .rows<GroupRow>("INSERT INTO scim_groups (tenant_id, display_name, external_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) RETURNING *", [
        client.tenantId,
        input.displayName,
        input.externalId,
        now,
      ])
      .catch(uniqueness);
    const changes = await setMembers(ctx, t, client, g!.id, input.members ?? []);
    await recordAuthEvent(
      ctx,
      t,
      scimActor(client),
      { action: "scim.group.create", resourceType: "scim_group", resourceId: g!.id, outcome: "success", reason: `members +${changes.added.length}` },
      meta,
    );
    await applyRoles(ctx, t, client, changes.added, meta);
    return groupResource(g!, await membersOf(t, [g!.id]), baseUrl);
  });
}

async function saveGroup(ctx: ApplianceContext, t: Tx, client: ScimClient, before: GroupRow, next: GroupInput, meta: RequestMeta) {
  const renamed = before.display_name !== next.displayName || before.external_id !== next.externalId;
  if (renamed) {
    await t
      .exec("UPDATE scim_groups SET display_name = $2, external_id = $3, updated_at = $4 WHERE id = $1", [before.id, next.displayName, next.externalId, ctx.clock.now()])
      .catch(uniqueness);
  }
  const changes = next.members ? await setMembers(ctx, t, client, before.id, next.members) : { added: [], removed: [] };
  const membersChanged = changes.added.length + changes.removed.length > 0;
  if (membersChanged) await t.exec("UPDATE scim_groups SET updated_at = $2 WHERE id = $1", [before.id, ctx.clock.now()]);
  if (renamed || membersChanged) {
    await recordAuthEvent(
      ctx,
      t,
      scimActor(client),
      {
        action: "scim.group.update",
        resourceType: "scim_group",
        resourceId: before.id,
        outcome: "success",
        reason: `${renamed ? "renamed; " : ""}members +${changes.added.length} -${changes.removed.length}`,
      },
      meta,
    );
  }
  // A rename can make a rule match or stop matching for every member.
  const members = renamed ? (await t.rows<{ user_id: string }>("SELECT user_id FROM scim_group_members WHERE group_id = $1", [before.id])).map((r) => r.user_id) : [];
  await applyRoles(ctx, t, client, [...changes.added, ...changes.removed, ...members], meta);
}

export async function replaceScimGroup(ctx: ApplianceContext, client: ScimClient, id: string, body: Json, baseUrl: string, meta: RequestMeta): Promise<Json> {
  const next = readGroup(body);
  return inScope(ctx.db.app, scope(client), async (t) => {
    const before = await loadGroup(t, client, id, true);
    await saveGroup(ctx, t, client, before, { ...next, members: next.members ?? [] }, meta);
    const g = await loadGroup(t, client, id);
    return groupResource(g, await membersOf(t, [id]), baseUrl);
  });
}

/** PATCH /Groups/{id}: members added and removed one by one, as Entra ID and Okta do, or a rename. */
export async function patchScimGroup(ctx: ApplianceContext, client: ScimClient, id: string, ops: PatchOperation[], baseUrl: string, meta: RequestMeta): Promise<Json> {
  return inScope(ctx.db.app, scope(client), async (t) => {
    const before = await loadGroup(t, client, id, true);
    const current = groupResource(before, await membersOf(t, [id]), baseUrl);
    const patched = applyPatch(current, ops);
    await saveGroup(ctx, t, client, before, { ...readGroup(patched), members: readGroup(patched).members ?? [] }, meta);
    const g = await loadGroup(t, client, id);
    return groupResource(g, await membersOf(t, [id]), baseUrl);
  });
}

export async function deleteScimGroup(ctx: ApplianceContext, client: ScimClient, id: string, meta: RequestMeta): Promise<void> {
  await inScope(ctx.db.app, scope(client), async (t) => {
    await loadGroup(t, client, id, true);
    const members = await t.rows<{ user_id: string }>("SELECT user_id FROM scim_group_members WHERE group_id = $1", [id]);
    await t.exec("DELETE FROM scim_groups WHERE id = $1", [id]);
    await recordAuthEvent(ctx, t, scimActor(client), { action: "scim.group.delete", resourceType: "scim_group", resourceId: id, outcome: "success" }, meta);
    await applyRoles(
      ctx,
      t,
      client,
      members.map((m) => m.user_id),
      meta,
    );
  });
}
