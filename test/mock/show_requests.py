#!/usr/bin/env python3
"""Print what the mock received for its last N chat requests, for the
structured-output checks of the regress tests: the path, and of the body
the fields that carry a shape (response_format, tools, tool_choice, the
system prompt's last line) and the last message.  Usage:
show_requests.py PORT N"""
import json
import sys
import urllib.request

port, n = sys.argv[1], int(sys.argv[2])
with urllib.request.urlopen('http://127.0.0.1:%s/_requests' % port) as r:
    reqs = json.load(r)[-n:]
for q in reqs:
    b = q['body']
    out = {'path': q['path']}
    for k in ('response_format', 'tools', 'tool_choice', 'json_schema'):
        if k in b:
            out[k] = b[k]
    system = b.get('system')
    if system is None:
        system = '\n'.join(m['content'] for m in b.get('messages', [])
                           if m.get('role') == 'system' and isinstance(m.get('content'), str))
    if system:
        out['system'] = system.split('\n')
    msgs = b.get('messages', [])
    out['messages'] = len(msgs)
    if msgs:
        last = msgs[-1]
        c = last.get('content')
        if isinstance(c, list):
            c = ''.join(p.get('text', '') for p in c if isinstance(p, dict))
        out['last'] = '%s: %s' % (last.get('role'), c)
    print(json.dumps(out, sort_keys=True))
