-- before: 7865b9f12d904515ba6c1712635e13f95bfab3c3 (pg_llm 0.2.0)
-- The third review's findings about the queue worker, as one script that
-- runs on 0.2.0 and on this tree: what a plain role's code, run by the
-- worker (a write-back's triggers), leaves in the worker's session, and
-- whether a role can stall the worker for everybody.  The roles hold
-- exactly the grants the README of 0.2.0 documents ("Privileges and keys").
-- Each finding prints its name, "safe" or "UNSAFE", and what was seen.
-- test/security/before_after.sh runs it against 0.2.0 and the working
-- tree (psql variable openai_url: the mock).
\ir setup.sql
SELECT llm.use_provider('mock') \g /dev/null
-- the model the items name, known by name (model names are strict now)
SELECT llm.add_model('mock', 'mock', 'mock') \g /dev/null

CREATE FUNCTION wait_queue(seconds int) RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    WHILE EXISTS (SELECT 1 FROM llm.queue WHERE status IN ('pending', 'running'))
          AND clock_timestamp() - t0 < make_interval(secs => seconds) LOOP
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;

CREATE ROLE mallory LOGIN;
CREATE ROLE victim LOGIN;
CREATE SCHEMA mal AUTHORIZATION mallory;
GRANT USAGE ON SCHEMA mal TO PUBLIC;
-- the documented grants of 0.2.0
GRANT USAGE ON SCHEMA llm TO mallory, victim;
GRANT EXECUTE ON FUNCTION llm.chat(text, text, text, jsonb) TO mallory, victim;
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE pronamespace = 'llm'::regnamespace AND proname = 'enqueue' LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO mallory, victim', f);
    END LOOP;
END $$;
GRANT SELECT ON llm.queue TO mallory, victim;
-- what mallory's observing trigger saw, in the worker's session
CREATE TABLE seen (what text, val text);
GRANT INSERT ON seen TO PUBLIC;

-- mallory's tables: one whose trigger plants session state in whoever
-- writes it (a session advisory lock on the key 0.2.0's run_job took for
-- the job "vjob", a prepared statement, an open cursor, a setting, a
-- sequence value), one whose trigger looks for that state
SET ROLE mallory;
CREATE SEQUENCE mal.seq;
CREATE TABLE mal.plant (id int PRIMARY KEY, answer text);
CREATE TABLE mal.look (id int PRIMARY KEY, answer text);
INSERT INTO mal.plant VALUES (1, NULL);
INSERT INTO mal.look SELECT g, NULL FROM generate_series(1, 41) g;
CREATE FUNCTION mal.plant() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    c refcursor := 'mal_cursor';
BEGIN
    PERFORM pg_catalog.pg_advisory_lock(pg_catalog.hashtext('pg_llm job vjob'));
    BEGIN
        EXECUTE 'PREPARE mal_stmt AS SELECT 1';
        INSERT INTO public.seen VALUES ('plant prepare', 'ok');
    EXCEPTION WHEN OTHERS THEN
        INSERT INTO public.seen VALUES ('plant prepare', SQLERRM);
    END;
    OPEN c FOR SELECT 1;
    PERFORM pg_catalog.set_config('work_mem', '77kB', false);
    PERFORM pg_catalog.nextval('mal.seq');
    RETURN NEW;
END $$;
CREATE TRIGGER plant BEFORE UPDATE ON mal.plant FOR EACH ROW EXECUTE FUNCTION mal.plant();
CREATE FUNCTION mal.look() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v text;
BEGIN
    INSERT INTO public.seen SELECT 'prepared ' || NEW.id, pg_catalog.string_agg(name, ',') FROM pg_catalog.pg_prepared_statements;
    INSERT INTO public.seen SELECT 'cursor ' || NEW.id, pg_catalog.string_agg(name, ',') FROM pg_catalog.pg_cursors;
    INSERT INTO public.seen VALUES ('work_mem ' || NEW.id, pg_catalog.current_setting('work_mem'));
    BEGIN
        v := pg_catalog.currval('mal.seq')::text;
    EXCEPTION WHEN OTHERS THEN
        v := NULL;
    END;
    INSERT INTO public.seen VALUES ('currval ' || NEW.id, v);
    RETURN NEW;
END $$;
CREATE TRIGGER look BEFORE UPDATE ON mal.look FOR EACH ROW EXECUTE FUNCTION mal.look();
-- the planting item and 40 looking ones in one transaction (written in one
-- pass of the worker, most of them), and another looking one once they
-- are done
BEGIN;
SELECT llm.enqueue('plant', 'mock', target_table => 'mal.plant', target_column => 'answer', target_key => '{"id": 1}') \g /dev/null
SELECT count(llm.enqueue('look', 'mock', target_table => 'mal.look', target_column => 'answer',
                         target_key => jsonb_build_object('id', g))) FROM generate_series(1, 40) g \g /dev/null
COMMIT;
RESET ROLE;
SELECT wait_queue(30) \g /dev/null
SET ROLE mallory;
SELECT llm.enqueue('look again', 'mock', target_table => 'mal.look', target_column => 'answer', target_key => '{"id": 41}') \g /dev/null
RESET ROLE;
SELECT wait_queue(30) \g /dev/null

-- 1. the session advisory lock stays with the worker (in 0.2.0, the
-- victim's run_job('vjob') then blocked for good)
SELECT 'a session advisory lock taken by a write-back trigger stays with the worker',
       CASE WHEN count(*) > 0 THEN 'UNSAFE' ELSE 'safe' END,
       count(*) || ' advisory locks held by the worker after the item; the planting item: '
       || (SELECT status || coalesce(': ' || error, '') FROM llm.queue WHERE prompt = 'plant')
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND a.backend_type = 'pg_llm worker';

-- 2. the prepared statement outlives the trigger
SELECT 'a prepared statement made by a write-back trigger outlives it in the worker',
       CASE WHEN bool_or(val LIKE '%mal_stmt%') THEN 'UNSAFE' ELSE 'safe' END,
       'PREPARE in the trigger: ' || coalesce((SELECT val FROM seen WHERE what = 'plant prepare'), 'not run')
       || '; prepared statements seen by ' || count(*) || ' later triggers: ' || coalesce(string_agg(DISTINCT coalesce(val, 'none'), ', '), '-')
FROM seen WHERE what LIKE 'prepared%';

-- 3. the open cursor outlives the trigger (for the rest of the worker's
-- transaction: the write-backs of other items, other roles')
SELECT 'a cursor opened by a write-back trigger outlives it in the worker',
       CASE WHEN bool_or(val LIKE '%mal_cursor%') THEN 'UNSAFE' ELSE 'safe' END,
       'cursors seen by ' || count(*) || ' later triggers: ' || coalesce(string_agg(DISTINCT coalesce(val, 'none'), ', '), '-')
FROM seen WHERE what LIKE 'cursor%';

-- 4. the setting made without LOCAL, and 5. the sequence's value for
-- currval and lastval
SELECT 'a setting made by a write-back trigger outlives it in the worker',
       CASE WHEN bool_or(val = '77kB') THEN 'UNSAFE' ELSE 'safe' END,
       'work_mem seen by ' || count(*) || ' later triggers: ' || coalesce(string_agg(DISTINCT val, ', '), '-')
FROM seen WHERE what LIKE 'work_mem%';
SELECT 'a sequence value read by a write-back trigger outlives it in the worker (currval, lastval)',
       CASE WHEN bool_or(val IS NOT NULL) THEN 'UNSAFE' ELSE 'safe' END,
       'currval(mal.seq) seen by ' || count(*) || ' later triggers: ' || coalesce(string_agg(DISTINCT coalesce(val, 'not defined'), ', '), '-')
FROM seen WHERE what LIKE 'currval%';

-- 6. the stall: mallory holds a row lock on her own target row in an idle
-- transaction (here through dblink, a session of hers that stays open);
-- her item's write-back waits for it, and the victim's items behind it
-- (the last finding: on 0.2.0 the worker stays stuck)
CREATE EXTENSION IF NOT EXISTS dblink;
SET ROLE mallory;
CREATE TABLE mal.stall (id int PRIMARY KEY, answer text);
INSERT INTO mal.stall VALUES (1, NULL);
RESET ROLE;
SELECT dblink_connect('lock', 'dbname=' || current_database() || ' user=mallory' ||
                      ' port=' || current_setting('port') || ' host=' || split_part(current_setting('unix_socket_directories'), ',', 1)) \g /dev/null
SELECT dblink_exec('lock', 'BEGIN') \g /dev/null
SELECT * FROM dblink('lock', 'SELECT id FROM mal.stall FOR UPDATE') AS t(id int) \g /dev/null
SET ROLE mallory;
SELECT llm.enqueue('stall', 'mock', target_table => 'mal.stall', target_column => 'answer', target_key => '{"id": 1}') \g /dev/null
RESET ROLE;
SELECT pg_sleep(2) \g /dev/null
CREATE TABLE vic (id int PRIMARY KEY, answer text);
INSERT INTO vic SELECT g, NULL FROM generate_series(1, 20) g;
ALTER TABLE vic OWNER TO victim;
SET ROLE victim;
SELECT count(llm.enqueue('vic ' || id, 'mock', target_table => 'vic', target_column => 'answer',
                         target_key => jsonb_build_object('id', id))) FROM vic \g /dev/null
RESET ROLE;
DO $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    WHILE (SELECT count(*) FROM vic WHERE answer IS NOT NULL) < 20 AND clock_timestamp() - t0 < interval '60 s' LOOP
        PERFORM pg_sleep(0.2);
    END LOOP;
END $$;
SELECT 'a row lock held in an idle transaction on her own target row stalls the worker for every role',
       CASE WHEN (SELECT count(*) FROM vic WHERE answer IS NOT NULL) < 20 THEN 'UNSAFE' ELSE 'safe' END,
       (SELECT count(*) FROM vic WHERE answer IS NOT NULL) || ' of the victim''s 20 items written within 60 s while the lock was held'
       || '; mallory''s item: ' || (SELECT status || coalesce(': ' || error, '') FROM llm.queue WHERE prompt = 'stall');
SELECT dblink_disconnect('lock') \g /dev/null
