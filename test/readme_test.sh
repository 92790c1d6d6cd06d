#!/usr/bin/env bash
# The README runs as written: every sql, sh and ini block of README.md and
# of test/mock/README.md, in order, against a private PostgreSQL and the
# local mock provider (test/readme_run.py says what each language means).
# The examples run in a database named app, as the README's configuration
# says; the providers' public URLs and the key files the README names are
# mapped to the mocks and to certificates made for the run (one mock
# stands for OpenAI, Anthropic and DeepSeek, another for the relay); the
# keys the README gives are the mocks' keys, and the server has them in
# the variables the README names (OPENAI_API_KEY, ANTHROPIC_API_KEY,
# DEEPSEEK_API_KEY, RELAY_KEY).  A block that cannot run fails the test,
# unless it says why it is skipped.  The README's reference tables are
# then checked against the catalog of the extension installed in app
# (test/readme_reference.py: every public function, table, view, setting
# and provider option listed, as they are, and nothing else).  The
# README's JavaScript, Python and Java snippets run in the client matrix
# (test/clients/run.sh readme).
# The last line is "readme: N passed, M failed, K skipped".
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/vendor.sh"

# the keys of the README's first try (Quick start) and of its relay
README_KEY=sk-your-key
RELAY_KEY=sk-your-relay-key
KEYS=(OPENAI_API_KEY="$README_KEY" ANTHROPIC_API_KEY="$README_KEY" DEEPSEEK_API_KEY="$README_KEY"
      RELAY_KEY="$RELAY_KEY")

vendor_pgvector >/dev/null || { echo "readme: 0 passed, 1 failed, 0 skipped"; exit 1; }
start_postgres
restart_postgres "${KEYS[@]}"
start_mock --api-key "$RELAY_KEY"
RELAY_PORT=$MOCK_PORT
start_mock --api-key "$README_KEY"
make_certs
chown -R postgres: "$CERTS" 2>/dev/null || true
createdb app

# how the runner restarts the server after an ini block: as it was
# started, with the keys in its environment and no proxy variables
scratch_dir
RESTART=$SCRATCH/restart.sh
{
  echo "set -e"
  unset_args=""
  for v in "${PG_LLM_PROXY_VARS[@]}"; do unset_args+=" -u $v"; done
  run=""
  [ "$(id -u)" -eq 0 ] && run="runuser -u postgres --"
  echo "$run env $unset_args PATH='$PATH' ${KEYS[*]} pg_ctl -D '$PGDATA_DIR' -l '$(dirname "$PGDATA_DIR")/server.log' -m fast -w restart >/dev/null"
} > "$RESTART"

cd "$PG_LLM_ROOT"
PGDATABASE=app MOCK_PORT=$MOCK_PORT RELAY_PORT=$RELAY_PORT CERTS=$CERTS PGDATA_DIR=$PGDATA_DIR README_RESTART="bash $RESTART" \
  python3 -B test/readme_run.py README.md test/mock/README.md
status=$?
if [ $status -ne 0 ]; then
  log "the last lines of the server log:"
  tail -n 20 "$PG_LLM_SERVER_LOG" >&2
fi
exit $status
