import { describe, expect, it } from "vitest";
import { ROLES, type Actor, type Role } from "../../../daemon/kernel/actor.js";
import { ACTIONS, authorize, can, scopeAllows, STEP_UP_ACTIONS, type Action } from "../../../daemon/kernel/policy.js";

const A = "11111111-1111-4111-8111-111111111111";
const B = "22222222-2222-4222-8222-222222222222";

function actor(role: Role, extra: Partial<Actor> = {}): Actor {
  const tenantId = role === "super_admin" || role === "support" ? null : A;
  return { userId: `user-${role}`, role, tenantId, via: "session", ...extra };
}

const assigned = { tenantId: A, patient: { assigned: true, breakGlass: false } };
const unassigned = { tenantId: A, patient: { assigned: false, breakGlass: false } };
const brokenGlass = { tenantId: A, patient: { assigned: false, breakGlass: true } };
const PHI: Action[] = ["patient:read", "note:read", "note:create", "consent:read", "attachment:read"];

describe("least privilege", () => {
  it("lets front desk see schedules and demographics but never clinical notes", () => {
    const fd = actor("front_desk");
    expect(can(fd, "schedule:read")).toBe(true);
    expect(can(fd, "patient:read", unassigned)).toBe(true);
    for (const a of ["note:read", "note:list", "note:create", "attachment:read"] as Action[]) expect(can(fd, a, assigned), a).toBe(false);
  });

  it("lets practitioners read notes of patients on their care team or under break-glass only", () => {
    const p = actor("practitioner");
    expect(can(p, "note:read", assigned)).toBe(true);
    expect(can(p, "note:read", brokenGlass)).toBe(true);
    expect(can(p, "note:read", unassigned)).toBe(false);
    expect(can(p, "patient:read", unassigned)).toBe(false);
    expect(can(p, "note:read", { tenantId: A })).toBe(false); // attributes without care-team facts: not assigned
  });

  it("never lets auditors, admins, owners or appliance staff read PHI", () => {
    for (const role of ["auditor", "admin", "owner", "super_admin", "support"] as Role[]) {
      for (const a of PHI) expect(can(actor(role), a, assigned), `${role} ${a}`).toBe(false);
    }
    expect(can(actor("auditor"), "audit:read")).toBe(true);
    expect(can(actor("auditor"), "audit:export")).toBe(true);
  });

  it("keeps tenant staff inside their own tenant", () => {
    expect(can(actor("admin"), "user:list", { tenantId: A })).toBe(true);
    expect(can(actor("admin"), "user:list", { tenantId: B })).toBe(false);
    expect(can(actor("practitioner"), "note:read", { ...assigned, tenantId: B })).toBe(false);
  });

  it("lets only owners make or manage owners, and nobody in a tenant make appliance staff", () => {
    expect(can(actor("admin"), "invite:create", { tenantId: A, targetRole: "practitioner" })).toBe(true);
    expect(can(actor("admin"), "invite:create", { tenantId: A, targetRole: "owner" })).toBe(false);
    expect(can(actor("owner"), "invite:create", { tenantId: A, targetRole: "owner" })).toBe(true);
    expect(can(actor("owner"), "invite:create", { tenantId: A, targetRole: "super_admin" })).toBe(false);
    expect(can(actor("admin"), "user:update", { tenantId: A, targetRole: "owner" })).toBe(false);
    expect(can(actor("super_admin"), "invite:create", { tenantId: A, targetRole: "owner" })).toBe(true);
  });

  it("lets support act only under approved access, read-only, and never as its approver", () => {
    const outside = actor("support");
    expect(can(outside, "user:list", { tenantId: A })).toBe(false);
    expect(can(outside, "support_request:create")).toBe(true);
    const inside = actor("support", {
      tenantId: A,
      userId: "approver",
      impersonatorId: "support-user",
      supportAccess: { requestId: "r", supportUserId: "support-user", approvedBy: "approver", approvedByName: "Approver", expiresAt: new Date() },
    });
    expect(can(inside, "user:list", { tenantId: A })).toBe(true);
    expect(can(inside, "user:update", { tenantId: A })).toBe(false);
    expect(can(inside, "security_settings:update", { tenantId: A })).toBe(false);
    expect(can(inside, "session:revoke", { tenantId: A, ownerId: "approver" })).toBe(false);
    expect(can(inside, "support_request:end", { ownerId: "support-user" })).toBe(true);
  });

  it("lets everyone manage their own sessions but only admins other people's", () => {
    expect(can(actor("front_desk"), "session:revoke", { tenantId: A, ownerId: "user-front_desk" })).toBe(true);
    expect(can(actor("front_desk"), "session:revoke", { tenantId: A, ownerId: "someone-else" })).toBe(false);
    expect(can(actor("admin"), "session:revoke", { tenantId: A, ownerId: "someone-else" })).toBe(true);
  });

  it("denies actions missing from the table and names the action in the 403", () => {
    expect(can(actor("owner"), "nothing:here" as Action)).toBe(false);
    expect(() => authorize(actor("front_desk"), "note:read", assigned)).toThrow(/\(front desk\) may not read note/);
  });

  it("marks key rotation, exports, role changes and restore as step-up actions", () => {
    for (const a of ["key:rotate", "key:seal", "audit:export", "user:update", "backup:restore"] as Action[]) expect(STEP_UP_ACTIONS.has(a)).toBe(true);
    for (const a of STEP_UP_ACTIONS) expect(ACTIONS).toContain(a);
  });

  it("gives every role something and every action someone", () => {
    for (const role of ROLES)
      expect(
        ACTIONS.some((a) => can(actor(role), a)),
        role,
      ).toBe(true);
    for (const a of ACTIONS)
      expect(
        ROLES.some((role) => can(actor(role), a) || can(actor(role, { tenantId: A }), a)),
        a,
      ).toBe(true);
  });
});

describe("API token scopes", () => {
  it("narrows a token to its scopes on top of the role", () => {
    const token = actor("practitioner", { via: "api-token", scopes: ["patient:read"] });
    expect(can(token, "patient:read", assigned)).toBe(true);
    expect(can(token, "patient:update", assigned)).toBe(false);
    expect(can(token, "note:read", assigned)).toBe(false);
    expect(can({ ...token, scopes: ["*"] }, "note:read", assigned)).toBe(true);
    expect(can({ ...token, scopes: ["*"] }, "user:list", { tenantId: A })).toBe(false); // the role still limits
    expect(scopeAllows(["note:write"], "note:create")).toBe(true);
    expect(scopeAllows(["note:write"], "note:read")).toBe(false);
  });
});
