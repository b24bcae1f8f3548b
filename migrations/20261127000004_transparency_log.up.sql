-- Receipts and the tenant transparency log (DESIGN.md §3.3, §3.3a). Written only by the
-- projector, in the transaction of the batch that holds the task's terminal event.

-- Every key that ever signed a receipt or head: published at /.well-known/axontask/keys.
CREATE TABLE signing_keys (
    key_id      TEXT PRIMARY KEY,               -- RFC 7638 thumbprint
    public_key  TEXT NOT NULL,                  -- base64url, a JWK's x
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One receipt per finished task; leaf_index is its place in the tenant's tree.
CREATE TABLE task_receipts (
    task_id     UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL,
    leaf_index  BIGINT NOT NULL,
    state       TEXT NOT NULL,
    last_seq    BIGINT NOT NULL,
    hash_curr   TEXT NOT NULL,
    issued_at   TEXT NOT NULL,                  -- exactly as signed
    key_id      TEXT NOT NULL,
    signature   TEXT NOT NULL,
    UNIQUE (tenant_id, leaf_index)
);

-- Complete subtrees of each tenant's tree: (level, idx) hashes leaves
-- [idx * 2^level, (idx + 1) * 2^level). Written once, when the last of them arrives.
CREATE TABLE log_nodes (
    tenant_id   UUID NOT NULL,
    level       SMALLINT NOT NULL,
    idx         BIGINT NOT NULL,
    hash        BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, level, idx)
);

-- Leaves in each tenant's tree.
CREATE TABLE log_trees (
    tenant_id   UUID PRIMARY KEY,
    tree_size   BIGINT NOT NULL
);

-- Every signed tree head; `published` once it is in stream AXON_HEADS.
CREATE TABLE log_heads (
    tenant_id   UUID NOT NULL,
    tree_size   BIGINT NOT NULL,
    root_hash   TEXT NOT NULL,
    issued_at   TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    signature   TEXT NOT NULL,
    published   BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, tree_size)
);
CREATE INDEX log_heads_unpublished ON log_heads (tree_size) WHERE NOT published;

CREATE FUNCTION append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER task_receipts_no_update BEFORE UPDATE OR DELETE ON task_receipts
    FOR EACH ROW EXECUTE FUNCTION append_only();
CREATE TRIGGER log_nodes_no_update BEFORE UPDATE OR DELETE ON log_nodes
    FOR EACH ROW EXECUTE FUNCTION append_only();
