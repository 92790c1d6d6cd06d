-- pg_llm 0.2.0 to 0.3.0.  The upgrade script is built from this file, the
-- changes of each topic (before-*.sql: tables, and drops of the functions
-- and views whose signature or columns changed), every function and view
-- of 0.3.0 defined again from sql/install/*.sql, what needs them
-- (after-*.sql), and tail.sql.
\echo Use "ALTER EXTENSION pg_llm UPDATE TO '0.3.0'" to load this file. \quit

-- the privileges administrators granted on the extension's functions and
-- views, by name, to be granted again on the functions and views of that
-- name once they are defined again (tail.sql)
SELECT pg_catalog.set_config('pg_llm.upgrade_grants', coalesce((
    SELECT pg_catalog.jsonb_agg(DISTINCT pg_catalog.jsonb_build_object(
               'kind', g.kind, 'name', g.name, 'grantee', g.grantee, 'privilege', g.privilege))
    FROM (SELECT 'function' AS kind, p.proname::text AS name, a.grantee, a.privilege_type AS privilege
          FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
          WHERE p.pronamespace = 'llm'::regnamespace AND p.proname !~ '^_job_'
          UNION ALL
          SELECT 'view', c.relname::text, a.grantee, a.privilege_type
          FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
          WHERE c.relnamespace = 'llm'::regnamespace AND c.relkind = 'v') g
    WHERE g.grantee <> 0 AND g.grantee <> (SELECT e.extowner FROM pg_catalog.pg_extension e
                                          WHERE e.extname = 'pg_llm')), '[]')::text, true);
