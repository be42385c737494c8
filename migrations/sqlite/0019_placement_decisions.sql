-- Why each tenant is where it is: the last placement decision about it (a first activation,
-- a failover, a drain or a rebalancing move), with the load of every candidate node as the
-- deciding node saw it. One row per tenant, replaced by the next decision; written after
-- the decision took effect, best effort (informational: the directory is the truth), read by
-- the dashboard. Deleted with the tenant. Keep in step with ../postgres.
CREATE TABLE placement_decisions (
    tenant_id  TEXT PRIMARY KEY,
    -- the node chosen
    node_id    TEXT NOT NULL,
    -- activation, failover, drain or rebalance
    reason     TEXT NOT NULL,
    -- the JSON of the decision: epoch, from, decided_by and the candidates' load
    decision   TEXT NOT NULL,
    decided_ms INTEGER NOT NULL
) STRICT;
