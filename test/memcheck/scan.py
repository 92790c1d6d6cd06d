#!/usr/bin/env python3
"""Read the valgrind logs of test/memcheck.sh and judge them.

Usage: scan.py --root REPO --server-log FILE [--regress-rc N] LOGDIR [PG_REGRESS_OUTPUT...]

LOGDIR holds one valgrind log per server process (vg.<pid>), written with
--gen-suppressions=all, so every error valgrind reports (leaks included)
is followed by a suppression block in braces; that block is how errors are
told apart from valgrind's other messages.

Fails (exit 1) on:
  - any reported error other than a leak (suppressed ones are never
    reported), in any server process;
  - a definitely or indirectly lost block whose record mentions pg_llm,
    libcurl or json-c (pg_llm.so, the repository's src/, libcurl*,
    libjson-c*);
  - a process killed by a signal, or a log without its ERROR SUMMARY (the
    process did not exit under valgrind);
  - PANIC, TRAP or a crashed server process in the server log;
  - a pg_regress test that failed, or pg_regress that did not run.
Other leaks are PostgreSQL's own: listed as "not ours", not failing.

The last line is "memcheck: N passed, M failed", counting one check per
pg_regress test and one per valgrind log.
"""

import argparse
import os
import re
import sys

PREFIX = re.compile(r'^==(\d+)== ?(.*)$')
LEAK = re.compile(r'are (definitely|indirectly) lost in loss record')
RESULT = re.compile(r'^(?:test\s+)?(\S+)\s+\.\.\.\s+(ok|FAILED|failed)')
FRAME = re.compile(r'^\s*(?:at|by) 0x[0-9A-Fa-f]+: ')
SIGNAL = 'Process terminating with default action of signal'
MAX_SHOWN_LINES = 45


def parse_log(path):
    """The log's errors as (record lines, suppression block), and facts."""
    errors = []
    facts = {'complete': False, 'signal': None, 'summary': None}
    record = []         # the message being read
    last_record = []    # the message just ended by a blank line
    supp = None
    with open(path, errors='replace') as f:
        for raw in f:
            line = raw.rstrip('\n')
            if supp is not None:
                supp.append(line)
                if line == '}':
                    if last_record:
                        errors.append((last_record, supp))
                    last_record = []
                    supp = None
                continue
            m = PREFIX.match(line)
            if not m:
                if line == '{':
                    # the block follows its error (and one blank line)
                    supp = [line]
                    if record:
                        last_record = record
                        record = []
                continue
            text = m.group(2)
            if text.strip() == '':
                if record:
                    last_record = record
                    record = []
                    # a crash is reported without a suppression block
                    if last_record[0].startswith(SIGNAL):
                        facts['signal'] = last_record
                continue
            if not record:
                last_record = []
            record.append(text)
            if text.startswith('ERROR SUMMARY:'):
                facts['complete'] = True
                facts['summary'] = text
    if record and record[0].startswith(SIGNAL):
        facts['signal'] = record
    return errors, facts


def frames(record):
    return [l.strip() for l in record if FRAME.match(l)]


def signature(record, ours):
    """What makes two records the same problem.  Leaks: their kind and the
    first pg_llm, libcurl or json-c frames of the allocation; other errors:
    the headline without numbers and the top of the stack."""
    fr = frames(record)
    m = LEAK.search(record[0])
    if m:
        mine = [function(f) for f in fr if ours.search(f)]
        if mine:
            return 'leak %s|%s' % (m.group(1), '|'.join(mine[:4]))
    head = re.sub(r'0x[0-9A-Fa-f]+|\d[\d,]*', 'N', record[0])
    return head + '|' + '|'.join(function(f) for f in fr[:12])


def load_roles(server_log):
    """pid -> what the process was, and the lines that tell of a crash."""
    roles = {}
    named = set()
    problems = []
    if not server_log or not os.path.exists(server_log):
        return roles, problems
    pat = re.compile(r'\[(\d+)\] (.*?): (?:LOG|FATAL|ERROR|WARNING|NOTICE|PANIC|'
                     r'DEBUG\d?|INFO|STATEMENT|DETAIL|HINT|CONTEXT): ')
    crash = re.compile(r'PANIC:|TRAP:|was terminated by signal|terminated by exception|'
                       r'terminating any other active server processes')
    with open(server_log, errors='replace') as f:
        for line in f:
            m = pat.search(line)
            if m:
                pid = m.group(1)
                who = m.group(2).replace('[unknown]', '').strip()
                app = re.search(r'connection authorized: .*application_name=(\S+)', line)
                if app:
                    roles[pid] = 'client backend ' + app.group(1)
                    named.add(pid)
                elif pid not in named and who and who != 'not initialized':
                    roles[pid] = who
            if crash.search(line):
                problems.append(line.rstrip())
    return roles, problems


def regress_results(paths):
    tests = []
    for p in paths:
        if not os.path.exists(p):
            continue
        with open(p, errors='replace') as f:
            for line in f:
                m = RESULT.match(line.strip())
                if m:
                    tests.append((m.group(1), m.group(2) == 'ok'))
    return tests


def ours_pattern(root):
    """Frames of pg_llm (its sources by name, or pg_llm.so without debug
    information), libcurl or json-c."""
    src = os.path.join(root, 'src')
    names = sorted(f for f in os.listdir(src) if f.endswith('.c')) if os.path.isdir(src) else []
    parts = [r'pg_llm\.so', r'libcurl', r'libjson-c', r'/curl[-/]', r'/json-c[-/]']
    if names:
        parts.append(r'[(/]src/(?:%s):\d+\)' % '|'.join(re.escape(n) for n in names))
    return re.compile('|'.join(parts))


def function(frame):
    m = re.match(r'(?:at|by) 0x[0-9A-Fa-f]+: (.*?)(?: \(|$)', frame)
    return m.group(1) if m else frame


def leak_bytes(headline):
    m = re.match(r'([\d,]+) (?:\(.*?\) )?bytes in ([\d,]+) blocks', headline)
    if not m:
        return 0, 0
    return int(m.group(1).replace(',', '')), int(m.group(2).replace(',', ''))


def show(lines, indent='    '):
    out = lines[:MAX_SHOWN_LINES]
    for l in out:
        print(indent + l)
    if len(lines) > len(out):
        print(indent + '... (%d more lines)' % (len(lines) - len(out)))


def plural(n, word, suffix='es'):
    return '%d %s%s' % (n, word, '' if n == 1 else suffix)


class Group:
    """Records of one problem, over every process."""

    def __init__(self, record, supp):
        self.record = record
        self.supp = supp
        self.count = 0
        self.bytes = 0
        self.blocks = 0
        self.procs = []

    def add(self, record, supp, who):
        b, n = leak_bytes(record[0])
        if b > leak_bytes(self.record[0])[0]:
            self.record, self.supp = record, supp
        self.count += 1
        self.bytes += b
        self.blocks += n
        if who not in self.procs:
            self.procs.append(who)

    def where(self):
        shown = ', '.join(self.procs[:4]) + (' ...' if len(self.procs) > 4 else '')
        return '%s in %s: %s' % (plural(self.count, 'record', 's'),
                                  plural(len(self.procs), 'process'), shown)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--root', required=True)
    ap.add_argument('--server-log')
    ap.add_argument('--regress-rc', type=int, default=0)
    ap.add_argument('logdir')
    ap.add_argument('results', nargs='*')
    a = ap.parse_args()

    ours = ours_pattern(os.path.realpath(a.root))
    roles, server_problems = load_roles(a.server_log)
    logs = sorted((f for f in os.listdir(a.logdir) if f.startswith('vg.')),
                  key=lambda f: int(f[3:]) if f[3:].isdigit() else 0)

    errors_g = {}       # memory errors, crashes, incomplete logs
    definite_g = {}     # our definitely lost blocks
    indirect_g = {}     # our indirectly lost blocks
    not_ours = {}       # leaks of PostgreSQL's own
    bad_logs = []
    passed_logs = 0
    suppressed = 0
    for name in logs:
        pid = name[3:]
        who = '%s (%s)' % (name, roles.get(pid, 'server process'))
        errors, facts = parse_log(os.path.join(a.logdir, name))
        bad = False
        m = re.search(r'suppressed: ([\d,]+) from', facts['summary'] or '')
        if m:
            suppressed += int(m.group(1).replace(',', ''))
        if facts['signal']:
            errors.append((facts['signal'], []))
        if not facts['complete']:
            errors.append((['incomplete log: no ERROR SUMMARY (the process did not exit under valgrind)'], []))
        for record, supp in errors:
            sig = signature(record, ours)
            leak = LEAK.search(record[0])
            if leak and not any(ours.search(l) for l in record):
                table = not_ours
            else:
                bad = True
                table = errors_g if not leak else (definite_g if leak.group(1) == 'definitely' else indirect_g)
            table.setdefault(sig, Group(record, supp)).add(record, supp, who)
        if bad:
            bad_logs.append(who)
        else:
            passed_logs += 1

    tests = regress_results(a.results)
    tests_failed = [t for t, ok in tests if not ok]
    regress_broken = a.regress_rc != 0 and not tests_failed
    n_failed = (len(bad_logs) + len(tests_failed) + (1 if regress_broken else 0)
                + (1 if server_problems else 0))
    n_passed = passed_logs + sum(1 for _, ok in tests if ok)

    print()
    print('== memcheck summary ==')
    print('pg_regress: %s, %d failed%s' % (plural(len(tests), 'test', 's'), len(tests_failed),
                                          ': ' + ' '.join(tests_failed) if tests_failed else ''))
    if regress_broken:
        print('pg_regress failed without a failed test (it did not run, or timed out)')
    print('valgrind: %s, %d clean, %d failing; %d errors suppressed by test/valgrind.supp'
          % (plural(len(logs), 'server process'), passed_logs, len(bad_logs), suppressed))
    print('  memory errors: %d kinds; leaks of pg_llm, libcurl or json-c: %d definitely lost, '
          '%d indirectly lost kinds' % (len(errors_g), len(definite_g), len(indirect_g)))
    if server_problems:
        print()
        print('FAIL: a server process crashed (server log):')
        show(server_problems[:20])
    for g in errors_g.values():
        print()
        print('FAIL: %s' % g.record[0])
        print('  ' + g.where())
        show(g.record[1:])
        if g.supp:
            print('  its suppression, for test/valgrind.supp if it is not our bug:')
            show(g.supp)
    for g in definite_g.values():
        print()
        print('FAIL: leak, %s bytes in %s blocks definitely lost (with what they point to)'
              % (format(g.bytes, ','), format(g.blocks, ',')))
        print('  ' + g.where())
        print('  the largest record:')
        show(g.record, '      ')
    if indirect_g:
        print()
        print('FAIL: indirectly lost (blocks only the definitely lost ones above point to):')
        for g in indirect_g.values():
            print('  %s bytes in %s blocks, %s' % (format(g.bytes, ','), format(g.blocks, ','), g.where()))
            for l in [l for l in frames(g.record) if ours.search(l)][:4]:
                print('      ' + l)
    if not_ours:
        print()
        print('not ours (leaks without a pg_llm, libcurl or json-c frame; not counted): %d kinds'
              % len(not_ours))
        for g in not_ours.values():
            print('  %s  [%s]' % (g.record[0], g.where()))
            for l in frames(g.record)[:8]:
                print('      ' + l)
    print()
    print('memcheck: %d passed, %d failed' % (n_passed, n_failed))
    return 1 if n_failed else 0


if __name__ == '__main__':
    sys.exit(main())
