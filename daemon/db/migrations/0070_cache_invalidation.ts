/**
 * Cross-replica cache invalidation (daemon/db/invalidation.ts, docs/scale-out.md).
 *
 * Each daemon keeps a few answers in memory: resolved API tokens (auth.apiTokenCacheSeconds) and
 * unwrapped data keys (keys.dataKeyCacheSeconds). The database itself announces every change that
 * makes such an answer wrong, whichever replica, CLI command or future code path made it: these
 * triggers NOTIFY `wardkeep_invalidate`, which PostgreSQL delivers to every listening daemon when
 * (and only when) the transaction commits. Payloads carry ids, never PHI or secrets.
 *
 * - `api-tokens` (no ids: drop every resolved token): a token revoked, expired early, rescoped or
 *   deleted; an account's status or role changed or the account deleted; a tenant's status
 *   changed or the tenant deleted. Identical payloads are folded into one per transaction.
 * - `data-keys` with the destroyed key ids (crypto-shredding, restore re-applying the shredded
 *   list), in chunks well below NOTIFY's 8000-byte payload limit.
 */
export const sql = `
CREATE FUNCTION notify_api_tokens_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('wardkeep_invalidate', '{"topic":"api-tokens","ids":[]}');
  RETURN NULL;
END $$;

CREATE TRIGGER api_tokens_invalidate_update AFTER UPDATE ON api_tokens FOR EACH ROW
  WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at OR OLD.expires_at IS DISTINCT FROM NEW.expires_at OR OLD.scopes IS DISTINCT FROM NEW.scopes)
  EXECUTE FUNCTION notify_api_tokens_changed();
CREATE TRIGGER api_tokens_invalidate_delete AFTER DELETE ON api_tokens FOR EACH STATEMENT EXECUTE FUNCTION notify_api_tokens_changed();

CREATE TRIGGER users_invalidate_update AFTER UPDATE ON users FOR EACH ROW
  WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.role IS DISTINCT FROM NEW.role)
  EXECUTE FUNCTION notify_api_tokens_changed();
CREATE TRIGGER users_invalidate_delete AFTER DELETE ON users FOR EACH STATEMENT EXECUTE FUNCTION notify_api_tokens_changed();

CREATE TRIGGER tenants_invalidate_update AFTER UPDATE ON tenants FOR EACH ROW
  WHEN (OLD.status IS DISTINCT FROM NEW.status)
  EXECUTE FUNCTION notify_api_tokens_changed();
CREATE TRIGGER tenants_invalidate_delete AFTER DELETE ON tenants FOR EACH STATEMENT EXECUTE FUNCTION notify_api_tokens_changed();

CREATE FUNCTION keystore.notify_data_keys_destroyed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  payload text;
BEGIN
  FOR payload IN
    SELECT json_build_object('topic', 'data-keys', 'ids', json_agg(k.key_id ORDER BY k.key_id))::text
      FROM (SELECT d.key_id, (row_number() OVER (ORDER BY d.key_id) - 1) / 100 AS part FROM (SELECT DISTINCT key_id FROM destroyed) d) k
     GROUP BY k.part
  LOOP
    PERFORM pg_notify('wardkeep_invalidate', payload);
  END LOOP;
  RETURN NULL;
END $$;

CREATE TRIGGER data_keys_invalidate_delete AFTER DELETE ON keystore.data_keys
  REFERENCING OLD TABLE AS destroyed FOR EACH STATEMENT EXECUTE FUNCTION keystore.notify_data_keys_destroyed();
`;
