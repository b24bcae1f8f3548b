DROP TABLE log_heads;
DROP TABLE log_trees;
DROP TABLE log_nodes;
DROP TABLE task_receipts;
DROP TABLE signing_keys;
DROP FUNCTION append_only();
