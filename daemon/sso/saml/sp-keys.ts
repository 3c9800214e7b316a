import type { ApplianceContext } from "../../context.js";
import { inScope } from "../../db/sql.js";
import { createSelfSignedKeyPair } from "../../tls/index.js";
import { openSsoValue, sealSsoValue } from "../secrets.js";

/**
 * The service provider's own key pairs, one set per SAML provider (docs/sso.md "SAML 2.0"):
 * `signing` signs the appliance's LogoutRequests, LogoutResponses and AuthnRequests, and
 * `encryption` decrypts the assertions an IdP encrypts to the appliance. They are made on first
 * use (an existing provider gets them when its metadata is next read) and kept in `saml_sp_keys`
 * (migration 0240): the private key sealed under a key derived from the root key and bound to the
 * provider and purpose, so a database dump yields neither; the certificate is public and goes
 * into the SP metadata, where the IdP's administrators import it. Two replicas that make them at
 * once keep the first one written.
 */
export type SpKeyPurpose = "signing" | "encryption";
export type SpKeyPair = { keyPem: string; certPem: string };
export type SpKeys = Record<SpKeyPurpose, SpKeyPair>;

/** The certificate only carries the key: IdPs do not judge its dates, and a rollover would need the IdP to import new metadata. */
const VALIDITY_YEARS = 20;

/** Opened keys per provider, so a busy sign-in page does not unseal on every request. */
const opened = new Map<string, SpKeys>();

const boundTo = (providerId: string, purpose: SpKeyPurpose) => `${providerId}/${purpose}`;

export async function spKeysOf(ctx: ApplianceContext, provider: { id: string; tenantId: string }): Promise<SpKeys> {
  const known = opened.get(provider.id);
  if (known) return known;
  const scope = { kind: "tenant", tenantId: provider.tenantId } as const;
  const read = () =>
    inScope(ctx.db.app, scope, (t) =>
      t.rows<{ purpose: SpKeyPurpose; sealed_key: Buffer; certificate: string }>("SELECT purpose, sealed_key, certificate FROM saml_sp_keys WHERE provider_id = $1", [provider.id]),
    );
  let rows = await read();
  const missing = (["signing", "encryption"] as const).filter((p) => !rows.some((r) => r.purpose === p));
  if (missing.length > 0) {
    const now = ctx.clock.now();
    await inScope(ctx.db.app, scope, async (t) => {
      for (const purpose of missing) {
        const pair = createSelfSignedKeyPair({ commonName: `Wardkeep SAML SP ${purpose} ${provider.id}`, validityYears: VALIDITY_YEARS, now });
        await t.exec(`INSERT INTO saml_sp_keys (provider_id, purpose, tenant_id, sealed_key, certificate, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`, [
          provider.id,
          purpose,
          provider.tenantId,
          sealSsoValue(ctx.rootKey, "sp-key", pair.keyPem, boundTo(provider.id, purpose)),
          pair.certPem,
          now,
        ]);
      }
    });
    rows = await read();
  }
  const pairOf = (purpose: SpKeyPurpose): SpKeyPair => {
    const row = rows.find((r) => r.purpose === purpose)!;
    return { keyPem: openSsoValue<string>(ctx.rootKey, "sp-key", row.sealed_key, boundTo(provider.id, purpose)), certPem: row.certificate };
  };
  const keys = { signing: pairOf("signing"), encryption: pairOf("encryption") };
  opened.set(provider.id, keys);
  return keys;
}
