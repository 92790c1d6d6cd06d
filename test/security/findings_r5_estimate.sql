-- before: b0c65c39c7a0fa1dbd4d81c5c624f5a63704b249
-- The fifth review's finding, about llm.estimate_job: it read the rows
-- of a job with the rights of whoever called it, so that code of the
-- job's source table ran as the caller.  A role with the grants of "To
-- let a role use jobs" creates a job over an empty table without change
-- tracking, then turns the table into a view (a rule ON SELECT, which
-- PostgreSQL 15 and earlier allow) whose column calls a function of its
-- own; an administrator estimating the job ran that function as a
-- superuser.  The same through a cast of a column's type to text, which
-- the tenant creates for a type of its own (any PostgreSQL version).
-- Each finding prints one line: its name, "safe" or "UNSAFE",
-- and what was seen.  test/security/before_after.sh runs it against the
-- commit above and the working tree.
\ir setup.sql
SELECT llm.add_model('est', 'mock', input_usd_per_mtok => 1, output_usd_per_mtok => 1) IS NULL \g /dev/null

DROP ROLE IF EXISTS sec_r5_tenant;
CREATE ROLE sec_r5_tenant;
GRANT USAGE ON SCHEMA llm TO sec_r5_tenant;
GRANT EXECUTE ON FUNCTION llm.create_job(text, regclass, text[], text, name, regclass, text, text, jsonb, boolean, text, text, text),
                          llm.run_job(text), llm.drop_job(text, boolean) TO sec_r5_tenant;
GRANT SELECT ON llm.job, llm.job_status TO sec_r5_tenant;
CREATE SCHEMA sec_r5 AUTHORIZATION sec_r5_tenant;

SET ROLE sec_r5_tenant;
CREATE TABLE sec_r5.t (id int PRIMARY KEY, body text, label text);
SELECT llm.create_job('sec_r5_job', 'sec_r5.t', '{id}', 'Label: {body}', 'label', model => 'est',
                      track_changes => false) IS NULL \g /dev/null
-- run with a superuser's rights, it makes the tenant a superuser
CREATE FUNCTION sec_r5.climb() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        EXECUTE 'ALTER ROLE sec_r5_tenant SUPERUSER';
    END IF;
    RETURN 'a ticket';
END $$;
ALTER TABLE sec_r5.t DROP CONSTRAINT t_pkey;
VACUUM sec_r5.t;
CREATE RULE "_RETURN" AS ON SELECT TO sec_r5.t
    DO INSTEAD SELECT 1 AS id, sec_r5.climb() AS body, NULL::text AS label;
RESET ROLE;

-- 1. the administrator estimates the tenant's job
SELECT requests FROM llm.estimate_job('sec_r5_job') \g /dev/null
SELECT 'estimate_job runs the code of a job''s source table as its caller',
       CASE WHEN rolsuper THEN 'UNSAFE' ELSE 'safe' END,
       CASE WHEN rolsuper THEN 'the tenant became a superuser'
            ELSE 'the tenant is not a superuser' END
FROM pg_catalog.pg_roles WHERE rolname = 'sec_r5_tenant';

-- 2. the same through a cast of a column's type to text, which a role may
-- create for a type of its own (any PostgreSQL version): the prompt
-- template renders the column with it
SET ROLE sec_r5_tenant;
CREATE TYPE sec_r5.ct AS (a text);
CREATE FUNCTION sec_r5.ct_text(sec_r5.ct) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        EXECUTE 'ALTER ROLE sec_r5_tenant CREATEROLE';
    END IF;
    RETURN 'a ticket';
END $$;
CREATE CAST (sec_r5.ct AS text) WITH FUNCTION sec_r5.ct_text(sec_r5.ct);
CREATE TABLE sec_r5.t2 (id int PRIMARY KEY, body sec_r5.ct, label text);
INSERT INTO sec_r5.t2 VALUES (1, ROW('hello'));
SELECT llm.create_job('sec_r5_cast', 'sec_r5.t2', '{id}', 'Label: {body}', 'label', model => 'est',
                      track_changes => false) IS NULL \g /dev/null
RESET ROLE;
SELECT requests FROM llm.estimate_job('sec_r5_cast') \g /dev/null
SELECT 'estimate_job runs a cast of a job''s column type as its caller',
       CASE WHEN rolcreaterole THEN 'UNSAFE' ELSE 'safe' END,
       CASE WHEN rolcreaterole THEN 'the tenant got CREATEROLE'
            ELSE 'the tenant has no CREATEROLE' END
FROM pg_catalog.pg_roles WHERE rolname = 'sec_r5_tenant';
