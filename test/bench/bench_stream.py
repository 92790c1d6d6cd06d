#!/usr/bin/env python3
"""test/bench/bench_stream.py: the measuring loop and the report of
bench_stream.sh (which sets up PostgreSQL, the mock and the providers).

usage: bench_stream.py run --port MOCK_PORT --client STREAM_CLIENT
                           --words W --delay D --streams R --data DIR
                           [--direct-anthropic]
       bench_stream.py report --words W --data DIR

`run` does one untimed warm-up stream per case (same reply without
chunk_delay: models bench-openai-warm and bench-anthropic-warm; it must
pair too), then R rounds of the cases, one stream each, in this
order (interleaved, so a noisy moment of the shared machine does not fall
on one case only):

  direct_openai     bench_stream_direct.stream(): a plain socket client
                    reading the mock's OpenAI SSE, stamping events on recv()
  pg_openai         stream_client (libpq single-row mode):
                      SELECT llm.chat_stream('bench', 'bench-openai')
  pg_copy           stream_client --copy
                      COPY (SELECT llm.chat_stream(...)) TO STDOUT
  pg_anthropic      stream_client on model 'bench-anthropic'
  direct_anthropic  the direct client on the Anthropic protocol, only with
                    --direct-anthropic (the direct client's timings do
                    not depend on the protocol; pg_anthropic is compared
                    with direct_openai otherwise)

Before each stream the mock is reset (POST /_reset), after it GET /_trace
gives that stream's piece send times.  DIR receives, per case and stream
i, CASE.i.rows (`<t_us> <row text>` per row) and CASE.i.trace (the trace
JSON); `report` reads them back.

Pairing: row k goes with piece k.  For that to hold, every stream must
have exactly one trace, W pieces in it and W rows, and row k must read
`wk` (the mock's `words=W` reply is `w1 w2 ... wW`, one piece per word):
so no empty role chunk became a row, and no piece was lost or merged.
Any mismatch is listed and the exit status is 1; timings never make it
fail.

Latency = arrival time of row k at the client - send time of piece k at
the mock, in ms.  The first row is reported on its own: its piece leaves
the mock together with the response headers and the role chunk, so it
also pays for pg_llm's handling of the response start.  The later rows
(2..W) are pooled over all the streams of a case; the last row, also
shown on its own, leaves the mock together with the end of the stream
(finish, usage and end marker), so it shows whether the backend sends it
before or after finishing the query.  Only 127.0.0.1 is contacted.
"""
import argparse
import http.client
import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True     # leave no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_stream_direct  # noqa: E402

TARGET_MS = 5.0

CASES = [
    ('direct_openai', 'direct SSE client (openai)'),
    ('pg_openai', 'pg_llm single-row (openai)'),
    ('pg_copy', 'pg_llm COPY TO STDOUT (openai)'),
    ('direct_anthropic', 'direct SSE client (anthropic)'),
    ('pg_anthropic', 'pg_llm single-row (anthropic)'),
]
OPTIONAL = {'direct_anthropic'}    # only with --direct-anthropic


def baseline(case, present):
    """The direct case a pg_llm case is compared with."""
    if case == 'pg_anthropic' and 'direct_anthropic' in present:
        return 'direct_anthropic'
    return 'direct_openai'


def run_cases(args):
    return [(c, l) for c, l in CASES if c not in OPTIONAL or args.direct_anthropic]


# ------------------------------------------------------------------ run

def mock_call(port, method, path):
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=30)
    try:
        c.request(method, path)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError('mock %s %s: %d' % (method, path, r.status))
        return body
    finally:
        c.close()


def run_case(case, args, rows_path, warm=False):
    """One stream of a case, its rows written to rows_path.  A warm-up
    stream has the same words without chunk_delay (models *-warm)."""
    delay = 0 if warm else args.delay
    openai_model = 'mock?words=%d&chunk_delay=%d' % (args.words, delay)
    anthropic_model = 'claude?words=%d&chunk_delay=%d' % (args.words, delay)
    if case.startswith('direct_'):
        proto = case[len('direct_'):]
        info = {}
        lines, err = bench_stream_direct.stream(
            args.port, proto, openai_model if proto == 'openai' else anthropic_model,
            info=info)
        if err:
            lines.append('0 ERROR direct client: %s\n' % err)
        with open(rows_path, 'w') as f:
            f.write(''.join(lines))
        with open(rows_path[:-len('.rows')] + '.sent', 'w') as f:
            f.write('%d\n' % info.get('t_sent', 0))
        return
    suffix = '-warm' if warm else ''
    sql_openai = "SELECT llm.chat_stream('bench', 'bench-openai%s')" % suffix
    sql_anthropic = "SELECT llm.chat_stream('bench', 'bench-anthropic%s')" % suffix
    cmd = {
        'pg_openai': [args.client, sql_openai],
        'pg_anthropic': [args.client, sql_anthropic],
        'pg_copy': [args.client, '--copy', 'COPY (%s) TO STDOUT' % sql_openai],
    }[case]
    with open(rows_path, 'w') as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, text=True)
    if rc.returncode not in (0, 2):    # 2: an ERROR line is in the rows
        with open(rows_path, 'a') as f:
            f.write('0 ERROR stream_client exited %d: %s\n' % (rc.returncode, rc.stderr.strip()))


def measure(case, args, prefix, warm=False):
    mock_call(args.port, 'POST', '/_reset')
    run_case(case, args, prefix + '.rows', warm)
    with open(prefix + '.trace', 'wb') as f:
        f.write(mock_call(args.port, 'GET', '/_trace'))


def cmd_run(args):
    warm_dir = os.path.join(args.data, 'warm')
    os.makedirs(warm_dir, exist_ok=True)
    cases = run_cases(args)
    for case, _ in cases:
        measure(case, args, os.path.join(warm_dir, case + '.1'), warm=True)
    _, problems = collect(warm_dir, args.words)
    if problems:
        print('The warm-up streams could not be paired:')
        for p in problems:
            print('  ' + p)
        return 1
    sys.stderr.write('==> measuring: %d rounds x %d cases, %d words, chunk_delay %d ms '
                     '(load average %s)\n' % (args.streams, len(cases), args.words,
                                              args.delay, loadavg()))
    for i in range(1, args.streams + 1):
        for case, _ in cases:
            measure(case, args, os.path.join(args.data, '%s.%d' % (case, i)))
    sys.stderr.write('==> done (load average %s)\n' % loadavg())
    return report(args.data, args.words)


def loadavg():
    with open('/proc/loadavg') as f:
        return ' '.join(f.read().split()[:3])


# ------------------------------------------------------------------ report

def pct(sorted_vals, p):
    """Nearest-rank percentile of an ascending list."""
    k = max(1, -(-len(sorted_vals) * p // 100))
    return sorted_vals[int(k) - 1]


def load_case(data_dir, case, words, sent_lag=None):
    """Return (first_ms, later_ms, last_ms, problems) lists for a case.
    sent_lag, if a list, gets (request sent - piece 1 stamp) in ms of each
    stream that recorded its request time (the direct client's)."""
    first, later, last, problems = [], [], [], []
    i = 1
    while True:
        rows_f = os.path.join(data_dir, '%s.%d.rows' % (case, i))
        trace_f = os.path.join(data_dir, '%s.%d.trace' % (case, i))
        if not os.path.exists(rows_f):
            break
        tag = '%s stream %d' % (case, i)
        i += 1
        try:
            with open(trace_f) as f:
                traces = json.load(f)
        except (OSError, ValueError) as e:
            problems.append('%s: no trace (%s)' % (tag, e))
            continue
        rows = []
        with open(rows_f) as f:
            for line in f:
                t, _, text = line.rstrip('\n').partition(' ')
                rows.append((int(t), text))
        errors = [text for _, text in rows if text.startswith(('ERROR', 'CANCEL', 'CLOSE'))]
        if errors:
            problems.append('%s: %s' % (tag, errors[0]))
            continue
        if len(traces) != 1:
            problems.append('%s: %d traced streams in the mock, expected 1 '
                            '(is the x-mock-trace header sent? was the call retried?)'
                            % (tag, len(traces)))
            continue
        sends = traces[0]['t_us']
        if len(sends) != words or len(rows) != words:
            problems.append('%s: %d pieces sent, %d rows received, expected %d of each'
                            % (tag, len(sends), len(rows), words))
            continue
        bad = [k for k, (_, text) in enumerate(rows, 1) if text.strip() != 'w%d' % k]
        if bad:
            problems.append('%s: row %d reads %r, expected %r'
                            % (tag, bad[0], rows[bad[0] - 1][1], 'w%d' % bad[0]))
            continue
        lat = [(t - s) / 1000.0 for (t, _), s in zip(rows, sends)]
        sent_f = rows_f[:-len('.rows')] + '.sent'
        if sent_lag is not None and os.path.exists(sent_f):
            with open(sent_f) as f:
                t_sent = int(f.read().split()[0])
            if t_sent > 0:
                sent_lag.append((t_sent - sends[0]) / 1000.0)
        first.append(lat[0])
        later.extend(lat[1:])
        last.append(lat[-1])
    return first, later, last, problems


def stats(vals):
    s = sorted(vals)
    if not s:
        return {'n': 0}
    return {'n': len(s), 'min': s[0], 'p50': pct(s, 50), 'p90': pct(s, 90),
            'p99': pct(s, 99), 'max': s[-1],
            'within': sum(1 for v in s if v <= TARGET_MS)}


def present_cases(data_dir):
    """The cases that have streams in data_dir."""
    return [(c, l) for c, l in CASES
            if os.path.exists(os.path.join(data_dir, '%s.1.rows' % c))]


def collect(data_dir, words, sent_lag=None):
    results, problems = {}, []
    if not present_cases(data_dir):
        problems.append('no streams recorded in %s' % data_dir)
    for case, _ in present_cases(data_dir):
        first, later, last, probs = load_case(data_dir, case, words, sent_lag)
        results[case] = (stats(first), stats(later), stats(last))
        problems.extend(probs)
    return results, problems


def report(data_dir, words):
    sent_lag = []
    results, problems = collect(data_dir, words, sent_lag)
    hdr = '%-46s %5s %8s %8s %8s %8s %8s  %s' % (
        'case: rows', 'n', 'min', 'p50', 'p90', 'p99', 'max', 'within 5 ms')
    print('Latency = row arrival at the client - piece send time at the mock, ms')
    print('Targets (issue): first row within 5 ms of the first chunk leaving the mock;')
    print('                 later chunks within 5 ms of theirs.')
    print('Later rows are rows 2..W; the last of them, which leaves the mock together')
    print('with the end of the stream, is also shown on its own.')
    print()
    print(hdr)
    print('-' * (len(hdr) + 16))
    cases = present_cases(data_dir)
    present = {c for c, _ in cases}
    for case, label in cases:
        for which, st in zip(('first row', 'later rows', ' last row'), results[case]):
            name = label + ': ' + which
            if st['n'] == 0:
                print('%-46s %5d   (no data)' % (name, 0))
                continue
            print('%-46s %5d %8.3f %8.3f %8.3f %8.3f %8.3f  %d/%d (%.1f%%)  target <= 5 ms' % (
                name, st['n'], st['min'], st['p50'], st['p90'], st['p99'], st['max'],
                st['within'], st['n'], 100.0 * st['within'] / st['n']))
    print()
    print('Added by pg_llm over the direct SSE client (the same protocol\'s with')
    print('--direct-anthropic, else the OpenAI one): difference of the percentiles, ms')
    for case, label in cases:
        base = baseline(case, present)
        if not case.startswith('pg_') or base not in present:
            continue
        (p1, pl, pz), (b1, bl, bz) = results[case], results[base]
        if min(p1['n'], pl['n'], b1['n'], bl['n']) == 0:
            continue
        print('  %-31s first p50 %+6.3f | later p50 %+6.3f p90 %+6.3f p99 %+6.3f | last p50 %+6.3f' % (
            label, p1['p50'] - b1['p50'], pl['p50'] - bl['p50'],
            pl['p90'] - bl['p90'], pl['p99'] - bl['p99'], pz['p50'] - bz['p50']))
    print()
    # The mock's clock runs off ms behind CLOCK_REALTIME, 0 <= off < 1 ms.
    # A piece stamped at mock time s really left at s + off, after the
    # direct client sent its request (t_sent) and before any row arrived
    # (t_row): off >= t_sent - s1 and off <= t_row - s for every row.
    highs = [st['min'] for case in present if case.startswith('direct_')
             for st in results[case][:2] if st['n']]
    print('Clock note: the mock stamps pieces with Date.now() at its start (whole ms,')
    print('rounded down) plus hrtime deltas, so its clock runs a constant 0-1 ms behind')
    print('the clients\' CLOCK_REALTIME, and the latencies above are over-stated by it.')
    if sent_lag and highs:
        lo, hi = max(0.0, max(sent_lag)), min(1.0, min(highs))
        print('In this run it lies between %.3f ms (latest direct request sent, minus its' % lo)
        print('piece 1 stamp) and %.3f ms (smallest direct latency): a latency L above is' % hi)
        print('really between L - %.3f and L - %.3f ms.  The differences are free of it.' % (hi, lo))
    else:
        print('The differences from the direct client are free of it.')
    if problems:
        print()
        print('PAIRING PROBLEMS (these streams are left out of the tables):')
        for p in problems:
            print('  ' + p)
        return 1
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest='cmd', required=True)
    r = sub.add_parser('run')
    r.add_argument('--port', type=int, required=True)
    r.add_argument('--client', required=True)
    r.add_argument('--words', type=int, required=True)
    r.add_argument('--delay', type=int, required=True)
    r.add_argument('--streams', type=int, required=True)
    r.add_argument('--data', required=True)
    r.add_argument('--direct-anthropic', action='store_true',
                   help='also run the direct client on the Anthropic protocol')
    p = sub.add_parser('report')
    p.add_argument('--words', type=int, required=True)
    p.add_argument('--data', required=True)
    args = ap.parse_args()
    if args.cmd == 'run':
        return cmd_run(args)
    return report(args.data, args.words)


if __name__ == '__main__':
    sys.exit(main())
