import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { oidcEndSessionUrl } from "./oidc/index.js";

/**
 * Where the browser goes after signing out of a session made through an IdP, so the IdP's session
 * ends too where the protocol allows it (OIDC RP-initiated logout). Read before the session ends.
 */
export async function idpSignOutUrl(ctx: ApplianceContext, session: { id: string; tenantId: string | null }, base: string): Promise<string | null> {
  if (!session.tenantId) return null;
  const [row] = await inScope(ctx.db.app, { kind: "tenant", tenantId: session.tenantId }, (t) =>
    t.rows<{ idp_provider_id: string | null; idp_session: { idTokenHint?: string } | null; kind: string | null }>(
      "SELECT s.idp_provider_id, s.idp_session, p.kind FROM sessions s LEFT JOIN identity_providers p ON p.id = s.idp_provider_id WHERE s.id = $1",
      [session.id],
    ),
  );
  if (!row?.idp_provider_id) return null;
  if (row.kind === "oidc") return oidcEndSessionUrl(ctx, row.idp_provider_id, row.idp_session, base);
  return null;
}
