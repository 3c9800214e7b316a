/**
 * One public address (docs/hardening.md "Public address"): SAML providers no longer carry their
 * own `spBaseUrl`; every SP URL is made from the appliance's `server.publicUrl`. The key is taken
 * out of stored settings (which are validated again on every load, and would otherwise be refused).
 * identity_providers has forced row-level security, so the update runs in appliance scope.
 */
export const sql = /* sql */ `
SELECT set_config('wardkeep.scope', 'appliance', true);
UPDATE identity_providers SET config = config - 'spBaseUrl' WHERE kind = 'saml' AND config ? 'spBaseUrl';
SELECT set_config('wardkeep.scope', '', true);
`;
