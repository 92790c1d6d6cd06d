#!/usr/bin/env bash
# The error of llm.estimate's input tokens (the tokenizer-free estimate
# behind budgets, rate limits and llm.estimate) against real token counts:
# each prompt of test/bench/estimate_corpus.js (English, Vietnamese, code
# and JSON, short and long; 400 prompts, the same at every run) is
# estimated, then sent through llm.chat to the mock provider, which counts
# the request's input tokens with OpenAI's o200k_base vocabulary
# (gpt-tokenizer, from npm into test/mock: each message's text, 3 tokens a
# message, 3 a request) and bills them in its usage.  Prints, per kind and
# over all: the summed error, the median and 95th percentile of the error
# of one request, and the extremes.  Also the same figures for the
# estimate pg_llm used before (a quarter of the request's bytes), side by
# side.  Usage: bash test/bench/bench_estimate.sh [--seed N]
source "$(dirname "$0")/../lib.sh"
seed=42
while [ $# -gt 0 ]; do
  case $1 in
    --seed) seed=$2; shift 2 ;;
    *) echo "usage: $0 [--seed N]" >&2; exit 2 ;;
  esac
done
if [ ! -d "$PG_LLM_ROOT/test/mock/node_modules/gpt-tokenizer" ]; then
  log "installing gpt-tokenizer into test/mock"
  (cd "$PG_LLM_ROOT/test/mock" && npm install --no-audit --no-fund --loglevel=error) >&2 ||
    { log "npm install in test/mock failed"; exit 1; }
fi
build_install
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'"
start_mock --config '{"token_count": "o200k"}'
node "$PG_LLM_ROOT/test/bench/estimate_corpus.js" "$seed" > "$SCRATCH/prompts.json"
node "$PG_LLM_ROOT/test/bench/estimate_corpus.js" "$seed" --kinds > "$SCRATCH/kinds.json"
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock');
SELECT llm.add_model('m', 'mock', 'mock', input_usd_per_mtok => 1, output_usd_per_mtok => 1);
CREATE TABLE corpus (ord int PRIMARY KEY, kind text, prompt text, estimated bigint, billed bigint);
INSERT INTO corpus (ord, kind, prompt)
SELECT p.ord, k.kind, p.prompt
FROM jsonb_array_elements_text(pg_read_file('$SCRATCH/prompts.json')::jsonb) WITH ORDINALITY AS p(prompt, ord)
JOIN jsonb_array_elements_text(pg_read_file('$SCRATCH/kinds.json')::jsonb) WITH ORDINALITY AS k(kind, ord)
  USING (ord);
UPDATE corpus SET estimated = (SELECT e.input_tokens FROM llm.estimate(ARRAY[prompt], 'm', NULL, '{"max_tokens": 1}') e);
SQL
# each prompt sent once, in order, then its billed input tokens read back
psql -X -q -v ON_ERROR_STOP=1 -c "SELECT count(llm.chat(prompt, 'm', NULL, '{\"max_tokens\": 1}')) FROM (SELECT prompt FROM corpus ORDER BY ord) s" >/dev/null
for i in $(seq 1 200); do
  [ "$(psql -X -Atq -c "SELECT count(*) FROM llm.usage WHERE model = 'm'")" -ge "$(psql -X -Atq -c "SELECT count(*) FROM corpus")" ] && break
  sleep 0.1
done
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
WITH u AS (SELECT row_number() OVER (ORDER BY ts) AS ord, input_tokens FROM llm.usage WHERE model = 'm')
UPDATE corpus c SET billed = u.input_tokens FROM u WHERE u.ord = c.ord;
\echo
\echo 'input tokens: the estimate against the o200k_base count the mock billed (error = estimate / billed - 1)'
WITH e AS (
    SELECT kind, estimated, billed, octet_length(prompt) AS bytes,
           estimated::float8 / billed - 1 AS err,
           -- the estimate before: a quarter of the bytes of prompt and request
           (octet_length(prompt) / 4 + 1)::float8 / billed - 1 AS err_bytes
    FROM corpus)
SELECT coalesce(kind, 'all') AS kind, count(*) AS prompts,
       sum(billed) AS billed, sum(estimated) AS estimated,
       round(100 * (sum(estimated)::numeric / sum(billed) - 1), 1) AS "sum err %",
       round(100 * percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(err))::numeric, 1) AS "median |err| %",
       round(100 * percentile_cont(0.95) WITHIN GROUP (ORDER BY abs(err))::numeric, 1) AS "p95 |err| %",
       round(100 * min(err)::numeric, 1) AS "min err %", round(100 * max(err)::numeric, 1) AS "max err %",
       round(100 * (sum(bytes / 4 + 1)::numeric / sum(billed) - 1), 1) AS "bytes/4: sum err %",
       round(100 * percentile_cont(0.95) WITHIN GROUP (ORDER BY abs(err_bytes))::numeric, 1) AS "bytes/4: p95 |err| %"
FROM e GROUP BY ROLLUP (kind) ORDER BY GROUPING(kind), kind;
SQL
