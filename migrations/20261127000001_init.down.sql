DROP TABLE IF EXISTS usage_counters, webhook_deliveries, webhooks, task_heartbeats,
    task_snapshots, projector_offsets, task_events, tasks, api_keys, memberships, users, tenants;
DROP FUNCTION IF EXISTS task_events_append_only();
