#!/usr/bin/env python3
"""test/bench/bench_stream_direct.py: the baseline of bench_stream.sh.

A plain client that reads the mock provider's SSE stream directly, with
nothing in between: one blocking TCP socket (TCP_NODELAY), an HTTP/1.1
request carrying `x-mock-trace: 1`, and a chunked-body and SSE parser.
Every time recv() returns, it takes the wall-clock time (CLOCK_REALTIME,
like stream_client.c and the mock's trace) and stamps each content event
completed by those bytes with it.  It prints one line per content piece,
in the same format as stream_client:

    <t_us> <piece text>

so bench_stream.py pairs both kinds of output the same way.  Events
that carry no text (the OpenAI role chunk with empty content, the finish
and usage chunks, Anthropic's message_start, ping, ...) print nothing.

bench_stream.py imports it and calls stream(); run on its own:

usage: bench_stream_direct.py --port P --proto openai|anthropic --model M
       [--prompt TEXT] [--key sk-mock]

Only 127.0.0.1 is ever contacted.  Exit status 0 on a complete stream,
1 on anything unexpected (a non-200 status, a cut-off stream).
"""
import argparse
import json
import socket
import sys
import time


def now_us():
    return time.time_ns() // 1000


def build_request(args):
    if args.proto == 'openai':
        path = '/v1/chat/completions'
        body = {'model': args.model, 'stream': True,
                'stream_options': {'include_usage': True},
                'messages': [{'role': 'user', 'content': args.prompt}]}
        auth = 'Authorization: Bearer %s\r\n' % args.key
    else:
        path = '/v1/messages'
        body = {'model': args.model, 'stream': True, 'max_tokens': 4096,
                'messages': [{'role': 'user', 'content': args.prompt}]}
        auth = 'x-api-key: %s\r\nanthropic-version: 2023-06-01\r\n' % args.key
    data = json.dumps(body).encode()
    head = ('POST %s HTTP/1.1\r\n'
            'Host: 127.0.0.1:%d\r\n'
            'Content-Type: application/json\r\n'
            'Accept: text/event-stream\r\n'
            '%s'
            'x-mock-trace: 1\r\n'
            'Content-Length: %d\r\n'
            'Connection: close\r\n'
            '\r\n') % (path, args.port, auth, len(data))
    return head.encode() + data


def event_text(proto, name, data):
    """The content text of one SSE event, or None."""
    if proto == 'openai':
        if data == '[DONE]':
            return None
        obj = json.loads(data)
        choices = obj.get('choices') or []
        if not choices:
            return None
        content = (choices[0].get('delta') or {}).get('content')
        return content or None
    if name != 'content_block_delta':
        return None
    delta = json.loads(data).get('delta') or {}
    return delta.get('text') or None


class Sse:
    """Incremental SSE parser (LF or CRLF line ends); emits (name, data)."""

    def __init__(self):
        self.buf = b''
        self.name = ''
        self.data = []

    def feed(self, b):
        self.buf += b
        out = []
        while True:
            nl = self.buf.find(b'\n')
            if nl < 0:
                return out
            line = self.buf[:nl].rstrip(b'\r').decode('utf-8')
            self.buf = self.buf[nl + 1:]
            if line == '':
                if self.data:
                    out.append((self.name, '\n'.join(self.data)))
                self.name, self.data = '', []
            elif line.startswith(':'):
                continue
            else:
                field, _, value = line.partition(':')
                if value.startswith(' '):
                    value = value[1:]
                if field == 'event':
                    self.name = value
                elif field == 'data':
                    self.data.append(value)


class Chunked:
    """Incremental decoder of an HTTP/1.1 chunked body."""

    def __init__(self):
        self.buf = b''
        self.left = 0          # bytes of the current chunk still to come
        self.skip_crlf = False
        self.done = False

    def feed(self, b):
        self.buf += b
        out = b''
        while not self.done:
            if self.left > 0:
                take = self.buf[:self.left]
                out += take
                self.buf = self.buf[len(take):]
                self.left -= len(take)
                if self.left > 0:
                    break
                self.skip_crlf = True
            if self.skip_crlf:
                if len(self.buf) < 2:
                    break
                self.buf = self.buf[2:]
                self.skip_crlf = False
            nl = self.buf.find(b'\r\n')
            if nl < 0:
                break
            size = int(self.buf[:nl].split(b';')[0], 16)
            self.buf = self.buf[nl + 2:]
            if size == 0:
                self.done = True
            self.left = size
        return out


def stream(port, proto, model, prompt='bench', key='sk-mock', info=None):
    """Run one stream; returns (lines, error): the `<t_us> <text>\n` lines
    of the content pieces, and None or the reason the stream failed.  If
    info is a dict, info['t_sent'] gets the time taken just before the
    request was written (the mock stamps piece 1 after it has read it)."""
    args = argparse.Namespace(port=port, proto=proto, model=model, prompt=prompt, key=key)
    sock = socket.create_connection(('127.0.0.1', port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        req = build_request(args)
        if info is not None:
            info['t_sent'] = now_us()
        sock.sendall(req)
        head = b''
        body = None
        chunked = Chunked()
        sse = Sse()
        lines = []
        ended = False
        while True:
            b = sock.recv(65536)
            t = now_us()
            if not b:
                break
            if body is None:
                head += b
                end = head.find(b'\r\n\r\n')
                if end < 0:
                    continue
                status = head.split(b'\r\n', 1)[0]
                if b' 200 ' not in status + b' ':
                    return lines, status.decode(errors='replace')
                if b'transfer-encoding: chunked' not in head[:end].lower():
                    return lines, 'the stream is not chunked'
                b = head[end + 4:]
                body = True
            for name, data in sse.feed(chunked.feed(b)):
                if (proto == 'openai' and data == '[DONE]') or name == 'message_stop':
                    ended = True
                text = event_text(proto, name, data)
                if text is not None:
                    lines.append('%d %s\n' % (t, text))
            if chunked.done:
                break
    finally:
        sock.close()
    return lines, None if ended else 'the stream ended without its end marker'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--port', type=int, required=True)
    ap.add_argument('--proto', choices=['openai', 'anthropic'], required=True)
    ap.add_argument('--model', required=True)
    ap.add_argument('--prompt', default='bench')
    ap.add_argument('--key', default='sk-mock')
    args = ap.parse_args()
    lines, err = stream(args.port, args.proto, args.model, args.prompt, args.key)
    sys.stdout.write(''.join(lines))
    if err:
        sys.stderr.write('direct: %s\n' % err)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
