#!/usr/bin/env bash
# Real transport: every call path over HTTPS, HTTP/2 multiplexing, TLS
# sessions and the CA store shared by a backend's calls, proxies, private
# CAs and client certificates, the errors that name what failed, and a
# thousand requests in flight under a low limit on open files.
#
# Real parts on loopback: Debian's nginx (nginx-light) terminates TLS and
# HTTP/2 in front of the mock provider, tinyproxy is the egress proxy
# (with and without credentials), and the certificates are made here with
# openssl: a private CA, server certificates, one for another host name,
# an expired one, a client certificate (test/lib.sh).  Nothing depends on
# the machine's CA store or environment: every provider names its CA
# file, and the server starts without the proxy variables except where
# they are the subject.  The endpoint behind the proxy answers only
# connections that come from the proxy's address, so a request that
# bypasses the proxy fails.  Margins are wide: these check what happened,
# never how fast.
source "$(dirname "$0")/lib.sh"
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'" \
  "llm.worker_naptime = '200ms'" "llm.batch_poll_interval = 1" "llm.lease_time = '30s'"
start_mock
make_certs
NGINX_ACCESS_LOG=1 start_nginx
start_tinyproxy open ""
OPEN_PROXY=$TINYPROXY_PORT
OPEN_PROXY_LOG=$TINYPROXY_LOG
start_tinyproxy auth "pgllm:Pr0xy-Secret-77"
AUTH_PROXY=$TINYPROXY_PORT
start_tinyproxy strict "" "ConnectPort 443"
STRICT_PROXY=$TINYPROXY_PORT
M="http://127.0.0.1:$MOCK_PORT"
CA=$CERTS/ca.pem

pass=0
fail=0
check() {
  if [ "$2" = 1 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1"; fi
}
q() { psql -X -Atq -v ON_ERROR_STOP=1 -c "$1"; }
# the error of a statement that must fail: "SQLSTATE message | detail | hint"
err() {
  { psql -X -Atq -v VERBOSITY=verbose -c "$1" 2>&1 >/dev/null || true; } |
    awk '/^ERROR:/ {sub(/^ERROR: +/, ""); sub(/: /, " "); e = $0}
         /^DETAIL:/ {sub(/^DETAIL: +/, ""); d = $0}
         /^HINT:/ {sub(/^HINT: +/, ""); h = $0}
         END {print e " | " d " | " h}'
}
yes_if() { if eval "$1"; then echo 1; else echo 0; fi; }
connections_during() {  # connections nginx accepted while a command ran
  local a b
  a=$(nginx_accepts)
  "$@" >/dev/null
  b=$(nginx_accepts)
  echo $((b - a - 1))
}

psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION pg_llm;
-- HTTPS; the server offers HTTP/2 and HTTP/1.1
SELECT llm.create_provider('tls', 'openai', 'https://localhost:$NGINX_H2/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA"}');
SELECT llm.create_provider('tls-claude', 'anthropic', 'https://localhost:$NGINX_H2/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA"}');
-- the same server, HTTP/1.1 forced; a server that offers HTTP/1.1 only
SELECT llm.create_provider('tls11', 'openai', 'https://localhost:$NGINX_H2/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA", "http_version": "1.1"}');
SELECT llm.create_provider('h1only', 'openai', 'https://localhost:$NGINX_H1/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA"}');
-- plain HTTP/2 with prior knowledge
SELECT llm.create_provider('h2c', 'openai', 'http://127.0.0.1:$NGINX_H2C/v1', api_key => 'sk-mock',
                           options => '{"http_version": "2"}');
-- the three batch protocols over HTTPS
SELECT llm.create_provider('b-inline', 'openai', 'https://localhost:$NGINX_H2/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA", "batch_api": "inline"}');
SELECT llm.create_provider('b-openai', 'openai', 'https://localhost:$NGINX_H2/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA", "batch_api": "openai"}');
SELECT llm.create_provider('b-anthropic', 'anthropic', 'https://localhost:$NGINX_H2/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA"}');
SELECT llm.add_model(name, name, 'mock') FROM llm.provider;
SELECT llm.add_model(name || '-50ms', name, 'mock?latency=50') FROM llm.provider;
CREATE TABLE docs (id int PRIMARY KEY, body text, summary text);
SQL
curl -s -X POST "$M/_config" -d '{"batch": {"complete_after_ms": 0}}' >/dev/null

# ---- 1. every call path over HTTPS ----
check "llm.chat over HTTPS" $(yes_if '[ "$(q "SELECT llm.chat('"'"'hello'"'"', '"'"'tls'"'"')")" = "echo: hello" ]')
check "llm.chat_completion over HTTPS" \
  $(yes_if '[ "$(q "SELECT llm.chat_completion('"'"'{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}'"'"', '"'"'tls'"'"') #>> '"'"'{choices,0,message,content}'"'"'")" = "echo: hi" ]')
check "llm.chat over HTTPS, Anthropic protocol" $(yes_if '[ "$(q "SELECT llm.chat('"'"'hello'"'"', '"'"'tls-claude'"'"')")" = "echo: hello" ]')
check "llm.chat_stream over HTTPS (OpenAI and Anthropic)" \
  $(yes_if '[ "$(q "SELECT string_agg(x, '"''"') FROM llm.chat_stream('"'"'one two three'"'"', '"'"'tls'"'"') x")" = "echo: one two three" ] &&
            [ "$(q "SELECT string_agg(x, '"''"') FROM llm.chat_stream('"'"'one two three'"'"', '"'"'tls-claude'"'"') x")" = "echo: one two three" ]')
check "llm.chat_many over HTTPS (50 of 50)" \
  $(yes_if '[ "$(q "SELECT count(*) FROM llm.chat_many(ARRAY(SELECT '"'"'m'"'"' || g FROM generate_series(1, 50) g), '"'"'tls'"'"') WHERE content = '"'"'echo: m'"'"' || ord")" = 50 ]')

wait_queue() {  # until nothing is pending, running or submitted (60 s at most)
  local i
  for i in $(seq 1 600); do
    [ "$(q "SELECT count(*) FROM llm.queue WHERE status IN ('pending', 'running', 'submitted')")" = 0 ] && return 0
    sleep 0.1
  done
  return 1
}
queue_run() {  # $1: model, $2: via; 40 rows written back
  q "DELETE FROM llm.queue; TRUNCATE docs; INSERT INTO docs SELECT g, 'doc ' || g FROM generate_series(1, 40) g" >/dev/null
  q "SELECT count(llm.enqueue(body, '$1', target_table => 'docs', target_column => 'summary', target_key => jsonb_build_object('id', id), via => '$2')) FROM docs" >/dev/null
  wait_queue || true
  q "SELECT count(*) FROM docs WHERE summary = 'echo: ' || body"
}
n=$(queue_run tls realtime)
check "the queue worker over HTTPS writes back 40 of 40 ($n)" $(yes_if '[ "$n" = 40 ]')
for b in b-inline b-openai b-anthropic; do
  n=$(queue_run "$b" batch_api)
  kind=$(q "SELECT string_agg(DISTINCT kind, ',') FROM llm.batches WHERE provider = '$b'")
  check "batch API $kind over HTTPS writes back 40 of 40 ($n)" $(yes_if '[ "$n" = 40 ]')
done

# ---- 2. connections: HTTP/2 multiplexed, HTTP/1.1 still working, shared in a backend ----
session_h2() {
  psql -X -Atq -v ON_ERROR_STOP=1 <<SQL
SELECT llm.chat('sync', 'tls');
SELECT count(*) FROM llm.chat_many(ARRAY(SELECT 'c' || g FROM generate_series(1, 50) g), 'tls-50ms');
SELECT count(*) FROM llm.chat_stream('one two', 'tls');
SELECT count(*) FROM llm.chat_many(ARRAY(SELECT 'd' || g FROM generate_series(1, 50) g), 'tls-claude-50ms');
SQL
}
c=$(connections_during session_h2)
check "a new session's llm.chat, 50 concurrent chat_many calls, a stream and 50 more over HTTP/2 use at most 2 connections ($c)" \
  $(yes_if '[ "$c" -ge 1 ] && [ "$c" -le 2 ]')
many50() { q "SELECT count(*) FROM llm.chat_many(ARRAY(SELECT 'e' || g FROM generate_series(1, 50) g), '$1') WHERE error IS NULL"; }
c=$(connections_during many50 tls11-50ms)
check "http_version 1.1: 50 concurrent requests over HTTP/1.1 connections, not multiplexed ($c)" \
  $(yes_if '[ "$c" -gt 2 ] && [ "$(many50 tls11-50ms)" = 50 ]')
c=$(connections_during many50 h1only-50ms)
check "a server offering HTTP/1.1 only: 50 concurrent requests served ($c connections)" \
  $(yes_if '[ "$c" -gt 2 ] && [ "$(many50 h1only-50ms)" = 50 ]')
versions=$(awk -v p="$NGINX_H2" '$1 == p {print $3}' "$NGINX_DIR/access.log" | sort -u | tr '\n' ' ')
check "nginx saw HTTP/2.0 and HTTP/1.1 requests on the same port ($versions)" \
  $(yes_if '[[ "$versions" == *HTTP/2.0* ]] && [[ "$versions" == *HTTP/1.1* ]]')
: > "$NGINX_DIR/access.log"
n=$(many50 h2c-50ms)
h2=$(awk -v p="$NGINX_H2C" '$1 == p && $3 == "HTTP/2.0"' "$NGINX_DIR/access.log" | wc -l)
check "http_version 2 over plain HTTP (prior knowledge): 50 concurrent requests over HTTP/2 ($n served, $h2 over HTTP/2)" \
  $(yes_if '[ "$n" = 50 ] && [ "$h2" = 50 ]')

# TLS sessions shared: in a new session, after one call, the 49 new
# connections of 50 concurrent requests resume the first connection's
# session.  Without the share handle at most one could (each request has
# an easy handle of its own, with a session cache of its own).  TLS 1.2,
# whose sessions come with the handshake: with TLS 1.3 a session comes in
# a ticket after it, and libcurl 7.88 keeps one a host, replaced by each
# new connection's, so how many of a burst resume depends on timing
# (test/bench/bench_tls.sh measures what that costs).
q "SELECT llm.create_provider('tls12', 'openai', 'https://localhost:$NGINX_TLS12/v1', api_key => 'sk-mock',
                              options => '{\"ca_file\": \"$CA\"}');
   SELECT llm.add_model('tls12', 'tls12', 'mock?latency=50')" >/dev/null
: > "$NGINX_DIR/access.log"
psql -X -Atq -v ON_ERROR_STOP=1 >/dev/null <<SQL
SELECT llm.chat('first', 'tls12');
SELECT count(*) FROM llm.chat_many(ARRAY(SELECT 'g' || g FROM generate_series(1, 50) g), 'tls12');
SQL
resumed=$(awk -v p="$NGINX_TLS12" '$1 == p && $2 == "r"' "$NGINX_DIR/access.log" | wc -l)
total=$(awk -v p="$NGINX_TLS12" '$1 == p' "$NGINX_DIR/access.log" | wc -l)
check "a session's new TLS connections resume its first TLS session ($resumed of $total requests on resumed sessions)" \
  $(yes_if '[ "$total" = 51 ] && [ "$resumed" -ge 49 ]')

# The CA store is read once a process: after the CA file is replaced by
# another CA's, a session that read it keeps verifying new connections (a
# server without session resumption, so every connection is a full
# handshake); a new session reads the new file and fails.
cp "$CA" "$CERTS/swap.pem"
q "SELECT llm.create_provider('noresume', 'openai', 'https://localhost:$NGINX_NORESUME/v1', api_key => 'sk-mock',
                              options => '{\"ca_file\": \"$CERTS/swap.pem\", \"http_version\": \"1.1\"}');
   SELECT llm.add_model('noresume', 'noresume', 'mock?latency=50')" >/dev/null
coproc CA_SESSION { psql -X -Atq 2>&1; }
echo "SELECT llm.chat('first', 'noresume');" >&"${CA_SESSION[1]}"
read -r first <&"${CA_SESSION[0]}"
cp "$CERTS/other_ca.pem" "$CERTS/swap.pem"
a=$(nginx_accepts)
echo "SELECT count(*) FROM llm.chat_many(ARRAY(SELECT 'f' || g FROM generate_series(1, 30) g), 'noresume') WHERE error IS NULL;" >&"${CA_SESSION[1]}"
read -r later <&"${CA_SESSION[0]}"
b=$(nginx_accepts)
echo "\\q" >&"${CA_SESSION[1]}"
wait "$CA_SESSION_PID" 2>/dev/null || true
check "the CA store is read once a process: 30 more requests ($((b - a - 1)) new full handshakes) verify after the CA file changed ($first, $later ok)" \
  $(yes_if '[ "$first" = "echo: first" ] && [ "$later" = 30 ] && [ $((b - a - 1)) -ge 2 ]')
e=$(err "SELECT llm.chat('new session', 'noresume')")
check "a new session reads the new CA file and refuses the server ($e)" \
  $(yes_if '[[ "$e" == "08006 the certificate of provider \"noresume\" is not signed by a trusted CA"* ]]')
cp "$CA" "$CERTS/swap.pem"

# ---- 3. certificates: each failure named, with a hint ----
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
SELECT llm.create_provider('other-ca', 'openai', 'https://localhost:$NGINX_H2/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CERTS/other_ca.pem"}');
SELECT llm.create_provider('wrong-host', 'openai', 'https://localhost:$NGINX_WRONG/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA"}');
SELECT llm.create_provider('expired', 'openai', 'https://localhost:$NGINX_EXPIRED/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA"}');
SELECT llm.create_provider('no-ca-file', 'openai', 'https://localhost:$NGINX_H2/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CERTS/missing.pem"}');
SELECT llm.create_provider('mtls', 'openai', 'https://localhost:$NGINX_MTLS/v1', api_key => 'sk-mock',
                           options => jsonb_build_object('ca_file', '$CA', 'client_cert', '$CERTS/client.pem',
                                                         'client_key', pg_read_file('$CERTS/client.key')));
SELECT llm.create_provider('mtls-files', 'openai', 'https://localhost:$NGINX_MTLS/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA", "client_cert": "$CERTS/client.pem", "client_key": "$CERTS/client.key"}');
SELECT llm.create_provider('mtls-none', 'openai', 'https://localhost:$NGINX_MTLS/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA"}');
SELECT llm.create_provider('mtls-badkey', 'openai', 'https://localhost:$NGINX_MTLS/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA", "client_cert": "$CERTS/client.pem", "client_key": "$CERTS/wrong.key"}');
SELECT llm.add_model(name, name, 'mock') FROM llm.provider WHERE name NOT IN (SELECT name FROM llm.model);
-- a chain whose first route has an expired certificate
SELECT llm.add_model('chain', 'expired', 'mock', priority => 1);
SELECT llm.add_model('chain', 'tls', 'mock', priority => 2);
SQL
e=$(err "SELECT llm.chat('x', 'other-ca')")
check "unknown CA: $e" $(yes_if '[[ "$e" == "08006 the certificate of provider \"other-ca\" is not signed by a trusted CA | "*"| Provider \"other-ca\" trusts only the CAs in its ca_file"* ]]')
e=$(err "SELECT llm.chat('x', 'wrong-host')")
check "hostname mismatch: $e" $(yes_if '[[ "$e" == "08006 the certificate of provider \"wrong-host\" is not valid for host \"localhost\" | "*"| Use the host name"* ]]')
e=$(err "SELECT llm.chat('x', 'expired')")
check "expired certificate: $e" $(yes_if '[[ "$e" == "08006 the certificate of provider \"expired\" has expired | "*"| "*"clock"* ]]')
e=$(err "SELECT llm.chat('x', 'no-ca-file')")
check "unreadable ca_file: $e" $(yes_if '[[ "$e" == "22023 could not load the ca_file of provider \"no-ca-file\" | "*"| The ca_file option ($CERTS/missing.pem)"* ]]')
check "a model whose first route's certificate is refused is served by its next route at once" \
  $(yes_if '[ "$(q "SET llm.max_retries = 5; SELECT llm.chat('"'"'chained'"'"', '"'"'chain'"'"')")" = "echo: chained" ]')
check "mutual TLS with the key given as PEM text, and as files" \
  $(yes_if '[ "$(q "SELECT llm.chat('"'"'m1'"'"', '"'"'mtls'"'"')")" = "echo: m1" ] && [ "$(q "SELECT llm.chat('"'"'m2'"'"', '"'"'mtls-files'"'"')")" = "echo: m2" ]')
e=$(err "SELECT llm.chat('x', 'mtls-none')")
check "a server that wants a client certificate, none given: $e" \
  $(yes_if '[[ "$e" == "38000 provider \"mtls-none\" returned HTTP 400 | "*"| The server wants a client certificate"* ]]')
e=$(err "SELECT llm.chat('x', 'mtls-badkey')")
check "a client key that is not the certificate's: $e" \
  $(yes_if '[[ "$e" == "22023 could not use the client certificate of provider \"mtls-badkey\""* ]]')
check "the client key is kept with the API key: llm.provider shows [secret], the secret table holds it" \
  $(yes_if '[ "$(q "SELECT options ->> '"'"'client_key'"'"' FROM llm.provider WHERE name = '"'"'mtls'"'"'")" = "[secret]" ] &&
            [ "$(q "SELECT transport ->> '"'"'client_key'"'"' LIKE '"'"'-----BEGIN%'"'"' FROM llm._provider_secret WHERE provider = '"'"'mtls'"'"'")" = t ]')

# ---- 4. proxies ----
# The endpoint answers only connections from the proxy's address (127.0.0.2).
# Each provider has a path of its own (the mock answers any prefix): the
# traffic control keeps its circuits by base URL and key, and the 403s
# of the requests that bypass the proxy must not stop the others.
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
SELECT llm.create_provider('proxied', 'openai', 'https://localhost:$NGINX_FROM2/proxied/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA", "proxy": "http://127.0.0.1:$OPEN_PROXY"}');
SELECT llm.create_provider('bypass', 'openai', 'https://localhost:$NGINX_FROM2/bypass/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA"}');
SELECT llm.create_provider('proxied-plain', 'openai', 'http://127.0.0.1:$NGINX_FROM2_PLAIN/proxied-plain/v1', api_key => 'sk-mock',
                           options => '{"proxy": "http://127.0.0.1:$OPEN_PROXY"}');
SELECT llm.create_provider('proxied-auth', 'openai', 'https://localhost:$NGINX_FROM2/proxied-auth/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA", "proxy": "http://pgllm:Pr0xy-Secret-77@127.0.0.1:$AUTH_PROXY"}');
SELECT llm.create_provider('proxied-noauth', 'openai', 'https://localhost:$NGINX_FROM2/proxied-noauth/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA", "proxy": "http://127.0.0.1:$AUTH_PROXY"}');
SELECT llm.create_provider('proxied-badauth', 'openai', 'https://localhost:$NGINX_FROM2/proxied-badauth/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA", "proxy": "http://pgllm:wrong-password@127.0.0.1:$AUTH_PROXY"}');
SELECT llm.create_provider('proxied-strict', 'openai', 'https://localhost:$NGINX_FROM2/proxied-strict/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA", "proxy": "http://127.0.0.1:$STRICT_PROXY"}');
SELECT llm.create_provider('proxied-dead', 'openai', 'https://localhost:$NGINX_FROM2/proxied-dead/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA", "proxy": "http://127.0.0.1:1", "max_retries": 0}');
SELECT llm.create_provider('proxied-excepted', 'openai', 'https://localhost:$NGINX_FROM2/proxied-excepted/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA", "proxy": "http://127.0.0.1:$OPEN_PROXY", "no_proxy": "localhost"}');
SELECT llm.add_model(name, name, 'mock') FROM llm.provider WHERE name NOT IN (SELECT name FROM llm.model);
SELECT llm.add_model('proxied-50ms', 'proxied', 'mock?latency=50');
SQL
e=$(err "SELECT llm.chat('x', 'bypass')")
check "the endpoint behind the proxy refuses a request that bypasses it: $e" $(yes_if '[[ "$e" == *"returned HTTP 403"* ]]')
connects() { grep -c "CONNECT localhost:$NGINX_FROM2 " "$OPEN_PROXY_LOG" || true; }
before=$(connects)
ok_sync=$(q "SELECT llm.chat('via proxy', 'proxied')")
ok_many=$(q "SELECT count(*) FROM llm.chat_many(ARRAY(SELECT 'p' || g FROM generate_series(1, 20) g), 'proxied-50ms') WHERE error IS NULL")
ok_stream=$(q "SELECT string_agg(x, '') FROM llm.chat_stream('a b c', 'proxied') x")
after=$(connects)
check "through the proxy (CONNECT): llm.chat, 20 chat_many calls and a stream ($ok_sync; $ok_many; $ok_stream; $((after - before)) tunnels)" \
  $(yes_if '[ "$ok_sync" = "echo: via proxy" ] && [ "$ok_many" = 20 ] && [ "$ok_stream" = "echo: a b c" ] && [ $((after - before)) -ge 1 ]')
check "plain HTTP through the proxy" $(yes_if '[ "$(q "SELECT llm.chat('"'"'plain via proxy'"'"', '"'"'proxied-plain'"'"')")" = "echo: plain via proxy" ]')
n=$(queue_run proxied realtime)
check "the queue worker through the proxy writes back 40 of 40 ($n)" $(yes_if '[ "$n" = 40 ]')
check "a proxy with credentials" $(yes_if '[ "$(q "SELECT llm.chat('"'"'with credentials'"'"', '"'"'proxied-auth'"'"')")" = "echo: with credentials" ]')
e=$(err "SELECT llm.chat('x', 'proxied-noauth')")
check "a proxy that wants credentials: $e" \
  $(yes_if '[[ "$e" == "08006 the proxy of provider \"proxied-noauth\" refused the connection | It answered HTTP 407"*"| The proxy wants credentials"* ]]')
e=$(err "SELECT llm.chat('x', 'proxied-badauth')")
check "wrong proxy credentials, never shown: $e" \
  $(yes_if '[[ "$e" == *"refused the connection | It answered HTTP 40"[17]*"| The proxy wants credentials"* ]] && [[ "$e" != *wrong-password* ]]')
e=$(err "SELECT llm.chat('x', 'proxied-strict')")
check "a proxy that does not allow the destination: $e" \
  $(yes_if '[[ "$e" == "08006 the proxy of provider \"proxied-strict\" refused the connection | It answered HTTP 403"*"| "*"ask its administrators"* ]]')
e=$(err "SELECT llm.chat('x', 'proxied-dead')")
check "a proxy that cannot be reached: $e" \
  $(yes_if '[[ "$e" == "08006 could not reach the proxy of provider \"proxied-dead\""*"http://127.0.0.1:1 of its proxy option"* ]]')
e=$(err "SELECT llm.chat('x', 'proxied-excepted')")
check "no_proxy sends a host direct (so the endpoint refuses it): $e" $(yes_if '[[ "$e" == *"returned HTTP 403"* ]]')
shown=$(q "SELECT options::text FROM llm.provider WHERE name = 'proxied-auth'")
status=$(q "SELECT proxy || ' ' || proxy_source FROM llm.provider_status WHERE provider = 'proxied-auth'")
check "the proxy's credentials are kept secret: llm.provider shows $(grep -o '"proxy": "[^"]*"' <<<"$shown"), llm.provider_status $status" \
  $(yes_if '[[ "$shown" == *"http://[secret]@127.0.0.1:$AUTH_PROXY"* ]] && [[ "$shown" != *Pr0xy* ]] && [ "$status" = "http://127.0.0.1:$AUTH_PROXY option" ]')

# ---- 4b. the breakers are kept per path: a proxy's failures are the proxy's ----
# Providers with the same base_url and key, one direct and the others
# through a proxy: a proxy that is down, or that refuses (a destination it
# does not allow, credentials it wants), must neither open the direct
# provider's circuit nor count as the provider refusing its key.  What a
# proxy says for itself is a transport error that names the proxy, over
# HTTPS (CONNECT) and for a plain-HTTP provider alike (pg_llm tunnels
# every request through an HTTP proxy).
scratch_dir
echo '^127\.0\.0\.1$' > "$SCRATCH/filter"
start_tinyproxy filtering "" "Filter \"$SCRATCH/filter\""
FILTER_PROXY=$TINYPROXY_PORT
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
SELECT llm.create_provider('path-direct', 'openai', '$M/path/v1', api_key => 'sk-mock');
SELECT llm.create_provider('path-dead', 'openai', '$M/path/v1', api_key => 'sk-mock',
                           options => '{"proxy": "http://127.0.0.1:1", "max_retries": 0}');
SELECT llm.create_provider('path-filtered', 'openai', '$M/path/v1', api_key => 'sk-mock',
                           options => '{"proxy": "http://127.0.0.1:$FILTER_PROXY"}');
SELECT llm.create_provider('path-noauth', 'openai', '$M/path/v1', api_key => 'sk-mock',
                           options => '{"proxy": "http://127.0.0.1:$AUTH_PROXY"}');
SELECT llm.create_provider('path-tls', 'openai', 'https://localhost:$NGINX_H2/path/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA"}');
SELECT llm.create_provider('path-tls-strict', 'openai', 'https://localhost:$NGINX_H2/path/v1', api_key => 'sk-mock',
                           options => '{"ca_file": "$CA", "proxy": "http://127.0.0.1:$STRICT_PROXY"}');
SELECT llm.add_model(name, name, 'mock') FROM llm.provider WHERE name LIKE 'path-%';
SQL
three_errors() {  # the errors of three calls, one a line
  local i
  for i in 1 2 3; do err "SELECT llm.chat('x$i', '$1')"; done
}
e=$(three_errors path-dead)
check "a dead proxy, three calls: each names the proxy, the third its circuit ($(tail -1 <<<"$e" | cut -c1-90))" \
  $(yes_if '[ "$(grep -c "^08006 could not reach the proxy of provider \"path-dead\"" <<<"$e")" = 2 ] &&
            [[ "$(tail -1 <<<"$e")" == "08006 the proxy of provider \"path-dead\" is down | "*"goes through the proxy http://127.0.0.1:1 of its proxy option"* ]]')
r=$(q "SELECT llm.chat('direct after a dead proxy', 'path-direct')" 2>&1 || true)
check "the same base_url and key reached direct still serves: $r" $(yes_if '[ "$r" = "echo: direct after a dead proxy" ]')
s=$(q "SELECT provider || ': ' || coalesce(cooldown_reason, '-') FROM llm.provider_status WHERE provider IN ('path-dead', 'path-direct') ORDER BY 1")
check "llm.provider_status: the proxied path down, the direct one not ($(tr '\n' ';' <<<"$s" | cut -c1-150))" \
  $(yes_if '[[ "$s" == "path-dead: down since "*$'"'"'\n'"'"'"path-direct: -" ]]')
q "SELECT llm.clear_cooldown('path-direct')" >/dev/null
e=$(three_errors path-filtered)
check "a proxy that refuses a plain-HTTP provider's host: three transport errors naming the proxy ($(tail -1 <<<"$e" | cut -c1-110))" \
  $(yes_if '[ "$(grep -c "^08006 the proxy of provider \"path-filtered\" refused the connection | It answered HTTP 403 to CONNECT 127.0.0.1" <<<"$e")" = 3 ]')
e=$(three_errors path-noauth)
check "a proxy that wants credentials, before a plain-HTTP provider: its 407 named as the proxy's ($(tail -1 <<<"$e" | cut -c1-110))" \
  $(yes_if '[ "$(grep -c "^08006 the proxy of provider \"path-noauth\" refused the connection | It answered HTTP 407 .*| The proxy wants credentials" <<<"$e")" = 3 ]')
r=$(q "SELECT llm.chat('direct after refusing proxies', 'path-direct')" 2>&1 || true)
check "neither counts as the provider refusing its key: the direct provider serves ($r)" \
  $(yes_if '[ "$r" = "echo: direct after refusing proxies" ]')
e=$(three_errors path-tls-strict)
check "over HTTPS, a proxy that refuses CONNECT: three transport errors naming the proxy ($(tail -1 <<<"$e" | cut -c1-110))" \
  $(yes_if '[ "$(grep -c "^08006 the proxy of provider \"path-tls-strict\" refused the connection | It answered HTTP 403 to CONNECT localhost" <<<"$e")" = 3 ]')
r=$(q "SELECT llm.chat('direct after CONNECT refused', 'path-tls')" 2>&1 || true)
s=$(q "SELECT count(*) FROM llm.provider_status WHERE provider LIKE 'path-%' AND cooldown_reason LIKE 'authentication failed%'")
check "the same HTTPS endpoint direct serves, and no path's key is taken for refused ($r; $s)" \
  $(yes_if '[ "$r" = "echo: direct after CONNECT refused" ] && [ "$s" = 0 ]')
q "SELECT llm.clear_cooldown('path-dead')" >/dev/null
check "llm.clear_cooldown closes the proxied path's circuit" \
  $(yes_if '[ -z "$(q "SELECT cooldown_reason FROM llm.provider_status WHERE provider = '"'"'path-dead'"'"'")" ]')

# ---- 5. the proxy of the server's environment ----
# Read once a process, for the providers without a proxy option, and shown.
restart_postgres "https_proxy=http://pgllm:Pr0xy-Secret-77@127.0.0.1:$AUTH_PROXY" "no_proxy=example.invalid"
check "a provider without a proxy option goes through https_proxy of the server's environment" \
  $(yes_if '[ "$(q "SELECT llm.chat('"'"'env proxy'"'"', '"'"'bypass'"'"')")" = "echo: env proxy" ]')
n=$(queue_run bypass realtime)
check "so does the queue worker (40 of 40 written back: $n)" $(yes_if '[ "$n" = 40 ]')
status=$(q "SELECT proxy || ' ' || proxy_source FROM llm.provider_status WHERE provider = 'bypass'")
check "llm.provider_status names it, without its credentials ($status)" \
  $(yes_if '[ "$status" = "http://127.0.0.1:$AUTH_PROXY environment (https_proxy)" ]')
check "a provider's own proxy option wins over the environment's" \
  $(yes_if '[ "$(q "SELECT proxy_source FROM llm.provider_status WHERE provider = '"'"'proxied'"'"'")" = option ]')
q "SELECT llm.alter_provider('bypass', options => '{\"ca_file\": \"$CA\", \"no_proxy\": \"*\"}')" >/dev/null
e=$(err "SELECT llm.chat('x', 'bypass')")
check "no_proxy \"*\" sends a provider direct despite the environment: $e" \
  $(yes_if '[[ "$e" == *"returned HTTP 403"* ]] && [ -z "$(q "SELECT proxy FROM llm.provider_status WHERE provider = '"'"'bypass'"'"'")" ]')
q "SELECT llm.alter_provider('bypass', options => '{\"ca_file\": \"$CA\"}')" >/dev/null
restart_postgres
check "without the environment's proxy the provider goes direct again" \
  $(yes_if '[[ "$(err "SELECT llm.chat('"'"'x'"'"', '"'"'bypass'"'"')")" == *"returned HTTP 403"* ]]')
check "no proxy credential in the server log" $(yes_if '! grep -q "Pr0xy-Secret-77" "$PG_LLM_SERVER_LOG"')

# ---- 6. a thousand in flight under a soft limit of 1024 open files ----
export PG_LLM_NOFILE_SOFT=1024
restart_postgres
q "SELECT llm.create_provider('direct', 'openai', '$M/v1', api_key => 'sk-mock');
   SELECT llm.add_model('slow', 'direct', 'mock?latency=1500')" >/dev/null
curl -s -X POST "$M/_reset" >/dev/null
out=$(psql -X -Atq -v ON_ERROR_STOP=1 2>&1 <<SQL
SET llm.many_concurrency = 1000;
SELECT count(*) FROM llm.chat_many(ARRAY(SELECT 'k' || g FROM generate_series(1, 1000) g), 'slow') WHERE error IS NULL;
SQL
)
conns=$(curl -s "$M/_stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["connections"])')
check "llm.many_concurrency = 1000 with a soft limit of 1024 files: 1000 of 1000 in flight at once ($out; $conns connections)" \
  $(yes_if '[ "$out" = 1000 ] && [ "$conns" -ge 990 ]')
# a thousand at once to an HTTP/2 server: on a few connections, not one
# each (libcurl alone opened 900: the gate in http_gate.c)
q "SELECT llm.add_model('tls-slow', 'tls', 'mock?latency=500')" >/dev/null
a=$(nginx_accepts)
out=$(psql -X -Atq -v ON_ERROR_STOP=1 2>&1 <<SQL
SET llm.many_concurrency = 1000;
SELECT count(*) FROM llm.chat_many(ARRAY(SELECT 'h' || g FROM generate_series(1, 1000) g), 'tls-slow') WHERE error IS NULL;
SQL
)
c=$(( $(nginx_accepts) - a - 1 ))
check "1000 requests at once to an HTTP/2 server: $out served over $c connections (nginx allows 128 streams a connection)" \
  $(yes_if '[ "$out" = 1000 ] && [ "$c" -ge 8 ] && [ "$c" -le 16 ]')
q "ALTER SYSTEM SET llm.worker_concurrency = 1000" >/dev/null
q "ALTER SYSTEM SET llm.batch_size = 500" >/dev/null
restart_postgres
q "DELETE FROM llm.queue; TRUNCATE docs; INSERT INTO docs SELECT g, 'doc ' || g FROM generate_series(1, 1000) g" >/dev/null
curl -s -X POST "$M/_reset" >/dev/null
q "SELECT count(llm.enqueue(body, 'slow', target_table => 'docs', target_column => 'summary', target_key => jsonb_build_object('id', id))) FROM docs" >/dev/null
wait_queue || true
n=$(q "SELECT count(*) FROM docs WHERE summary = 'echo: ' || body")
conns=$(curl -s "$M/_stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["connections"])')
check "llm.worker_concurrency = 1000 with a soft limit of 1024 files: 1000 of 1000 written back ($n; $conns connections)" \
  $(yes_if '[ "$n" = 1000 ] && [ "$conns" -ge 900 ]')

# the hard limit too: a clear error, and a worker that keeps what fits
export PG_LLM_NOFILE_HARD=1024
restart_postgres
e=$(err "SET llm.many_concurrency = 1000; SELECT count(*) FROM llm.chat_many(ARRAY['a', 'b'], 'slow')")
check "llm.many_concurrency beyond the hard limit: $e" \
  $(yes_if '[[ "$e" == "53400 llm.many_concurrency = 1000 needs more file descriptors than this process may open | "*"requests fit."*"| Lower llm.many_concurrency, or raise"*"LimitNOFILE"* ]]')
check "below it, the same statement works" \
  $(yes_if '[ "$(q "SET llm.many_concurrency = 100; SELECT count(*) FROM llm.chat_many(ARRAY['"'"'a'"'"', '"'"'b'"'"'], '"'"'slow'"'"') WHERE error IS NULL")" = 2 ]')
q "DELETE FROM llm.queue; TRUNCATE docs; INSERT INTO docs SELECT g, 'doc ' || g FROM generate_series(1, 300) g" >/dev/null
q "SELECT count(llm.enqueue(body, 'slow', target_table => 'docs', target_column => 'summary', target_key => jsonb_build_object('id', id))) FROM docs" >/dev/null
wait_queue || true
n=$(q "SELECT count(*) FROM docs WHERE summary = 'echo: ' || body")
check "the worker beyond the hard limit warns in the log and drains with what fits (300 of 300: $n)" \
  $(yes_if '[ "$n" = 300 ] && grep -q "llm.worker_concurrency = 1000 needs more file descriptors" "$PG_LLM_SERVER_LOG"')
unset PG_LLM_NOFILE_SOFT PG_LLM_NOFILE_HARD

echo "transport: $pass passed, $fail failed"
[ $fail -eq 0 ]
