import { deprovisionAccount } from "../../access/index.js";
import { SYSTEM_ACTOR } from "../../audit/append.js";
import type { ApplianceContext } from "../../context.js";
import { inScope } from "../../db/sql.js";
import { SYSTEM_META } from "../../kernel/request-meta.js";
import { loadProviderIn } from "../providers.js";
import type { LdapProviderConfig, LdapSecrets } from "./config.js";
import { directoryStatus, type DirectoryStatus } from "./directory.js";

/**
 * The LDAP reconcile (docs/sso.md "Reconcile"): for every enabled LDAP provider, asks the
 * directory about each account linked to it, and deactivates the accounts whose entry is gone or
 * disabled there — ending their sessions at once — so a leaver loses access within one run, not
 * at their next sign-in attempt. A directory that cannot be asked changes nothing (an outage is
 * no departure); neither does an answer in which every linked account is gone (a wrong userBase
 * or a restored-empty directory looks exactly like that), which is logged and counted instead.
 */
export type ReconcileCounts = { providers: number; checked: number; deactivated: number; failedProviders: number; suspiciousProviders: number };

const REASON: Record<Exclude<DirectoryStatus, "active">, string> = {
  gone: "ldap reconcile: account gone from the directory",
  disabled: "ldap reconcile: account disabled in the directory",
};

export async function reconcileLdapProviders(ctx: ApplianceContext): Promise<ReconcileCounts> {
  const counts: ReconcileCounts = { providers: 0, checked: 0, deactivated: 0, failedProviders: 0, suspiciousProviders: 0 };
  const providers = await inScope(ctx.db.app, { kind: "appliance" }, (t) =>
    t.rows<{ id: string; tenant_id: string }>(`SELECT id, tenant_id FROM identity_providers WHERE kind = 'ldap' AND enabled ORDER BY created_at`),
  );
  for (const row of providers) {
    counts.providers += 1;
    const scope = { kind: "tenant", tenantId: row.tenant_id } as const;
    const { provider, links } = await inScope(ctx.db.app, scope, async (t) => ({
      provider: await loadProviderIn(ctx, t, row.id),
      links: await t.rows<{ subject: string; user_id: string }>(
        `SELECT l.subject, l.user_id FROM sso_links l JOIN users u ON u.id = l.user_id WHERE l.provider_id = $1 AND u.status = 'active'`,
        [row.id],
      ),
    }));
    if (!provider?.secrets || links.length === 0) continue;
    let status: Map<string, DirectoryStatus>;
    try {
      status = await directoryStatus(
        provider.config as LdapProviderConfig,
        provider.secrets as LdapSecrets,
        links.map((l) => l.subject),
      );
    } catch (err) {
      counts.failedProviders += 1;
      ctx.log.warn("ldap reconcile: directory unavailable; nothing changed", { providerId: row.id, error: err instanceof Error ? err.message.slice(0, 200) : "error" });
      continue;
    }
    counts.checked += links.length;
    const leaving = links.filter((l) => status.get(l.subject) !== "active");
    if (links.length > 1 && leaving.length === links.length && links.every((l) => status.get(l.subject) === "gone")) {
      counts.suspiciousProviders += 1;
      ctx.log.warn("ldap reconcile: every linked account is gone from the directory; nothing changed (check userBase)", { providerId: row.id, linked: links.length });
      continue;
    }
    for (const link of leaving) {
      const why = REASON[status.get(link.subject) as Exclude<DirectoryStatus, "active">];
      // The same end of access as an admin's deactivation: sessions, API tokens, webhook, audit.
      const changed = await inScope(ctx.db.app, scope, async (t) => {
        const done = await deprovisionAccount(ctx, t, SYSTEM_ACTOR, { userId: link.user_id, tenantId: row.tenant_id }, "directory", SYSTEM_META, {
          keepLast: true,
          detail: `${why} (provider ${row.id})`,
        });
        return done.deactivated;
      });
      if (changed) counts.deactivated += 1;
    }
  }
  return counts;
}
