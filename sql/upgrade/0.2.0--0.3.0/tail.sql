-- the privileges kept by head.sql, granted again on every function and
-- view of the same name (a function whose arguments changed was dropped
-- and created anew, without them)
DO $$
DECLARE
    g jsonb;
    f regprocedure;
BEGIN
    FOR g IN SELECT * FROM pg_catalog.jsonb_array_elements(
                 pg_catalog.current_setting('pg_llm.upgrade_grants')::jsonb)
    LOOP
        IF g ->> 'kind' = 'function' THEN
            FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
                     WHERE p.pronamespace = 'llm'::regnamespace AND p.proname = g ->> 'name'
            LOOP
                EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', f,
                    (g ->> 'grantee')::oid::regrole);
            END LOOP;
        ELSIF EXISTS (SELECT FROM pg_catalog.pg_class c
                      WHERE c.relnamespace = 'llm'::regnamespace AND c.relname = g ->> 'name') THEN
            EXECUTE pg_catalog.format('GRANT %s ON llm.%I TO %I', g ->> 'privilege', g ->> 'name',
                (g ->> 'grantee')::oid::regrole);
        END IF;
    END LOOP;
END;
$$;
