-- When each key was last used (written in batches by the API processes), and the change
-- notification narrowed so those writes do not reload every process's key cache.
ALTER TABLE api_keys ADD COLUMN last_used_at TIMESTAMPTZ;

DROP TRIGGER api_keys_changed ON api_keys;
CREATE TRIGGER api_keys_changed
    AFTER INSERT OR DELETE OR UPDATE OF key_hash, tenant_id, scopes, expires_at, revoked_at
    ON api_keys FOR EACH STATEMENT EXECUTE FUNCTION api_keys_changed();
