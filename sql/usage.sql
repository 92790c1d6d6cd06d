-- Usage accounting: one row per call in every mode, written from shared
-- memory so that it survives the caller's ROLLBACK; the inventory, the
-- cost report and budgets.
-- earlier tests' calls are written first, then cleared
-- the mock reads its directives from the model name (mock?fail=500):
-- such names have no route, so they go unchanged to the primary provider
SET llm.pass_through = on;
SELECT wait_until('SELECT pending = 0 FROM llm.usage_buffer_status()', 'written');
TRUNCATE llm.usage;

-- prices: $1 per million input tokens, $2 per million output tokens
SELECT llm.add_model('priced', 'mock', 'mock-priced', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.add_model('priced', 'relay', 'relay-priced', priority => 200,
                     input_usd_per_mtok => 0.25, output_usd_per_mtok => 0.5);
SELECT llm.add_model('priced', 'claude', 'claude-priced', priority => 300,
                     input_usd_per_mtok => 3, output_usd_per_mtok => 15);

-- one call of each mode and outcome
SELECT llm.chat('one two three', 'priced');
SELECT string_agg(c, '') FROM llm.chat_stream('four five', 'priced') c;
SELECT llm.chat_stream('a b c d e f', 'priced') LIMIT 1;
SELECT llm.chat('x', 'mock?fail=401');
-- a call in a transaction that rolls back is still counted
BEGIN;
SELECT llm.chat('rolled back', 'priced');
ROLLBACK;
SELECT llm.enqueue('queued item', 'priced') IS NOT NULL AS queued;
SELECT wait_until('SELECT count(*) >= 6 FROM llm.usage', 'written');
SELECT mode, outcome, provider, model, upstream_model, http_status, attempts, fallback,
       input_tokens, output_tokens, cost_usd, ttft_ms IS NOT NULL AS has_ttft,
       role_oid::regrole AS role
FROM llm.usage ORDER BY mode, outcome, input_tokens;
-- the cost is the provider's own token counts times the route's prices
SELECT bool_and(cost_usd = input_tokens * 1.0 / 1e6 + output_tokens * 2.0 / 1e6) AS costs_match
FROM llm.usage WHERE provider = 'mock' AND model = 'priced' AND input_tokens IS NOT NULL;

-- the inventory
SELECT mode, provider, model, calls, ok, not_ok, input_tokens, output_tokens, cost_usd
FROM llm.usage_summary;
-- what was paid against the same tokens on the dearest route of each
-- model (claude's prices), on the route that served them (mock: nothing
-- saved), and on a cheaper one (relay: a loss)
SELECT model, served_by, baseline_provider, calls, input_tokens, output_tokens, paid_usd, baseline_usd,
       saved_usd, saved_pct, saved_provider_usd, level
FROM llm.cost_report();
SELECT model, baseline_provider, paid_usd, baseline_usd, saved_usd, saved_pct
FROM llm.cost_report('mock') WHERE level = 'total';
SELECT model, baseline_provider, paid_usd, baseline_usd, saved_usd, saved_pct
FROM llm.cost_report('relay') WHERE level = 'total';

-- budgets: a role over its budget cannot call; nothing is sent
CREATE ROLE regress_llm_budgeted;
GRANT USAGE ON SCHEMA llm TO regress_llm_budgeted;
GRANT EXECUTE ON FUNCTION llm.chat(text, text, text, jsonb), llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text, text, text) TO regress_llm_budgeted;
GRANT SELECT ON llm.usage TO regress_llm_budgeted;
SELECT llm.set_budget('regress_llm_budgeted', NULL, 2);
SET ROLE regress_llm_budgeted;
SELECT llm.chat('first', 'priced');
SELECT llm.chat('second', 'priced');
SELECT llm.chat('third', 'priced');
RESET ROLE;
SELECT llm.set_budget('regress_llm_budgeted', 0.000001);
SET ROLE regress_llm_budgeted;
SELECT llm.chat('over the dollar budget', 'priced');
RESET ROLE;
-- queue items of a role over budget fail without being sent
SET ROLE regress_llm_budgeted;
SELECT llm.enqueue('queued over budget', 'priced') AS over_id \gset
RESET ROLE;
SELECT wait_until(format('SELECT status IN (''done'', ''failed'') FROM llm.queue WHERE id = %s', :over_id), 'finished');
SELECT status, error FROM llm.queue WHERE id = :over_id;
-- it was never sent, so it has no usage row: the role has the rows of its two calls
SELECT wait_until('SELECT count(*) >= 8 FROM llm.usage', 'written');
SELECT count(*) FROM llm.usage WHERE role_oid = 'regress_llm_budgeted'::regrole;
SELECT role, usd_per_month, calls_per_month, calls FROM llm.budgets;
-- a plain role sees only its own usage
SET ROLE regress_llm_budgeted;
SELECT count(*) AS own_rows, bool_and(role_oid = 'regress_llm_budgeted'::regrole) AS all_own FROM llm.usage;
RESET ROLE;
SELECT llm.set_budget('regress_llm_budgeted', NULL, NULL);
SELECT count(*) FROM llm.budget;
SELECT llm.set_budget('regress_llm_budgeted', -1);
SELECT pending >= 0 AS ok, dropped FROM llm.usage_buffer_status();

REVOKE ALL ON llm.usage FROM regress_llm_budgeted;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA llm FROM regress_llm_budgeted;
REVOKE ALL ON SCHEMA llm FROM regress_llm_budgeted;
DROP ROLE regress_llm_budgeted;

-- every request sent is in llm.usage: an attempt that failed before a
-- successful retry, or before the next route of its chain, has a row of
-- its own (outcome retry, what happened in error), in every mode.  Its
-- tokens are estimated where the provider may have charged (a request
-- that went out whole and timed out or was cut before any status, a 2xx
-- that could not be read, a stream cut before its first row), none where
-- it cannot have (an error status, a host never reached)
SELECT pg_sleep(0.5);
TRUNCATE llm.usage;
SET llm.timeout = '1s';
SELECT llm.add_model(m, 'mock', 'mock?' || d, input_usd_per_mtok => 1, output_usd_per_mtok => 2)
FROM (VALUES ('att-hang', 'fault=hang&times=1'), ('att-cut', 'fault=truncate&cut_after=0&times=1'),
             ('att-500', 'fail=500&times=1'), ('att-unreadable', 'fault=malformed&times=1')) v(m, d);
SELECT llm.add_model('att-chain', 'mock', 'mock?fault=hang', priority => 1, input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.add_model('att-chain', 'relay', 'mock', priority => 2, input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.chat('slow at first', 'att-hang');
SELECT llm.chat('cut at first', 'att-cut');
SELECT llm.chat('failed at first', 'att-500');
SELECT llm.chat('garbled at first', 'att-unreadable');
SET llm.max_retries = 0;
SELECT llm.chat('the first route hangs', 'att-chain');
RESET llm.max_retries;
SELECT ord, content, error FROM llm.chat_many(ARRAY['many cut at first'], 'att-cut');
SELECT string_agg(c, '') FROM llm.chat_stream('stream cut at first', 'att-cut') c;
SELECT llm.enqueue('queued cut at first', 'att-cut') IS NOT NULL AS queued;
SELECT wait_queue();
RESET llm.timeout;
SELECT wait_until('SELECT count(*) >= 16 FROM llm.usage', 'written');
SELECT model, mode, provider, outcome, attempts, http_status, input_tokens > 0 AS input, output_tokens,
       estimated, cost_usd > 0 AS paid, fallback, error
FROM llm.usage ORDER BY model, mode, outcome;
-- the retried attempts count against a budget in USD, not in calls
SELECT count(*) FILTER (WHERE outcome <> 'retry') AS calls, count(*) FILTER (WHERE outcome = 'retry') AS retried,
       sum(cost_usd) FILTER (WHERE outcome = 'retry') > 0 AS retried_paid
FROM llm.usage;
-- and the inventory counts them so too: calls, their retries apart, the
-- retries' tokens and cost in the sums (as llm.cost_report and llm.budgets)
SELECT level, mode, calls, ok, not_ok, retries, cost_usd = (SELECT round(sum(cost_usd), 6) FROM llm.usage u WHERE u.mode = s.mode OR s.mode IS NULL) AS all_paid
FROM llm.usage_summary s WHERE level <> 'model';
SELECT c.calls AS cost_report_calls, s.calls AS usage_summary_calls
FROM llm.cost_report() c, llm.usage_summary s WHERE c.level = 'total' AND s.level = 'total';
SELECT llm.drop_model(m) FROM unnest(ARRAY['att-hang', 'att-cut', 'att-500', 'att-unreadable', 'att-chain']) m;
