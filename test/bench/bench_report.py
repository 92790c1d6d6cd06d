#!/usr/bin/python3
"""test/bench/bench_report.py: the tables of bench_chat.sh.

usage: bench_report.py RESULTS.tsv CEILING.jsonl WARMUP

RESULTS.tsv has one line per measurement: round, client, calls, seconds,
the mock's request and connection counters for that measurement ("-" for
the SQL-only statement, which makes no request), and the CPU seconds of
the client (pg_llm: its backend) and of the mock during the timed calls
(-1 when unknown).  CEILING.jsonl
holds load.js summary lines.  Each client's figure is the median of its
rounds; the per-round figures are printed as well.  Nothing here judges a
timing: the target lines only state the ratios next to the targets.
"""
import json
import statistics
import sys

CLIENTS = [
    ("pg_llm", "pg_llm  llm.chat()"),
    ("sql_only", "SQL only (trivial SQL fn)"),
    ("raw_curl", "raw libcurl (C, easy handle)"),
    ("python", "python requests.Session"),
]


def main():
    results, ceiling, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rows = []
    with open(results) as f:
        for line in f:
            r, client, calls, secs, reqs, conns, ccpu, mcpu = line.rstrip("\n").split("\t")
            rows.append({"round": int(r), "client": client, "calls": int(calls),
                         "seconds": float(secs), "requests": reqs, "connections": conns,
                         "client_cpu": float(ccpu), "mock_cpu": float(mcpu)})
    rounds = sorted({x["round"] for x in rows})
    by = {(x["round"], x["client"]): x for x in rows}
    names = [c for c, _ in CLIENTS if any(x["client"] == c for x in rows)]
    label = dict(CLIENTS)

    # every round, so the noise shows
    print()
    print("per round (seconds for the timed calls; interleaved in this order):")
    print("  %-6s" % "round" + "".join("%14s" % c for c in names))
    for r in rounds:
        print("  %-6d" % r + "".join("%14.3f" % by[(r, c)]["seconds"] if (r, c) in by else "%14s" % "-"
                                     for c in names))

    med = {}
    for c in names:
        secs = [by[(r, c)]["seconds"] for r in rounds if (r, c) in by]
        calls = by[(rounds[0], c)]["calls"]
        s = statistics.median(secs)
        med[c] = {"calls": calls, "seconds": s, "cps": calls / s, "us": s / calls * 1e6,
                  "spread": (min(secs), max(secs))}
        for k in ("client_cpu", "mock_cpu"):
            v = [by[(r, c)][k] for r in rounds if (r, c) in by and by[(r, c)][k] >= 0]
            med[c][k] = statistics.median(v) / calls * 1e6 if v else None

    base = med["pg_llm"]["us"]
    print()
    print("median of %d round%s (ratio vs pg_llm = the client's µs per call ÷ pg_llm's µs per call;"
          % (len(rounds), "" if len(rounds) == 1 else "s"))
    print("CPU = user + system time during the timed calls, per call, of the client process"
          " (pg_llm: its backend) and of the mock):")
    hdr = "  %-30s | %6s | %8s | %8s | %11s | %15s | %s | %s | %s" % (
        "client", "calls", "seconds", "calls/s", "µs per call", "ratio vs pg_llm",
        "client CPU µs", "mock CPU µs", "min-max seconds")
    print(hdr)
    print("  " + "-" * (len(hdr) - 2))
    fmt = lambda v: "%13.1f" % v if v is not None else "%13s" % "-"
    for c in names:
        m = med[c]
        print("  %-30s | %6d | %8.3f | %8.0f | %11.1f | %15.2f | %s | %s | %.3f-%.3f" % (
            label[c], m["calls"], m["seconds"], m["cps"], m["us"], m["us"] / base,
            fmt(m["client_cpu"]), fmt(m["mock_cpu"])[2:], m["spread"][0], m["spread"][1]))

    # mock counters: every client should have used one keep-alive connection
    print()
    notes = []
    for c in names:
        if c == "sql_only":
            continue
        seen = sorted({(by[(r, c)]["requests"], by[(r, c)]["connections"]) for r in rounds if (r, c) in by})
        want = str(med[c]["calls"] + warmup)
        ok = all(q == want and n == "1" for q, n in seen)
        notes.append("%s %s" % (c, ", ".join("%s requests on %s connection(s)" % s for s in seen)))
        if not ok:
            notes[-1] += "  <-- expected %s requests on 1 connection" % want
    print("mock counters per measurement (warm-up + timed): " + "; ".join(notes))

    # the two target lines of the issue, from the same run
    pg, raw, py = med["pg_llm"], med.get("raw_curl"), med.get("python")
    print()
    if py:
        per = ["%.2f" % ((by[(r, "pg_llm")]["calls"] / by[(r, "pg_llm")]["seconds"]) /
                         (by[(r, "python")]["calls"] / by[(r, "python")]["seconds"]))
               for r in rounds if (r, "pg_llm") in by and (r, "python") in by]
        print("pg_llm calls/s ÷ python calls/s = %.2f (target ≥ 2)   [per round: %s]"
              % (pg["cps"] / py["cps"], ", ".join(per)))
    if raw:
        per = ["%.2f" % (by[(r, "pg_llm")]["seconds"] / by[(r, "raw_curl")]["seconds"])
               for r in rounds if (r, "pg_llm") in by and (r, "raw_curl") in by]
        print("pg_llm µs/call ÷ raw libcurl µs/call = %.2f (target ≤ 1.3)   [per round: %s]"
              % (pg["us"] / raw["us"], ", ".join(per)))
        line = "pg_llm spends %.1f µs per call more than raw libcurl" % (pg["us"] - raw["us"])
        if "sql_only" in med:
            line += "; the SQL statement itself accounts for %.1f µs per row" % med["sql_only"]["us"]
        print(line)

    # the mock's own ceiling
    print()
    print("mock ceiling (same mock instance):")
    if raw:
        print("  raw libcurl, 1 connection, sequential: %.0f requests/s (a lower bound)" % raw["cps"])
    try:
        with open(ceiling) as f:
            lines = [json.loads(l) for l in f if l.strip()]
    except FileNotFoundError:
        lines = []
    for j in lines:
        print("  load.js %s client, %d connection%s: %d requests in %.2f s = %d requests/s "
              "(p50 %.3f ms, p99 %.3f ms, %d errors)" % (
                  j["client"], j["conc"], "" if j["conc"] == 1 else "s", j["requests"], j["seconds"],
                  j["rps"], j["p50_ms"], j["p99_ms"], j["errors"]))
    if not lines:
        print("  (load.js run skipped)")


if __name__ == "__main__":
    main()
