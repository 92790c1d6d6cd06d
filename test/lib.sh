# Shared shell helpers for the test runner, the demo and the benchmarks:
# install what is missing, build and install the extension, and start a
# private PostgreSQL instance and local providers on free loopback ports,
# each stopped by PID when the calling script exits.
#
# Source it, then call the functions; set PG_LLM_KEEP=1 to keep the
# instance's directory for inspection.

set -euo pipefail

PG_LLM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BINDIR=$(pg_config --bindir)
export PATH="$PG_BINDIR:$PATH"
PG_LLM_PIDS=()
PG_LLM_DIRS=()

log() { printf '==> %s\n' "$*" >&2; }

# Debian packages the build, the tests and the benchmarks need.
PG_LLM_PACKAGES=(build-essential pkg-config postgresql-15 postgresql-server-dev-15
  libcurl4-openssl-dev libjson-c-dev libkrb5-dev libipc-run-perl
  postgresql-15-cron python3 python3-requests curl clang
  libclang-rt-14-dev valgrind json-schema-test-suite)

# Install missing Debian packages when running as root.
ensure_packages() {
  local missing=()
  local p
  for p in "${PG_LLM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      log "missing packages: ${missing[*]} (run as root to install them)"
      return 1
    fi
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # Node.js (the mock provider) may come from Debian or be there already
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    [ "$(id -u)" -eq 0 ] || { log "node and npm are missing (run as root to install them)"; return 1; }
    log "installing nodejs and npm"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
}

# Build and install the extension into the server's directories.
build_install() {
  log "building pg_llm"
  make -C "$PG_LLM_ROOT" -s -j2 COPT=-Werror >/dev/null
  make -C "$PG_LLM_ROOT" -s install >/dev/null
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Stop everything this script started, by PID.
cleanup() {
  local pid
  for pid in "${PG_LLM_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  if [ -n "${PGDATA_DIR:-}" ] && [ -f "$PGDATA_DIR/postmaster.pid" ]; then
    as_pg pg_ctl -D "$PGDATA_DIR" -m immediate stop >/dev/null 2>&1 || true
  fi
  if [ "${PG_LLM_KEEP:-0}" != 1 ]; then
    local d
    for d in "${PG_LLM_DIRS[@]}"; do rm -rf "$d"; done
  fi
}
trap cleanup EXIT

# Run a command as the owner of the instance (initdb refuses root).
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- env PATH="$PATH" "$@"
  else
    "$@"
  fi
}

# A scratch directory the instance owner can write, removed at exit; the
# path is left in SCRATCH.
scratch_dir() {
  SCRATCH=$(mktemp -d /tmp/pg_llm.XXXXXX)
  chmod 755 "$SCRATCH"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$SCRATCH"; fi
  PG_LLM_DIRS+=("$SCRATCH")
}

# Start a private PostgreSQL instance; extra settings come as arguments.
# Exports PGHOST, PGPORT, PGUSER and PGDATABASE for psql and pg_regress.
start_postgres() {
  local dir port
  scratch_dir
  dir=$SCRATCH
  port=$(free_port)
  PGDATA_DIR="$dir/data"
  log "starting PostgreSQL on port $port"
  as_pg initdb -D "$PGDATA_DIR" -U postgres -A trust --no-sync >/dev/null
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$dir'"
    echo "fsync = off"
    echo "max_worker_processes = 16"
    local s
    for s in "$@"; do echo "$s"; done
  } >> "$PGDATA_DIR/postgresql.conf"
  as_pg pg_ctl -D "$PGDATA_DIR" -l "$dir/server.log" -w start >/dev/null
  export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres
  export PG_LLM_SERVER_LOG="$dir/server.log"
}

# Start the local mock provider; exports MOCK_PORT.  Extra arguments go to
# the mock (for example --latency 50).
start_mock() {
  local dir
  scratch_dir
  dir=$SCRATCH
  node "$PG_LLM_ROOT/test/mock/server.js" --port 0 --port-file "$dir/port" "$@" \
    > "$dir/mock.log" 2>&1 &
  PG_LLM_PIDS+=($!)
  local i
  for i in $(seq 1 100); do
    [ -s "$dir/port" ] && break
    sleep 0.05
  done
  [ -s "$dir/port" ] || { log "the mock provider did not start"; cat "$dir/mock.log" >&2; return 1; }
  MOCK_PORT=$(cat "$dir/port")
  export MOCK_PORT
  log "mock provider on port $MOCK_PORT"
}
