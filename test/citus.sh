# A Citus cluster on loopback for the tests and the benchmark: a
# coordinator and two worker nodes, each a private PostgreSQL instance
# preloading citus and pg_llm, Citus built from the vendored source
# (test/vendor.sh, cached per PostgreSQL version).  Source it after
# test/lib.sh; every instance is stopped by its data directory when the
# calling script exits.
#
#   start_citus_cluster [setting ...]   settings go into every node
#   cq, w1q, w2q [psql arguments]        psql on a node (-X -At, ON_ERROR_STOP)
#   citus_psql PORT [psql arguments]     the same on any port
#
# Exports CITUS_COORD, CITUS_W1, CITUS_W2 (ports) and CITUS_DIR_COORD,
# CITUS_DIR_W1, CITUS_DIR_W2 (each node's directory, with server.log).
source "$(dirname "${BASH_SOURCE[0]}")/vendor.sh"

CITUS_DATA_DIRS=()

# Stop every node of the cluster, then what lib.sh started.
citus_cleanup() {
  local d
  for d in "${CITUS_DATA_DIRS[@]}"; do
    [ -f "$d/postmaster.pid" ] && as_pg pg_ctl -D "$d" -m immediate stop >/dev/null 2>&1
  done
  cleanup
}
trap citus_cleanup EXIT

# Start one node; $1 is its name (coord, w1, w2), further arguments are
# settings.  Sets CITUS_<NAME> (port) and CITUS_DIR_<NAME>.
citus_node() {
  local name=$1 d port upper
  shift
  scratch_dir
  d=$SCRATCH
  port=$(free_port)
  as_pg initdb -D "$d/data" -U postgres -A trust --no-sync >/dev/null
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$d'"
    echo "fsync = off"
    echo "max_connections = 200"
    echo "max_worker_processes = 32"
    echo "shared_preload_libraries = 'citus,pg_llm'"
    echo "llm.database = 'postgres'"
    local s
    for s in "$@"; do echo "$s"; done
  } >> "$d/data/postgresql.conf"
  CITUS_DATA_DIRS+=("$d/data")
  PGDATA_DIR="$d/data" pg_ctl_start
  upper=$(tr '[:lower:]' '[:upper:]' <<<"$name")
  printf -v "CITUS_$upper" '%s' "$port"
  printf -v "CITUS_DIR_$upper" '%s' "$d"
  export "CITUS_$upper" "CITUS_DIR_$upper"
}

citus_psql() {
  local port=$1
  shift
  psql -X -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"
}
cq() { citus_psql "$CITUS_COORD" "$@"; }
w1q() { citus_psql "$CITUS_W1" "$@"; }
w2q() { citus_psql "$CITUS_W2" "$@"; }

# Restart one node (its directory) with the same settings.
citus_restart() {
  local d=$1
  as_pg pg_ctl -D "$d/data" -m fast -w stop >/dev/null
  PGDATA_DIR="$d/data" pg_ctl_start
}

# A node whose installation lacks pg_llm (no control file, scripts or
# library): a copy of the server's installation without them, started with
# only citus preloaded.  Sets CITUS_<NAME> and CITUS_DIR_<NAME> as
# citus_node does.
citus_bare_node() {
  local name=$1 root bin ver
  scratch_dir
  root=$SCRATCH
  ver=$(basename "$(dirname "$(pg_config --bindir)")")
  mkdir -p "$root/lib/postgresql" "$root/share/postgresql"
  cp -a "$(dirname "$(pg_config --bindir)")" "$root/lib/postgresql/"
  cp -a "$(pg_config --sharedir)" "$root/share/postgresql/"
  rm -f "$root/lib/postgresql/$ver/lib/pg_llm.so" "$root/share/postgresql/$ver/extension/"pg_llm*
  bin="$root/lib/postgresql/$ver/bin"
  [ -x "$bin/postgres" ] || { log "could not copy the installation for a bare node"; return 1; }
  PATH="$bin:$PATH" citus_node "$name" "shared_preload_libraries = 'citus'"
}

# The cluster: Citus built and installed, three nodes, the coordinator in
# the metadata and the two workers added.
start_citus_cluster() {
  vendor_citus
  log "starting a Citus cluster (coordinator and two workers)"
  citus_node coord "$@"
  citus_node w1 "$@"
  citus_node w2 "$@"
  local p
  for p in "$CITUS_W1" "$CITUS_W2" "$CITUS_COORD"; do
    citus_psql "$p" -qc "CREATE EXTENSION citus" >/dev/null
  done
  cq -qc "SELECT citus_set_coordinator_host('127.0.0.1', $CITUS_COORD)" >/dev/null
  cq -qc "SELECT citus_add_node('127.0.0.1', $CITUS_W1)" >/dev/null
  cq -qc "SELECT citus_add_node('127.0.0.1', $CITUS_W2)" >/dev/null
  export PGHOST=127.0.0.1 PGPORT=$CITUS_COORD PGUSER=postgres PGDATABASE=postgres
  export PG_LLM_SERVER_LOG="$CITUS_DIR_COORD/server.log"
  log "Citus: coordinator on port $CITUS_COORD, workers on $CITUS_W1 and $CITUS_W2"
}
