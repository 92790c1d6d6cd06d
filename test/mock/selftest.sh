#!/usr/bin/env bash
# test/mock/selftest.sh: checks the mock LLM provider (test/mock/server.js)
# with curl and node alone.  Starts its own mock on a free loopback port,
# runs every check, prints "N passed, M failed" last, and exits non-zero
# when anything failed.  The mock is always stopped by its PID.
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
NODE=${NODE:-node}
KEY=sk-selftest
T=$(mktemp -d "${TMPDIR:-/tmp}/mock-selftest.XXXXXX")
MOCK_PID=
PASS=0
FAIL=0

cleanup() {
	if [ -n "$MOCK_PID" ] && kill -0 "$MOCK_PID" 2>/dev/null; then
		kill "$MOCK_PID" 2>/dev/null
		wait "$MOCK_PID" 2>/dev/null
	fi
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok() { PASS=$((PASS + 1)); echo "ok   - $1"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL - $1${2:+: $2}"; }

# expect NAME ACTUAL WANTED
expect() {
	if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "got [$2] want [$3]"; fi
}

# expect_match NAME FILE EXTENDED-REGEX: the file has a line matching.
expect_match() {
	if grep -Eq -- "$3" "$2"; then ok "$1"; else bad "$1" "no match for /$3/ in $(head -c 300 "$2")"; fi
}

# expect_nomatch NAME FILE FIXED-STRING
expect_nomatch() {
	if grep -Fq -- "$3" "$2"; then bad "$1" "found [$3]"; else ok "$1"; fi
}

# Helper scripts: jv evaluates a JS expression over a JSON file (bound to
# b), sse parses an SSE file per the WHATWG rules.
cat >"$T/jv.js" <<'EOF'
const fs = require('fs');
const b = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const v = eval(process.argv[3]);
process.stdout.write(typeof v === 'string' ? v : JSON.stringify(v));
EOF
cat >"$T/sse.js" <<'EOF'
// usage: node sse.js FILE text|events|json
const fs = require('fs');
let s = fs.readFileSync(process.argv[2]).toString('utf8');
if (s.charCodeAt(0) === 0xfeff) s = s.slice(1);
const lines = s.split(/\r\n|\r|\n/);
const events = [];
let data = null, ev = '';
for (let i = 0; i < lines.length - 1; i++) {   // the last piece has no line end
	const l = lines[i];
	if (l === '') {
		if (data !== null) events.push({ event: ev || 'message', data: data.replace(/\n$/, '') });
		data = null; ev = '';
		continue;
	}
	if (l[0] === ':') continue;
	const c = l.indexOf(':');
	const f = c < 0 ? l : l.slice(0, c);
	let v = c < 0 ? '' : l.slice(c + 1);
	if (v[0] === ' ') v = v.slice(1);
	if (f === 'data') data = (data || '') + v + '\n';
	else if (f === 'event') ev = v;
}
const mode = process.argv[3];
if (mode === 'events') {
	process.stdout.write(events.map((e) => e.event === 'message' ? (e.data === '[DONE]' ? 'DONE' : 'data') : e.event).join(','));
} else if (mode === 'json') {
	process.stdout.write(JSON.stringify(events));
} else {
	let out = '';
	for (const e of events) {
		if (e.data === '[DONE]') continue;
		const j = JSON.parse(e.data);
		if (j.choices && j.choices[0] && j.choices[0].delta && typeof j.choices[0].delta.content === 'string')
			out += j.choices[0].delta.content;
		if (j.type === 'content_block_delta' && j.delta.type === 'text_delta') out += j.delta.text;
	}
	process.stdout.write(out);
}
EOF
jv() { "$NODE" "$T/jv.js" "$@" 2>&1; }
sse() { "$NODE" "$T/sse.js" "$@" 2>&1; }

# call oa|an BODY [curl args...]: POST BODY to the protocol route; sets
# CODE (HTTP status) and RC (curl exit code); body in $T/b, headers in $T/h.
call() {
	local proto=$1 body=$2
	shift 2
	local args
	if [ "$proto" = oa ]; then
		args=(-H "Authorization: Bearer $KEY" "$BASE/v1/chat/completions")
	else
		args=(-H "x-api-key: $KEY" -H 'anthropic-version: 2023-06-01' "$BASE/v1/messages")
	fi
	rm -f "$T/b" "$T/h"
	CODE=$(curl -sS --max-time 10 -o "$T/b" -D "$T/h" -w '%{http_code}' \
		-H 'Content-Type: application/json' --data-binary "$body" "${args[@]}" "$@" 2>"$T/curl.err")
	RC=$?
}

# header NAME: value of a response header of the last call (case-insensitive).
header() {
	grep -i "^$1:" "$T/h" | head -n 1 | sed -e 's/^[^:]*: *//' -e 's/\r$//'
}

# ---------------------------------------------------------------- start
"$NODE" "$HERE/server.js" --port 0 --port-file "$T/port" --api-key "$KEY" >"$T/mock.out" 2>"$T/mock.err" &
MOCK_PID=$!
for _ in $(seq 1 100); do
	[ -s "$T/port" ] && break
	sleep 0.05
done
if [ ! -s "$T/port" ]; then
	echo "mock did not start:"; cat "$T/mock.err"
	echo "0 passed, 1 failed"
	exit 1
fi
PORT=$(cat "$T/port")
BASE="http://127.0.0.1:$PORT"
expect "port file holds digits only" "$(grep -Ec '^[0-9]+$' "$T/port")" 1
expect "stdout line MOCK_PORT" "$(cat "$T/mock.out")" "MOCK_PORT=$PORT"
expect "pid file holds the mock pid" "$(cat "$T/port.pid")" "$MOCK_PID"
expect "listens on 127.0.0.1 only" "$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://[::1]:$PORT/_health")" "000"
expect "GET /_health" "$(curl -sS "$BASE/_health")" ok

# ---------------------------------------------------------------- OpenAI
call oa '{"model":"gpt-x","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello world"}]}'
expect "openai: 200" "$CODE" 200
expect "openai: content" "$(jv "$T/b" 'b.choices[0].message.content')" "echo: hello world"
expect "openai: shape" "$(jv "$T/b" '[b.object, b.model, /^chatcmpl-mock\d+$/.test(b.id), typeof b.created, b.choices[0].message.role, b.choices[0].message.refusal, b.choices[0].finish_reason]')" \
	'["chat.completion","gpt-x",true,"number","assistant",null,"stop"]'
expect "openai: usage" "$(jv "$T/b" '[b.usage.prompt_tokens, b.usage.completion_tokens, b.usage.total_tokens]')" '[4,3,7]'
expect "openai: x-request-id" "$(header x-request-id | grep -c '^req_mock')" 1

call oa '{"model":"gpt-x","messages":[{"role":"user","content":[{"type":"text","text":"part one "},{"type":"text","text":"part two"}]}]}'
expect "openai: array content joined" "$(jv "$T/b" 'b.choices[0].message.content')" "echo: part one part two"

call oa '{"model":"gpt-x","max_completion_tokens":2,"messages":[{"role":"user","content":"a b c d"}]}'
expect "openai: max_completion_tokens truncates" "$(jv "$T/b" '[b.choices[0].message.content, b.choices[0].finish_reason, b.usage.completion_tokens]')" '["echo: a","length",2]'

call oa '{"model":"gpt-x","messages":[{"role":"user","content":"Sentiment of: great app, love it, but slow"}]}'
expect "openai: sentiment" "$(jv "$T/b" 'b.choices[0].message.content')" positive
call oa '{"model":"gpt-x","messages":[{"role":"system","content":"Classify the sentiment."},{"role":"user","content":"it is broken and I want a refund"}]}'
expect "openai: sentiment (system prompt)" "$(jv "$T/b" 'b.choices[0].message.content')" negative

call oa '{"model":"gpt-x","tools":[{"type":"function","function":{"name":"lookup","parameters":{}}}],"messages":[{"role":"user","content":"please call tool x"}]}'
expect "openai: tool call" "$(jv "$T/b" '[b.choices[0].message.content, b.choices[0].message.tool_calls, b.choices[0].finish_reason]')" \
	'[null,[{"id":"call_mock1","type":"function","function":{"name":"lookup","arguments":"{\"q\":\"please call tool x\"}"}}],"tool_calls"]'

call oa '{"model":"gpt-x","response_format":{"type":"json_object"},"messages":[{"role":"user","content":"json please"}]}'
expect "openai: json_object" "$(jv "$T/b" 'JSON.parse(b.choices[0].message.content).answer')" "echo: json please"

call oa '{"model":"gpt-x?words=5","messages":[{"role":"user","content":"x"}]}'
expect "openai: words=5" "$(jv "$T/b" 'b.choices[0].message.content')" "w1 w2 w3 w4 w5"

call oa '{"model":"gpt-x?reply=hi+there%21","messages":[{"role":"user","content":"x"}]}'
expect "openai: reply= is URL-decoded" "$(jv "$T/b" '[b.model, b.choices[0].message.content]')" '["gpt-x","hi there!"]'

# ---------------------------------------------------------------- Anthropic
call an '{"model":"claude-x","max_tokens":64,"system":[{"type":"text","text":"be brief"}],"messages":[{"role":"user","content":"hello world"}]}'
expect "anthropic: 200" "$CODE" 200
expect "anthropic: shape" "$(jv "$T/b" '[/^msg_mock\d+$/.test(b.id), b.type, b.role, b.model, b.content, b.stop_reason, b.stop_sequence]')" \
	'[true,"message","assistant","claude-x",[{"type":"text","text":"echo: hello world"}],"end_turn",null]'
expect "anthropic: usage" "$(jv "$T/b" '[b.usage.input_tokens, b.usage.output_tokens]')" '[4,3]'
expect "anthropic: request-id" "$(header request-id | grep -c '^req_mock')" 1

call an '{"model":"claude-x","max_tokens":2,"messages":[{"role":"user","content":"a b c"}]}'
expect "anthropic: max_tokens truncates" "$(jv "$T/b" '[b.content[0].text, b.stop_reason]')" '["echo: a","max_tokens"]'

call an '{"model":"claude-x","max_tokens":64,"tools":[{"name":"lookup","description":"d","input_schema":{"type":"object"}}],"messages":[{"role":"user","content":"call tool now"}]}'
expect "anthropic: tool_use" "$(jv "$T/b" '[b.content, b.stop_reason]')" \
	'[[{"type":"tool_use","id":"toolu_mock1","name":"lookup","input":{"q":"call tool now"}}],"tool_use"]'

# ---------------------------------------------------------------- auth and validation
CODE=$(curl -sS -o "$T/b" -w '%{http_code}' -H 'Authorization: Bearer sk-wrong-secret' --data-binary '{"model":"m","messages":[]}' "$BASE/v1/chat/completions")
expect "openai: wrong key 401" "$CODE" 401
expect "openai: 401 body" "$(cat "$T/b")" '{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}'
expect_nomatch "openai: 401 does not echo key" "$T/b" "sk-wrong-secret"
CODE=$(curl -sS -o "$T/b" -w '%{http_code}' --data-binary '{"model":"m","messages":[]}' "$BASE/v1/chat/completions")
expect "openai: missing key 401" "$CODE" 401
CODE=$(curl -sS -o "$T/b" -w '%{http_code}' -H 'x-api-key: sk-wrong-secret' -H 'anthropic-version: 2023-06-01' --data-binary '{}' "$BASE/v1/messages")
expect "anthropic: wrong key 401" "$CODE" 401
expect "anthropic: 401 body" "$(cat "$T/b")" '{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"},"request_id":"req_mock"}'
CODE=$(curl -sS -o "$T/b" -w '%{http_code}' -H "x-api-key: $KEY" --data-binary '{}' "$BASE/v1/messages")
expect "anthropic: missing anthropic-version 400" "$CODE/$(jv "$T/b" 'b.error.message')" "400/anthropic-version header is required"

call oa '{"model":"m", "messages": [ oops'
expect "openai: invalid JSON 400" "$CODE/$(jv "$T/b" 'b.error.type')" "400/invalid_request_error"
call an 'not json'
expect "anthropic: invalid JSON 400" "$CODE/$(jv "$T/b" 'b.type + "/" + b.error.type')" "400/error/invalid_request_error"
call oa '{"model":"m"}'
expect "openai: missing messages 400" "$CODE/$(jv "$T/b" 'b.error.param')" "400/messages"
call oa '{"model":"m","temperature":2.5,"messages":[{"role":"user","content":"x"}]}'
expect "openai: temperature 2.5 rejected" "$CODE" 400
call oa '{"model":"m","temperature":1.5,"messages":[{"role":"user","content":"x"}]}'
expect "openai: temperature 1.5 accepted" "$CODE" 200
call an '{"model":"m","messages":[{"role":"user","content":"x"}]}'
expect "anthropic: missing max_tokens" "$CODE/$(jv "$T/b" 'b.error.message')" "400/max_tokens: Field required"
call an '{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"s"},{"role":"user","content":"x"}]}'
expect "anthropic: system role rejected" "$CODE/$(jv "$T/b" 'b.error.type')" "400/invalid_request_error"
call an '{"model":"m","max_tokens":5,"temperature":1.5,"messages":[{"role":"user","content":"x"}]}'
expect "anthropic: temperature 1.5 rejected" "$CODE" 400
call oa '{"model":"m?fial=429","messages":[{"role":"user","content":"x"}]}'
expect "unknown directive 400" "$CODE/$(jv "$T/b" 'b.error.message')" "400/unknown mock directive fial"
CODE=$(curl -sS -o "$T/b" -w '%{http_code}' "$BASE/v1/nothing")
expect "unknown path 404 JSON" "$CODE/$(jv "$T/b" 'typeof b.error.message')" "404/string"

# ---------------------------------------------------------------- streaming
call oa '{"model":"gpt-s","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"stream me please"}]}' -N
expect "openai stream: content-type" "$(header content-type)" "text/event-stream"
expect "openai stream: cache-control" "$(header cache-control)" "no-cache"
expect "openai stream: chunked" "$(header transfer-encoding)" "chunked"
expect "openai stream: text" "$(sse "$T/b" text)" "echo: stream me please"
expect "openai stream: events" "$(sse "$T/b" events)" "data,data,data,data,data,data,data,DONE"
expect "openai stream: usage chunk" "$("$NODE" -e '
	const ev = JSON.parse(process.argv[1]).slice(0, -1).map((e) => JSON.parse(e.data));
	const last = ev[ev.length - 1];
	const nulls = ev.slice(0, -1).every((c) => c.usage === null && c.object === "chat.completion.chunk" && c.id === last.id);
	console.log([nulls, last.choices.length, last.usage.prompt_tokens, last.usage.completion_tokens, ev[0].choices[0].delta.role, ev[ev.length - 2].choices[0].finish_reason].join(","));
' "$(sse "$T/b" json)")" "true,0,3,4,assistant,stop"
expect_match "openai stream: exact framing" "$T/b" '^data: \{"id":"chatcmpl-mock[0-9]+","object":"chat.completion.chunk","created":[0-9]+,"model":"gpt-s","choices":\[\{"index":0,"delta":\{"content":"stream "\},"logprobs":null,"finish_reason":null\}\],"usage":null\}$'

call oa '{"model":"gpt-s","stream":true,"messages":[{"role":"user","content":"plain stream"}]}' -N
expect_nomatch "openai stream: no usage key without include_usage" "$T/b" '"usage"'

call an '{"model":"claude-s","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"stream me please"}]}' -N
expect "anthropic stream: text" "$(sse "$T/b" text)" "echo: stream me please"
expect "anthropic stream: events" "$(sse "$T/b" events)" \
	"message_start,content_block_start,ping,content_block_delta,content_block_delta,content_block_delta,content_block_delta,content_block_stop,message_delta,message_stop"
expect "anthropic stream: types repeat names" "$("$NODE" -e '
	const ev = JSON.parse(process.argv[1]);
	const md = JSON.parse(ev[ev.length - 2].data);
	console.log(ev.every((e) => JSON.parse(e.data).type === e.event) + "," + md.delta.stop_reason + "," + md.usage.output_tokens + "," + JSON.parse(ev[0].data).message.usage.input_tokens);
' "$(sse "$T/b" json)")" "true,end_turn,4,3"

call an '{"model":"claude-s","max_tokens":50,"stream":true,"tools":[{"name":"f","input_schema":{}}],"messages":[{"role":"user","content":"call tool"}]}' -N
expect "anthropic stream: tool_use json" "$("$NODE" -e '
	const ev = JSON.parse(process.argv[1]).map((e) => JSON.parse(e.data));
	const j = ev.filter((e) => e.type === "content_block_delta").map((e) => e.delta.partial_json).join("");
	console.log(ev[1].content_block.type + "," + j + "," + ev[ev.length - 2].delta.stop_reason);
' "$(sse "$T/b" json)")" 'tool_use,{"q":"call tool"},tool_use'

call oa '{"model":"gpt-s","stream":true,"tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":"call tool"}]}' -N
expect "openai stream: tool_calls" "$("$NODE" -e '
	const ev = JSON.parse(process.argv[1]).slice(0, -1).map((e) => JSON.parse(e.data));
	let args = "";
	for (const c of ev) for (const t of (c.choices[0].delta.tool_calls || [])) args += t.function.arguments || "";
	console.log(ev[0].choices[0].delta.tool_calls[0].function.name + "," + args + "," + ev[ev.length - 1].choices[0].finish_reason);
' "$(sse "$T/b" json)")" 'f,{"q":"call tool"},tool_calls'

# ---------------------------------------------------------------- fail, times, retry headers
call oa '{"model":"gpt?fail=429&times=1&retry_after=1","messages":[{"role":"user","content":"retry me"}]}'
expect "fail=429 times=1: first 429" "$CODE" 429
expect "fail=429: Retry-After" "$(header retry-after)" 1
expect "fail=429: body" "$(cat "$T/b")" '{"error":{"message":"mock error 429","type":"requests","param":null,"code":"rate_limit_exceeded"}}'
call oa '{"model":"gpt?fail=429&times=1&retry_after=1","messages":[{"role":"user","content":"retry me"}]}'
expect "fail=429 times=1: second 200" "$CODE/$(jv "$T/b" 'b.model')" "200/gpt"
call oa '{"model":"gpt?fail=429&times=1&retry_after=1","messages":[{"role":"user","content":"another prompt"}]}'
expect "times counts per model+prompt" "$CODE" 429

call an '{"model":"c?fail=529&retry_after_ms=250&should_retry=false","max_tokens":5,"messages":[{"role":"user","content":"x"}]}'
expect "anthropic fail=529" "$CODE/$(jv "$T/b" 'b.error.type + "/" + b.error.message + "/" + b.request_id')" "529/overloaded_error/mock error 529/req_mock"
expect "retry-after-ms header" "$(header retry-after-ms)" 250
expect "x-should-retry header" "$(header x-should-retry)" false
call oa '{"model":"m?fail=503&retry_after=date:30","messages":[{"role":"user","content":"x"}]}'
expect "retry_after=date:N is an HTTP-date" "$CODE/$("$NODE" -e 'const d = Date.parse(process.argv[1]) - Date.now(); console.log(/GMT$/.test(process.argv[1]) && d > 25000 && d <= 31000)' "$(header retry-after)")" "503/true"

call oa '{"model":"m?fail=429&quota=1","messages":[{"role":"user","content":"x"}]}'
expect "openai quota" "$CODE/$(jv "$T/b" '[b.error.type, b.error.code, b.error.message].join("|")')" \
	"429/insufficient_quota|insufficient_quota|You exceeded your current quota, please check your plan and billing details."
call an '{"model":"m?fail=429&quota=1","max_tokens":5,"messages":[{"role":"user","content":"x"}]}'
expect "anthropic quota" "$CODE/$(jv "$T/b" 'b.error.type')" "429/billing_error"
call an '{"model":"m?fail=429","max_tokens":5,"messages":[{"role":"user","content":"x"}]}'
expect "anthropic rate limit" "$CODE/$(jv "$T/b" 'b.error.type')" "429/rate_limit_error"
call oa '{"model":"m?fail=500","stream":true,"messages":[{"role":"user","content":"x"}]}'
expect "fail on a stream request is a JSON error" "$CODE/$(header content-type)/$(jv "$T/b" 'b.error.type')" "500/application/json/server_error"

# ---------------------------------------------------------------- whole-response faults
call oa '{"model":"m?fault=reset","messages":[{"role":"user","content":"x"}]}'
expect "fault=reset: no response" "$CODE/$RC" "000/52"
call oa '{"model":"m?fault=hang","messages":[{"role":"user","content":"x"}]}' --max-time 1
expect "fault=hang: times out" "$RC" 28
call oa '{"model":"m?fault=malformed","messages":[{"role":"user","content":"x"}]}'
expect "fault=malformed" "$CODE/$(cat "$T/b")" '200/{"id": "x", "choices": [ this is not json'
call oa '{"model":"m?fault=html&retry_after=2","messages":[{"role":"user","content":"x"}]}'
expect "fault=html" "$CODE/$(header content-type)/$(header retry-after)" "502/text/html/2"
expect_match "fault=html body" "$T/b" '<title>502 Bad Gateway</title>'
call an '{"model":"m?fault=notjson","max_tokens":5,"messages":[{"role":"user","content":"x"}]}'
expect "fault=notjson" "$CODE/$(header content-type)/$(cat "$T/b")" "200/text/plain/Service temporarily unavailable"
call oa '{"model":"m?fault=reset&times=1","messages":[{"role":"user","content":"twice"}]}'
R1=$RC
call oa '{"model":"m?fault=reset&times=1","messages":[{"role":"user","content":"twice"}]}'
expect "fault=reset&times=1: then succeeds" "$R1/$CODE" "52/200"

call oa '{"model":"m?fault=truncate","messages":[{"role":"user","content":"cut this body"}]}'
expect "fault=truncate (non-stream): partial transfer" "$CODE/$RC" "200/18"
call oa '{"model":"m?fault=truncate","stream":true,"messages":[{"role":"user","content":"a b c d e"}]}' -N
expect "fault=truncate (stream): clean end" "$CODE/$RC" "200/0"
expect "fault=truncate (stream): first half" "$(sse "$T/b" text)/$(sse "$T/b" events)" "echo: a b /data,data,data,data"
call an '{"model":"m?fault=truncate","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"a b c d e"}]}' -N
expect "fault=truncate (anthropic stream)" "$(sse "$T/b" text)/$(sse "$T/b" events | grep -c message_stop)" "echo: a b /0"

call oa '{"model":"m?fault=error_event","stream":true,"messages":[{"role":"user","content":"a b c"}]}' -N
expect "fault=error_event (openai)" "$(sse "$T/b" events)/$("$NODE" -e 'const e = JSON.parse(process.argv[1]); console.log(JSON.parse(e[e.length - 1].data).error.message)' "$(sse "$T/b" json)")" \
	"data,data,data,data/mock stream error"
call an '{"model":"m?fault=error_event","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"a b c"}]}' -N
expect "fault=error_event (anthropic)" "$(sse "$T/b" events)" "message_start,content_block_start,ping,content_block_delta,content_block_delta,error"

call oa '{"model":"m?fault=no_done","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"a"}]}' -N
expect "fault=no_done" "$(sse "$T/b" events)" "data,data,data,data,data"

SPLIT='{"model":"m?fault=split&reply=caf%C3%A9+%F0%9F%8E%89+party","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"x"}]}'
call oa "$SPLIT" -N
expect "fault=split (openai): reassembled" "$(sse "$T/b" text)" "café 🎉 party"
expect "fault=split (openai): complete" "$(sse "$T/b" events | tr ',' '\n' | tail -n 1)" DONE
call an '{"model":"m?fault=split&reply=caf%C3%A9+%F0%9F%8E%89","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"x"}]}' -N
expect "fault=split (anthropic): reassembled" "$(sse "$T/b" text)" "café 🎉"
call oa '{"model":"m?fault=split&reply=caf%C3%A9+%F0%9F%8E%89","messages":[{"role":"user","content":"x"}]}'
expect "fault=split (non-stream): body intact" "$(jv "$T/b" 'b.choices[0].message.content')" "café 🎉"
call oa '{"model":"m?fault=split,crlf&reply=a+b","stream":true,"messages":[{"role":"user","content":"x"}]}' -N
expect "fault=split,crlf: reassembled" "$(sse "$T/b" text)/$(grep -c $'\r$' "$T/b")" "a b/10"
# Read split streams with a node client: a read must end right after é's
# lead byte 0xC3, and (with crlf) one must end on a CR, proving the bytes
# really crossed TCP writes.
cat >"$T/reads.js" <<'EOF2'
const http = require("http");
const r = http.request({ host: "127.0.0.1", port: +process.argv[2], method: "POST", path: "/v1/chat/completions",
	headers: { "Authorization": "Bearer " + process.argv[4], "Content-Type": "application/json" } }, (res) => {
	let reads = 0, c3 = false, cr = false;
	res.on("data", (c) => { reads++; if (c[c.length - 1] === 0xc3) c3 = true; if (c[c.length - 1] === 0x0d) cr = true; });
	res.on("end", () => console.log([reads > 50, c3, cr].join(",")));
});
r.end(process.argv[3]);
EOF2
expect "fault=split: é and CRLF split across reads" "$("$NODE" "$T/reads.js" "$PORT" \
	'{"model":"m?fault=split&fault=crlf&chunk_delay=2&reply=caf%C3%A9+%F0%9F%8E%89","stream":true,"messages":[{"role":"user","content":"x"}]}' "$KEY")" "true,true,true"

call oa '{"model":"m?fault=crlf","stream":true,"messages":[{"role":"user","content":"a b"}]}' -N
expect "fault=crlf: text" "$(sse "$T/b" text)" "echo: a b"
expect "fault=crlf: CRLF line ends" "$(grep -c $'\r$' "$T/b")/$(grep -c . "$T/b")" 12/12
call an '{"model":"m?fault=cr","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"a b"}]}' -N
expect "fault=cr: text" "$(sse "$T/b" text)" "echo: a b"
expect "fault=cr: no LF at all" "$(tr -cd '\n' <"$T/b" | wc -c)" 0

call oa '{"model":"m?fault=comments","stream":true,"messages":[{"role":"user","content":"a b"}]}' -N
expect "fault=comments (openai)" "$(sse "$T/b" text)/$(grep -c '^: OPENROUTER PROCESSING' "$T/b")" "echo: a b/6"
call an '{"model":"m?fault=comments","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"a b"}]}' -N
expect "fault=comments (anthropic)" "$(sse "$T/b" text)/$(grep -c '^event: ping' "$T/b")" "echo: a b/10"

call oa '{"model":"m?fault=leading_ws","messages":[{"role":"user","content":"ws"}]}'
expect "fault=leading_ws (non-stream)" "$(head -c 3 "$T/b" | od -An -c | tr -d ' ')/$(jv "$T/b" 'b.choices[0].message.content')" '\n\n\n/echo: ws'
call oa '{"model":"m?fault=leading_ws","stream":true,"messages":[{"role":"user","content":"ws"}]}' -N
expect "fault=leading_ws (stream)" "$(head -n 1 "$T/b")/$(sse "$T/b" text)" ": keep-alive/echo: ws"

call oa '{"model":"m?fault=badutf8","messages":[{"role":"user","content":"x"}]}'
expect "fault=badutf8 (non-stream)" "$CODE/$(od -An -tx1 "$T/b" | tr -d ' \n' | grep -c '626164fffe75746638')" "200/1"
call an '{"model":"m?fault=badutf8","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"x"}]}' -N
expect "fault=badutf8 (stream)" "$(od -An -tx1 "$T/b" | tr -d ' \n' | grep -c '626164fffe75746638')" 1

call oa '{"model":"m?fault=empty_choices","messages":[{"role":"user","content":"x"}]}'
expect "fault=empty_choices (openai)" "$(jv "$T/b" 'b.choices')" "[]"
call an '{"model":"m?fault=empty_choices","max_tokens":5,"messages":[{"role":"user","content":"x"}]}'
expect "fault=empty_choices (anthropic)" "$(jv "$T/b" 'b.content')" "[]"
call oa '{"model":"m?fault=null_content","messages":[{"role":"user","content":"x"}]}'
expect "fault=null_content (openai)" "$(jv "$T/b" '[b.choices[0].message.content, b.choices[0].finish_reason]')" '[null,"stop"]'

call oa '{"model":"m?fault=big&bytes=1000000","messages":[{"role":"user","content":"x"}]}'
expect "fault=big (non-stream)" "$CODE/$(jv "$T/b" 'b.choices[0].message.content.length')" "200/1000000"
call an '{"model":"m?fault=big&bytes=200000","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"x"}]}' -N
expect "fault=big (stream)" "$(sse "$T/b" text | wc -c)" 200000

# ---------------------------------------------------------------- echo, latency, trace
REQ='{"model":"m?echo=request","max_tokens":3,"system":"a system prompt longer than three words","stop_sequences":["END"],"messages":[{"role":"user","content":"é"}]}'
call an "$REQ"
expect "echo=request" "$(jv "$T/b" 'b.content[0].text')" "$("$NODE" -e 'process.stdout.write(JSON.stringify(JSON.parse(process.argv[1])))' "$REQ")"

START=$("$NODE" -e 'console.log(Date.now())')
call oa '{"model":"m?latency=300","messages":[{"role":"user","content":"x"}]}'
END=$("$NODE" -e 'console.log(Date.now())')
expect "latency=300 delays the answer" "$CODE/$(( END - START >= 300 ))" "200/1"

call oa '{"model":"m?words=5&chunk_delay=30","stream":true,"messages":[{"role":"user","content":"x"}]}' -N -H 'x-mock-trace: 1'
curl -sS "$BASE/_trace" >"$T/trace"
expect "chunk_delay + trace" "$(jv "$T/trace" '(() => { const t = b[b.length - 1].t_us; const gaps = t.slice(1).map((v, i) => v - t[i]);
	return t.length + "," + gaps.every((g) => g >= 25000) + "," + (Math.abs(t[0] - Date.now() * 1000) < 5e6); })()')" "5,true,true"

# ---------------------------------------------------------------- introspection
curl -sS "$BASE/_requests" >"$T/reqs"
expect_nomatch "_requests: key redacted" "$T/reqs" "$KEY"
expect_nomatch "_requests: wrong key not logged either" "$T/reqs" "sk-wrong-secret"
expect "_requests: last 50, redacted headers" "$(jv "$T/reqs" 'b.length + "," + b.filter((r) => r.headers.authorization !== undefined).every((r) => r.headers.authorization === "<redacted>") + "," + b.some((r) => r.headers["x-api-key"] === "<redacted>")')" "50,true,true"
curl -sS "$BASE/_stats" >"$T/stats"
expect "_stats: by_key counts times key" "$(jv "$T/stats" 'b.by_key["gpt?fail=429&times=1&retry_after=1|retry me"]')" 2
expect "_stats: totals" "$(jv "$T/stats" '[b.requests >= 60, b.connections > b.requests]')" "[true,true]"
expect "POST /_reset" "$(curl -sS -X POST "$BASE/_reset")" "{}"
# two requests and the stats call over one keep-alive connection
curl -sS -o /dev/null -H "Authorization: Bearer $KEY" --data-binary '{"model":"m","messages":[{"role":"user","content":"k"}]}' "$BASE/v1/chat/completions" \
	--next -sS -o /dev/null -H "Authorization: Bearer $KEY" --data-binary '{"model":"m","messages":[{"role":"user","content":"k"}]}' "$BASE/v1/chat/completions" \
	--next -sS -o "$T/stats" "$BASE/_stats"
expect "_stats after reset: keep-alive reuse" "$(cat "$T/stats")" '{"requests":2,"by_key":{"m|k":2},"connections":1}'

# ---------------------------------------------------------------- shutdown
curl -sS --max-time 20 -o /dev/null -H "Authorization: Bearer $KEY" \
	--data-binary '{"model":"m?fault=hang","messages":[{"role":"user","content":"x"}]}' "$BASE/v1/chat/completions" 2>/dev/null &
HANG=$!
sleep 0.3
T0=$("$NODE" -e 'console.log(Date.now())')
kill -TERM "$MOCK_PID"
wait "$MOCK_PID"
STATUS=$?
T1=$("$NODE" -e 'console.log(Date.now())')
wait "$HANG"
HANG_RC=$?
MOCK_PID=
expect "SIGTERM: exit 0 promptly with a hung client" "$STATUS/$(( T1 - T0 < 2000 ))/$HANG_RC" "0/1/52"

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
