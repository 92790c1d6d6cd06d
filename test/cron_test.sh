#!/usr/bin/env bash
# pg_cron runs a pg_llm job's backfill on a schedule: a private instance
# preloading pg_cron and pg_llm, the local mock provider, a job without
# triggers, and cron.schedule(..., $$SELECT llm.run_job(...)$$).  Each run
# queues only the rows without a result, and the worker fills them in.
# pg_cron 1.5 and later take '2 seconds'; older ones run at most once a
# minute, so the test then takes about two minutes.  pg_cron runs the
# commands in background workers (cron.use_background_workers, as the
# README's recipe says: no connection over TCP, no password), and the
# scheduled command's tag carries the rows each run queued, which pg_cron
# keeps as return_message.
# The last line is "cron: N passed, M failed"; the exit status is non-zero
# on any failure.
source "$(dirname "$0")/lib.sh"

start_postgres "shared_preload_libraries = 'pg_cron,pg_llm'" "cron.database_name = 'postgres'" \
  "cron.use_background_workers = on" "llm.database = 'postgres'" "llm.worker_naptime = '200ms'"
start_mock

passed=0
failed=0
check() {   # check NAME EXPECTED ACTUAL
  if [ "$2" = "$3" ]; then
    passed=$((passed + 1)); echo "ok - $1"
  else
    failed=$((failed + 1)); echo "not ok - $1: expected '$2', got '$3'"
  fi
}
finish() {
  echo "cron: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
# wait_for SECONDS SQL: until the query returns t
wait_for() {
  local i
  for i in $(seq 1 $(($1 * 5))); do
    [ "$(q -c "$2")" = t ] && return 0
    sleep 0.2
  done
  return 1
}

q >/dev/null <<SQL
CREATE EXTENSION pg_cron;
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock', options => '{"pass_through": true}');
CREATE TABLE reviews (id int PRIMARY KEY, body text, sentiment text);
INSERT INTO reviews (id, body)
SELECT g, CASE WHEN g % 2 = 0 THEN 'great, love it' ELSE 'awful and broken' END
FROM generate_series(1, 40) g;
SELECT llm.create_job('sentiment', 'reviews', '{id}', 'Classify the sentiment of this review: {body}',
                      'sentiment', model => 'mock', track_changes => false);
SQL

version=$(q -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'")
if [ "$(q -c "SELECT string_to_array(split_part('$version', '-', 1), '.')::int[] >= '{1,5}'")" = t ]; then
  schedule='2 seconds'; timeout=60
else
  schedule='* * * * *'; timeout=150
fi
log "pg_cron $version: schedule '$schedule'"
check "the backfill is scheduled" t \
  "$(q -c "SELECT cron.schedule('sentiment-backfill', '$schedule',
                               \$\$SELECT FROM generate_series(1, llm.run_job('sentiment'))\$\$) > 0")"

# the first run queues the 40 rows; the worker answers them
if wait_for $timeout "SELECT count(*) = 40 FROM reviews WHERE sentiment IS NOT NULL"; then
  check "a scheduled run fills every row" 40 "$(q -c "SELECT count(*) FROM reviews WHERE sentiment IS NOT NULL")"
else
  check "a scheduled run fills every row" 40 "$(q -c "SELECT count(*) FROM reviews WHERE sentiment IS NOT NULL")"
  q -c "SELECT status, return_message FROM cron.job_run_details ORDER BY runid" >&2 || true
  finish
fi
check "the replies are the mock's sentiments" "negative 20 positive 20" \
  "$(q -c "SELECT string_agg(sentiment || ' ' || n, ' ' ORDER BY sentiment)
           FROM (SELECT sentiment, count(*) AS n FROM reviews GROUP BY sentiment) s")"
check "pg_cron reports the run as succeeded" t \
  "$(q -c "SELECT bool_and(status = 'succeeded') AND count(*) > 0 FROM cron.job_run_details d
           JOIN cron.job j USING (jobid) WHERE j.jobname = 'sentiment-backfill' AND d.status <> 'running'")"

# what each run queued, in pg_cron's return_message: the first run all 40
# rows, the runs while they were answered none
check "the first run says it queued 40 rows" "SELECT 40" \
  "$(q -c "SELECT d.return_message FROM cron.job_run_details d JOIN cron.job j USING (jobid)
           WHERE j.jobname = 'sentiment-backfill' AND d.status = 'succeeded' ORDER BY d.runid LIMIT 1")"
wait_for $timeout "SELECT count(*) > 0 FROM cron.job_run_details WHERE return_message = 'SELECT 0'" || true
check "a run that queued nothing says so" t \
  "$(q -c "SELECT count(*) > 0 FROM cron.job_run_details WHERE return_message = 'SELECT 0'")"

# new rows (the job has no triggers) are picked up by the next run, and
# rows that have a result are not sent again
runs=$(q -c "SELECT count(*) FROM cron.job_run_details d JOIN cron.job j USING (jobid)
             WHERE j.jobname = 'sentiment-backfill'")
q -c "INSERT INTO reviews (id, body) SELECT g, 'love it' FROM generate_series(41, 50) g"
if wait_for $timeout "SELECT count(*) = 50 FROM reviews WHERE sentiment IS NOT NULL"; then :; fi
check "the next run fills the new rows" 50 "$(q -c "SELECT count(*) FROM reviews WHERE sentiment IS NOT NULL")"
check "the run that found them says it queued 10 rows" t \
  "$(q -c "SELECT count(*) = 1 FROM cron.job_run_details WHERE return_message = 'SELECT 10'")"
check "it ran again" t \
  "$(q -c "SELECT count(*) > $runs FROM cron.job_run_details d JOIN cron.job j USING (jobid)
           WHERE j.jobname = 'sentiment-backfill'")"
check "every row was sent once" "50 50" \
  "$(q -c "SELECT count(*) || ' ' || count(DISTINCT target_key) FROM llm.queue WHERE job = 'sentiment'")"
check "the items were enqueued by the role that scheduled the run" postgres \
  "$(q -c "SELECT string_agg(DISTINCT enqueued_by::regrole::text, ',') FROM llm.queue WHERE job = 'sentiment'")"
check "job_status shows the job done" "0 0 50 0" \
  "$(q -c "SELECT pending || ' ' || running || ' ' || done || ' ' || failed FROM llm.job_status WHERE job = 'sentiment'")"

check "the schedule is removed" t "$(q -c "SELECT cron.unschedule('sentiment-backfill')")"
finish
