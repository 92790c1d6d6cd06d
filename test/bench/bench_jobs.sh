#!/usr/bin/env bash
# test/bench/bench_jobs.sh: what queueing a job's rows costs, here and in
# pg_llm 0.2.0, side by side in one run (0.2.0 ran a job through functions
# generated for it; now every job goes through the extension's own code,
# run as the job's owner, and the one function that queues items).
#
# Each version is installed in a private instance (0.2.0 built from the
# history into a private copy of the server's directories, as
# test/security/before_after.sh does) with no worker (llm.database = ''),
# so only the queueing is measured, not the calls.  A role owns the tables
# and the jobs; each round, for each version, times:
#
#   run_job    llm.run_job of a job over N rows (set-based, chunks of 10,000)
#   insert     an INSERT of N rows into a job's source table (the statement
#              trigger over its transition table)
#   update     an UPDATE of the input column of M rows of a job whose result
#              is in the source table (two row triggers a row: the reset and
#              the queueing)
#   partition  an INSERT of M rows into a partitioned source (a row trigger
#              a row)
#
# and prints the median of R rounds of each, and the ratio this tree / 0.2.0.
# The ratio is the figure: both versions run on the same machine in the same
# run.  Every run checks that the items were queued (N or M of them).
#
# usage: test/bench/bench_jobs.sh [--rows N] [--row-triggers M] [--rounds R] [--before REV]
source "$(dirname "$0")/../lib.sh"
rows=100000
row_rows=5000
rounds=3
before=7865b9f12d904515ba6c1712635e13f95bfab3c3   # 0.2.0
while [ $# -gt 0 ]; do
  case $1 in
    --rows) rows=$2; shift 2 ;;
    --row-triggers) row_rows=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --before) before=$2; shift 2 ;;
    *) echo "usage: $0 [--rows N] [--row-triggers M] [--rounds R] [--before REV]" >&2; exit 2 ;;
  esac
done

scratch_dir
work=$SCRATCH
bindir=$(pg_config --bindir)
libdir=$(pg_config --pkglibdir)
sharedir=$(pg_config --sharedir)
trap 'git -C "$PG_LLM_ROOT" worktree remove --force "$work/src" 2>/dev/null; cleanup' EXIT

# the earlier version, built into its own copy of the server's directories
log "building pg_llm at $before into a private copy of the server"
prefix="$work/root"
git -C "$PG_LLM_ROOT" worktree add -q --detach "$work/src" "$before"
mkdir -p "$prefix$(dirname "$(dirname "$bindir")")" "$prefix$(dirname "$sharedir")"
cp -a "$(dirname "$bindir")" "$prefix$(dirname "$(dirname "$bindir")")/"
cp -a "$sharedir" "$prefix$(dirname "$sharedir")/"
rm -f "$prefix$libdir"/pg_llm.so "$prefix$sharedir"/extension/pg_llm*
make -C "$work/src" -s -j2 >/dev/null 2>&1
make -C "$work/src" -s install DESTDIR="$prefix" >/dev/null
old_bin="$prefix$bindir"
build_install

# one instance per version, both kept up for the whole run
declare -A port data
for v in old new; do
  d="$work/$v"
  mkdir -p "$d"
  chown -R postgres "$d" 2>/dev/null || true
  b=$bindir
  [ $v = old ] && b=$old_bin
  port[$v]=$(free_port)
  data[$v]="$d/data"
  as_pg "$b/initdb" -D "${data[$v]}" -U postgres -A trust --no-sync >/dev/null
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "port = ${port[$v]}"
    echo "unix_socket_directories = '$d'"
    echo "fsync = off"
    echo "shared_preload_libraries = 'pg_llm'"
    echo "llm.database = ''"
  } >> "${data[$v]}/postgresql.conf"
  as_pg "$b/pg_ctl" -D "${data[$v]}" -l "$d/server.log" -w start >/dev/null
done
stop_all() {
  as_pg "$old_bin/pg_ctl" -D "${data[old]}" -m immediate stop >/dev/null 2>&1 || true
  as_pg "$bindir/pg_ctl" -D "${data[new]}" -m immediate stop >/dev/null 2>&1 || true
  git -C "$PG_LLM_ROOT" worktree remove --force "$work/src" 2>/dev/null
  cleanup
}
trap stop_all EXIT

q() {
  local v=$1 c
  shift
  for c in "$@"; do
    psql -X -Atq -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${port[$v]}" -U postgres -d postgres -c "$c"
  done
}
# the seconds a statement takes (run as the jobs' owner)
timed() {
  local t0 t1
  t0=$(date +%s.%N)
  psql -X -Atq -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${port[$1]}" -U postgres -d postgres \
    -c "SET ROLE analyst" -c "$2" >/dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

for v in old new; do
  psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${port[$v]}" -U postgres -d postgres >/dev/null <<SQL
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('nowhere', 'openai', 'http://127.0.0.1:1/v1');
SELECT llm.add_model('m', 'nowhere', 'm');
CREATE ROLE analyst;
GRANT USAGE ON SCHEMA llm TO analyst;
GRANT EXECUTE ON FUNCTION llm.create_job(text, regclass, text[], text, name, regclass, text, text, jsonb, boolean, text, text),
                          llm.run_job(text), llm.drop_job(text, boolean) TO analyst;
GRANT SELECT, INSERT, DELETE ON llm.job TO analyst;
GRANT CREATE ON SCHEMA public TO analyst;
SET ROLE analyst;
CREATE TABLE docs (id int PRIMARY KEY, body text, summary text);
INSERT INTO docs SELECT g, 'document number ' || g || ' of the nightly run' FROM generate_series(1, $rows) g;
CREATE TABLE inbox (id int PRIMARY KEY, body text, summary text);
CREATE TABLE notes (id int PRIMARY KEY, body text, summary text);
INSERT INTO notes SELECT g, 'note ' || g, NULL FROM generate_series(1, $row_rows) g;
CREATE TABLE events (region text, id int, body text, label text, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
SELECT llm.create_job('backfill', 'docs', '{id}', 'Summarize: {body}', 'summary', model => 'm', track_changes => false);
SELECT llm.create_job('inbox', 'inbox', '{id}', 'Summarize: {body}', 'summary', model => 'm');
SELECT llm.create_job('notes', 'notes', '{id}', 'Summarize: {body}', 'summary', model => 'm');
SELECT llm.create_job('events', 'events', '{region,id}', 'Label: {body}', 'label', model => 'm');
SQL
done

declare -A times
expect() {  # $1 version, $2 what, $3 items expected
  local n
  n=$(q "$1" "SELECT count(*) FROM llm.queue WHERE status = 'pending'")
  [ "$n" = "$3" ] || { log "$1 $2: $n items queued, $3 expected"; exit 1; }
}
for r in $(seq 1 "$rounds"); do
  log "round $r of $rounds"
  for v in old new; do
    q $v "TRUNCATE llm.queue, inbox, events" "VACUUM ANALYZE llm.queue" >/dev/null
    times[$v,run_job]+="$(timed $v "SELECT llm.run_job('backfill')") "
    expect $v run_job "$rows"
    q $v "TRUNCATE llm.queue" "VACUUM ANALYZE llm.queue" >/dev/null
    times[$v,insert]+="$(timed $v "INSERT INTO inbox SELECT g, 'mail ' || g, NULL FROM generate_series(1, $rows) g") "
    expect $v insert "$rows"
    q $v "TRUNCATE llm.queue" "VACUUM ANALYZE llm.queue" >/dev/null
    times[$v,update]+="$(timed $v "UPDATE notes SET body = body || '.'") "
    expect $v update "$row_rows"
    q $v "TRUNCATE llm.queue" "VACUUM ANALYZE llm.queue" >/dev/null
    times[$v,partition]+="$(timed $v "INSERT INTO events SELECT CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g, 'event ' || g, NULL FROM generate_series(1, $row_rows) g") "
    expect $v partition "$row_rows"
  done
done

median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "| queueing a job's rows (median of $rounds rounds) | 0.2.0 ($before) | this tree | this tree / 0.2.0 |"
echo "|---|---|---|---|"
for m in run_job insert update partition; do
  case $m in
    run_job) what="llm.run_job over $rows rows" ;;
    insert) what="INSERT of $rows rows into a tracked table (statement trigger)" ;;
    update) what="UPDATE of the input of $row_rows rows (row triggers)" ;;
    partition) what="INSERT of $row_rows rows into a partitioned source (row trigger)" ;;
  esac
  o=$(median "${times[old,$m]}")
  n=$(median "${times[new,$m]}")
  printf '| %s | %.2f s | %.2f s | %.2f |\n' "$what" "$o" "$n" "$(echo "$n / $o" | bc -l)"
done
