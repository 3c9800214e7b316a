/**
 * Two lookups that every API request or every encrypted write makes, each in one round trip
 * instead of several: a round trip costs CPU in both the daemon and PostgreSQL (docs/records.md,
 * Performance, has the figures).
 *
 * API-token authentication.
 * A clinical application presents its token on every request, before the tenant is known, so the
 * lookup runs in appliance scope. Done from the daemon that is four round trips (START, scope,
 * SELECT, COMMIT); `api_token_lookup(hash)` is one statement that needs no explicit transaction.
 * It runs with the caller's rights (SECURITY INVOKER: the app role, under row-level security),
 * sets appliance scope for its own query only, and puts back the caller's scope before it returns,
 * so a call inside a tenant transaction leaves that transaction's scope as it was. It returns the
 * facts; the daemon decides (daemon/auth/api-tokens.ts: revoked, expired, inactive account or tenant).
 */
export const sql = `
CREATE FUNCTION api_token_lookup(p_hash bytea)
  RETURNS TABLE (id uuid, tenant_id uuid, user_id uuid, scopes text[], expires_at timestamptz, revoked_at timestamptz,
                 last_used_at timestamptz, role text, user_status text, tenant_status text)
  LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
#variable_conflict use_column
DECLARE
  prev_scope  text := coalesce(current_setting('wardkeep.scope', true), '');
  prev_tenant text := coalesce(current_setting('wardkeep.tenant_id', true), '');
BEGIN
  PERFORM set_config('wardkeep.scope', 'appliance', true), set_config('wardkeep.tenant_id', '', true);
  RETURN QUERY
    SELECT k.id, k.tenant_id, k.user_id, k.scopes, k.expires_at, k.revoked_at, k.last_used_at, u.role, u.status, tn.status
    FROM api_tokens k JOIN users u ON u.id = k.user_id JOIN tenants tn ON tn.id = k.tenant_id
    WHERE k.token_hash = p_hash;
  PERFORM set_config('wardkeep.scope', prev_scope, true), set_config('wardkeep.tenant_id', prev_tenant, true);
END
$$;
REVOKE ALL ON FUNCTION api_token_lookup(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_token_lookup(bytea) TO {{app_role}};

-- The write key of a data key (daemon/keys/keyring.ts): take the key's advisory lock shared, THEN
-- read its active version. A rotation holds the lock exclusively while it makes the new version,
-- so a writer that waited must see that version. In one plain statement it would not: under READ
-- COMMITTED a statement reads from the snapshot it started with, taken before the wait. A VOLATILE
-- PL/pgSQL function takes a fresh snapshot for each statement inside it, so the SELECT runs after
-- the lock is granted and sees what the rotation committed.
CREATE FUNCTION keystore.lock_and_read_active_key(p_lock_class integer, p_key_id text)
  RETURNS SETOF keystore.data_keys
  LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(p_lock_class, hashtext(p_key_id));
  RETURN QUERY SELECT * FROM keystore.data_keys WHERE key_id = p_key_id AND state = 'active';
END
$$;
REVOKE ALL ON FUNCTION keystore.lock_and_read_active_key(integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keystore.lock_and_read_active_key(integer, text) TO {{app_role}};
`;
