-- Citus: pg_llm on a cluster of a coordinator and worker nodes.

-- Drawn from by a junk column of the queries that call pg_llm over Citus
-- tables, rewritten by the planner hook so that the calls stay on the
-- coordinator: Citus evaluates sequences there (see src/citus_plan.c).
-- Its values mean nothing.
CREATE SEQUENCE llm._coordinator_marker CACHE 1000 CYCLE;
COMMENT ON SEQUENCE llm._coordinator_marker IS 'Marks the calls a Citus coordinator keeps for itself in the queries it plans; its values mean nothing';
