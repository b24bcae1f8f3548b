-- Sign-in sessions (issue 8): one row per refresh-token family. Refresh tokens rotate: only
-- `current_jti` is accepted, and presenting an older one of the family revokes it whole.
-- Access tokens name their session; revoking it (logout, reuse) ends them at once on
-- every process, which hears of it on channel `axon_sessions`.
CREATE TABLE sessions (
    session_id      UUID PRIMARY KEY,
    user_id         UUID NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    tenant_id       UUID NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    current_jti     UUID NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at      TIMESTAMPTZ NOT NULL,
    revoked_at      TIMESTAMPTZ,
    revoked_reason  TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_revoked ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE FUNCTION sessions_revoked() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('axon_sessions', NEW.session_id::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER sessions_revoked AFTER UPDATE OF revoked_at ON sessions
    FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL)
    EXECUTE FUNCTION sessions_revoked();
