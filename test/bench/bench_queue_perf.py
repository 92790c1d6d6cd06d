#!/usr/bin/env python3
"""test/bench/bench_queue_perf.py: where the queue worker's CPU time goes,
from a `perf script -F ip,sym,dso` dump of `perf record --call-graph dwarf
-p <worker pid>` (used by bench_queue.sh --perf).

pg_llm.so frames are resolved with addr2line on a copy of the library the
worker really mapped (other builds may have replaced the installed file
since the instance started, and perf cannot read a deleted file), so the
report names pg_llm's own call sites: "run_sql <- item_write at
src/worker.c:642" is the queue UPDATE of a finished item, and so on.

Prints, as shares of the worker's sampled CPU time:
  1. self time by shared object;
  2. the top functions by self time;
  3. inclusive time by pg_llm call site (a sample counts once per site);
  4. a few costly PostgreSQL, libcurl and kernel entry points, split by the
     innermost pg_llm call site above them.

With "source" as the fourth argument (the library was built from the very
files its debug information names, as bench_queue.sh does by default), each
call site also shows its source line.

usage: bench_queue_perf.py SCRIPT_TXT PG_LLM_SO [TOP [source]]
"""
import collections
import re
import subprocess
import sys

ENTRY_POINTS = [
    "parse_analyze_fixedparams", "pg_plan_queries", "standard_ExecutorStart",
    "ExecConstraints", "ExecInsertIndexTuples", "index_getnext_slot",
    "CommitTransactionCommand", "BeginInternalSubTransaction",
    "curl_multi_socket_action", "curl_multi_add_handle", "curl_easy_reset",
    "__libc_send", "__GI_epoll_ctl", "json_tokener_parse_ex",
    "json_object_to_json_string_length",
]


def read_samples(path):
    samples, cur = [], []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                if cur:
                    samples.append(cur)
                cur = []
                continue
            parts = line.split(None, 1)
            try:
                ip = int(parts[0], 16)
            except ValueError:
                continue
            rest = parts[1] if len(parts) > 1 else ""
            sym = rest.split(" (", 1)[0]
            dso = rest[len(sym) + 2:-1] if rest.endswith(")") else ""
            cur.append((ip, sym, dso))
    if cur:
        samples.append(cur)
    return samples


class Resolver:
    def __init__(self, so, show_source):
        self.so = so
        self.show_source = show_source
        self.cache = {}

    def __call__(self, ip):
        if ip not in self.cache:
            out = ""
            if self.so:
                try:
                    out = subprocess.run(["addr2line", "-p", "-f", "-i", "-e", self.so, hex(ip)],
                                         capture_output=True, text=True, timeout=10).stdout
                except (OSError, subprocess.SubprocessError):
                    out = ""
            lines = [l.replace(" (inlined by) ", "").strip() for l in out.strip().splitlines()]
            # "at /any/copy/of/the/tree/src/worker.c:42 (discriminator 3)" -> "at src/worker.c:42"
            lines = [re.sub(r" \(discriminator \d+\)", "", re.sub(r" at \S*/(src/[^/\s]+)", r" at \1", l))
                     for l in lines if l]
            text = " <- ".join(lines) if lines and not lines[0].startswith("??") else "pg_llm+" + hex(ip)
            # the source line of the outermost pg_llm frame, when the file is there
            m = re.search(r" at (\S+):(\d+)", out.strip().splitlines()[-1]) if out.strip() else None
            if m and self.show_source:
                try:
                    with open(m.group(1), errors="replace") as f:
                        src = f.readlines()[int(m.group(2)) - 1].strip()
                    text += "   | " + (src[:70] + "..." if len(src) > 70 else src)
                except (OSError, IndexError, ValueError):
                    pass
            self.cache[ip] = text
        return self.cache[ip]


def is_pg_llm(dso):
    return "pg_llm" in dso


def short_dso(dso):
    d = dso.split("/")[-1]
    return d.replace(" (deleted", "").rstrip(")")


def main():
    if len(sys.argv) < 3:
        sys.stderr.write(__doc__)
        sys.exit(2)
    samples = read_samples(sys.argv[1])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    res = Resolver(sys.argv[2], len(sys.argv) > 4 and sys.argv[4] == "source")
    n = len(samples)
    if n == 0:
        print("no samples")
        return
    pct = lambda v: "%5.1f%%" % (100.0 * v / n)

    def name(frame):
        ip, sym, dso = frame
        if is_pg_llm(dso):
            return res(ip)
        if sym == "[unknown]":
            return "[%s+%#x]" % (short_dso(dso), ip)
        return sym

    print("%d samples of the worker's CPU time" % n)
    print()
    print("1. self time by shared object")
    c = collections.Counter(short_dso(s[0][2]) or "?" for s in samples)
    for k, v in c.most_common(10):
        print("   %s  %s" % (pct(v), k))

    print()
    print("2. top %d functions by self time" % top)
    c = collections.Counter()
    for s in samples:
        c[(short_dso(s[0][2]), name(s[0]))] += 1
    for (d, f), v in c.most_common(top):
        print("   %s  %-20s %s" % (pct(v), d[:20], f))

    print()
    print("3. inclusive time by pg_llm call site (top %d)" % top)
    c = collections.Counter()
    for s in samples:
        seen = set()
        for fr in s:
            if is_pg_llm(fr[2]):
                k = res(fr[0])
                if k not in seen:
                    seen.add(k)
                    c[k] += 1
    for k, v in c.most_common(top):
        print("   %s  %s" % (pct(v), k))

    print()
    print("4. costly entry points, by the innermost pg_llm call site above them")
    for ep in ENTRY_POINTS:
        per = collections.Counter()
        tot = 0
        for s in samples:
            idx = next((i for i, fr in enumerate(s) if fr[1] == ep), None)
            if idx is None:
                continue
            tot += 1
            site = next((res(fr[0]) for fr in s[idx:] if is_pg_llm(fr[2])), "(no pg_llm frame)")
            per[site] += 1
        if tot == 0:
            continue
        print("   %s  %s" % (pct(tot), ep))
        for k, v in per.most_common(4):
            print("          %s  %s" % (pct(v), k))


if __name__ == "__main__":
    main()
