/**
 * Inbound `v1a` (Ed25519) for webhook sources (docs/webhooks.md, "Inbound").
 *
 * - `public_key`: the sender's raw 32-byte Ed25519 public key (given to the appliance as `whpk_` +
 *   base64; not secret). A source verifies `v1a` signatures with it, `v1` ones with its sealed
 *   `whsec_` secret, or both when it has both.
 * - `secret` may now be NULL: a source with only a public key accepts no HMAC signature. A source
 *   always has at least one of the two.
 * - `previous_public_key` / `previous_public_key_expires_at`: the key a replacement superseded,
 *   which still verifies until the overlap ends (as `previous_secret` does for `v1`).
 * Existing sources keep their secret and get no public key.
 */
export const sql = /* sql */ `
ALTER TABLE webhook_sources
  ALTER COLUMN secret DROP NOT NULL,
  ADD COLUMN public_key bytea CHECK (length(public_key) = 32),
  ADD COLUMN previous_public_key bytea CHECK (length(previous_public_key) = 32),
  ADD COLUMN previous_public_key_expires_at timestamptz,
  ADD CONSTRAINT webhook_sources_verifies CHECK (secret IS NOT NULL OR public_key IS NOT NULL);
`;
