-- The queue: logged, with a primary key, so a crash loses nothing.

-- Which roles' rows the reports show the role that reads them (the views
-- llm.queue_status, llm.job_status, llm.usage_log and llm.usage_summary,
-- and through them llm.cost_report): its own and those of the roles whose
-- privileges it has; every role's to administrators (superusers, roles
-- with BYPASSRLS, members of the extension's owner) and to members of
-- pg_read_all_stats, who see every session's statements already.  A view
-- is read with its owner's rights but current_user is its reader, so the
-- views that read this one need grant nothing of it to anyone.
CREATE VIEW llm._reader AS
    SELECT coalesce((SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r
                     WHERE r.rolname = current_user), false)
           OR pg_catalog.pg_has_role((SELECT e.extowner FROM pg_catalog.pg_extension e
                                      WHERE e.extname = 'pg_llm'), 'USAGE')
           OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE') AS all_roles,
           ARRAY(SELECT r.oid FROM pg_catalog.pg_roles r
                 WHERE pg_catalog.pg_has_role(r.oid, 'USAGE')) AS roles;
COMMENT ON VIEW llm._reader IS 'Whose rows the reports show the role reading them: all_roles, or the roles whose privileges it has';


CREATE TABLE llm.queue (
    id              bigserial PRIMARY KEY,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'submitted', 'done', 'failed')),
    prompt          text NOT NULL,
    model           text NOT NULL,
    system          text,
    options         jsonb,
    target_table    regclass,
    target_column   name,
    target_key      jsonb,
    enqueued_by     oid NOT NULL,
    job             text,
    job_id          bigint,
    via             text NOT NULL DEFAULT 'realtime' CHECK (via IN ('realtime', 'batch_api')),
    batch_id        bigint,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    leased_by       bigint,
    reply           text,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    batch_expiries  integer NOT NULL DEFAULT 0,
    invalid_answers integer NOT NULL DEFAULT 0,
    spread          boolean NOT NULL DEFAULT false,
    answered        boolean NOT NULL DEFAULT false,
    provider        text,
    task            text NOT NULL DEFAULT 'chat' CHECK (task IN ('chat', 'embed')),
    input_hash      bigint
);
-- ready items by role, for claims that take turns between roles; ready
-- batch items by model; the items a provider batch holds
CREATE INDEX queue_ready ON llm.queue (enqueued_by, next_attempt_at, id)
    WHERE status = 'pending' AND via = 'realtime' AND task = 'chat';
CREATE INDEX queue_embed_ready ON llm.queue (enqueued_by, next_attempt_at, id)
    WHERE status = 'pending' AND via = 'realtime' AND task = 'embed';
CREATE INDEX queue_batch_ready ON llm.queue (model, next_attempt_at, id)
    WHERE status = 'pending' AND via = 'batch_api';
CREATE INDEX queue_batch ON llm.queue (batch_id) WHERE status = 'submitted';
CREATE INDEX queue_leased ON llm.queue (lease_until) WHERE status = 'running';
-- the items still waiting for a target row, outside jobs: an enqueue of the
-- same request for the same row is not paid for twice (if_queued)
CREATE INDEX queue_target ON llm.queue (target_table, target_key)
    WHERE job IS NULL AND target_table IS NOT NULL AND status IN ('pending', 'running', 'submitted');
-- a job's items by target row (a newer item supersedes an older one's
-- reply; a row already queued is not queued again), with their status
-- for llm.job_status
CREATE INDEX queue_job ON llm.queue (job_id, target_key, id) INCLUDE (status) WHERE job_id IS NOT NULL;
COMMENT ON TABLE llm.queue IS 'Prompts waiting for, or answered by, the pg_llm worker; each role sees its own items';
COMMENT ON COLUMN llm.queue.job IS 'The name of the job that queued the item, when it was queued';
COMMENT ON COLUMN llm.queue.job_id IS 'The job that queued the item (llm.job.id): a job''s items are known by it, never by the name';
COMMENT ON COLUMN llm.queue.via IS 'realtime: a call of its own; batch_api: through its provider''s batch API (half the price, answered within the provider''s window)';
COMMENT ON COLUMN llm.queue.batch_id IS 'The provider batch (llm.batches) that holds or held the item';
COMMENT ON COLUMN llm.queue.spread IS 'The answer''s properties are written into the target''s columns of the same names (target_column is NULL)';
COMMENT ON COLUMN llm.queue.batch_expiries IS 'Provider batches that expired (or were cancelled) before the item ran; none uses an attempt, and the llm.batch_max_expiries-th sends the item realtime (via becomes realtime)';
COMMENT ON COLUMN llm.queue.invalid_answers IS 'Answers that broke the item''s json_schema; each was asked for again with the validation error (at most llm.validation_retries times), the last one kept in reply while the item waits';
COMMENT ON COLUMN llm.queue.provider IS 'The provider the item is sent to (enqueue''s or the job''s provider =>): its route of the model, batch or realtime; NULL: the model''s routes in order (a batch goes to the first)';
COMMENT ON COLUMN llm.queue.answered IS 'reply is the item''s paid answer: what is left is its write-back (put off after llm.writeback_timeout, or failed and given to llm.retry), done without a new call';
COMMENT ON COLUMN llm.queue.task IS 'chat: the prompt is answered; embed: the prompt is the input of an embedding, and the reply its vector ([v1,...])';
COMMENT ON COLUMN llm.queue.input_hash IS 'Of a job''s embedding item: the hash of its input, so that a row whose rendered input did not change is not embedded again';
COMMENT ON COLUMN llm.queue.leased_by IS 'The running worker that holds the item (a token of its life; a restarted server or worker has new ones)';
-- a role that may read the queue sees only the items it enqueued
ALTER TABLE llm.queue ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_items ON llm.queue FOR SELECT
    USING (enqueued_by = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user));

CREATE FUNCTION llm.enqueue(
    prompt text,
    model text DEFAULT NULL,
    system text DEFAULT NULL,
    target_table regclass DEFAULT NULL,
    target_column name DEFAULT NULL,
    target_key jsonb DEFAULT NULL,
    options jsonb DEFAULT NULL,
    via text DEFAULT 'realtime',
    provider text DEFAULT NULL,
    if_queued text DEFAULT 'skip')
RETURNS bigint
AS 'MODULE_PATHNAME', 'pg_llm_enqueue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text, text, text) IS 'Queue a prompt for the background worker; with target_table, target_column and target_key (a JSON object of the row''s key columns) the reply is written into that row, with the rights of the role that enqueued it; via => ''batch_api'' sends it through its provider''s batch API; provider names the provider (one of the model''s routes) it goes to, batch or realtime (llm.queue.provider shows it; else the model''s routes in order, a batch to the first); if_queued: skip (the default: the same request already waiting for the same target is not queued again, its id is returned), add, or replace (the target''s pending items are removed first); with a json_schema and target_column NULL, the answer''s properties are spread into the target''s columns of the same names; a NULL prompt queues nothing and returns NULL';

CREATE FUNCTION llm.retry(ids bigint[] DEFAULT NULL, job text DEFAULT NULL, error_like text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'pg_llm_retry'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION llm.retry(bigint[], text, text) IS 'Put the caller''s failed items (all, or those with the ids, of the job, or whose error is LIKE error_like) back to pending; an item that failed at its write-back with its reply kept is written back from that reply without a new call, the others are sent again; returns the number put back';

CREATE VIEW llm.queue_status WITH (security_barrier) AS
    WITH q AS (
        SELECT q.id, q.status, q.target_table, q.target_column, q.target_key, q.job_id,
               q.created_at, q.started_at, q.finished_at
        FROM llm.queue q, llm._reader v
        WHERE v.all_roles OR q.enqueued_by = ANY (v.roles)),
    -- a failed item that a newer item of the same target (or job row)
    -- followed, llm.retry's or a job's, is no longer a failure (equalities
    -- a hash join takes: one pass over the queue)
    superseded AS (
        SELECT f.id FROM q f
        WHERE f.status = 'failed' AND f.target_table IS NOT NULL
          AND EXISTS (SELECT 1 FROM q n
                      WHERE n.target_table = f.target_table AND n.target_key = f.target_key
                        AND coalesce(n.target_column, '') = coalesce(f.target_column, '')
                        AND coalesce(n.job_id, 0) = coalesce(f.job_id, 0) AND n.id > f.id)),
    current AS (
        SELECT q.id, q.status, q.created_at, q.started_at, q.finished_at
        FROM q LEFT JOIN superseded s ON s.id = q.id
        WHERE s.id IS NULL),
    -- the work under way: the items queued since the oldest one still
    -- waiting was queued
    wave AS (
        SELECT count(*) FILTER (WHERE c.status = 'done') AS done,
               count(*) FILTER (WHERE c.status = 'failed') AS failed,
               count(*) AS items
        FROM current c
        WHERE c.created_at >= (SELECT min(u.created_at) FROM q u
                               WHERE u.status IN ('pending', 'running', 'submitted'))),
    -- finished in the last minute, per second since the first of them
    -- started (at most 60 s)
    rate AS (
        SELECT coalesce(count(*) / greatest(1.0, least(60.0, extract(epoch FROM now() - min(c.started_at)))), 0)
                   AS per_second
        FROM current c
        WHERE c.status IN ('done', 'failed') AND c.finished_at > now() - interval '1 minute'),
    counts AS (
        SELECT s.status, s.ord, count(c.id) AS items, min(c.created_at) AS oldest,
               max(c.finished_at) AS last_finished
        FROM (VALUES ('pending', 1), ('running', 2), ('submitted', 3), ('done', 4), ('failed', 5)) AS s(status, ord)
        LEFT JOIN current c ON c.status = s.status
        GROUP BY s.status, s.ord)
    SELECT x.status, x.items, x.oldest, x.last_finished, x.percent_done, x.percent_failed,
           x.items_per_second, x.eta
    FROM (
        SELECT c.ord, c.status, c.items, c.oldest, c.last_finished,
               NULL::numeric AS percent_done, NULL::numeric AS percent_failed,
               NULL::numeric AS items_per_second, NULL::interval AS eta
        FROM counts c
        UNION ALL
        SELECT 6, 'all', sum(c.items)::bigint, min(c.oldest) FILTER (WHERE c.ord <= 3), max(c.last_finished),
               (SELECT round(100.0 * w.done / w.items, 1) FROM wave w WHERE w.items > 0),
               (SELECT round(100.0 * w.failed / w.items, 1) FROM wave w WHERE w.items > 0),
               (SELECT round(r.per_second, 1) FROM rate r),
               (SELECT make_interval(secs => round(sum(c2.items) FILTER (WHERE c2.ord <= 2) / r.per_second))
                FROM counts c2, rate r WHERE r.per_second > 0 GROUP BY r.per_second
                HAVING sum(c2.items) FILTER (WHERE c2.ord <= 2) > 0)
        FROM counts c) x
    ORDER BY x.ord;
COMMENT ON VIEW llm.queue_status IS 'Queue items by status (of the roles whose privileges the reader has; every role''s for administrators), the failed ones that a newer item of the same target followed left out; the row all: every item, and of the work under way (the items queued since the oldest one still waiting) the percent done and failed, the items finished per second over the last minute, and the time the pending and running items need at that rate';

CREATE FUNCTION llm.worker_status(
    OUT pid integer, OUT database oid, OUT started_at timestamptz,
    OUT in_flight integer, OUT claimed integer, OUT completed bigint,
    OUT failed bigint, OUT items_per_second float8,
    OUT last_error text, OUT last_error_at timestamptz, OUT kind text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pg_llm_worker_status'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm.worker_status() IS 'Each running queue worker and usage writer, from shared memory (the view llm.workers shows it)';

-- Is a worker alive that holds leases under this token?  The workers use
-- it to take back, at once, the items of a worker that is gone.
CREATE FUNCTION llm._lease_alive(holder bigint) RETURNS boolean
AS 'MODULE_PATHNAME', 'pg_llm_lease_alive'
LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION llm._lease_alive(bigint) IS 'Whether a running worker holds queue leases under this token';

CREATE VIEW llm.workers AS
    SELECT w.pid, w.kind, d.datname AS database, w.started_at, w.in_flight, w.claimed,
           w.completed, w.failed, round(w.items_per_second::numeric, 1) AS items_per_second,
           w.last_error, w.last_error_at
    FROM llm.worker_status() w LEFT JOIN pg_catalog.pg_database d ON d.oid = w.database;
COMMENT ON VIEW llm.workers IS 'Each running queue worker (and usage writer): requests in flight, items done and failed, items per second, last error';

CREATE FUNCTION llm.purge_queue(older_than interval DEFAULT '7 days', unfinished boolean DEFAULT false)
RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    WITH d AS (DELETE FROM llm.queue
               WHERE (status IN ('done', 'failed') AND finished_at < now() - older_than)
                  OR (unfinished AND status IN ('pending', 'submitted') AND created_at < now() - older_than)
               RETURNING 1)
    SELECT count(*) FROM d;
$$;
COMMENT ON FUNCTION llm.purge_queue(interval, boolean) IS 'Delete finished queue items older than the given age; with unfinished, also the pending items and those waiting in a provider batch (a batch whose items are all gone is cancelled at the provider)';
