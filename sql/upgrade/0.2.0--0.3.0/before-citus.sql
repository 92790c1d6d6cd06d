-- Citus: the sequence that keeps coordinator-only calls on a Citus
-- coordinator (see sql/install/citus.sql).
CREATE SEQUENCE llm._coordinator_marker CACHE 1000 CYCLE;
COMMENT ON SEQUENCE llm._coordinator_marker IS 'Marks the calls a Citus coordinator keeps for itself in the queries it plans; its values mean nothing';
