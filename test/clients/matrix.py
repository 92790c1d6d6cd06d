"""The streaming client matrix: run by test/clients/run.sh, which starts the
PostgreSQL instance and the mock provider, builds the clients and passes
everything in the environment.

Every check runs one client (psql, psycopg 3, node-postgres, JDBC, libpq)
in one mode on llm.chat_stream('hi', 'mock?words=W&chunk_delay=D') through
the provider 'traced', whose requests carry `x-mock-trace: 1`, so the mock
records when it sent each piece (GET /_trace, Unix-epoch µs).  The clients
print `<t_us> ROW <text>` for each row that reached them and
`<t_us> EV <NAME> ...` for what they did (CANCEL, BREAK, CLOSE, ERROR,
AFTER <SELECT 1>, ...), on the same clock.  Row k pairs with piece k (the
reply is w1 ... wW).

Kinds of checks (margins are wide on purpose: the machine is shared):
  live       every row arrives within ROW_MARGIN_MS after its piece left
             the mock, and the first row at least 500 ms before the last
  not live   every row arrives after the last piece left (all at the end,
             within NOT_LIVE_SPREAD_MS)
  stopped    after a cancel (or break, close): the provider's stream ended
             (the trace says `aborted`, when the mock reports it) and no
             piece left more than STOP_MARGIN_MS after the cancel, and
             SELECT 1 then works on the same connection
The first-row latency and the median per-row delay of every live check are
printed at the end; they are measurements, not asserted.

The group readme runs the README's Python, JavaScript and Java snippets
and its psql recipes as printed, in a database app.

usage: matrix.py [GROUP ...]   (psql psycopg node jdbc libpq sql disconnect
                                readme; default: all)
"""
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROW_MARGIN_MS = 100     # a live row arrives at most this long after its piece
STOP_MARGIN_MS = 300    # no piece leaves later than this after a cancel
SPAN_MIN_MS = 500       # live: first row at least this long before the last
DISCONNECT_MS = 100     # a killed client's stream ends within this (the provider connection closes)
NOT_LIVE_SPREAD_MS = 300  # not live: all rows within this (the reply takes 1 s)

WORDS = 8               # live and not-live checks: 8 pieces ...
DELAY = 150             # ... 150 ms apart: 1,050 ms from first to last
LIVE_MODEL = "mock?words=%d&chunk_delay=%d" % (WORDS, DELAY)
LONG_WORDS = 20         # cancel checks: a 2.85 s reply, stopped after 3 rows
LONG_MODEL = "mock?words=%d&chunk_delay=%d" % (LONG_WORDS, DELAY)
STOP_AFTER = 3

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.environ["CLIENTS_WORK"]
MOCK = "http://127.0.0.1:%s" % os.environ["MOCK_PORT"]
PY = sys.executable
JDBC_CP = os.environ.get("JDBC_CP", "")
JDBC_SKIP = os.environ.get("JDBC_SKIP", "")

passed = 0
failed = 0
figures = []            # (client and mode, first-row ms, median ms, max ms)
notes = []              # what was observed, printed at the end


def now_us():
    return time.time_ns() // 1000


def comment(text):
    for line in str(text).splitlines():
        print("#   " + line)
    sys.stdout.flush()


def report(ok, name, detail=None):
    global passed, failed
    if ok:
        passed += 1
        print("ok - " + name)
    else:
        failed += 1
        print("not ok - " + name)
        if detail:
            comment(detail)
    sys.stdout.flush()


# ------------------------------------------------------------------ mock

def mock(method, path):
    req = urllib.request.Request(MOCK + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def reset():
    mock("POST", "/_reset")


def trace_of_stream(until_us, end_wait_us=None):
    """The one traced stream since the last reset.  With a mock that
    reports `end_us`, wait for it (until until_us + end_wait_us); with an
    older one, wait until until_us so that pieces sent late are seen."""
    deadline = until_us + (end_wait_us if end_wait_us is not None else 2000000)
    while True:
        traces = mock("GET", "/_trace")
        tr = traces[-1] if traces else None
        if tr is not None and "end_us" in tr:
            if tr.get("end_us"):
                return tr, len(traces)
            if now_us() >= deadline:
                return tr, len(traces)
        elif now_us() >= until_us:
            return tr, len(traces)
        time.sleep(0.05)


# --------------------------------------------------------------- clients

class Result:
    def __init__(self):
        self.rows = []      # (t_us, text)
        self.events = []    # (t_us, name, detail)
        self.rc = None
        self.stderr = ""
        self.lines = []
        self.timed_out = False
        self.t_kill = None

    def ev(self, name):
        """Time of the first event NAME, or None."""
        for t, n, _ in self.events:
            if n == name:
                return t
        return None

    def detail(self, name):
        for _, n, d in self.events:
            if n == name:
                return d
        return None

    def dump(self):
        return "client output:\n" + "\n".join(self.lines[-40:]) + \
            ("\nstderr:\n" + self.stderr[-2000:] if self.stderr.strip() else "") + \
            "\nexit status: %s%s" % (self.rc, " (timed out)" if self.timed_out else "")


def run_client(cmd, kill_after_rows=None, timeout=40, cwd=None, env=None):
    """Run a client, collecting its ROW and EV lines as they come.  With
    kill_after_rows, SIGKILL it once it has printed that many rows."""
    res = Result()
    errf = open(os.path.join(WORK, "client.stderr"), "w+")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, cwd=cwd,
                         text=True, bufsize=1, env=dict(os.environ, **(env or {})))

    def watchdog():
        res.timed_out = True
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    timer = threading.Timer(timeout, watchdog)
    timer.start()
    try:
        for line in p.stdout:
            line = line.rstrip("\n")
            res.lines.append(line)
            parts = line.split(" ", 2)
            if len(parts) < 2 or not parts[0].isdigit():
                continue
            t = int(parts[0])
            rest = parts[2] if len(parts) > 2 else ""
            if parts[1] == "ROW":
                res.rows.append((t, rest))
                if kill_after_rows is not None and len(res.rows) == kill_after_rows:
                    res.t_kill = now_us()
                    os.kill(p.pid, signal.SIGKILL)
            elif parts[1] == "EV":
                name, _, detail = rest.partition(" ")
                res.events.append((t, name, detail))
        res.rc = p.wait()
    finally:
        timer.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
        errf.seek(0)
        res.stderr = errf.read()
        errf.close()
    return res


def client_cmd(client, mode, model, n=None):
    extra = [str(n)] if n is not None else []
    if client == "psql":
        return [PY, os.path.join(HERE, "psql_client.py"), mode, model] + extra
    if client == "psycopg":
        return [PY, os.path.join(HERE, "py_client.py"), mode, model] + extra
    if client == "node":
        return ["node", os.path.join(HERE, "node_client.js"), mode, model] + extra
    if client == "jdbc":
        return ["java", "-cp", JDBC_CP, "JdbcClient", mode, model] + extra
    raise ValueError(client)


def libpq_cmd(mode, query, n=None):
    return [os.path.join(WORK, "libpq_client"), mode] + ([str(n)] if n is not None else []) + [query]


def chat_stream(model):
    return "llm.chat_stream('hi', '%s')" % model


# ---------------------------------------------------------------- checks

def expected_texts(words):
    return ["w%d" % k for k in range(1, words + 1)]


def row_texts(res):
    return [t.strip() for _, t in res.rows]


def fmt(ms):
    return "%.1f" % ms


def check_live(label, res, tr, words=WORDS):
    """Rows arrive one by one as the pieces leave the mock."""
    why = []
    texts = row_texts(res)
    if texts != expected_texts(words):
        why.append("rows %r, expected w1..w%d" % (texts, words))
    pieces = tr["t_us"] if tr else []
    if len(pieces) != words:
        why.append("the trace has %d pieces, expected %d" % (len(pieces), words))
    if res.ev("ERROR") or res.rc:
        why.append("the client failed")
    if why:
        report(False, "%s: rows arrive live" % label, "; ".join(why) + "\n" + res.dump())
        return
    lat = [(res.rows[k][0] - pieces[k]) / 1000 for k in range(words)]
    span = (res.rows[-1][0] - res.rows[0][0]) / 1000
    med = statistics.median(lat)
    ok = min(lat) >= -5 and max(lat) <= ROW_MARGIN_MS and span >= SPAN_MIN_MS
    figures.append((label, lat[0], med, max(lat)))
    report(ok, "%s: rows arrive live (%d rows over %d ms; each %s..%s ms after its chunk left the mock; first row %s ms, median %s ms)"
           % (label, words, span, fmt(min(lat)), fmt(max(lat)), fmt(lat[0]), fmt(med)),
           "per-row delays (ms): %s\n%s" % (" ".join(fmt(x) for x in lat), res.dump()))


def check_not_live(label, res, tr, words=WORDS, texts=None, what="rows arrive only at the end"):
    """Every row arrives after the last piece left the mock."""
    why = []
    got = row_texts(res)
    want = texts if texts is not None else expected_texts(words)
    if got != want:
        why.append("rows %r, expected %r" % (got, want))
    pieces = tr["t_us"] if tr else []
    if len(pieces) != words:
        why.append("the trace has %d pieces, expected %d" % (len(pieces), words))
    if res.ev("ERROR") or res.rc:
        why.append("the client failed")
    if why:
        report(False, "%s: %s" % (label, what), "; ".join(why) + "\n" + res.dump())
        return
    first_after = (res.rows[0][0] - pieces[-1]) / 1000
    spread = (res.rows[-1][0] - res.rows[0][0]) / 1000
    gen = (pieces[-1] - pieces[0]) / 1000
    ok = first_after >= -5 and spread < NOT_LIVE_SPREAD_MS
    notes.append("%s: NOT live: first row %s ms after the last chunk left; all %d rows within %s ms"
                 % (label, fmt(first_after), len(got), fmt(spread)))
    report(ok, "%s: %s (the reply took %d ms; first row %s ms after the last chunk left, all %d rows within %s ms)"
           % (label, what, gen, fmt(first_after), len(got), fmt(spread)), res.dump())


def check_stopped(label, res, tr, t_stop, how, total=LONG_WORDS, want_error=True, ntraces=1):
    """After a cancel (break, close) at t_stop: the provider stopped and the
    connection works."""
    why = []
    if t_stop is None:
        report(False, "%s: %s stops the provider" % (label, how), "no stop event\n" + res.dump())
        return
    pieces = tr["t_us"] if tr else []
    err = res.detail("ERROR")
    if want_error and not (err and err.startswith("57014")):
        why.append("no 57014 error reached the client (error: %s)" % err)
    if res.detail("AFTER") != "1":
        why.append("SELECT 1 on the same connection did not return 1")
    if tr is None:
        why.append("no trace")
    late = [(p - t_stop) / 1000 for p in pieces if p > t_stop + STOP_MARGIN_MS * 1000]
    if late:
        why.append("pieces left %s ms after the stop" % ", ".join(fmt(x) for x in late))
    if len(pieces) >= total:
        why.append("the whole reply was sent (%d pieces)" % len(pieces))
    end_txt = ""
    if tr is not None and "aborted" in tr:
        end = tr.get("end_us")
        if not tr.get("aborted"):
            why.append("the trace does not say aborted")
        if not end:
            why.append("the trace has no end_us")
        else:
            end_ms = (end - t_stop) / 1000
            end_txt = "; the provider's connection closed %s ms after it" % fmt(end_ms)
            if end_ms > STOP_MARGIN_MS:
                why.append("the provider's stream ended %s ms after the stop" % fmt(end_ms))
    else:
        end_txt = "; mock without end_us/aborted: judged by piece times"
    last = (pieces[-1] - t_stop) / 1000 if pieces else None
    t_err = res.ev("ERROR")
    t_after = res.ev("AFTER")
    extra = ""
    if t_err:
        extra += "; error %s ms after it" % fmt((t_err - t_stop) / 1000)
    if t_after:
        extra += "; SELECT 1 done %s ms after it" % fmt((t_after - t_stop) / 1000)
    if ntraces != 1:
        why.append("%d traced streams, expected 1" % ntraces)
    summary = "%d rows, %d of %d pieces sent, last piece %s ms %s the stop%s%s" % (
        len(res.rows), len(pieces), total,
        fmt(abs(last)) if last is not None else "-", "after" if last is not None and last >= 0 else "before",
        end_txt, extra)
    notes.append("%s: %s: %s" % (label, how, summary))
    report(not why, "%s: %s stops the provider, the connection works after (%s)" % (label, how, summary),
           "; ".join(why) + "\n" + res.dump() + "\ntrace: %s" % json.dumps(tr))


def check_stops_at_next_piece(label, how, res, tr, t_stop, delay_ms, total):
    """The provider sends one more piece after the stop (about delay_ms
    later), then its stream ends."""
    why = []
    if t_stop is None or tr is None:
        report(False, "%s: %s stops the provider at the next chunk" % (label, how), res.dump())
        return
    pieces = tr["t_us"]
    after = [(p - t_stop) / 1000 for p in pieces if p > t_stop]
    if len(after) != 1:
        why.append("%d pieces after the stop, expected 1" % len(after))
    elif not delay_ms / 2 <= after[0] <= delay_ms * 1.5:
        why.append("the piece after the stop left %s ms after it" % fmt(after[0]))
    end = tr.get("end_us")
    end_ms = (end - t_stop) / 1000 if end else None
    if "aborted" in tr and (not tr.get("aborted") or end_ms is None or
                            (after and end_ms > after[-1] + STOP_MARGIN_MS)):
        why.append("the stream did not end soon after that piece")
    if res.detail("AFTER") != "1":
        why.append("SELECT 1 on the same connection did not return 1")
    if len(pieces) >= total:
        why.append("the whole reply was sent")
    summary = "one more chunk, %s ms after it; provider's stream ended %s ms after it; SELECT 1 done %s ms after it" % (
        fmt(after[0]) if after else "-", fmt(end_ms) if end_ms is not None else "?",
        fmt((res.ev("AFTER") - t_stop) / 1000) if res.ev("AFTER") else "-")
    notes.append("%s: %s: %s" % (label, how, summary))
    report(not why, "%s: %s stops the provider only at the next chunk, once the FETCH in flight has its row (%s)"
           % (label, how, summary), "; ".join(why) + "\n" + res.dump() + "\ntrace: %s" % json.dumps(tr))


def live(label, cmd, **kw):
    reset()
    res = run_client(cmd, **kw)
    tr, _ = trace_of_stream(now_us())
    check_live(label, res, tr)


def not_live(label, cmd, words=WORDS, texts=None, what="rows arrive only at the end"):
    reset()
    res = run_client(cmd)
    tr, _ = trace_of_stream(now_us())
    check_not_live(label, res, tr, words=words, texts=texts, what=what)


def stopped(label, cmd, stop_event, how, want_error=True):
    reset()
    res = run_client(cmd)
    t_stop = res.ev(stop_event)
    # wait long enough that a stream still going would show two more pieces
    until = (t_stop or now_us()) + (2 * DELAY + STOP_MARGIN_MS + 200) * 1000
    tr, n = trace_of_stream(max(until, now_us()))
    check_stopped(label, res, tr, t_stop, how, want_error=want_error, ntraces=n)


# ------------------------------------------------------------------ groups

def group_psql():
    live("psql \\set FETCH_COUNT 1", client_cmd("psql", "fetch1", LIVE_MODEL))

    # unaligned output prints the record separator before the next record:
    # a row's text shows at once, its line end only with the next row
    reset()
    res = run_client(client_cmd("psql", "fetch1-unaligned", LIVE_MODEL))
    tr, _ = trace_of_stream(now_us())
    label = "psql -A (unaligned) \\set FETCH_COUNT 1"
    pieces = tr["t_us"] if tr else []
    partial = {d: t for t, n, d in res.events if n == "PARTIAL"}
    ok = (row_texts(res) == expected_texts(WORDS) and len(pieces) == WORDS
          and all("w%d" % k in partial for k in range(1, WORDS)))
    if ok:
        lag = [(res.rows[k][0] - pieces[k + 1]) / 1000 for k in range(WORDS - 1)]
        text = [(partial["w%d" % (k + 1)] - pieces[k]) / 1000 for k in range(WORDS - 1)]
        ok = (min(lag) >= -5 and max(lag) <= ROW_MARGIN_MS
              and min(text) >= -5 and max(text) <= ROW_MARGIN_MS)
        summary = ("row k's text shown %s..%s ms after chunk k left, its line end %s..%s ms after chunk k+1 left"
                   % (fmt(min(text)), fmt(max(text)), fmt(min(lag)), fmt(max(lag))))
        notes.append("%s: %s" % (label, summary))
        report(ok, "%s: each row's text shows live, but its line ends only when the next row arrives, "
               "so a line reader gets each row one chunk late (%s)" % (label, summary), res.dump())
    else:
        report(False, "%s: each row's text shows live, its line end one chunk late" % label, res.dump())

    not_live("psql without FETCH_COUNT", client_cmd("psql", "nofetch", LIVE_MODEL),
             what="rows arrive only at the end (psql reads the whole result first)")

    # SIGINT while psql waits in a FETCH for the next row (60 ms after a
    # row, 90 ms before the next chunk)
    reset()
    res = run_client(client_cmd("psql", "sigint", LONG_MODEL, STOP_AFTER) + ["60"])
    t_stop = res.ev("CANCEL")
    until = (t_stop or now_us()) + (2 * DELAY + STOP_MARGIN_MS + 200) * 1000
    tr, n = trace_of_stream(max(until, now_us()))
    # psql shows 57014 when the cancel reaches a running FETCH, and no error
    # when it finds psql between two fetches (psql then closes the cursor)
    check_stopped("psql \\set FETCH_COUNT 1", res, tr, t_stop,
                  "SIGINT to psql (Ctrl-C)%s" % ("" if res.ev("ERROR") else " [no error shown: psql was between fetches]"),
                  want_error=False, ntraces=n)


def group_psycopg():
    live("psycopg cursor.stream()", client_cmd("psycopg", "stream", LIVE_MODEL))
    live("psycopg named cursor, itersize 1", client_cmd("psycopg", "named", LIVE_MODEL))
    live("psycopg cursor.copy(COPY (SELECT ...) TO STDOUT)", client_cmd("psycopg", "copy", LIVE_MODEL))
    not_live("psycopg cursor.execute() then iterate", client_cmd("psycopg", "execute", LIVE_MODEL))
    not_live("psycopg named cursor, default itersize (100)", client_cmd("psycopg", "named100", LIVE_MODEL))
    stopped("psycopg cursor.stream()", client_cmd("psycopg", "stream-cancel", LONG_MODEL, STOP_AFTER),
            "CANCEL", "conn.cancel() from another thread")
    stopped("psycopg cursor.stream()", client_cmd("psycopg", "stream-break", LONG_MODEL, STOP_AFTER),
            "BREAK", "leaving the loop (break)", want_error=False)
    stopped("psycopg named cursor, itersize 1", client_cmd("psycopg", "named-cancel", LONG_MODEL, STOP_AFTER),
            "CANCEL", "conn.cancel() from another thread during a fetch")

    # a cancel that reaches the backend while it is idle between two
    # fetches is dropped by PostgreSQL: the stream goes on
    reset()
    res = run_client(client_cmd("psycopg", "named-idle-cancel", LONG_MODEL, STOP_AFTER))
    tr, _ = trace_of_stream(now_us())
    pieces = tr["t_us"] if tr else []
    label = "psycopg named cursor, itersize 1"
    ok = (row_texts(res) == expected_texts(LONG_WORDS) and not res.ev("ERROR")
          and res.detail("AFTER") == "1" and len(pieces) == LONG_WORDS
          and not (tr or {}).get("aborted"))
    notes.append("%s: conn.cancel() while idle between fetches: %d of %d rows, error: %s, provider sent %d of %d pieces"
                 % (label, len(res.rows), LONG_WORDS, res.detail("ERROR"), len(pieces), LONG_WORDS))
    report(ok, "%s: a cancel sent while the client sits idle between fetches is dropped by PostgreSQL: "
           "the stream goes on (%d of %d rows, no error, all %d pieces sent)"
           % (label, len(res.rows), LONG_WORDS, len(pieces)), res.dump() + "\ntrace: %s" % json.dumps(tr))

    stopped(label, client_cmd("psycopg", "named-close", LONG_MODEL, STOP_AFTER),
            "CLOSE", "closing the cursor (instead of a cancel) between fetches", want_error=False)


def group_node():
    live("node pg Query row events", client_cmd("node", "query", LIVE_MODEL))
    live("node pg-query-stream batchSize 1", client_cmd("node", "qs1", LIVE_MODEL))
    not_live("node pg-query-stream default batchSize (100)", client_cmd("node", "qs100", LIVE_MODEL))
    stopped("node pg Query row events", client_cmd("node", "query-cancel", LONG_MODEL, STOP_AFTER),
            "CANCEL", "the pg cancel API (new Client().cancel(client, query))")
    stopped("node pg Query row events", client_cmd("node", "query-cancel-sql", LONG_MODEL, STOP_AFTER),
            "CANCEL", "pg_cancel_backend(pid) from a second client")
    stopped("node pg-query-stream batchSize 1", client_cmd("node", "qs1-cancel", LONG_MODEL, STOP_AFTER),
            "CANCEL", "the pg cancel API")
    stopped("node pg-query-stream batchSize 1", client_cmd("node", "qs1-break", LONG_MODEL, STOP_AFTER),
            "BREAK", "break out of for await (destroys the stream, closes the cursor)", want_error=False)

    # the stream has a FETCH in flight (it reads ahead): the cursor's close
    # waits for it, so the provider stops only when the next chunk comes
    reset()
    slow = "mock?words=10&chunk_delay=1000"
    res = run_client(client_cmd("node", "qs1-break", slow, 2))
    t_stop = res.ev("BREAK")
    tr, _ = trace_of_stream(max((t_stop or 0) + 2500000, now_us()))
    check_stops_at_next_piece("node pg-query-stream batchSize 1",
                              "break out of for await, chunk_delay=1000", res, tr, t_stop, 1000, 10)


def group_jdbc():
    if JDBC_SKIP:
        comment("JDBC skipped: %s" % JDBC_SKIP)
        report(True, "# SKIP JDBC: %s" % JDBC_SKIP)
        return
    live("JDBC setFetchSize(1), autocommit off", client_cmd("jdbc", "fetch1", LIVE_MODEL))
    not_live("JDBC setFetchSize(1), autocommit on", client_cmd("jdbc", "autocommit", LIVE_MODEL),
             what="rows arrive only at the end (the driver ignores the fetch size and reads everything)")
    stopped("JDBC setFetchSize(1)", client_cmd("jdbc", "cancelquery", LONG_MODEL, STOP_AFTER),
            "CANCEL", "((BaseConnection) conn).cancelQuery() from another thread")

    # Statement.cancel() once executeQuery has returned: pgjdbc sends no
    # cancel request at all (the statement is no longer "in query")
    reset()
    res = run_client(client_cmd("jdbc", "stmtcancel", LONG_MODEL, STOP_AFTER))
    tr, _ = trace_of_stream(now_us())
    pieces = tr["t_us"] if tr else []
    label = "JDBC setFetchSize(1)"
    ok = (res.ev("CANCEL") is not None and row_texts(res) == expected_texts(LONG_WORDS)
          and not res.ev("ERROR") and len(pieces) == LONG_WORDS and res.detail("AFTER") == "1")
    notes.append("%s: Statement.cancel() after executeQuery returned: %d of %d rows, error: %s, %d of %d pieces sent"
                 % (label, len(res.rows), LONG_WORDS, res.detail("ERROR"), len(pieces), LONG_WORDS))
    report(ok, "%s: Statement.cancel() once executeQuery has returned does nothing: "
           "the stream goes on (%d of %d rows, no error, all %d pieces sent)"
           % (label, len(res.rows), LONG_WORDS, len(pieces)), res.dump())

    # Statement.cancel() while executeQuery still waits for the first row
    reset()
    res = run_client(client_cmd("jdbc", "stmtcancel-exec", LONG_MODEL + "&latency=1500"))
    t_stop = res.ev("CANCEL")
    tr, n = trace_of_stream(max((t_stop or 0) + 1800000, now_us()))
    pieces = tr["t_us"] if tr else []
    err = res.detail("ERROR") or ""
    ok = (t_stop is not None and err.startswith("57014") and res.detail("AFTER") == "1"
          and not res.rows and not pieces)
    t_err = res.ev("ERROR")
    report(ok, "%s: Statement.cancel() while executeQuery waits for the first row cancels it "
           "(57014 %s ms after it; %d pieces sent; SELECT 1 works after)"
           % (label, fmt((t_err - t_stop) / 1000) if t_err and t_stop else "-", len(pieces)),
           res.dump() + "\ntrace: %s" % json.dumps(tr))

    stopped(label, client_cmd("jdbc", "close", LONG_MODEL, STOP_AFTER),
            "CLOSE", "rs.close() then rollback()", want_error=False)

    # rs.close() alone: pgjdbc queues the portal's Close until the next
    # round trip, so the stream goes on until the rollback
    reset()
    res = run_client(client_cmd("jdbc", "close-only", LONG_MODEL, STOP_AFTER))
    t_close, t_rb = res.ev("CLOSE"), res.ev("ROLLBACK")
    tr, _ = trace_of_stream(max((t_rb or 0) + 800000, now_us()))
    pieces = tr["t_us"] if tr else []
    ok = t_close is not None and t_rb is not None and tr is not None and res.detail("AFTER") == "1"
    if ok:
        during = [p for p in pieces if t_close + STOP_MARGIN_MS * 1000 < p <= t_rb]
        late = [p for p in pieces if p > t_rb + STOP_MARGIN_MS * 1000]
        end = tr.get("end_us")
        end_ms = (end - t_rb) / 1000 if end else None
        ok = (len(during) >= 3 and not late and tr.get("aborted", True)
              and (end_ms is None or end_ms <= STOP_MARGIN_MS))
        summary = ("%d pieces sent in the %d ms between rs.close() and rollback(); provider stopped %s ms after the rollback"
                   % (len(during), (t_rb - t_close) / 1000, fmt(end_ms) if end_ms is not None else "?"))
    else:
        summary = "incomplete run"
    notes.append("%s: rs.close() alone: %s" % (label, summary))
    report(ok, "%s: rs.close() alone does not stop the stream: the provider goes on until the next statement "
           "(rollback) (%s)" % (label, summary), res.dump() + "\ntrace: %s" % json.dumps(tr))

    # cancelQuery() while the backend sits idle between two fetches: dropped
    reset()
    res = run_client(client_cmd("jdbc", "cancelquery-idle", LONG_MODEL, STOP_AFTER))
    tr, _ = trace_of_stream(now_us())
    pieces = tr["t_us"] if tr else []
    ok = (row_texts(res) == expected_texts(LONG_WORDS) and not res.ev("ERROR")
          and res.detail("AFTER") == "1" and len(pieces) == LONG_WORDS and not (tr or {}).get("aborted"))
    notes.append("%s: cancelQuery() from the fetching thread between rs.next() calls: %d of %d rows, error: %s, %d of %d pieces sent"
                 % (label, len(res.rows), LONG_WORDS, res.detail("ERROR"), len(pieces), LONG_WORDS))
    report(ok, "%s: cancelQuery() while the backend sits idle between fetches is dropped by PostgreSQL: "
           "the stream goes on (%d of %d rows, no error, all %d pieces sent)"
           % (label, len(res.rows), LONG_WORDS, len(pieces)), res.dump())


def group_libpq():
    live("libpq single-row mode", libpq_cmd("single", "SELECT " + chat_stream(LIVE_MODEL)))
    stopped("libpq single-row mode", libpq_cmd("cancel", "SELECT " + chat_stream(LONG_MODEL), STOP_AFTER),
            "CANCEL", "PQcancel")


def group_sql():
    """Query shapes, seen through libpq single-row mode (which shows exactly
    when the server sends each row)."""
    q = chat_stream(LIVE_MODEL)
    not_live("SELECT * FROM llm.chat_stream(...) (function in FROM)",
             libpq_cmd("single", "SELECT * FROM %s" % q),
             what="rows arrive only at the end (the function scan materializes the set)")
    not_live("SELECT string_agg(c, '') FROM llm.chat_stream(...) c",
             libpq_cmd("single", "SELECT string_agg(c, '') FROM %s c" % q),
             texts=[" ".join(expected_texts(WORDS))],
             what="the one row arrives at the end")
    not_live("SELECT llm.chat_stream(...) ORDER BY 1",
             libpq_cmd("single", "SELECT %s AS c ORDER BY 1" % q),
             texts=sorted(expected_texts(WORDS)),
             what="rows arrive only at the end (the sort reads the whole set)")
    live("SELECT c FROM (SELECT llm.chat_stream(...) AS c) s (select-list call in a subquery)",
         libpq_cmd("single", "SELECT c FROM (SELECT %s AS c) s" % q))
    live("SELECT c FROM (SELECT llm.chat_stream(...) AS c OFFSET 0) s (subquery not pulled up)",
         libpq_cmd("single", "SELECT c FROM (SELECT %s AS c OFFSET 0) s" % q))
    live("WITH s AS MATERIALIZED (SELECT llm.chat_stream(...) AS c) SELECT c FROM s",
         libpq_cmd("single", "WITH s AS MATERIALIZED (SELECT %s AS c) SELECT c FROM s" % q))
    live("SELECT llm.chat_stream(...) LIMIT 100",
         libpq_cmd("single", "SELECT %s LIMIT 100" % q))


def disconnect(label, env=None):
    """A libpq client streaming 2 s chunks is killed with SIGKILL after 2
    rows: the provider's stream must end within DISCONNECT_MS, before the
    next chunk."""
    model = "mock?words=6&chunk_delay=2000"
    reset()
    res = run_client(libpq_cmd("single", "SELECT " + chat_stream(model)), kill_after_rows=2, env=env)
    t_kill = res.t_kill
    name = ("%s: a libpq client killed with SIGKILL after 2 rows (chunk_delay=2000) stops the provider "
            "within %d ms, no chunk sent after the kill" % (label, DISCONNECT_MS))
    if t_kill is None:
        report(False, name, res.dump())
        return
    # how long the backend lives on (a measurement)
    gone_ms = None
    import psycopg
    with psycopg.connect("", autocommit=True) as conn:
        while now_us() < t_kill + 4500000:
            n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
                             ["%chunk_delay=2000%"]).fetchone()[0]
            if n == 0:
                gone_ms = (now_us() - t_kill) / 1000
                break
            time.sleep(0.02)
    # a stream still going sends its next piece 2 s after the second
    tr, _ = trace_of_stream(max(t_kill + 2600000, now_us()), end_wait_us=2000000)
    pieces = tr["t_us"] if tr else []
    why = []
    late = [(p - t_kill) / 1000 for p in pieces if p > t_kill]
    if late:
        why.append("pieces left %s ms after the kill" % ", ".join(fmt(x) for x in late))
    end_txt = "mock without end_us/aborted: judged by piece times"
    if tr is not None and "aborted" in tr:
        end = tr.get("end_us")
        if not tr.get("aborted"):
            why.append("the trace does not say aborted")
        if not end:
            why.append("the trace has no end_us")
        else:
            end_ms = (end - t_kill) / 1000
            end_txt = "provider connection closed %s ms after the kill" % fmt(end_ms)
            if end_ms > DISCONNECT_MS:
                why.append("the provider's stream ended %s ms after the kill" % fmt(end_ms))
    if tr is None:
        why.append("no trace")
    summary = "%s; %d of 6 pieces sent, %s; backend gone %s" % (
        end_txt, len(pieces),
        "%d after the kill, the last %s ms after it" % (len(late), fmt(late[-1])) if late else "none after the kill",
        ("%s ms after the kill" % fmt(gone_ms)) if gone_ms is not None else "not within 4.5 s")
    notes.append("%s: %s" % (label, summary))
    report(not why, "%s (%s)" % (name, summary), "; ".join(why) + "\ntrace: %s" % json.dumps(tr))


def group_disconnect():
    # The fix in src/stream.c: with client_connection_check_interval 0 (the
    # default) a backend used to notice a vanished client only when it
    # wrote rows to it again, chunks later (measured before the fix: the
    # provider sent 3 more chunks, 6 s, after the kill)
    disconnect("DISCONNECT-FIX (src/stream.c: a vanished client is noticed while waiting on the provider), "
               "client_connection_check_interval 0")
    # the README's advice, which works today
    disconnect("disconnect with client_connection_check_interval = 100ms",
               env={"PGOPTIONS": "-c client_connection_check_interval=100ms"})


# ----------------------------------------------------------- the README

README = os.path.join(os.path.dirname(os.path.dirname(HERE)), "README.md")


def readme_blocks(lang):
    """The fenced blocks of README.md in a language, in order."""
    out, cur = [], None
    for line in open(README, encoding="utf-8"):
        s = line.rstrip("\n")
        if cur is None:
            if s.strip() == "```" + lang:
                cur = []
        elif s.strip() == "```":
            out.append("\n".join(cur) + "\n")
            cur = None
        else:
            cur.append(s)
    return out


def run_raw(cmd, timeout=60, cwd=None, env=None, stdin_text=None):
    """Run a program, recording when each piece of its output arrived."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
                         cwd=cwd, env=dict(os.environ, **(env or {})))
    if stdin_text is not None:
        p.stdin.write(stdin_text.encode())
        p.stdin.close()
    reads = []
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    try:
        while True:
            b = os.read(p.stdout.fileno(), 65536)
            if not b:
                break
            reads.append((now_us(), b.decode("utf-8", "replace")))
        rc = p.wait()
        err = p.stderr.read().decode("utf-8", "replace")
    finally:
        timed_out = not timer.is_alive() and p.returncode is not None and p.returncode < 0
        timer.cancel()
    return reads, rc, err, timed_out


def readme_check(label, cmd, live=True, **kw):
    """A README snippet runs as printed, prints the reply as running text
    and exits; with live, its first words reach its output while the
    provider still streams (at least 500 ms before the last chunk)."""
    reset()
    t0 = now_us()
    reads, rc, err, timed_out = run_raw(cmd, **kw)
    tr, _ = trace_of_stream(now_us())
    text = "".join(t for _, t in reads)
    reply = " ".join(expected_texts(WORDS))
    why = []
    if rc != 0 or timed_out:
        why.append("it exited with %s%s" % (rc, " (timed out: it does not end)" if timed_out else ""))
    at = text.rfind(reply)
    if at < 0:
        why.append("its output has no %r" % reply)
    if not why and live:
        pieces = tr["t_us"] if tr else []
        # when the output's last reply began to arrive
        seen, first = 0, None
        for t, chunk in reads:
            seen += len(chunk)
            if seen > at:
                first = t
                break
        if len(pieces) != WORDS:
            why.append("the trace has %d pieces, expected %d" % (len(pieces), WORDS))
        elif first is None or first > pieces[-1] - SPAN_MIN_MS * 1000:
            why.append("its first words arrived %s ms before the last chunk left the mock"
                       % fmt((pieces[-1] - (first or pieces[-1])) / 1000))
    report(not why, "README %s: runs as printed, prints the reply%s and ends (%d ms)"
           % (label, " live" if live else "", (now_us() - t0) // 1000),
           "; ".join(why) + "\noutput: %r\nstderr: %s" % (text[-2000:], err[-2000:]))


def group_readme():
    """The README's snippets, as printed, in a database app whose model
    cheap streams w1 .. w8, 150 ms apart."""
    psql = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    setup = subprocess.run(psql + ["-d", "postgres", "-c", "CREATE DATABASE app"], capture_output=True, text=True)
    setup = subprocess.run(psql + ["-d", "app"], capture_output=True, text=True, input="""
        CREATE EXTENSION pg_llm;
        SELECT llm.create_provider('readme', 'openai', '%s/v1', api_key => 'sk-mock',
                                   options => '{"headers": {"x-mock-trace": "1"}}');
        SELECT llm.add_model('cheap', 'readme', '%s');
    """ % (MOCK, LIVE_MODEL))
    if setup.returncode != 0:
        report(False, "README: the database app is set up", setup.stderr)
        return
    env = {"PGDATABASE": "app"}
    py = readme_blocks("python")
    js = readme_blocks("js")
    java = readme_blocks("java")
    sqls = [b for b in readme_blocks("sql") if "llm.chat_stream" in b and "\\pset" in b]
    report(len(py) >= 1 and len(js) >= 1 and len(java) >= 1 and len(sqls) >= 1,
           "README: its Python, JavaScript and Java snippets and psql's running text are found "
           "(%d, %d, %d, %d)" % (len(py), len(js), len(java), len(sqls)))
    for k, b in enumerate(py):
        f = os.path.join(WORK, "readme_%d.py" % k)
        open(f, "w").write(b)
        readme_check("python snippet %d (psycopg 3)" % (k + 1), [PY, f], env=env)
    for k, b in enumerate(js):
        # beside test/clients/node_modules, where pg and pg-query-stream are
        f = os.path.join(HERE, ".readme_%d.js" % k)
        open(f, "w").write(b)
        try:
            readme_check("js snippet %d (node)" % (k + 1), ["node", f], env=env, cwd=HERE)
        finally:
            os.unlink(f)
    if JDBC_SKIP:
        print("ok - README java snippets # skip %s" % JDBC_SKIP)
    else:
        for k, b in enumerate(java):
            d = os.path.join(WORK, "readme_java_%d" % k)
            os.makedirs(d, exist_ok=True)
            open(os.path.join(d, "ReadmeSnippet.java"), "w").write(
                "import java.sql.*;\n\npublic class ReadmeSnippet {\n"
                "    public static void main(String[] args) throws Exception {\n"
                "        try (Connection conn = DriverManager.getConnection(args[0], args[1], \"\")) {\n"
                + b + "        }\n        System.out.flush();\n    }\n}\n")
            jar = JDBC_CP.split(":")[-1]
            c = subprocess.run(["javac", "-d", d, "-cp", jar, os.path.join(d, "ReadmeSnippet.java")],
                               capture_output=True, text=True)
            if c.returncode != 0:
                report(False, "README java snippet %d compiles inside a main with conn" % (k + 1), c.stderr)
                continue
            url = "jdbc:postgresql://%s:%s/app" % (os.environ.get("PGHOST", "127.0.0.1"), os.environ["PGPORT"])
            # System.out.print is buffered: the reply shows at the end
            readme_check("java snippet %d (JDBC)" % (k + 1),
                         ["java", "-cp", d + ":" + jar, "ReadmeSnippet", url, os.environ.get("PGUSER", "postgres")],
                         live=False)
    for k, b in enumerate(sqls):
        readme_check("psql block %d (running text)" % (k + 1), psql + ["-d", "app", "-f", "-"], stdin_text=b)
    # the one-line form the README gives beside the block
    m = re.search(r"`(psql -At [^`]*)`", open(README, encoding="utf-8").read())
    report(m is not None, "README: the psql one-liner is found")
    if m:
        readme_check("psql one-liner", ["bash", "-c", " ".join(m.group(1).split())], env=env)


GROUPS = [("libpq", group_libpq), ("psql", group_psql), ("psycopg", group_psycopg),
          ("node", group_node), ("jdbc", group_jdbc), ("sql", group_sql),
          ("disconnect", group_disconnect), ("readme", group_readme)]


def main():
    want = sys.argv[1:] or [g for g, _ in GROUPS]
    start = time.time()
    for name, fn in GROUPS:
        if name in want:
            try:
                fn()
            except Exception as ex:  # a broken group fails, the others run
                import traceback
                report(False, "%s: the group ran to its end" % name, traceback.format_exc())
    print("# live rows, delay after the mock sent each chunk (ms):")
    print("#   %-75s %8s %8s %8s" % ("client / mode", "first", "median", "max"))
    for label, first, med, mx in figures:
        print("#   %-75s %8s %8s %8s" % (label, fmt(first), fmt(med), fmt(mx)))
    print("# observed:")
    for n in notes:
        print("#   " + n)
    print("# matrix ran in %.0f s" % (time.time() - start))
    print("clients: %d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
