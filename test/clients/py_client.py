"""The psycopg 3 client of the streaming client matrix (test/clients/run.sh).

Runs llm.chat_stream('hi', MODEL) one way and prints, one line each, what
reached it and when (wall clock, microseconds since the epoch, comparable
with the mock provider's trace):

    <t_us> ROW <text>            a row, or one line of a COPY block
    <t_us> EV <NAME> [detail]    CANCEL, BREAK, CLOSE, ERROR <sqlstate> <msg>,
                                 AFTER <value of SELECT 1>, DONE

usage: py_client.py MODE MODEL [N]

  stream        cursor.stream(): single-row mode
  named         a named (server-side) cursor, itersize = 1
  named100      a named cursor with the default itersize (100)
  copy          cursor.copy("COPY (SELECT ...) TO STDOUT"), block by block
  execute       cursor.execute(), then iterate (the whole result at once)
  stream-cancel N   cursor.stream(); after N rows another thread calls
                    conn.cancel() while this one waits for the next row
  stream-break N    cursor.stream(); leave the loop after N rows
  named-cancel N    named cursor, itersize 1; conn.cancel() from another
                    thread after N rows, while a FETCH waits
  named-idle-cancel N  named cursor, itersize 1; after N rows conn.cancel()
                    while the client sits idle between fetches (0.5 s),
                    then fetch on
  named-close N     named cursor, itersize 1; close the cursor after N rows

Every mode that stops a stream then runs SELECT 1 on the same connection
(after a rollback when the transaction failed).  Connection from the PG*
environment variables.
"""
import sys
import threading
import time

import psycopg


def now_us():
    return time.time_ns() // 1000


def out(t, kind, text=""):
    sys.stdout.write("%d %s %s\n" % (t, kind, text))
    sys.stdout.flush()


def row(text):
    out(now_us(), "ROW", text.rstrip("\r\n"))


def ev(name, detail=""):
    out(now_us(), "EV", (name + " " + detail).strip())


def error(ex):
    state = getattr(ex, "sqlstate", None) or "?"
    msg = str(ex).splitlines()[0] if str(ex) else type(ex).__name__
    ev("ERROR", "%s %s" % (state, msg))


def after(conn):
    """SELECT 1 on the same connection."""
    try:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()
        v = conn.execute("SELECT 1").fetchone()[0]
        ev("AFTER", str(v))
    except Exception as ex:  # reported, the check fails on it
        ev("AFTER-FAILED", repr(ex))


def cancel_later(conn, ready):
    """A thread that calls conn.cancel() once `ready` is set."""
    def run():
        ready.wait()
        # let the main thread get back into its wait for the next row
        time.sleep(0.02)
        ev("CANCEL")
        conn.cancel()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def main():
    mode, model = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    query = "SELECT llm.chat_stream('hi', %s)"
    with psycopg.connect("") as conn:
        conn.autocommit = mode in ("stream", "copy", "execute", "stream-cancel", "stream-break")
        cur = conn.cursor()
        if mode == "stream":
            for (c,) in cur.stream(query, [model]):
                row(c)
        elif mode in ("named", "named100"):
            with conn.cursor("c") as nc:
                if mode == "named":
                    nc.itersize = 1
                nc.execute(query, [model])
                for (c,) in nc:
                    row(c)
            conn.commit()
        elif mode == "copy":
            sql = "COPY (SELECT llm.chat_stream('hi', {})) TO STDOUT"
            with cur.copy(psycopg.sql.SQL(sql).format(psycopg.sql.Literal(model))) as cp:
                for block in cp:
                    t = now_us()
                    for line in bytes(block).decode().splitlines():
                        out(t, "ROW", line)
        elif mode == "execute":
            cur.execute(query, [model])
            for (c,) in cur:
                row(c)
        elif mode == "stream-cancel":
            ready = threading.Event()
            cancel_later(conn, ready)
            k = 0
            try:
                for (c,) in cur.stream(query, [model]):
                    row(c)
                    k += 1
                    if k == n:
                        ready.set()
            except psycopg.Error as ex:
                error(ex)
            after(conn)
        elif mode == "stream-break":
            k = 0
            for (c,) in cur.stream(query, [model]):
                row(c)
                k += 1
                if k == n:
                    ev("BREAK")
                    break
            # CPython closed the generator when the loop ended: stream()
            # cancelled the query and drained the connection
            ev("LOOP-LEFT")
            after(conn)
        elif mode == "named-cancel":
            ready = threading.Event()
            cancel_later(conn, ready)
            k = 0
            try:
                with conn.cursor("c") as nc:
                    nc.itersize = 1
                    nc.execute(query, [model])
                    for (c,) in nc:
                        row(c)
                        k += 1
                        if k == n:
                            ready.set()
            except psycopg.Error as ex:
                error(ex)
            after(conn)
        elif mode == "named-idle-cancel":
            k = 0
            try:
                with conn.cursor("c") as nc:
                    nc.itersize = 1
                    nc.execute(query, [model])
                    for (c,) in nc:
                        row(c)
                        k += 1
                        if k == n:
                            ev("CANCEL")
                            conn.cancel()
                            time.sleep(0.5)
                            ev("RESUME")
                conn.commit()
            except psycopg.Error as ex:
                error(ex)
            after(conn)
        elif mode == "named-close":
            k = 0
            nc = conn.cursor("c")
            nc.itersize = 1
            nc.execute(query, [model])
            for (c,) in nc:
                row(c)
                k += 1
                if k == n:
                    break
            ev("CLOSE")
            nc.close()
            ev("CLOSED")
            conn.commit()
            after(conn)
        else:
            sys.exit("py_client.py: unknown mode " + mode)
    ev("DONE")


if __name__ == "__main__":
    main()
