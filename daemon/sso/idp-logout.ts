import type { ApplianceContext } from "../context.js";
import { inScope, type Tx } from "../db/sql.js";
import { recordAuthEvent } from "../audit/append.js";
import type { RequestMeta } from "../kernel/request-meta.js";

/**
 * What every logout the IdP starts shares (OIDC back-channel logout, SAML single logout): the
 * one-time acceptance of its message, the end of the appliance sessions it names, and the audit
 * trail of both. Sessions are read from PostgreSQL on every request, so an ended session is over
 * on every replica at once.
 */
type Provider = { id: string; tenantId: string };

/** Audits a refused logout message (`auth.logout`, failure, `sso: <protocol>: …`); the message itself is never recorded. */
export async function auditRefusedIdpLogout(ctx: ApplianceContext, provider: Provider | null, reason: string, meta: RequestMeta): Promise<void> {
  const tenantId = provider?.tenantId ?? null;
  await inScope(ctx.db.app, tenantId ? { kind: "tenant", tenantId } : { kind: "appliance" }, (t) =>
    recordAuthEvent(
      ctx,
      t,
      { userId: null, role: null, tenantId },
      { action: "auth.logout", resourceType: "identity_provider", resourceId: provider?.id ?? null, outcome: "failure", reason: `sso: ${reason}`.slice(0, 480) },
      meta,
    ),
  );
}

/**
 * Accepts a logout message's id once per provider until `keepUntil` (`sso_logout_tokens`, every
 * replica): false when it was accepted before (a replay).
 */
export async function acceptLogoutMessageOnce(ctx: ApplianceContext, t: Tx, provider: Provider, messageId: string, keepUntil: Date): Promise<boolean> {
  const now = ctx.clock.now();
  await t.exec("DELETE FROM sso_logout_tokens WHERE provider_id = $1 AND expires_at < $2", [provider.id, now]);
  const fresh = await t.exec("INSERT INTO sso_logout_tokens (provider_id, jti, tenant_id, seen_at, expires_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING", [
    provider.id,
    messageId,
    provider.tenantId,
    now,
    keepUntil,
  ]);
  return fresh > 0;
}

/**
 * Ends the open sessions made through `provider` that `match` selects (an SQL condition on
 * `sessions s`, its parameters numbered from $4), and audits, per person, how many ended
 * (`auth.logout`, success, `describe(count)`); one event without a person when none matched.
 */
export async function endIdpSessions(
  ctx: ApplianceContext,
  t: Tx,
  provider: Provider,
  match: { sql: string; params: unknown[] },
  revokedReason: string,
  describe: (count: number) => string,
  meta: RequestMeta,
): Promise<number> {
  const ended = await t.rows<{ id: string; user_id: string }>(
    `UPDATE sessions s SET revoked_at = $2, revoked_reason = $3
      WHERE s.idp_provider_id = $1 AND s.revoked_at IS NULL AND (${match.sql})
      RETURNING s.id, s.user_id`,
    [provider.id, ctx.clock.now(), revokedReason, ...match.params],
  );
  const users = [...new Set(ended.map((e) => e.user_id))];
  for (const userId of users.length > 0 ? users : [null]) {
    const mine = ended.filter((e) => e.user_id === userId).length;
    await recordAuthEvent(
      ctx,
      t,
      { userId, role: null, tenantId: provider.tenantId },
      { action: "auth.logout", resourceType: "identity_provider", resourceId: provider.id, outcome: "success", reason: describe(mine) },
      meta,
    );
  }
  return ended.length;
}
