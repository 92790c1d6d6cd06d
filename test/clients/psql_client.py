"""The psql client of the streaming client matrix (test/clients/run.sh).

Runs psql interactively on a pseudo-terminal (as a person at a terminal
does; in a script psql exits at the first Ctrl-C), types one
SELECT llm.chat_stream('hi', MODEL) and prints, one line each, what psql
showed and when (wall clock, microseconds since the epoch, comparable with
the mock provider's trace; a line counts when its line end arrives):

    <t_us> ROW <text>            a row of the reply (w1, w2, ...)
    <t_us> EV <NAME> [detail]    CANCEL (SIGINT sent), ERROR <message>,
                                 AFTER <value of SELECT 1>, OUT <any other
                                 line, e.g. "Cancel request sent">,
                                 PARTIAL <text> (a row's text shown before
                                 its line end), DONE

usage: psql_client.py MODE MODEL [N [DELAY_MS]]

  fetch1        \\set FETCH_COUNT 1, aligned output (-t)
  fetch1-unaligned  \\set FETCH_COUNT 1, unaligned output (-A -t)
  nofetch       no FETCH_COUNT: psql reads the whole result first
  sigint N [DELAY_MS]
                \\set FETCH_COUNT 1; SIGINT to psql (what Ctrl-C does)
                DELAY_MS after the Nth row, then SELECT 1 in the same
                session.  psql prints "Cancel request sent"; when the
                cancel reaches a FETCH that waits for the next row, the
                error 57014 follows; when it finds psql between two
                fetches, psql shows no error, leaves its fetch loop and
                closes its cursor.

psql comes from PATH, the connection from the PG* environment variables.
"""
import os
import pty
import re
import select
import signal
import sys
import termios
import threading
import time


def now_us():
    return time.time_ns() // 1000


def out(t, kind, text=""):
    sys.stdout.write("%d %s %s\n" % (t, kind, text))
    sys.stdout.flush()


ROW_RE = re.compile(r"^\s*(w\d+)\s*$")


def main():
    mode, model = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    delay_ms = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    args = ["psql", "-X", "-n", "-q", "-t", "-P", "pager=off", "-v", "PROMPT1=", "-v", "PROMPT2="]
    if mode == "fetch1-unaligned":
        args.append("-A")
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["PAGER"] = ""
        os.execvp("psql", args)
    # no echo of what is typed, no CR before LF
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~termios.ECHO
    attrs[1] &= ~termios.ONLCR
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    lit = model.replace("'", "''")
    script = ""
    if mode != "nofetch":
        script += "\\set FETCH_COUNT 1\n"
    script += "SELECT llm.chat_stream('hi', '%s');\n" % lit
    if mode != "sigint":
        script += "\\q\n"
    os.write(fd, script.encode())

    rows = 0
    buf = b""
    deadline = time.time() + 60
    sent_after = False
    partial = None
    while time.time() < deadline:
        r, _, _ = select.select([fd], [], [], 0.5)
        if not r:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: psql has exited
            break
        if not data:
            break
        t = now_us()
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            text = line.decode("utf-8", "replace").rstrip("\r")
            m = ROW_RE.match(text)
            if m:
                out(t, "ROW", m.group(1))
                rows += 1
                if mode == "sigint" and rows == n:
                    def sigint():
                        out(now_us(), "EV", "CANCEL")
                        os.kill(pid, signal.SIGINT)
                    threading.Timer(delay_ms / 1000, sigint).start()
            elif "ERROR:" in text or "Cancel request sent" in text:
                if "ERROR:" in text:
                    out(t, "EV", "ERROR " + text.split("ERROR:", 1)[1].strip())
                else:
                    out(t, "EV", "OUT " + text.strip())
                # psql is back at its prompt once the FETCH it was waiting
                # for has ended; the next command then runs
                if mode == "sigint" and not sent_after:
                    sent_after = True
                    os.write(fd, b"SELECT 'after:' || 1;\n\\q\n")
            elif text.strip().startswith("after:"):
                out(t, "EV", "AFTER " + text.strip()[len("after:"):])
            elif text.strip():
                out(t, "EV", "OUT " + text.strip())
        # a row's text that came without its line end yet (psql -A prints
        # the record separator before the next record)
        m = ROW_RE.match(buf.decode("utf-8", "replace"))
        if m and partial != buf:
            partial = buf
            out(t, "EV", "PARTIAL " + m.group(1))
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    out(now_us(), "EV", "DONE")


if __name__ == "__main__":
    main()
