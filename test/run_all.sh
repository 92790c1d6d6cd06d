#!/usr/bin/env bash
# Set up everything on a fresh Debian 12 machine (as root) and run every
# test: unit tests of the pure-C parts, the mock provider's self-test, the
# pg_regress suite, live streaming and budget checks, HTTPS, HTTP/2 and
# proxies against nginx and tinyproxy, the compatibility
# cases against a third-party mock, the TAP and isolation tests, pg_cron,
# and the suite again with every backend under valgrind.  The last line
# says how many tests passed and failed.
source "$(dirname "$0")/lib.sh"
ensure_packages
build_install

passed=0
failed=0
failed_suites=()

# Run one suite; its output's "N passed, M failed" line (or pg_regress's
# summary) is added to the totals.
suite() {
  local name=$1; shift
  local out rc=0 p f
  log "suite: $name"
  out=$(mktemp)
  "$@" 2>&1 | tee "$out" || rc=${PIPESTATUS[0]}
  p=$(grep -Eo '^([a-z0-9_]+: )?[0-9]+ passed, [0-9]+ failed' "$out" | tail -1 | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+' || true)
  f=$(grep -Eo '^([a-z0-9_]+: )?[0-9]+ passed, [0-9]+ failed' "$out" | tail -1 | grep -Eo '[0-9]+ failed' | grep -Eo '[0-9]+' || true)
  if [ -z "$p" ]; then
    p=$(grep -Ec '^(ok|test) .* \.\.\. ok|^ok [0-9]+ ' "$out" || true)
    f=$(grep -Ec 'FAILED|^not ok ' "$out" || true)
  fi
  rm -f "$out"
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
  if [ $rc -ne 0 ]; then
    failed_suites+=("$name")
    [ "${f:-0}" -gt 0 ] || failed=$((failed + 1))
  fi
}

suite shape python3 "$PG_LLM_ROOT/test/bench/shape.py" --check
suite unit make -C "$PG_LLM_ROOT/test/unit" -s test
suite unit-asan make -C "$PG_LLM_ROOT/test/unit" -s asan
suite fuzz make -C "$PG_LLM_ROOT/test/unit" -s fuzz FUZZ_SECONDS=30
suite mock bash "$PG_LLM_ROOT/test/mock/selftest.sh"
suite regress bash "$PG_LLM_ROOT/test/regress.sh"
suite installcheck bash "$PG_LLM_ROOT/test/installcheck_test.sh"
suite upgrade bash "$PG_LLM_ROOT/test/upgrade.sh"
suite stream bash "$PG_LLM_ROOT/test/stream_test.sh"
suite budget bash "$PG_LLM_ROOT/test/budget_test.sh"
suite cache bash "$PG_LLM_ROOT/test/cache_test.sh"
suite embed bash "$PG_LLM_ROOT/test/embed_test.sh"
suite traffic bash "$PG_LLM_ROOT/test/traffic_test.sh"
suite transport bash "$PG_LLM_ROOT/test/transport_test.sh"
[ -f "$PG_LLM_ROOT/test/compat/run.sh" ] && suite compat bash "$PG_LLM_ROOT/test/compat/run.sh"
[ -d "$PG_LLM_ROOT/test/t" ] && suite tap bash "$PG_LLM_ROOT/test/tap.sh"
[ -f "$PG_LLM_ROOT/test/isolation.sh" ] && suite isolation bash "$PG_LLM_ROOT/test/isolation.sh"
[ -f "$PG_LLM_ROOT/test/cron_test.sh" ] && suite cron bash "$PG_LLM_ROOT/test/cron_test.sh"
suite readme bash "$PG_LLM_ROOT/test/readme_test.sh"
suite clients bash "$PG_LLM_ROOT/test/clients/run.sh"
suite unknown_host bash "$PG_LLM_ROOT/test/unknown_host.sh"
suite misconfig bash "$PG_LLM_ROOT/test/misconfig_test.sh"
# Citus 13 built from the vendored source (cached between runs)
suite citus bash "$PG_LLM_ROOT/test/citus_test.sh"
suite security bash "$PG_LLM_ROOT/test/security/before_after.sh"
suite memcheck bash "$PG_LLM_ROOT/test/memcheck.sh"
# PostgreSQL 18 built from Debian's source package (cached between runs);
# PG_LLM_SKIP_PG18=1 leaves it out of a local run
[ "${PG_LLM_SKIP_PG18:-0}" = 1 ] || suite pg18 bash "$PG_LLM_ROOT/test/pg18.sh"

if [ ${#failed_suites[@]} -gt 0 ]; then
  log "failed suites: ${failed_suites[*]}"
fi
echo "$passed passed, $failed failed"
[ $failed -eq 0 ] && [ ${#failed_suites[@]} -eq 0 ]
