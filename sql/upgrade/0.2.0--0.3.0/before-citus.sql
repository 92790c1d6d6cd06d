-- Citus: the sequence that keeps coordinator-only calls on a Citus
-- coordinator (see sql/install/citus.sql).
CREATE SEQUENCE llm._coordinator_marker CACHE 1000 CYCLE;
COMMENT ON SEQUENCE llm._coordinator_marker IS 'Marks the calls a Citus coordinator keeps for itself in the queries it plans; its values mean nothing';
CREATE TABLE llm._citus_node (
    node        text PRIMARY KEY,
    preloaded   boolean NOT NULL,
    version     text NOT NULL,
    synced_at   timestamptz NOT NULL
);
COMMENT ON TABLE llm._citus_node IS 'Each Citus worker node that took the coordinator''s configuration, whether it preloads pg_llm, and its version';
