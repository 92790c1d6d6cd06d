#!/usr/bin/env python3
"""Hops between functions in a worker's trace (see test/bench/hops.sh).

    python3 test/bench/hops.py LIBRARY TRACE [--edges]

TRACE holds "E offset" / "X offset" lines (a function of LIBRARY entered,
left) and "M name" lines that start a scenario.  A hop is a call from one
function of pg_llm to another, counted once per (caller, callee) pair
within what is measured, however often it runs: the edges a reader
follows to read the path.  Calls into PostgreSQL, libcurl or json-c are no
hops (they are not traced).

- item: in the scenario "item", every call made under the loop's calls
  that serve one item (ITEM_ROOTS: claim, set-up, send, the wait for and
  the judging of its answer, write-back), plus the hops from the loop to
  them.  The scenario "first" is the same for the worker's first item,
  which also loads the configuration and sets libcurl up; "item" follows
  it, as every item after the first does.
- batch answers: in the scenarios "inline", "openai" and "anthropic",
  each call of the function that takes a batch transfer's end
  (ANSWER_ROOTS), with everything it calls: one line each, and the
  largest.

For each: hops; the hops above the ground floor (those whose caller is
not in a file of shape.py's layer 0: a call into utf8.c, json.c, http.c,
runas.c... is a hop, what it calls inside is not: a reader follows the
path, not the helpers' insides); the hops between files (caller and callee in different
files); the hops from the worker wing (the caller in src/worker/, or in
the worker family's files before it: what the wing itself calls); the
files touched; and the hops "back up" (into a file that is already on
the call stack below the caller, other than the caller's own).  Only
functions of src/*.c count (not PostgreSQL's inline functions).
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shape  # noqa: E402  (the layers of src/)

# The loop's calls that serve one queued item, by name (the names of
# several versions of the code; those that do not exist are not used).
ITEM_ROOTS = {
    # 0.2.0 to 0.3.0 before the worker wing
    "LeaseClaim", "LeaseSetUp", "fill_slots", "item_judge", "WritebackFinished",
    # the worker wing
    "claim", "realtime_tick", "realtime_done", "WritebackSet",
    # both
    "HttpPoll", "HttpNextDone",
}
LOOPS = {"pg_llm_worker_main", "worker_loop", "worker_pass"}
# The function that takes a finished batch transfer.
ANSWER_ROOTS = {"BatchTransferDone", "batch_done"}
BATCH_SCENARIOS = ("inline", "openai", "anthropic")
# The worker family before it became src/worker/.
WING_BEFORE = {"worker.c", "lease.c", "writeback.c", "batch.c", "batch_json.c"}


def symbols(lib):
    out = subprocess.run(["nm", "-l", "--defined-only", lib], capture_output=True,
                         text=True, check=True).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[1] not in "tTW":
            continue
        off = int(parts[0], 16)
        where = parts[3] if len(parts) > 3 else "?"
        path = where.rsplit(":", 1)[0]
        # pg_llm's own files only (not PostgreSQL's inline functions)
        if "/src/" not in path or not path.endswith(".c"):
            continue
        syms[off] = (parts[2], path.rsplit("/src/", 1)[1])
    return syms


def read(trace, syms):
    """Yield (scenario, kind, fn, stack) per event; stack after entry."""
    stack = []
    scenario = None
    with open(trace) as f:
        for line in f:
            kind, _, arg = line.rstrip("\n").partition(" ")
            if kind == "M":
                scenario = arg
                continue
            if kind not in ("E", "X"):
                continue
            fn = syms.get(int(arg, 16))
            if fn is None:
                continue
            if kind == "E":
                stack.append(fn)
                yield scenario, "E", fn, stack
            else:
                # a longjmp (an error caught above) skips exits: unwind to it
                while stack and stack[-1] != fn:
                    stack.pop()
                if stack:
                    yield scenario, "X", fn, stack
                    stack.pop()


def ground(f):
    """Is a file on the ground floor (shape.py's layer 0)?"""
    mod = os.path.splitext(os.path.basename(f))[0]
    return mod in shape.LAYERS[0]


def in_wing(f):
    """Is a file one of the worker wing's (the worker family before it)?"""
    return f.startswith("worker/") or f in WING_BEFORE


class Count:
    def __init__(self):
        self.edges = set()
        self.back = set()
        self.files = set()

    def add(self, stack):
        callee = stack[-1]
        self.files.add(callee[1])
        if len(stack) < 2:
            return
        caller = stack[-2]
        self.files.add(caller[1])
        self.edges.add((caller, callee))
        below = {f[1] for f in stack[:-2]}
        if callee[1] != caller[1] and callee[1] in below:
            self.back.add((caller, callee))

    def line(self, label):
        above = sum(1 for (a, b) in self.edges if not ground(a[1]))
        cross = sum(1 for (a, b) in self.edges if a[1] != b[1])
        wing = sum(1 for (a, b) in self.edges if in_wing(a[1]))
        return "%-26s hops %3d  above the ground floor %3d  between files %3d  from the wing %3d  files %2d  back up %2d" % (
            label, len(self.edges), above, cross, wing, len(self.files), len(self.back))


def main():
    lib, trace = sys.argv[1], sys.argv[2]
    show = "--edges" in sys.argv
    syms = symbols(lib)
    item = Count()
    first = Count()
    answers = []
    in_root = None          # depth of the item root or answer root being counted
    current = None
    for scenario, kind, fn, stack in read(trace, syms):
        name = fn[0]
        if kind == "E":
            if in_root is None:
                if scenario in ("item", "first") and name in ITEM_ROOTS and \
                        len(stack) >= 2 and stack[-2][0] in LOOPS:
                    in_root = len(stack)
                    current = item if scenario == "item" else first
                elif scenario in BATCH_SCENARIOS and name in ANSWER_ROOTS:
                    in_root = len(stack)
                    current = Count()
                    answers.append(("%s %d" % (scenario, sum(1 for a in answers if a[0].startswith(scenario)) + 1),
                                    current))
            if in_root is not None:
                current.add(stack)
        elif in_root is not None and len(stack) == in_root:
            in_root = None
    if first.edges:
        print(first.line("first item claim to write"))
    print(item.line("item claim to write"))
    for label, c in answers:
        print(c.line("batch answer " + label))
    if answers:
        worst = max(answers, key=lambda a: len(a[1].edges))
        print(worst[1].line("batch answer, largest"))
    if show:
        for (a, b) in sorted(item.edges):
            print("  item %s:%s -> %s:%s" % (a[1], a[0], b[1], b[0]))
        for label, c in answers:
            for (a, b) in sorted(c.edges):
                print("  %s %s:%s -> %s:%s" % (label, a[1], a[0], b[1], b[0]))


if __name__ == "__main__":
    main()
