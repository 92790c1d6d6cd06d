#!/usr/bin/env python3
"""Run the fenced blocks of Markdown files in order, as a reader would.

Called by test/readme_test.sh, which starts a private PostgreSQL and the
mock provider and exports their addresses.  Every fenced block needs a
language, and the language says what happens to it:

  sql      psql runs it in the examples' database (PGDATABASE), with
           ON_ERROR_STOP, once the realtime queue items of the blocks
           before it are answered (a reader is slower than the worker);
           it must succeed, unless it shows an error as a comment
           (-- ERROR:  message): then it must fail with that error.  A
           WARNING or NOTICE it shows must be raised.
  sh       bash -e runs it in the repository (sudo runs its command as
           the test's user)
  ini      lines of postgresql.conf: added to the server's, which is
           restarted
  js, python, java
           run as printed by the client matrix (test/clients/run.sh
           readme), not here
  text, json
           output or data: not run

A file with a section "## Reference" has its tables checked against the
catalog after its blocks ran (test/readme_reference.py), one ok / not ok
line each.

A comment <!-- readme-test: skip REASON --> right before a block skips
it, with its reason in the report.  README_TEST_VERBOSE=1 shows what each
block printed.  The providers' public URLs are
mapped to the mock (the map is printed), and so are the key files the
README names.  One ok / not ok line per block; the last line is
"readme: N passed, M failed, K skipped".
"""
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import readme_reference  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_HERE = {"sql", "sh", "ini"}
CLIENTS = {"js", "python", "java"}
NOT_RUN = {"text", "json"}
SKIP_RE = re.compile(r"<!--\s*readme-test:\s*skip\b\s*(.*?)\s*-->", re.S)

mock = "http://127.0.0.1:%s" % os.environ["MOCK_PORT"]
relay = "http://127.0.0.1:%s" % os.environ.get("RELAY_PORT", os.environ["MOCK_PORT"])
# what the README's addresses and files stand for here
URLS = [
    ("https://api.openai.com/v1", mock + "/v1"),
    ("https://api.anthropic.com/v1", mock + "/anthropic/v1"),
    ("https://relay.example/v1", relay + "/v1"),
    ("https://api.deepseek.com/v1", mock + "/v1"),
    ("http://127.0.0.1:11434/v1", mock + "/v1"),
    ("https://vllm.internal:8443/v1", mock + "/v1"),
]
FILES = []
if os.environ.get("CERTS"):
    certs = os.environ["CERTS"]
    FILES = [("/etc/pg_llm/internal-ca.pem", certs + "/ca.pem"),
             ("/etc/pg_llm/client.pem", certs + "/client.pem"),
             ("/etc/pg_llm/client.key", certs + "/client.key")]

passed = failed = skipped = 0


def blocks(path):
    """(line, language, text, skip reason or None) of each fenced block."""
    lines = open(path, encoding="utf-8").read().split("\n")
    out = []
    i = 0
    last_comment = None
    last_comment_end = -10
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)\s*$", line)
        if m:
            indent, fence, lang = m.group(1), m.group(2), m.group(3)
            start = i + 1
            body = []
            i += 1
            while i < len(lines) and not re.match(r"^\s*" + re.escape(fence[0]) + "{%d,}\s*$" % len(fence), lines[i]):
                body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
                i += 1
            # a skip comment counts when only blank lines stand between it and the fence
            between = lines[last_comment_end + 1:start - 1] if last_comment is not None else ["x"]
            reason = last_comment if all(not b.strip() for b in between) else None
            out.append((start, lang, "\n".join(body) + "\n", reason))
            last_comment = None
            i += 1
            continue
        if "<!--" in line:
            text = line
            j = i
            while "-->" not in text and j + 1 < len(lines):
                j += 1
                text += "\n" + lines[j]
            m = SKIP_RE.search(text)
            if m:
                last_comment = m.group(1) or "no reason given"
                last_comment_end = j
            i = j + 1
            continue
        i += 1
    return out


VERBOSE = os.environ.get("README_TEST_VERBOSE") == "1"
last_output = ""


def report(ok, name, detail=None):
    global passed, failed
    if ok:
        passed += 1
        print("ok - %s" % name)
        if VERBOSE:
            for d in last_output.rstrip().split("\n"):
                print("#     " + d)
    else:
        failed += 1
        print("not ok - %s" % name)
        if detail:
            for d in detail.rstrip().split("\n")[-25:]:
                print("#   " + d)
    sys.stdout.flush()


def mapped(text):
    for a, b in URLS + FILES:
        text = text.replace(a, b)
    return text


def shown(text, level):
    """The messages of a level a SQL block shows in comments (-- ERROR:  m)."""
    return [m.group(1).strip() for m in re.finditer(r"^\s*--\s*%s:\s+(.*)$" % level, text, re.M)]


def matches(shown_text, output):
    # "..." in a shown message stands for anything
    pattern = ".*".join(re.escape(p) for p in shown_text.split("..."))
    return re.search(pattern, output) is not None


def settle():
    """A reader takes longer than the worker: let the realtime items queued
    by the blocks before this one be answered first (at most 20 s)."""
    for _ in range(100):
        r = subprocess.run(["psql", "-X", "-Atq", "-c",
                            "SELECT count(*) FROM llm.queue WHERE status IN ('pending', 'running') "
                            "AND via = 'realtime' AND next_attempt_at < now() + interval '1 minute'"],
                           capture_output=True, text=True)
        if r.returncode != 0 or r.stdout.strip() in ("", "0"):
            return
        time.sleep(0.2)


def run_sql(name, text):
    settle()
    errors = shown(text, "ERROR")
    others = shown(text, "WARNING") + shown(text, "NOTICE")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(mapped(text))
    try:
        r = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-f", f.name],
                           capture_output=True, text=True, timeout=600)
    finally:
        os.unlink(f.name)
    out = r.stdout + r.stderr
    global last_output
    last_output = out
    if errors:
        missing = [e for e in errors if not matches(e, r.stderr)]
        report(r.returncode != 0 and not missing, name + " (fails as shown)",
               None if r.returncode != 0 and not missing else
               ("it did not fail\n" if r.returncode == 0 else "") +
               "".join("the error shown was not raised: %s\n" % e for e in missing) + out)
        return
    missing = [w for w in others if not matches(w, r.stderr)]
    report(r.returncode == 0 and not missing, name,
           None if r.returncode == 0 and not missing else
           "".join("not raised: %s\n" % w for w in missing) + out)


def run_sh(name, text):
    shim = tempfile.mkdtemp()
    with open(os.path.join(shim, "sudo"), "w") as f:
        f.write('#!/bin/sh\nexec "$@"\n')
    os.chmod(os.path.join(shim, "sudo"), 0o755)
    env = dict(os.environ, PATH=shim + ":" + os.environ["PATH"])
    r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", mapped(text)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    global last_output
    last_output = r.stdout + r.stderr
    report(r.returncode == 0, name, None if r.returncode == 0 else r.stdout + r.stderr)


def run_ini(name, text):
    global last_output
    last_output = ""
    conf = os.path.join(os.environ["PGDATA_DIR"], "postgresql.conf")
    lines = [l for l in text.split("\n") if l.strip() and not l.strip().startswith("#")]
    bad = [l for l in lines if not re.match(r"^\s*[A-Za-z_][A-Za-z0-9_.]*\s*=", l)]
    if bad:
        report(False, name, "not a postgresql.conf line: " + bad[0])
        return
    with open(conf, "a") as f:
        f.write("\n# " + name + "\n" + "\n".join(lines) + "\n")
    r = subprocess.run(["bash", "-c", os.environ["README_RESTART"]], capture_output=True, text=True,
                       timeout=120)
    report(r.returncode == 0, name + " (the server restarted with it)",
           None if r.returncode == 0 else r.stdout + r.stderr)


def main():
    global skipped
    print("# the README's addresses on the mock: " +
          ", ".join("%s -> %s" % (a, b) for a, b in URLS))
    for path in sys.argv[1:]:
        rel = os.path.relpath(path, ROOT)
        for line, lang, text, skip in blocks(path):
            name = "%s:%d %s" % (rel, line, lang or "(no language)")
            if skip is not None:
                skipped += 1
                print("ok - %s # skip %s" % (name, skip))
                continue
            if lang in NOT_RUN:
                continue
            if lang in CLIENTS:
                print("# %s: run as printed by test/clients/run.sh readme" % name)
                continue
            if lang not in RUN_HERE:
                report(False, name, "a block needs a language: sql, sh or ini to be run here; js, python "
                       "or java for the client matrix; text or json for output and data "
                       "(or <!-- readme-test: skip REASON --> before it)")
                continue
            first = next((l for l in text.split("\n") if l.strip()), "")
            name += ": " + first.strip()[:60]
            {"sql": run_sql, "sh": run_sh, "ini": run_ini}[lang](name, text)
        if re.search(r"^## Reference\s*$", open(path, encoding="utf-8").read(), re.M):
            readme_reference.check(rel, report)
    print("readme: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
