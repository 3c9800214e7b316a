import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { oidcEndSessionUrl } from "./oidc/index.js";
import { samlSignOutUrl } from "./saml/signin.js";
import type { IdpSessionHint } from "./signin.js";

/**
 * Where the browser goes after signing out of a session made through an IdP, so the IdP's session
 * ends too where the protocol allows it (OIDC RP-initiated logout, SAML single logout with a signed
 * LogoutRequest). A SAML LogoutRequest also gives the value of the binding cookie its
 * LogoutResponse must come back with. Read before the session ends.
 */
export async function idpSignOut(
  ctx: ApplianceContext,
  session: { id: string; tenantId: string | null },
  base: string,
): Promise<{ redirectUrl: string | null; samlBrowserToken?: string }> {
  if (!session.tenantId) return { redirectUrl: null };
  const [row] = await inScope(ctx.db.app, { kind: "tenant", tenantId: session.tenantId }, (t) =>
    t.rows<{ idp_provider_id: string | null; idp_session: IdpSessionHint | null; kind: string | null }>(
      "SELECT s.idp_provider_id, s.idp_session, p.kind FROM sessions s LEFT JOIN identity_providers p ON p.id = s.idp_provider_id WHERE s.id = $1",
      [session.id],
    ),
  );
  if (!row?.idp_provider_id) return { redirectUrl: null };
  if (row.kind === "oidc") return { redirectUrl: await oidcEndSessionUrl(ctx, row.idp_provider_id, row.idp_session, base) };
  if (row.kind === "saml") {
    // The appliance's own sign-out happens either way; the IdP's is best effort (as for OIDC).
    const started = await samlSignOutUrl(ctx, row.idp_provider_id, row.idp_session).catch(() => null);
    return started ? { redirectUrl: started.redirectUrl, samlBrowserToken: started.browserToken } : { redirectUrl: null };
  }
  return { redirectUrl: null };
}
