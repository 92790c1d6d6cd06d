-- Citus: pg_llm on a cluster of a coordinator and worker nodes.

-- Drawn from by a junk column of the queries that call pg_llm over Citus
-- tables, rewritten by the planner hook so that the calls stay on the
-- coordinator: Citus evaluates sequences there (see src/citus_plan.c).
-- Its values mean nothing.
CREATE SEQUENCE llm._coordinator_marker CACHE 1000 CYCLE;
COMMENT ON SEQUENCE llm._coordinator_marker IS 'Marks the calls a Citus coordinator keeps for itself in the queries it plans; its values mean nothing';

-- What each worker node said when it last took the coordinator's
-- configuration (llm.citus_sync, or any change of it): the planner hook
-- pushes calls down to the worker nodes only when all took it and
-- preload pg_llm (llm.citus_calls = auto).
CREATE TABLE llm._citus_node (
    node        text PRIMARY KEY,
    preloaded   boolean NOT NULL,
    version     text NOT NULL,
    synced_at   timestamptz NOT NULL
);
COMMENT ON TABLE llm._citus_node IS 'Each Citus worker node that took the coordinator''s configuration, whether it preloads pg_llm, and its version';

CREATE FUNCTION llm._preloaded() RETURNS boolean
AS 'MODULE_PATHNAME', 'pg_llm_preloaded' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm._preloaded() IS 'Whether pg_llm is in this server''s shared_preload_libraries';

-- The rights granted on the extension's schema, functions, tables, views
-- and sequences to roles other than its owner, by role name (PUBLIC as
-- "PUBLIC"): what a Citus worker node takes with the configuration.
CREATE FUNCTION llm._grants(OUT kind text, OUT object text, OUT grantee text, OUT privilege text)
RETURNS SETOF record
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH owner AS (SELECT n.nspowner AS oid FROM pg_catalog.pg_namespace n WHERE n.nspname = 'llm'),
    g AS (
        SELECT 'SCHEMA' AS kind, 'llm' AS object, a.grantee, a.privilege_type
        FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a WHERE n.nspname = 'llm'
        UNION ALL
        SELECT 'FUNCTION', p.oid::pg_catalog.regprocedure::pg_catalog.text, a.grantee, a.privilege_type
        FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
        WHERE p.pronamespace = 'llm'::pg_catalog.regnamespace
        UNION ALL
        SELECT CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
               c.oid::pg_catalog.regclass::pg_catalog.text, a.grantee, a.privilege_type
        FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
        WHERE c.relnamespace = 'llm'::pg_catalog.regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S'))
    SELECT g.kind, g.object, CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE r.rolname::pg_catalog.text END,
           g.privilege_type
    FROM g LEFT JOIN pg_catalog.pg_roles r ON r.oid = g.grantee, owner
    WHERE g.grantee <> owner.oid AND (g.grantee = 0 OR r.rolname IS NOT NULL);
$$;
COMMENT ON FUNCTION llm._grants() IS 'The rights granted on the extension''s objects to roles other than its owner, by role name';

-- On a worker node: the coordinator's configuration replaces this node's
-- (sent by the coordinator, as a parameter, never in a statement's text).
CREATE FUNCTION llm._cluster_apply(config jsonb, coordinator text,
    OUT preloaded boolean, OUT version text, OUT missing_roles text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    gr record;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_local_group') IS NULL
       OR (SELECT g.groupid FROM pg_catalog.pg_dist_local_group g) = 0 THEN
        RAISE EXCEPTION 'the configuration is taken by Citus worker nodes only'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    DELETE FROM llm.model;
    DELETE FROM llm._provider_secret;
    DELETE FROM llm.provider;
    DELETE FROM llm.budget;
    DELETE FROM llm._setting;
    INSERT INTO llm.provider SELECT * FROM jsonb_populate_recordset(NULL::llm.provider, config -> 'providers');
    INSERT INTO llm._provider_secret SELECT * FROM jsonb_populate_recordset(NULL::llm._provider_secret, config -> 'secrets');
    INSERT INTO llm.model SELECT * FROM jsonb_populate_recordset(NULL::llm.model, config -> 'models');
    INSERT INTO llm._setting SELECT * FROM jsonb_populate_recordset(NULL::llm._setting, config -> 'settings');
    INSERT INTO llm._setting VALUES ('citus_coordinator', coordinator), ('citus_synced_at', now()::text);
    INSERT INTO llm.budget
        SELECT (jsonb_populate_record(NULL::llm.budget, b || jsonb_build_object('role_oid', r.oid))).*
        FROM jsonb_array_elements(config -> 'budgets') b JOIN pg_catalog.pg_roles r ON r.rolname = b ->> 'role_name';
    -- the rights on the extension's objects, as the coordinator has them
    -- (this node's own GRANTs are not sent anywhere: Citus's DDL
    -- propagation off for them)
    PERFORM set_config('citus.enable_ddl_propagation', 'off', true);
    FOR gr IN SELECT DISTINCT l.kind, l.object, l.grantee FROM llm._grants() l LOOP
        EXECUTE format('REVOKE ALL ON %s %s FROM %s', gr.kind, gr.object,
                       CASE WHEN gr.grantee = 'PUBLIC' THEN 'PUBLIC' ELSE quote_ident(gr.grantee) END);
    END LOOP;
    FOR gr IN SELECT x.kind, x.object, x.grantee, x.privilege
             FROM jsonb_to_recordset(config -> 'grants') AS x(kind text, object text, grantee text, privilege text)
             WHERE x.grantee = 'PUBLIC' OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = x.grantee) LOOP
        BEGIN
            EXECUTE format('GRANT %s ON %s %s TO %s', gr.privilege, gr.kind, gr.object,
                           CASE WHEN gr.grantee = 'PUBLIC' THEN 'PUBLIC' ELSE quote_ident(gr.grantee) END);
        EXCEPTION WHEN undefined_function OR undefined_table OR undefined_object THEN
            NULL;   -- an object of another version of pg_llm
        END;
    END LOOP;
    preloaded := llm._preloaded();
    version := (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_llm');
    missing_roles := (SELECT string_agg(DISTINCT quote_ident(n), ', ')
                      FROM (SELECT b ->> 'role_name' FROM jsonb_array_elements(config -> 'budgets') b
                            UNION ALL
                            SELECT x ->> 'grantee' FROM jsonb_array_elements(config -> 'grants') x
                            WHERE x ->> 'grantee' <> 'PUBLIC') m(n)
                      WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = m.n));
END;
$$;
COMMENT ON FUNCTION llm._cluster_apply(jsonb, text) IS 'On a Citus worker node: take the coordinator''s providers, keys, models, settings and budgets';

CREATE FUNCTION llm.citus_sync(OUT node text, OUT preloaded boolean, OUT version text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pg_llm_citus_sync' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm.citus_sync() IS 'On a Citus coordinator: send the configuration (providers, keys, models, prices, the primary provider, budgets) to every worker node now; each node says whether it preloads pg_llm and its version';

-- On the coordinator: what a worker node's backend asks for its calls.
CREATE FUNCTION llm._cluster_turn(provider text, tokens bigint, reserve boolean, max_wait_ms bigint,
    OUT turn integer, OUT until_us bigint, OUT why text, OUT detail text, OUT charged bigint)
AS 'MODULE_PATHNAME', 'pg_llm_cluster_turn' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm._cluster_turn(text, bigint, boolean, bigint) IS 'On a Citus coordinator: a worker node''s call takes its turn under the provider''s limits here';
CREATE FUNCTION llm._cluster_after(provider text, status bigint, outcome bigint, unreachable boolean,
    timed_out boolean, errbuf text, retry_after float8, quota boolean, rl_remaining_requests bigint,
    rl_reset_requests float8, rl_remaining_tokens bigint, rl_reset_tokens float8) RETURNS void
AS 'MODULE_PATHNAME', 'pg_llm_cluster_after' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm._cluster_after(text, bigint, bigint, boolean, boolean, text, float8, boolean, bigint, float8, bigint, float8) IS 'On a Citus coordinator: what a provider answered a worker node''s call (cooldowns, refused keys, hosts down)';
CREATE FUNCTION llm._cluster_settle(provider text, charged bigint, used bigint, unsent boolean) RETURNS void
AS 'MODULE_PATHNAME', 'pg_llm_cluster_settle' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm._cluster_settle(text, bigint, bigint, boolean) IS 'On a Citus coordinator: the tokens a worker node''s call used, in place of its estimate';
CREATE FUNCTION llm._cluster_reserve(role text, estimate float8) RETURNS integer
AS 'MODULE_PATHNAME', 'pg_llm_cluster_reserve' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm._cluster_reserve(text, float8) IS 'On a Citus coordinator: a worker node''s call reserves its estimated cost on the role''s budget';
CREATE FUNCTION llm._cluster_release(role text, month bigint, reserved float8, actual float8, counted boolean) RETURNS void
AS 'MODULE_PATHNAME', 'pg_llm_cluster_release' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm._cluster_release(text, bigint, float8, float8, boolean) IS 'On a Citus coordinator: a worker node''s call ended; its reservation becomes its cost';

-- Every node's usage rows, read on the coordinator (each worker node keeps
-- the rows of the calls it made).
CREATE FUNCTION llm._cluster_usage(OUT node text, OUT role_name name, OUT rec jsonb)
RETURNS SETOF record
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w record;
    self text := 'local';
BEGIN
    IF to_regclass('pg_catalog.pg_dist_node') IS NOT NULL THEN
        EXECUTE 'SELECT n.nodename || '':'' || n.nodeport FROM pg_catalog.pg_dist_node n WHERE n.groupid = 0 LIMIT 1'
            INTO self;
    END IF;
    RETURN QUERY SELECT coalesce(self, 'local'), r.rolname, to_jsonb(u)
                 FROM llm.usage u LEFT JOIN pg_catalog.pg_roles r ON r.oid = u.role_oid;
    IF to_regclass('pg_catalog.pg_dist_local_group') IS NULL
       OR (SELECT g.groupid FROM pg_catalog.pg_dist_local_group g) <> 0 THEN
        RETURN;
    END IF;
    FOR w IN EXECUTE 'SELECT nodename || '':'' || nodeport AS node, success, result FROM pg_catalog.run_command_on_workers('
        || quote_literal('SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(u) OPERATOR(pg_catalog.||) '
                         || 'pg_catalog.jsonb_build_object(''role_name'', r.rolname)), ''[]'') '
                         || 'FROM llm.usage u LEFT JOIN pg_catalog.pg_roles r ON r.oid = u.role_oid') || ')' LOOP
        IF NOT w.success THEN
            RAISE WARNING 'the usage of Citus node % could not be read: %', w.node, w.result;
            CONTINUE;
        END IF;
        RETURN QUERY SELECT w.node, (e ->> 'role_name')::name, e - 'role_name'
                     FROM jsonb_array_elements(w.result::jsonb) e;
    END LOOP;
END;
$$;
COMMENT ON FUNCTION llm._cluster_usage() IS 'Every node''s usage rows, as JSON, with the node and the role''s name';

CREATE VIEW llm.cluster_usage AS
    SELECT c.node, c.role_name AS role, u.*
    FROM llm._cluster_usage() c,
         LATERAL pg_catalog.jsonb_populate_record(NULL::llm.usage,
             c.rec OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('role_oid',
                 COALESCE((SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = c.role_name), 0))) u;
COMMENT ON VIEW llm.cluster_usage IS 'On a Citus coordinator: the usage rows of every node of the cluster (each node records the calls it made), with the node and the role''s name; reads every role''s rows: grant it only to roles that may see everyone''s spending';
