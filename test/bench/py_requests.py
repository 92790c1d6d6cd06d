#!/usr/bin/python3
"""test/bench/py_requests.py: the Python baseline of bench_chat.sh.

A requests.Session() (keep-alive) loop making the requests llm.chat()
makes: POST the body pg_llm sends for llm.chat('bench <i>', 'mock') with
the same Content-Type and Authorization headers, and decode each reply
with .json().  Warm-up calls are numbered 1..WARMUP, timed calls 1..CALLS.
Prints one line:
  calls=N seconds=S errors=E cpu_seconds=C mock_cpu_seconds=M
where C is this process's CPU time (user + system, from
/proc/self/schedstat) during the timed calls, and M the same for the
process MOCK_PID (-1 when not given or unreadable).

usage: /usr/bin/python3 py_requests.py URL CALLS [WARMUP [API_KEY [MOCK_PID [CA_FILE]]]]
(CA_FILE: the PEM bundle to verify an https URL with)
"""
import json
import sys
import time

import requests


def cpu_s(pid):
    """CPU time of a process ("self" for this one) in seconds, or -1."""
    if pid is None:
        return -1
    try:
        with open("/proc/%s/schedstat" % pid) as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return -1


def delta(a, b):
    return -1 if a < 0 or b < 0 else b - a


def run(session, url, headers, n):
    errors = 0
    for i in range(1, n + 1):
        body = json.dumps({"messages": [{"role": "user", "content": "bench %d" % i}],
                           "model": "mock"}, separators=(",", ":"))
        r = session.post(url, data=body.encode(), headers=headers)
        reply = r.json()
        if r.status_code != 200 or not reply.get("choices"):
            errors += 1
            if errors <= 3:
                print("py_requests: call %d: HTTP %d" % (i, r.status_code), file=sys.stderr)
    return errors


def main():
    if len(sys.argv) < 3:
        print("usage: py_requests.py URL CALLS [WARMUP [API_KEY [MOCK_PID [CA_FILE]]]]", file=sys.stderr)
        return 2
    url = sys.argv[1]
    calls = int(sys.argv[2])
    warmup = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    key = sys.argv[4] if len(sys.argv) > 4 else "sk-mock"
    mock_pid = sys.argv[5] if len(sys.argv) > 5 else None
    ca_file = sys.argv[6] if len(sys.argv) > 6 else None
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + key}
    with requests.Session() as s:
        # nothing from the environment (a proxy, REQUESTS_CA_BUNDLE)
        s.trust_env = False
        if ca_file:
            s.verify = ca_file
        if run(s, url, headers, warmup):
            print("py_requests: the warm-up failed", file=sys.stderr)
            return 1
        m0, c0 = cpu_s(mock_pid), cpu_s("self")
        t0 = time.perf_counter()
        errors = run(s, url, headers, calls)
        t1 = time.perf_counter()
        c1, m1 = cpu_s("self"), cpu_s(mock_pid)
    print("calls=%d seconds=%.6f errors=%d cpu_seconds=%.6f mock_cpu_seconds=%.6f"
          % (calls, t1 - t0, errors, delta(c0, c1), delta(m0, m1)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
