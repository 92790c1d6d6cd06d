#!/usr/bin/env bash
# The hostile-input review's findings (test/security/findings.sql) against
# an earlier commit and against the working tree, side by side: each line
# says whether the finding holds in each.  The earlier commit defaults to
# the last one before the security fixes (pg_llm 0.1.0).
#   bash test/security/before_after.sh [--before REV]
# The earlier version is built into a private copy of the server's
# directories (the server finds its extensions relative to its binary), so
# the installed pg_llm is not touched by it; the working tree is built and
# installed as the other tests do.
source "$(dirname "$0")/../lib.sh"
before=d4e23b5
while [ $# -gt 0 ]; do
  case $1 in
    --before) before=$2; shift 2 ;;
    *) echo "usage: $0 [--before REV]" >&2; exit 2 ;;
  esac
done

if ! git -C "$PG_LLM_ROOT" cat-file -e "$before^{commit}" 2>/dev/null; then
  echo "skipped: commit $before is not in this clone's history"
  exit 0
fi
scratch_dir
work=$SCRATCH
bindir=$(pg_config --bindir)
libdir=$(pg_config --pkglibdir)
sharedir=$(pg_config --sharedir)

# the earlier version, in a copy of the server's directories
log "building pg_llm at $before into a private copy of the server"
git -C "$PG_LLM_ROOT" worktree add -q --detach "$work/src" "$before"
trap 'git -C "$PG_LLM_ROOT" worktree remove --force "$work/src" 2>/dev/null; cleanup' EXIT
prefix="$work/root"
mkdir -p "$prefix$(dirname "$(dirname "$bindir")")" "$prefix$(dirname "$sharedir")"
cp -a "$(dirname "$bindir")" "$prefix$(dirname "$(dirname "$bindir")")/"
cp -a "$sharedir" "$prefix$(dirname "$sharedir")/"
rm -f "$prefix$libdir"/pg_llm.so "$prefix$sharedir"/extension/pg_llm*
make -C "$work/src" -s -j2 >/dev/null 2>&1
make -C "$work/src" -s install DESTDIR="$prefix" >/dev/null

run_findings() {  # $1: the bin directory of the server to run; output in $2
  local bin=$1 out=$2 saved_path=$PATH
  PATH="$bin:$PATH"
  start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'" \
    "llm.worker_naptime = '500ms'"
  psql -X -q -v openai_url="http://127.0.0.1:$MOCK_PORT/v1" -f "$PG_LLM_ROOT/test/security/findings.sql" \
    > "$out" 2>/dev/null || true
  sleep 10   # finding 4: does the server stay up?
  local crashes item
  crashes=$(grep -c 'terminated by signal' "$PG_LLM_SERVER_LOG" || true)
  item=$(psql -X -Atq -c "SELECT status || coalesce(': ' || error, '') FROM llm.queue WHERE prompt = 'into a table about to go'" 2>/dev/null || echo "no answer: the server is restarting")
  if [ "$crashes" -gt 0 ]; then
    echo "a target table dropped after enqueue | UNSAFE | $crashes server crashes in 10 s; the item: $item" >> "$out"
  else
    echo "a target table dropped after enqueue | safe | no crash; the item: $item" >> "$out"
  fi
  as_pg pg_ctl -D "$PGDATA_DIR" -m immediate stop >/dev/null 2>&1 || true
  PATH=$saved_path
}

start_mock
run_findings "$prefix$bindir" "$work/before.txt"
build_install
run_findings "$bindir" "$work/after.txt"

printf '\n| finding | %s | working tree |\n|---|---|---|\n' "$before"
passed=0
failed=0
while IFS='|' read -r name verdict detail; do
  name=$(echo "$name" | sed 's/^ *//; s/ *$//')
  was=$(grep -F "$name |" "$work/before.txt" | head -1 | cut -d'|' -f2- | sed 's/^ *//; s/ | /: /')
  now="$(echo "$verdict" | sed 's/^ *//; s/ *$//'): $(echo "$detail" | sed 's/^ *//')"
  printf '| %s | %s | %s |\n' "$name" "${was:-no answer}" "$now"
  case "$now" in
    safe*) passed=$((passed + 1)) ;;
    *) failed=$((failed + 1)) ;;
  esac
done < <(grep ' | ' "$work/after.txt")
echo
echo "security: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
