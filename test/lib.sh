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
  libclang-rt-14-dev valgrind json-schema-test-suite openssl nginx-light tinyproxy)

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

# The proxy variables a server must not inherit from the machine running
# the tests: nothing in a suite depends on them (test/transport_test.sh
# sets them itself where it tests them).
PG_LLM_PROXY_VARS=(http_proxy https_proxy HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY)

# pg_ctl start for the instance in PGDATA_DIR, with the proxy variables
# removed from its environment and NAME=VALUE arguments added to it; the
# limit on open files is PG_LLM_NOFILE_SOFT and PG_LLM_NOFILE_HARD when
# set (as a server started by systemd gets LimitNOFILE).
pg_ctl_start() {
  local unset=() v
  for v in "${PG_LLM_PROXY_VARS[@]}"; do unset+=(-u "$v"); done
  (
    if [ -n "${PG_LLM_NOFILE_HARD:-}" ]; then
      # the soft limit may not stay above the hard one
      [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -le "$PG_LLM_NOFILE_HARD" ] ||
        ulimit -Sn "$PG_LLM_NOFILE_HARD"
      ulimit -Hn "$PG_LLM_NOFILE_HARD"
    fi
    if [ -n "${PG_LLM_NOFILE_SOFT:-}" ]; then ulimit -Sn "$PG_LLM_NOFILE_SOFT"; fi
    as_pg env "${unset[@]}" "$@" pg_ctl -D "$PGDATA_DIR" -l "$(dirname "$PGDATA_DIR")/server.log" -w start >/dev/null
  )
}

# Restart the instance of start_postgres; NAME=VALUE arguments go into
# the server's environment.
restart_postgres() {
  as_pg pg_ctl -D "$PGDATA_DIR" -m fast -w stop >/dev/null
  pg_ctl_start "$@"
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
  pg_ctl_start
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

# Certificates for the TLS tests and benchmarks, made with openssl in a
# scratch directory (left in CERTS): a private CA (ca.pem), a server
# certificate for localhost and 127.0.0.1 (server.pem, server.key), one
# for another host name (wrong.pem, wrong.key), an expired one
# (expired.pem, expired.key), a client certificate for mutual TLS
# (client.pem, client.key), and a second CA that signed none of them
# (other_ca.pem).  EC P-256 keys throughout, as most public endpoints
# use.  Nothing here reads or changes the machine's own CA store.
make_certs() {
  local d
  scratch_dir
  d=$SCRATCH
  CERTS=$d
  (
    cd "$d"
    key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
    key ca.key
    openssl req -x509 -new -key ca.key -days 3650 -subj '/CN=pg_llm test CA' \
      -addext 'basicConstraints=critical,CA:true' -addext 'keyUsage=critical,keyCertSign,cRLSign' \
      -out ca.pem 2>/dev/null
    key other_ca.key
    openssl req -x509 -new -key other_ca.key -days 3650 -subj '/CN=pg_llm other CA' \
      -addext 'basicConstraints=critical,CA:true' -addext 'keyUsage=critical,keyCertSign,cRLSign' \
      -out other_ca.pem 2>/dev/null
    # signed with openssl ca, which can date a certificate in the past
    mkdir -p ca.db
    : > ca.db/index.txt
    echo 1000 > ca.db/serial
    cat > ca.cnf <<CNF
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = $d
database = \$dir/ca.db/index.txt
serial = \$dir/ca.db/serial
new_certs_dir = \$dir/ca.db
certificate = \$dir/ca.pem
private_key = \$dir/ca.key
default_md = sha256
policy = any
unique_subject = no
copy_extensions = copy
[ any ]
commonName = supplied
CNF
    cert() {  # name subject-cn san extended-key-usage [startdate enddate]
      key "$1.key"
      openssl req -new -key "$1.key" -subj "/CN=$2" -addext "subjectAltName=$3" \
        -addext "extendedKeyUsage=$4" -out "$1.csr" 2>/dev/null
      if [ $# -ge 6 ]; then
        openssl ca -batch -config ca.cnf -in "$1.csr" -out "$1.pem" -notext \
          -startdate "$5" -enddate "$6" >/dev/null 2>&1
      else
        openssl ca -batch -config ca.cnf -in "$1.csr" -out "$1.pem" -notext -days 3650 >/dev/null 2>&1
      fi
    }
    cert server localhost 'DNS:localhost,IP:127.0.0.1' serverAuth
    cert wrong wrong.example 'DNS:wrong.example' serverAuth
    cert expired localhost 'DNS:localhost,IP:127.0.0.1' serverAuth 20200101000000Z 20200102000000Z
    cert client pg_llm-client 'DNS:pg_llm-client' clientAuth
    # the private keys belong to the server's user, as the server wants them
    chmod 600 ./*.key
  )
  [ -s "$d/expired.pem" ] && [ -s "$d/client.pem" ] || { log "could not make the test certificates"; return 1; }
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$d"; fi
}

# nginx (Debian's nginx-light) as the TLS and HTTP/2 terminator in front
# of the mock (MOCK_PORT), with the certificates of make_certs.  Exports
# the ports it listens on (all on 127.0.0.1):
#   NGINX_H2     TLS, HTTP/2 or HTTP/1.1 by ALPN (server.pem)
#   NGINX_H1     TLS, HTTP/1.1 only
#   NGINX_MTLS   TLS that wants a client certificate signed by ca.pem
#   NGINX_WRONG  TLS with the certificate of another host name
#   NGINX_EXPIRED TLS with an expired certificate
#   NGINX_PLAIN  plain HTTP/1.1
#   NGINX_H2C    plain HTTP/2 with prior knowledge (h2c)
#   NGINX_TLS12  TLS 1.2 only, HTTP/1.1 only: its sessions are made during
#                the handshake and resumed as they are, so whether a new
#                connection resumes one does not depend on timing
#   NGINX_NORESUME TLS (HTTP/2 or 1.1) without session resumption: every
#                connection is a full handshake with the certificate checked
#   NGINX_FROM2  TLS (HTTP/2 or 1.1) and NGINX_FROM2_PLAIN (plain HTTP/1.1)
#                answering only connections from 127.0.0.2 (the egress
#                proxy binds there): a request that bypasses the proxy gets 403
# GET /_nginx_status (stub_status) on any of them counts the connections
# accepted ("accepts").  With NGINX_ACCESS_LOG=1, $NGINX_DIR/access.log
# has a line a request: the port, "r" for a resumed TLS session (else
# "."), the HTTP version and the client's address.  Extra nginx
# http-level directives may come as arguments.
start_nginx() {
  local d p
  scratch_dir
  d=$SCRATCH
  NGINX_DIR=$d
  for p in H2 H1 TLS12 MTLS WRONG EXPIRED PLAIN H2C NORESUME FROM2 FROM2_PLAIN; do
    printf -v "NGINX_$p" '%s' "$(free_port)"
    export "NGINX_$p"
  done
  mkdir -p "$d/tmp"
  local extra
  extra=$(printf '%s\n' "$@")
  local loc="
        location = /_nginx_status { stub_status; }
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }"
  cat > "$d/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
error_log $d/error.log warn;
pid $d/nginx.pid;
events { worker_connections 16384; multi_accept on; }
http {
    log_format tls '\$server_port \$ssl_session_reused \$server_protocol \$remote_addr';
    $([ "${NGINX_ACCESS_LOG:-0}" = 1 ] && echo "access_log $d/access.log tls;" || echo "access_log off;")
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    client_max_body_size 0;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    http2_max_requests 1000000;
    http2_max_concurrent_streams 128;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:tls:10m;
    ssl_certificate $CERTS/server.pem;
    ssl_certificate_key $CERTS/server.key;
    upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 1024; keepalive_requests 1000000; }
    $extra
    server { listen 127.0.0.1:$NGINX_H2 backlog=4096 ssl http2; $loc }
    server { listen 127.0.0.1:$NGINX_H1 backlog=4096 ssl; $loc }
    server { listen 127.0.0.1:$NGINX_TLS12 backlog=4096 ssl; ssl_protocols TLSv1.2; $loc }
    server { listen 127.0.0.1:$NGINX_PLAIN backlog=4096; $loc }
    server { listen 127.0.0.1:$NGINX_H2C backlog=4096 http2; $loc }
    server { listen 127.0.0.1:$NGINX_MTLS backlog=4096 ssl http2;
             ssl_client_certificate $CERTS/ca.pem; ssl_verify_client on; $loc }
    server { listen 127.0.0.1:$NGINX_WRONG backlog=4096 ssl;
             ssl_certificate $CERTS/wrong.pem; ssl_certificate_key $CERTS/wrong.key; $loc }
    server { listen 127.0.0.1:$NGINX_EXPIRED backlog=4096 ssl;
             ssl_certificate $CERTS/expired.pem; ssl_certificate_key $CERTS/expired.key; $loc }
    server { listen 127.0.0.1:$NGINX_NORESUME backlog=4096 ssl http2;
             ssl_session_cache off; ssl_session_tickets off; $loc }
    server { listen 127.0.0.1:$NGINX_FROM2 backlog=4096 ssl http2; allow 127.0.0.2; deny all; $loc }
    server { listen 127.0.0.1:$NGINX_FROM2_PLAIN backlog=4096; allow 127.0.0.2; deny all; $loc }
}
CONF
  nginx -t -q -p "$d" -c "$d/nginx.conf" 2>"$d/test.log" ||
    { log "nginx refused its configuration"; cat "$d/test.log" >&2; return 1; }
  nginx -p "$d" -c "$d/nginx.conf" > "$d/nginx.log" 2>&1 &
  PG_LLM_PIDS+=($!)
  NGINX_PID=$!
  local i
  for i in $(seq 1 100); do
    curl -s -o /dev/null --cacert "$CERTS/ca.pem" "https://127.0.0.1:$NGINX_H2/_nginx_status" && break
    sleep 0.05
  done
  curl -sf -o /dev/null --cacert "$CERTS/ca.pem" "https://127.0.0.1:$NGINX_H2/_nginx_status" ||
    { log "nginx did not start"; cat "$d/error.log" "$d/nginx.log" >&2; return 1; }
  log "nginx on ports $NGINX_H2 (h2), $NGINX_H1 (http/1.1), $NGINX_PLAIN (plain)"
}

# Connections nginx has accepted so far (its stub_status), the request
# that asks included.
nginx_accepts() {
  curl -s "http://127.0.0.1:$NGINX_PLAIN/_nginx_status" | awk 'NR == 3 {print $1}'
}

# tinyproxy as an egress proxy on 127.0.0.1 whose outgoing connections
# come from 127.0.0.2 (see NGINX_FROM2).  $1: a name for it; $2: "user:password"
# for Basic authentication, or empty; further arguments are extra
# configuration lines.  Exports TINYPROXY_PORT and TINYPROXY_LOG.
start_tinyproxy() {
  local name=$1 auth=$2 d port
  shift 2
  scratch_dir
  d=$SCRATCH
  port=$(free_port)
  {
    echo "Port $port"
    echo "Listen 127.0.0.1"
    echo "Bind 127.0.0.2"
    echo "Timeout 600"
    echo "MaxClients 2000"
    echo "Allow 127.0.0.1"
    echo "LogLevel Connect"
    echo "LogFile \"$d/tinyproxy.log\""
    echo "PidFile \"$d/tinyproxy.pid\""
    [ -n "$auth" ] && echo "BasicAuth ${auth%%:*} ${auth#*:}"
    [ "$(id -u)" -eq 0 ] && { echo "User postgres"; echo "Group postgres"; }
    local l
    for l in "$@"; do echo "$l"; done
  } > "$d/tinyproxy.conf"
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$d"; fi
  tinyproxy -d -c "$d/tinyproxy.conf" > "$d/stdout.log" 2>&1 &
  PG_LLM_PIDS+=($!)
  local i
  for i in $(seq 1 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2).close()" 2>/dev/null && break
    sleep 0.05
  done
  TINYPROXY_PORT=$port
  TINYPROXY_LOG=$d/tinyproxy.log
  export TINYPROXY_PORT TINYPROXY_LOG
  log "tinyproxy $name on port $port"
}
