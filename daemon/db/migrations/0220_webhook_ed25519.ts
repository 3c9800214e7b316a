/**
 * Ed25519 (`v1a`) signatures for outbound webhooks, per endpoint (docs/webhooks.md, "Signatures").
 *
 * - `signature_scheme`: `v1` (HMAC-SHA-256 with a `whsec_` secret, the default) or `v1a`
 *   (Ed25519). For a `v1a` endpoint `secret` holds the sealed private key (PKCS#8) and
 *   `public_key` the raw 32-byte public key, which is not secret and is shown as `whpk_` + base64.
 * - `previous_signature_scheme` / `previous_public_key`: what signed before the last rotation, so
 *   an overlap may cross schemes (a `v1` endpoint switching to `v1a` sends `v1a,<new> v1,<old>`
 *   until the overlap ends).
 * Existing endpoints keep `v1`.
 */
export const sql = /* sql */ `
ALTER TABLE webhook_endpoints
  ADD COLUMN signature_scheme text NOT NULL DEFAULT 'v1' CHECK (signature_scheme IN ('v1', 'v1a')),
  ADD COLUMN public_key bytea CHECK (length(public_key) = 32),
  ADD COLUMN previous_signature_scheme text CHECK (previous_signature_scheme IN ('v1', 'v1a')),
  ADD COLUMN previous_public_key bytea CHECK (length(previous_public_key) = 32),
  ADD CONSTRAINT webhook_endpoints_v1a_has_public_key CHECK ((signature_scheme = 'v1a') = (public_key IS NOT NULL)),
  ADD CONSTRAINT webhook_endpoints_previous_v1a_has_public_key CHECK ((previous_signature_scheme = 'v1a') = (previous_public_key IS NOT NULL));
UPDATE webhook_endpoints SET previous_signature_scheme = 'v1' WHERE previous_secret IS NOT NULL;
`;
