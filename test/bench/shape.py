#!/usr/bin/env python3
"""The shape of src/: dependencies between its files, dependencies from a
lower layer back up to a higher one, cycles between files, and comment
density.

    python3 test/bench/shape.py [--list] [--check] [SRC]   (default: src/ of this tree)

Reads the sources and the object files of a built tree (run make first):

- A module is a .c file together with the header of the same name (chat.c
  and chat.h; json.c also owns llm_json.h).  Headers without a .c
  (compat.h) are no module and give no dependency.
- Module A depends on module B (A != B) when a file of A includes B's
  header ("#include" of a file of src/, directly, not what that header
  includes in turn), or when A's object file refers to a symbol that B's
  object file defines (nm: a function called or a global variable read
  or written, whatever header declared it).  Dependencies are counted
  once per ordered pair.
- Layers, from the bottom (see LAYERS below, the cut of the worker wing):
  0 ground floor, 1 protocols, 2 call engine, 3 SQL entry points,
  4 the worker, 5 the module's entry point (pg_llm.c).  A dependency
  from a lower layer to a higher one is an upward dependency.
- Cycles: the strongly connected components of more than one module, in
  the graph of function calls alone ("call cycles": A calls a function
  that B defines) and in the graph of all dependencies (includes and
  global variables as well).
- Comment density: lines holding a comment (or part of one) divided by
  the lines that are not blank, per file; the newest files against the
  rest of src/.

Prints one line a figure ("deps 125"), then with --list the edges.

With --check it also holds the targets of the worker-wing rebuild (issue
22) that a change could lose without noticing: no call cycle between the
files of src/, and at most MAX_UPWARD dependencies from a lower layer back
up.  One line a target ("ok - ..." or "not ok - ..." naming the cycle or
the count), then "shape: N passed, M failed"; the exit status is 1 when
one failed.  test/run_all.sh runs it after building the tree.
"""
import os
import re
import subprocess
import sys

# The layer of each file, by its name (without directory and extension).
LAYERS = {
    0: {"compat", "utf8", "sse", "json", "llm_json", "http", "runas", "target", "names",
        "jsonschema", "protocol", "json_fast", "http_transport", "http_gate", "http_int",
        "tokens", "citus", "citus_keys", "citus_plan", "citus_ddl", "citus_net", "encoding"},
    # schema.c (answers with a shape, the JSON side of requests and replies)
    # came after the cut was drawn; it calls nothing above the protocols
    1: {"provider", "provider_openai", "provider_anthropic", "request", "schema"},
    2: {"config", "ratelimit", "call", "usage", "shmem", "slots", "redact", "cache",
        "count", "citus_remote", "citus_sync"},
    # citus_serve.c: the llm._cluster_* functions a worker node calls on
    # the coordinator, which run the call engine's limits and budgets
    3: {"chat", "stream", "many", "queue", "status", "shape", "embed", "jobs", "estimate",
        "citus_serve"},
    4: {"worker", "lease", "writeback", "batch", "batch_json", "item", "embedding",
        "realtime", "batch_store", "transport"},
    5: {"pg_llm"},
}
LAYER_NAMES = ["ground", "protocols", "call engine", "SQL entry points", "worker", "entry"]
# Headers owned by a .c of another name.
HEADER_OWNER = {"llm_json": "json", "http_int": "http", "request_int": "request"}
# The most dependencies from a lower layer back up (--check).
MAX_UPWARD = 12
# The files the issue calls the newest (their density against the rest).
NEWEST = {"batch", "batch_json", "batch_store", "provider_anthropic", "config"}


def layer_of(mod):
    for k, names in LAYERS.items():
        if mod in names:
            return k
    raise SystemExit("shape.py: no layer for %s: add it to LAYERS" % mod)


def files(src, ext):
    out = []
    for d, _, fs in os.walk(src):
        for f in fs:
            if f.endswith(ext):
                out.append(os.path.join(d, f))
    return sorted(out)


def base(path):
    return os.path.splitext(os.path.basename(path))[0]


def module_of_header(h, modules):
    b = HEADER_OWNER.get(base(h), base(h))
    return b if b in modules else None


def includes(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return re.findall(r'^\s*#\s*include\s+"([^"]+)"', f.read(), re.M)


def nm_symbols(obj):
    """(functions defined, variables defined, symbols used) of an object."""
    out = subprocess.run(["nm", obj], capture_output=True, text=True, check=True).stdout
    funcs, variables, undefined = set(), set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U":
            undefined.add(parts[1])
        elif len(parts) == 3 and parts[1] == "T":
            funcs.add(parts[2])
        elif len(parts) == 3 and parts[1] in "DBRC":
            variables.add(parts[2])
    return funcs, variables, undefined


def comment_lines(path):
    """(lines with a comment, non-blank lines) of a C file."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    in_comment = False
    in_string = None
    com = 0
    nonblank = 0
    for line in text.split("\n"):
        has_comment = in_comment
        i = 0
        while i < len(line):
            c = line[i]
            if in_comment:
                if line.startswith("*/", i):
                    in_comment = False
                    i += 2
                    continue
            elif in_string:
                if c == "\\":
                    i += 2
                    continue
                if c == in_string:
                    in_string = None
            elif line.startswith("/*", i):
                in_comment = True
                has_comment = True
                i += 2
                continue
            elif line.startswith("//", i):
                has_comment = True
                break
            elif c in "\"'":
                in_string = c
            i += 1
        in_string = None
        if line.strip():
            nonblank += 1
            if has_comment:
                com += 1
    return com, nonblank


def sccs(nodes, edges):
    """Tarjan's strongly connected components."""
    index = {}
    low = {}
    stack = []
    on = set()
    out = []
    counter = [0]
    adj = {n: sorted(b for (a, b) in edges if a == n) for n in nodes}

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return [c for c in out if len(c) > 1]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    listing = "--list" in sys.argv
    checking = "--check" in sys.argv
    src = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src")
    src = os.path.normpath(src)
    cfiles = files(src, ".c")
    hfiles = files(src, ".h")
    modules = {base(c) for c in cfiles}
    if len(modules) != len(cfiles):
        raise SystemExit("shape.py: two .c files of one name")
    path_of = {base(c): c for c in cfiles}

    inc_edges = set()
    for f in cfiles + hfiles:
        owner = base(f) if f.endswith(".c") else module_of_header(f, modules)
        if owner is None:
            continue
        for inc in includes(f):
            m = module_of_header(inc, modules)
            if m and m != owner:
                inc_edges.add((owner, m))

    defined_by = {}
    is_func = set()
    undefined = {}
    for m, c in path_of.items():
        obj = c[:-2] + ".o"
        if not os.path.exists(obj):
            raise SystemExit("shape.py: %s is missing: build the tree first (make)" % obj)
        funcs, variables, u = nm_symbols(obj)
        undefined[m] = u
        is_func |= funcs
        for s in funcs | variables:
            defined_by.setdefault(s, set()).add(m)
    sym_edges = set()
    call_edges = set()
    sym_names = {}
    for m, u in undefined.items():
        for s in u:
            for other in defined_by.get(s, ()):
                if other != m:
                    sym_edges.add((m, other))
                    if s in is_func:
                        call_edges.add((m, other))
                    sym_names.setdefault((m, other), []).append(s)

    deps = inc_edges | sym_edges
    up = sorted((a, b) for (a, b) in deps if layer_of(a) < layer_of(b))
    call_cycles = sccs(modules, call_edges)
    all_cycles = sccs(modules, deps)

    newest_c = newest_n = rest_c = rest_n = 0
    density = {}
    for m, c in path_of.items():
        com, nb = comment_lines(c)
        density[m] = com / nb if nb else 0
        if m in NEWEST:
            newest_c += com
            newest_n += nb
        else:
            rest_c += com
            rest_n += nb
    lines = sum(sum(1 for _ in open(f, encoding="utf-8", errors="replace")) for f in cfiles + hfiles)

    print("files %d (.c) %d (.h), %d lines" % (len(cfiles), len(hfiles), lines))
    print("deps %d" % len(deps))
    print("deps_include %d" % len(inc_edges))
    print("deps_symbol %d" % len(sym_edges))
    print("upward %d" % len(up))
    print("call_cycles %d covering %d files: %s" % (
        len(call_cycles), sum(len(c) for c in call_cycles),
        "; ".join("/".join(c) for c in call_cycles) or "-"))
    print("dep_cycles %d covering %d files: %s" % (
        len(all_cycles), sum(len(c) for c in all_cycles),
        "; ".join("/".join(c) for c in all_cycles) or "-"))
    print("density_newest %.3f (%s)" % (newest_c / max(newest_n, 1),
                                        ", ".join("%s %.2f" % (m, density[m]) for m in sorted(density) if m in NEWEST)))
    print("density_rest %.3f" % (rest_c / max(rest_n, 1)))
    if listing:
        for a, b in up:
            why = "include" if (a, b) in inc_edges else ""
            syms = sorted(sym_names.get((a, b), []))
            print("  up %s (%s) -> %s (%s): %s %s" % (a, LAYER_NAMES[layer_of(a)], b,
                                                    LAYER_NAMES[layer_of(b)], why, " ".join(syms[:6])))
        for cyc in call_cycles:
            members = set(cyc)
            for a, b in sorted(call_edges):
                if a in members and b in members:
                    syms = sorted(s for s in sym_names.get((a, b), []) if s in is_func)
                    print("  cycle %s -> %s: %s" % (a, b, " ".join(syms[:6])))
        for a, b in sorted(deps):
            print("  dep %s -> %s" % (a, b))
    if checking:
        results = [
            (not call_cycles,
             "no call cycle between the files of src/" if not call_cycles else
             "call cycles between the files of src/: %s (see --list)" %
             "; ".join("/".join(c) for c in call_cycles)),
            (len(up) <= MAX_UPWARD,
             "%d dependencies from a lower layer back up (at most %d)" % (len(up), MAX_UPWARD)),
        ]
        for ok, what in results:
            print("%s - %s" % ("ok" if ok else "not ok", what))
        failed = sum(1 for ok, _ in results if not ok)
        print("shape: %d passed, %d failed" % (len(results) - failed, failed))
        if failed:
            sys.exit(1)


if __name__ == "__main__":
    main()
