#!/usr/bin/python3
"""test/bench/py_requests.py: the Python baseline of bench_chat.sh.

A requests.Session() (keep-alive) loop making the requests llm.chat()
makes: POST the body pg_llm sends for llm.chat('bench <i>', 'mock') with
the same Content-Type and Authorization headers, and decode each reply
with .json().  Warm-up calls are numbered 1..WARMUP, timed calls 1..CALLS.
Prints one line: "calls=N seconds=S errors=E".

usage: /usr/bin/python3 py_requests.py URL CALLS [WARMUP [API_KEY]]
"""
import json
import sys
import time

import requests


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
        print("usage: py_requests.py URL CALLS [WARMUP [API_KEY]]", file=sys.stderr)
        return 2
    url = sys.argv[1]
    calls = int(sys.argv[2])
    warmup = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    key = sys.argv[4] if len(sys.argv) > 4 else "sk-mock"
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + key}
    with requests.Session() as s:
        if run(s, url, headers, warmup):
            print("py_requests: the warm-up failed", file=sys.stderr)
            return 1
        t0 = time.perf_counter()
        errors = run(s, url, headers, calls)
        t1 = time.perf_counter()
    print("calls=%d seconds=%.6f errors=%d" % (calls, t1 - t0, errors))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
