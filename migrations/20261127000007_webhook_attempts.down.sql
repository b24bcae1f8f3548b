DROP TABLE webhook_attempts;
DROP INDEX webhook_deliveries_due;
ALTER TABLE webhook_deliveries DROP COLUMN delivered_at, DROP COLUMN event;
