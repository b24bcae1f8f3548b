-- AxonTask schema. Every row that belongs to a tenant carries tenant_id.

CREATE TABLE tenants (
    tenant_id   UUID PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    plan        TEXT NOT NULL DEFAULT 'entry' CHECK (plan IN ('trial', 'entry', 'pro', 'enterprise')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE users (
    user_id        UUID PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    name           TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
    tenant_id   UUID NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    user_id     UUID NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    role        TEXT NOT NULL DEFAULT 'owner',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);

CREATE TABLE api_keys (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,           -- lowercase hex SHA-256 of the whole key
    scopes      TEXT[] NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

-- The read model of a task, written only by the projector.
CREATE TABLE tasks (
    task_id          UUID PRIMARY KEY,
    tenant_id        UUID NOT NULL,
    name             TEXT NOT NULL,
    adapter          TEXT NOT NULL,
    args             JSONB NOT NULL,
    timeout_s        INTEGER,
    idempotency_key  TEXT,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'timeout', 'canceled')),
    attempt          INTEGER NOT NULL DEFAULT 0,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    created_at       TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    ended_at         TIMESTAMPTZ,
    last_seq         BIGINT NOT NULL,
    last_hash        TEXT NOT NULL,
    outcome          JSONB                      -- payload of the terminal event
);
CREATE INDEX tasks_tenant_created ON tasks (tenant_id, created_at DESC, task_id DESC);
CREATE INDEX tasks_tenant_state_created ON tasks (tenant_id, state, created_at DESC, task_id DESC);
CREATE UNIQUE INDEX tasks_tenant_idempotency ON tasks (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- The log of record: append-only and hash-chained per task.
CREATE TABLE task_events (
    task_id     UUID NOT NULL,
    seq         BIGINT NOT NULL CHECK (seq >= 1),
    tenant_id   UUID NOT NULL,
    ts          TEXT NOT NULL,                  -- exactly as in the envelope (6 fractional digits, Z)
    kind        TEXT NOT NULL,
    payload     JSONB NOT NULL,
    hash_prev   TEXT NOT NULL,
    hash_curr   TEXT NOT NULL,
    stream_seq  BIGINT NOT NULL,                -- the AXON message this event came from
    PRIMARY KEY (task_id, seq)
);
CREATE INDEX task_events_stream_seq ON task_events (stream_seq);

CREATE FUNCTION task_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'task_events is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER task_events_no_update BEFORE UPDATE OR DELETE ON task_events
    FOR EACH ROW EXECUTE FUNCTION task_events_append_only();

-- The projector's position in stream AXON, written in the same transaction as the events.
CREATE TABLE projector_offsets (
    consumer    TEXT PRIMARY KEY,
    applied_seq BIGINT NOT NULL,                -- last AXON sequence written to task_events
    fanned_seq  BIGINT NOT NULL                 -- last AXON sequence also in Redis and AXON_LOG
);

CREATE TABLE task_snapshots (
    task_id     UUID NOT NULL,
    tenant_id   UUID NOT NULL,
    seq         BIGINT NOT NULL,
    state       JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE task_heartbeats (
    task_id     UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL,
    worker_id   TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    beat_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE webhooks (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    url         TEXT NOT NULL,
    events      TEXT[] NOT NULL,
    secret      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at  TIMESTAMPTZ
);
CREATE INDEX webhooks_tenant ON webhooks (tenant_id);

CREATE TABLE webhook_deliveries (
    id            UUID PRIMARY KEY,
    tenant_id     UUID NOT NULL,
    webhook_id    UUID NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    task_id       UUID NOT NULL,
    seq           BIGINT NOT NULL,
    status        TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt  TIMESTAMPTZ,
    last_error    TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (webhook_id, task_id, seq)
);

CREATE TABLE usage_counters (
    tenant_id   UUID NOT NULL,
    day         DATE NOT NULL,
    metric      TEXT NOT NULL,
    value       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, metric)
);
