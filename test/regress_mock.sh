#!/usr/bin/env bash
# The mock provider for a pg_regress run that was not given one (a plain
# `make installcheck`): sql/setup.sql starts it, the last test stops it.
#   test/regress_mock.sh start   start it unless running; print its port
#   test/regress_mock.sh stop    stop the one start started, by PID
# State lives in results/mock (beside pg_regress's own results).
set -euo pipefail
dir=results/mock
case ${1:-} in
  start)
    mkdir -p "$dir"
    if [ -s "$dir/port" ] && [ -s "$dir/port.pid" ] && kill -0 "$(cat "$dir/port.pid")" 2>/dev/null; then
      cat "$dir/port"
      exit 0
    fi
    rm -f "$dir/port" "$dir/port.pid"
    nohup node test/mock/server.js --port 0 --port-file "$dir/port" > "$dir/mock.log" 2>&1 &
    for _ in $(seq 1 100); do
      [ -s "$dir/port" ] && break
      sleep 0.05
    done
    [ -s "$dir/port" ] || { echo "the mock provider did not start: see $dir/mock.log" >&2; exit 1; }
    cat "$dir/port"
    ;;
  stop)
    if [ -s "$dir/port.pid" ]; then
      kill "$(cat "$dir/port.pid")" 2>/dev/null || true
      rm -f "$dir/port" "$dir/port.pid"
    fi
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
