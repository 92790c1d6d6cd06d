#!/usr/bin/env bash
# The hostile-input reviews' findings against the commit before each
# review's fixes and against the working tree, side by side: each line says
# whether the finding holds in each.  Every test/security/findings*.sql is
# one review; its "-- before: REV" line names the earlier commit (for
# findings.sql, the last one before the first security fixes: pg_llm 0.1.0).
#   bash test/security/before_after.sh [--before REV] [findings files...]
# (--before overrides every file's own.)  Each earlier version is built into
# a private copy of the server's directories (the server finds its
# extensions relative to its binary), so the installed pg_llm is not
# touched by it; the working tree is built and installed as the other tests
# do.
source "$(dirname "$0")/../lib.sh"
override=
files=()
while [ $# -gt 0 ]; do
  case $1 in
    --before) override=$2; shift 2 ;;
    -*) echo "usage: $0 [--before REV] [findings files...]" >&2; exit 2 ;;
    *) files+=("$1"); shift ;;
  esac
done
[ ${#files[@]} -gt 0 ] || files=("$PG_LLM_ROOT"/test/security/findings*.sql)

scratch_dir
work=$SCRATCH
bindir=$(pg_config --bindir)
libdir=$(pg_config --pkglibdir)
sharedir=$(pg_config --sharedir)
trees=()
trap 'for t in "${trees[@]}"; do git -C "$PG_LLM_ROOT" worktree remove --force "$t" 2>/dev/null; done; cleanup' EXIT

# an earlier version, built into its own copy of the server's directories;
# prints that copy's bin directory
build_before() {
  local rev=$1 prefix="$work/root-$1"
  if [ ! -d "$prefix" ]; then
    log "building pg_llm at $rev into a private copy of the server"
    git -C "$PG_LLM_ROOT" worktree add -q --detach "$work/src-$rev" "$rev"
    trees+=("$work/src-$rev")
    mkdir -p "$prefix$(dirname "$(dirname "$bindir")")" "$prefix$(dirname "$sharedir")"
    cp -a "$(dirname "$bindir")" "$prefix$(dirname "$(dirname "$bindir")")/"
    cp -a "$sharedir" "$prefix$(dirname "$sharedir")/"
    rm -f "$prefix$libdir"/pg_llm.so "$prefix$sharedir"/extension/pg_llm*
    make -C "$work/src-$rev" -s -j2 >/dev/null 2>&1
    make -C "$work/src-$rev" -s install DESTDIR="$prefix" >/dev/null
  fi
  echo "$prefix$bindir"
}

run_findings() {  # $1: the bin directory of the server to run; $2 the findings; output in $3
  local bin=$1 findings=$2 out=$3 saved_path=$PATH
  PATH="$bin:$PATH"
  start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'" \
    "llm.worker_naptime = '500ms'"
  psql -X -q -v openai_url="http://127.0.0.1:$MOCK_PORT/v1" -v mock_port="$MOCK_PORT" \
    -f "$findings" > "$out" 2>/dev/null || true
  if [ "$(basename "$findings")" = findings.sql ]; then
    sleep 10   # finding 4: does the server stay up?
    local crashes item
    crashes=$(grep -c 'terminated by signal' "$PG_LLM_SERVER_LOG" || true)
    item=$(psql -X -Atq -c "SELECT status || coalesce(': ' || error, '') FROM llm.queue WHERE prompt = 'into a table about to go'" 2>/dev/null || echo "no answer: the server is restarting")
    if [ "$crashes" -gt 0 ]; then
      echo "a target table dropped after enqueue | UNSAFE | $crashes server crashes in 10 s; the item: $item" >> "$out"
    else
      echo "a target table dropped after enqueue | safe | no crash; the item: $item" >> "$out"
    fi
  fi
  as_pg pg_ctl -D "$PGDATA_DIR" -m immediate stop >/dev/null 2>&1 || true
  PATH=$saved_path
}

start_mock
build_install
passed=0
failed=0
for f in "${files[@]}"; do
  before=${override:-$(sed -n 's/^-- before: *\([0-9a-f]*\).*/\1/p' "$f" | head -1)}
  name=$(basename "$f" .sql)
  if [ -z "$before" ] || ! git -C "$PG_LLM_ROOT" cat-file -e "$before^{commit}" 2>/dev/null; then
    echo "$name: skipped, commit ${before:-?} is not in this clone's history"
    continue
  fi
  run_findings "$(build_before "$before")" "$f" "$work/$name.before.txt"
  run_findings "$bindir" "$f" "$work/$name.after.txt"
  printf '\n%s\n\n| finding | %s | working tree |\n|---|---|---|\n' "$name" "$before"
  while IFS='|' read -r fname verdict detail; do
    fname=$(echo "$fname" | sed 's/^ *//; s/ *$//')
    was=$(grep -F "$fname |" "$work/$name.before.txt" | head -1 | cut -d'|' -f2- | sed 's/^ *//; s/ | /: /' || true)
    now="$(echo "$verdict" | sed 's/^ *//; s/ *$//'): $(echo "$detail" | sed 's/^ *//')"
    printf '| %s | %s | %s |\n' "$fname" "${was:-no answer}" "$now"
    case "$now" in
      safe*) passed=$((passed + 1)) ;;
      *) failed=$((failed + 1)) ;;
    esac
  done < <(grep ' | ' "$work/$name.after.txt")
done
echo
echo "security: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
