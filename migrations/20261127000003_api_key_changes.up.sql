-- Every change to api_keys is announced on channel axon_api_keys, so each process's key
-- cache reloads at once (a new key works, a revoked one stops, within milliseconds).
CREATE FUNCTION api_keys_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('axon_api_keys', '');
    RETURN NULL;
END $$;

CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION api_keys_changed();
