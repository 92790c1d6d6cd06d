-- The bill: each call's tag and job in llm.usage; what cost_report says
-- was paid and saved against a baseline, and where the saving came from
-- (a cheaper provider, batch prices, the response cache), the calls
-- without prices counted and listed; usage_summary's levels and groups;
-- honest progress (failures apart from what is done, an old failure
-- followed by a newer item no longer counted, cost so far and to finish);
-- the reports an analyst reads over their own rows; a key pasted as
-- api_key_env, a base_url with a path pg_llm adds, names that need
-- quoting.
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT wait_queue();
SELECT wait_until('SELECT pending = 0 FROM llm.usage_buffer_status()', 'written');
TRUNCATE llm.usage;
TRUNCATE llm.queue;
TRUNCATE llm.cache;
SELECT base_url AS mock_url FROM llm.provider WHERE name = 'mock' \gset

-- the provider paid before (dear), a relay (a tenth of the price) that
-- serves first, and a model nobody priced; prices chosen so that every
-- cost is exact at 6 decimals.  A call of 'one two three' has 3 input
-- tokens and 4 output tokens ("echo: one two three"): 0.0019 USD on
-- r-openai, 0.00019 on r-relay, 0.000095 through its batch API.
SELECT llm.create_provider('r-openai', 'openai', :'mock_url', api_key => 'sk-mock');
SELECT llm.create_provider('r-relay', 'openai', :'mock_url', api_key => 'sk-mock',
                           options => '{"batch_api": "inline"}');
SELECT llm.add_model('r-smart', 'r-relay', 'mock', priority => 1,
                     input_usd_per_mtok => 10, output_usd_per_mtok => 40);
SELECT llm.add_model('r-smart', 'r-openai', 'mock', priority => 2,
                     input_usd_per_mtok => 100, output_usd_per_mtok => 400);
SELECT llm.add_model('r-free', 'r-relay', 'mock');

-- the mock's port, for the checks of what it received
SELECT substring(base_url from ':([0-9]+)/') AS mock_port FROM llm.provider WHERE name = 'mock' \gset
\setenv MOCK_PORT :mock_port
-- 1. the option tag, on every call path; never sent to the provider
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT llm.chat('one two three', 'r-smart', options => '{"tag": "triage"}');
-- the same request again at temperature 0: the second is the cache's
SELECT llm.chat('one two three', 'r-smart', options => '{"tag": "triage", "temperature": 0}');
SELECT llm.chat('one two three', 'r-smart', options => '{"tag": "triage", "temperature": 0}');
SELECT count(*) FROM llm.chat_many(ARRAY['one two three', 'one two three'], 'r-smart',
                                   options => '{"tag": "many"}');
SELECT string_agg(c, '') FROM llm.chat_stream('one two three', 'r-smart', options => '{"tag": "stream"}') c;
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "one two three"}], "tag": "completion"}',
                           'r-smart') -> 'choices' -> 0 -> 'message' ->> 'content';
SELECT llm.chat('one two three', 'r-free', options => '{"tag": "unpriced"}');
SELECT llm.chat('one two three', 'r-free');
\! curl -s http://127.0.0.1:$MOCK_PORT/_requests | python3 -c 'import json,sys; r=json.load(sys.stdin); print("requests:", len(r), "with a tag:", sum(1 for x in r if "tag" in (x.get("body") or {})))'

-- a tag that is not a short label is refused before anything is sent
SELECT llm.chat('x', 'r-smart', options => '{"tag": 7}');
SELECT llm.chat('x', 'r-smart', options => '{"tag": ""}');
SELECT llm.chat('x', 'r-smart', options => jsonb_build_object('tag', repeat('t', 64)));
SELECT llm.chat('x', 'r-smart', options => '{"tag": "two\nlines"}');
SELECT llm.chat('x', 'r-smart', options => '{"tags": "triage"}');
SELECT llm.enqueue('x', 'r-smart', options => '{"tag": ["a"]}');
-- null is no tag
SELECT llm.chat('four', 'r-smart', options => '{"tag": null}');

-- 2. queue items, a provider batch and a job carry their tag; the job's
-- calls carry the job
CREATE TABLE r_tickets (id int PRIMARY KEY, body text, label text);
INSERT INTO r_tickets SELECT g, 'one two three', NULL FROM generate_series(1, 6) g;
SELECT llm.enqueue('one two three', 'r-smart', options => '{"tag": "adhoc"}') > 0 AS queued;
SELECT count(llm.enqueue('one two three', 'r-smart', options => '{"tag": "bulk"}', via => 'batch_api'))
FROM generate_series(1, 4);
SELECT llm.create_job('r-nightly', 'r_tickets', '{id}', '{body}', 'label', model => 'r-smart',
                      options => '{"tag": "nightly"}', track_changes => false);
SELECT llm.run_job('r-nightly');
SELECT wait_queue();
SELECT wait_until('SELECT count(*) = 21 FROM llm.usage', 'recorded');
SELECT mode, outcome, provider, model, job, tag, count(*), sum(cost_usd) AS cost_usd
FROM llm.usage_log GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6;
-- the job by its id too (a name can be used again once a job is dropped)
SELECT count(*) FROM llm.usage u JOIN llm.job j ON j.id = u.job_id WHERE j.name = 'r-nightly';

-- 3. the inventory: each row says what it is (a failed call before a
-- provider was chosen has a NULL provider, a subtotal says mode)
SELECT level, mode, provider, model, calls, ok, from_cache, cost_usd FROM llm.usage_summary;
SELECT level, job, tag, mode, provider, model, calls, cost_usd FROM llm.usage_summary(by => 'job');
SELECT level, tag, calls, cost_usd FROM llm.usage_summary(by => 'tag') WHERE level <> 'model';
SELECT level, job, tag, calls FROM llm.usage_summary(by => 'Tag , job') WHERE level <> 'model';
SELECT level, calls FROM llm.usage_summary(by => 'job', since => now() + interval '1 day');
SELECT * FROM llm.usage_summary(by => 'role');
SELECT * FROM llm.usage_summary(by => '');
SELECT * FROM llm.usage_summary(by => 'job', since => '2030-01-02', until => '2030-01-01');

-- 4. what was paid and saved.  The default baseline is each model's
-- dearest priced route: r-smart's 19 calls, 55 input and 74 output
-- tokens, at r-openai's prices cost 0.0351; they paid 0.00294 on the
-- relay.  Saved 0.03216 (91.6 %): batch prices 4 x 0.000095 = 0.00038,
-- the cache the relay's price of its one hit, 0.00019, and the cheaper
-- provider the rest, 0.03159.  r-free's calls have no price: counted and
-- listed, not priced.
SELECT model, served_by, baseline_provider, calls, input_tokens, output_tokens, paid_usd, baseline_usd,
       saved_usd, saved_pct, level
FROM llm.cost_report();
SELECT model, saved_provider_usd, saved_batch_usd, saved_cache_usd,
       saved_provider_usd + saved_batch_usd + saved_cache_usd = saved_usd AS adds_up,
       batch_calls, cache_calls, unpriced_calls, unpriced
FROM llm.cost_report();
-- against the relay itself: only batch prices and the cache saved
SELECT model, baseline_provider, paid_usd, baseline_usd, saved_usd, saved_provider_usd, saved_batch_usd,
       saved_cache_usd
FROM llm.cost_report('r-relay');
-- by job and by tag, each group with its total; the period
SELECT job, tag, model, calls, paid_usd, baseline_usd, saved_usd, level
FROM llm.cost_report(by => 'job') ORDER BY level <> 'total', job NULLS LAST, model NULLS LAST;
SELECT tag, calls, paid_usd, saved_usd, unpriced_calls, level
FROM llm.cost_report(by => 'tag') WHERE level <> 'model';
SELECT level, calls, paid_usd FROM llm.cost_report(since => now() - interval '1 hour', until => now() - interval '30 minutes');
-- bad input is refused with what to do
\set VERBOSITY terse
SELECT * FROM llm.cost_report('r-nowhere');
\set VERBOSITY default
-- its hint names the providers with prices
DO $$
DECLARE
    h text;
BEGIN
    PERFORM llm.cost_report('r-nowhere');
EXCEPTION WHEN undefined_object THEN
    GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
    RAISE NOTICE 'the hint names r-openai and r-relay: %', h ~ 'r-openai, r-relay';
END;
$$;
SELECT llm.create_provider('r-bare', 'openai', :'mock_url', api_key => 'sk-mock');
SELECT llm.add_model('r-smart', 'r-bare', 'mock', priority => 3);
SELECT * FROM llm.cost_report('r-bare');
SELECT llm.drop_provider('r-bare');
SELECT * FROM llm.cost_report(by => 'model');
SELECT * FROM llm.cost_report(since => '2030-01-02', until => '2030-01-01');
SELECT * FROM llm.cost_report(since => NULL);

-- 5. progress: a job's cost so far and what its items left would cost at
-- the same rate; failures apart; the queue's whole
INSERT INTO r_tickets SELECT g, 'one two three', NULL FROM generate_series(7, 10) g;
BEGIN;
SELECT llm.run_job('r-nightly');
-- held back for the test: the worker cannot claim them for an hour
UPDATE llm.queue SET next_attempt_at = now() + interval '1 hour' WHERE status = 'pending';
COMMIT;
SELECT job, pending, done, failed, percent_done, percent_failed, cost_usd, cost_to_finish_usd,
       eta IS NOT NULL AS has_eta
FROM llm.job_status WHERE job = 'r-nightly';
SELECT status, items, percent_done, percent_failed, items_per_second > 0 AS moving, eta IS NOT NULL AS has_eta
FROM llm.queue_status;
UPDATE llm.queue SET next_attempt_at = now() WHERE status = 'pending';
SELECT wait_queue();
SELECT job, pending, done, percent_done, cost_usd, cost_to_finish_usd FROM llm.job_status WHERE job = 'r-nightly';
-- an item that failed, then a newer item of the same target that was
-- answered: the old failure and its error no longer count
CREATE TABLE r_notes (id int PRIMARY KEY, verdict text);
INSERT INTO r_notes VALUES (1, NULL), (2, NULL);
SET llm.pass_through = on;
SELECT llm.enqueue('judge', 'mock?fail=400', target_table => 'r_notes', target_column => 'verdict',
                   target_key => '{"id": 1}') > 0 AS queued;
SELECT llm.enqueue('judge', 'mock?fail=400', target_table => 'r_notes', target_column => 'verdict',
                   target_key => '{"id": 2}') > 0 AS queued;
SELECT wait_queue();
SELECT status, items FROM llm.queue_status WHERE status = 'failed';
SELECT llm.enqueue('judge', 'mock', target_table => 'r_notes', target_column => 'verdict',
                   target_key => '{"id": 1}') > 0 AS queued_again;
RESET llm.pass_through;
SELECT wait_queue();
SELECT status, items FROM llm.queue_status WHERE status IN ('done', 'failed');
SELECT count(*) AS failed_rows_kept FROM llm.queue WHERE status = 'failed';

-- 6. a submitted provider batch says when it is polled next
BEGIN;
INSERT INTO llm._batch (token, provider, kind, model, upstream_model, status, requests, submitted_at)
VALUES ('r-test', 'r-relay', 'openai', 'r-smart', 'mock', 'submitted', 1, now() - interval '10 seconds');
SELECT status, next_poll_at - submitted_at AS polled_every FROM llm.batches WHERE provider = 'r-relay' AND status = 'submitted';
SELECT count(*) AS not_polled_when_over FROM llm.batches WHERE status <> 'submitted' AND next_poll_at IS NOT NULL;
ROLLBACK;

-- 7. an analyst with the documented grants reads the reports over their
-- own rows; a role that has the analyst's privileges, over theirs too
CREATE ROLE regress_llm_r_analyst;
CREATE ROLE regress_llm_r_lead;
GRANT regress_llm_r_analyst TO regress_llm_r_lead;
GRANT USAGE ON SCHEMA llm TO regress_llm_r_analyst, regress_llm_r_lead;
GRANT EXECUTE ON FUNCTION llm.chat(text, text, text, jsonb),
                          llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text, text, text) TO regress_llm_r_analyst;
GRANT SELECT ON llm.queue, llm.usage, llm.usage_log, llm.usage_summary, llm.queue_status, llm.job_status,
                llm.model TO regress_llm_r_analyst, regress_llm_r_lead;
GRANT EXECUTE ON FUNCTION llm.cost_report(text, timestamptz, timestamptz, text),
                          llm.usage_summary(text, timestamptz, timestamptz) TO regress_llm_r_analyst, regress_llm_r_lead;
CREATE FUNCTION r_peek(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN
    RAISE NOTICE 'saw a row of %', $1;
    RETURN true;
END;
$$;
SET ROLE regress_llm_r_analyst;
SELECT llm.chat('one two three', 'r-smart', options => '{"tag": "analyst"}');
SELECT llm.enqueue('one two three', 'r-smart') > 0 AS queued;
RESET ROLE;
SELECT wait_queue();
SELECT wait_until($$SELECT count(*) = 2 FROM llm.usage WHERE role_oid = 'regress_llm_r_analyst'::regrole$$, 'recorded');
SET ROLE regress_llm_r_analyst;
SELECT role, mode, model, tag FROM llm.usage_log ORDER BY mode;
SELECT level, mode, calls, cost_usd FROM llm.usage_summary WHERE level <> 'model';
SELECT level, tag, calls FROM llm.usage_summary(by => 'tag') WHERE level <> 'model';
SELECT model, calls, paid_usd, baseline_usd, saved_usd, level FROM llm.cost_report();
SELECT status, items FROM llm.queue_status WHERE items > 0;
SELECT count(*) AS jobs_seen FROM llm.job_status;
-- a condition of the reader's own sees no row the view leaves out
SELECT count(*) FROM llm.usage_log WHERE r_peek(role);
SET ROLE regress_llm_r_lead;
SELECT role, count(*) FROM llm.usage_log GROUP BY role;
SELECT level, calls FROM llm.cost_report() WHERE level = 'total';
RESET ROLE;
-- an administrator sees every role's
SELECT role, count(*) FROM llm.usage_log GROUP BY role ORDER BY role;

-- 8. a key pasted as api_key_env is refused without being shown, in the
-- error and in the server log; a base_url with a path pg_llm adds warns
-- (the server log: test/regress.sh's, or the collector's of the instance
-- make installcheck starts)
\getenv server_log PG_LLM_SERVER_LOG
\if :{?server_log}
\else
SELECT pg_current_logfile() AS server_log \gset
\endif
SELECT llm.create_provider('r-pasted', 'openai', :'mock_url', api_key_env => 'sk-proj-AbCdEf0123456789GhIjKl');
SELECT llm.create_provider('r-pasted', 'openai', :'mock_url', api_key_env => 'sk_live_4eC39HqLyjWDarjtT1zdp7dc');
SELECT llm.create_provider('r-pasted', 'openai', :'mock_url', api_key_env => 'OPENAI-KEY');
SELECT llm.create_provider('r-pasted', 'openai', :'mock_url');
SELECT llm.alter_provider('r-pasted', api_key_env => 'xai-AbCdEf0123456789GhIjKlMnOp');
-- one stored before (0.2.0 took it): calls say so without showing it
UPDATE llm.provider SET api_key_env = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc' WHERE name = 'r-pasted';
SELECT llm.add_model('r-pasted', 'r-pasted', 'mock');
SELECT llm.chat('x', 'r-pasted');
\if :{?server_log}
SELECT strpos(pg_read_file(:'server_log'), 'AbCdEf0123456789') = 0
       AND strpos(pg_read_file(:'server_log'), '4eC39HqLyjWDarjtT1zdp7dc') = 0 AS not_in_the_log;
\endif
SELECT llm.drop_provider('r-pasted');
SELECT llm.create_provider('r-url', 'openai', 'https://api.openai.com/v1/chat/completions');
SELECT llm.alter_provider('r-url', base_url => 'https://api.anthropic.com/v1/messages/');
SELECT llm.alter_provider('r-url', base_url => 'https://relay.example/v1/v1');
SELECT llm.alter_provider('r-url', base_url => 'https://relay.example/v1');
SELECT base_url FROM llm.provider WHERE name = 'r-url';
SELECT llm.drop_provider('r-url');

-- 9. names: a table name with capitals is quoted in its string; a column
-- name is taken as it is written
CREATE TABLE "RSupport" (id int PRIMARY KEY, "Body" text, "Label" text);
INSERT INTO "RSupport" VALUES (1, 'x', NULL);
SELECT llm.enqueue('p', 'r-smart', target_table => 'RSupport', target_column => 'Label', target_key => '{"id": 1}');
SELECT llm.enqueue('p', 'r-smart', NULL, 'public.RSupport', 'Label', '{"id": 1}');
SELECT llm.create_job('r-caps', 'RSupport', '{id}', '{Body}', 'Label', model => 'r-smart');
SELECT llm.enqueue('p', 'r-smart', target_table => '"RSupport"', target_column => 'label', target_key => '{"id": 1}');
SELECT llm.enqueue('p', 'r-smart', target_table => '"RSupport"', target_column => '"Label"', target_key => '{"id": 1}');
SELECT llm.enqueue('p', 'r-smart', target_table => '"RSupport"', target_column => 'Label', target_key => '{"ID": 1}');
-- (another statement's missing table gets no hint of pg_llm's)
SELECT * FROM "r_gone";
SELECT count(*) FROM llm.queue WHERE target_table = '"RSupport"'::regclass;

-- 10. run_job says in the server log what it queued, nothing too
\if :{?server_log}
SELECT llm.run_job('r-nightly');
-- (the log collector writes it a moment later)
SELECT wait_until(format('SELECT strpos(pg_read_file(%L), %L) > 0', :'server_log',
                         'pg_llm: run of job "r-nightly" queued 0 rows'), 't') AS logged;
\endif

SELECT llm.drop_job('r-nightly');
DROP TABLE r_tickets, r_notes, "RSupport";
DROP FUNCTION r_peek(text);
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA llm FROM regress_llm_r_analyst, regress_llm_r_lead;
REVOKE ALL ON ALL TABLES IN SCHEMA llm FROM regress_llm_r_analyst, regress_llm_r_lead;
REVOKE USAGE ON SCHEMA llm FROM regress_llm_r_analyst, regress_llm_r_lead;
DROP ROLE regress_llm_r_lead;
DROP ROLE regress_llm_r_analyst;
SELECT llm.drop_model('r-smart'), llm.drop_model('r-free');
SELECT llm.drop_provider('r-openai'), llm.drop_provider('r-relay');
