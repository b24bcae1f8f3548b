-- Webhook deliveries carry the event they deliver (the envelope from AXON_LOG), and every
-- attempt at one is recorded. `status` is pending, delivered or failed.
ALTER TABLE webhook_deliveries
    ADD COLUMN event JSONB,
    ADD COLUMN delivered_at TIMESTAMPTZ;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt)
    WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    delivery_id  UUID NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    tenant_id    UUID NOT NULL,
    attempt      INTEGER NOT NULL,
    at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    status_code  INTEGER,
    error        TEXT,
    duration_ms  INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
