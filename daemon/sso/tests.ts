import type { ApplianceContext } from "../context.js";
import { inScope, type Tx } from "../db/sql.js";
import { recordAuthEvent } from "../audit/append.js";
import type { Actor } from "../kernel/actor.js";
import { NotFound } from "../kernel/errors.js";
import type { ExternalIdentity } from "./identity.js";
import { firstMatch, rulesIn } from "./rules.js";
import type { TestResultRes } from "./schema.js";

/**
 * Test sign-ins (docs/sso.md "Test sign-in"), whatever the protocol: an admin signs in through a
 * provider, also before it is enabled, and sees what it sent and the role the current rules would
 * give. The record is a `sso_login_states` row of purpose 'test' (an OIDC test's row also holds its
 * state; a SAML test's AuthnRequest names it; an LDAP test has no round trip). No account and no
 * session are ever made by a test.
 */
export type TestRecord = { id: string; tenantId: string; providerId: string };

/** Opens the record of a SAML or LDAP test started by `actor` (the OIDC flow writes its own, with its state). */
export async function openTestRecord(ctx: ApplianceContext, t: Tx, provider: { id: string; tenantId: string }, actor: Actor, browserHash: Buffer | null): Promise<TestRecord> {
  const now = ctx.clock.now();
  const [row] = await t.rows<{ id: string }>(
    `INSERT INTO sso_login_states (tenant_id, provider_id, purpose, browser_hash, started_by, created_at, expires_at)
     VALUES ($1, $2, 'test', $3, $4, $5, $6) RETURNING id`,
    [provider.tenantId, provider.id, browserHash, actor.via === "host" ? null : actor.userId, now, new Date(now.getTime() + ctx.config.sso.loginStateMinutes * 60_000)],
  );
  // Old records go as new ones come, as the OIDC flow does.
  await t.exec("DELETE FROM sso_login_states WHERE expires_at < $1", [new Date(now.getTime() - 86_400_000)]);
  return { id: row!.id, tenantId: provider.tenantId, providerId: provider.id };
}

/** What the page shows of an identity received, with the role the tenant's current (active) rules give it. */
export async function testIdentityView(t: Tx, identity: ExternalIdentity, attributes?: Record<string, string[]>): Promise<NonNullable<TestResultRes["identity"]>> {
  const role = firstMatch(await rulesIn(t), identity)?.role ?? null;
  return {
    subject: identity.subject,
    username: identity.username,
    email: identity.email ?? null,
    displayName: identity.displayName ?? null,
    groups: identity.groups,
    amr: identity.authnContext.amr ?? [],
    acr: identity.authnContext.acr ?? null,
    claims: identity.claims,
    attributes: attributes ?? null,
    role,
  };
}

/**
 * Keeps what a test received (or why it failed) for the admin, and audits the test: outcome and
 * reason only, never a claim value or a password.
 */
export async function saveTestResult(ctx: ApplianceContext, test: TestRecord, result: (t: Tx) => Promise<TestResultRes>): Promise<TestResultRes> {
  return inScope(ctx.db.app, { kind: "tenant", tenantId: test.tenantId }, async (t) => {
    const saved = await result(t);
    await t.exec("UPDATE sso_login_states SET test_result = $2, consumed_at = coalesce(consumed_at, $3) WHERE id = $1", [test.id, JSON.stringify(saved), ctx.clock.now()]);
    await recordAuthEvent(
      ctx,
      t,
      { userId: null, role: null, tenantId: test.tenantId },
      {
        action: "identity_provider.test",
        resourceType: "identity_provider",
        resourceId: test.providerId,
        outcome: saved.status === "received" ? "success" : "failure",
        reason: saved.error,
      },
      null,
    );
    return saved;
  });
}

/** A failed test: the precise reason, shown to the admin who started it (never to a browser signing in). */
export const failedTest = (reason: string): TestResultRes => ({ status: "failed", error: reason, identity: null });

/** What a test sign-in received, for the admins of the provider's tenant. */
export async function readTestResult(ctx: ApplianceContext, actor: Actor, providerId: string, testId: string): Promise<TestResultRes> {
  return inScope(ctx.db.app, { kind: "tenant", tenantId: actor.tenantId ?? "" }, async (t) => {
    const [row] = await t.rows<{ test_result: TestResultRes | null }>("SELECT test_result FROM sso_login_states WHERE id = $1 AND provider_id = $2 AND purpose = 'test'", [
      testId,
      providerId,
    ]);
    if (!row) throw new NotFound("no such test sign-in");
    const result = row.test_result ?? { status: "waiting", error: null, identity: null };
    // Results kept before LDAP tests existed have no attributes field.
    return result.identity ? { ...result, identity: { ...result.identity, attributes: result.identity.attributes ?? null } } : result;
  });
}
