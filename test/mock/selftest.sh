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

# structured output: the documented request shapes, valid answers, and
# almost-valid ones on shape=KIND
S='{"type":"object","properties":{"label":{"type":"string","enum":["good","bad"]},"n":{"type":"integer"}},"required":["label","n"],"additionalProperties":false}'
call oa '{"model":"m","messages":[{"role":"user","content":"this is bad, n: 3"}],"response_format":{"type":"json_schema","json_schema":{"name":"answer","strict":true,"schema":'"$S"'}}}'
expect "openai: json_schema answer valid" "$CODE/$(jv "$T/b" 'b.choices[0].message.content')" '200/{"label":"bad","n":3}'
call oa '{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"answer","strict":true,"schema":{"type":"object","properties":{"a":{"type":"string"}}}}}}'
expect "openai: strict schema with an open object refused" "$CODE/$(jv "$T/b" 'b.error.code')" "400/invalid_json_schema"
call oa '{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"an answer","schema":{}}}}'
expect "openai: json_schema name checked" "$CODE" 400
call oa '{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}}'
expect "openai: tool_choice names a missing tool" "$CODE" 400
call oa '{"model":"m?shape=label","messages":[{"role":"user","content":"good"}],"tools":[{"type":"function","function":{"name":"answer","parameters":'"$S"'}}],"tool_choice":{"type":"function","function":{"name":"answer"}}}'
expect "openai: forced tool, shape=label" "$CODE/$(jv "$T/b" 'b.choices[0].message.tool_calls[0].function.arguments')" '200/{"label":"not-a-label","n":1}'
call oa '{"model":"m?shape=label","messages":[{"role":"user","content":"good"},{"role":"assistant","content":"{}"},{"role":"user","content":"again"}],"tools":[{"type":"function","function":{"name":"answer","parameters":'"$S"'}}],"tool_choice":{"type":"function","function":{"name":"answer"}}}'
expect "openai: forced tool, asked again: valid" "$CODE/$(jv "$T/b" 'b.choices[0].message.tool_calls[0].function.arguments')" '200/{"label":"good","n":1}'
call an '{"model":"m?shape=missing","max_tokens":50,"messages":[{"role":"user","content":"n: 4"}],"tools":[{"name":"answer","input_schema":'"$S"'}],"tool_choice":{"type":"tool","name":"answer"}}'
expect "anthropic: forced tool, shape=missing" "$CODE/$(jv "$T/b" 'JSON.stringify(b.content[0].input) + "/" + b.stop_reason')" '200/{"n":4}/tool_use'
call an '{"model":"m","max_tokens":50,"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}'
expect "anthropic: response_format refused" "$CODE/$(jv "$T/b" 'b.error.message')" "400/response_format: Extra inputs are not permitted"
call an '{"model":"m","max_tokens":50,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"g"}}'
expect "anthropic: tool_choice names a missing tool" "$CODE" 400
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

call an '{"model":"claude-s","max_tokens":50,"stream":true,"tools":[{"name":"f","input_schema":{"type":"object"}}],"messages":[{"role":"user","content":"call tool"}]}' -N
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

# ---------------------------------------------------------------- protocol shapes
# usage details, tiers, endings, refusals, choices, server-tool streams,
# in-band errors and framework error bodies (test/mock/README.md, Replies)
call oa '{"model":"gpt?cached=10&reasoning=4&tier=flex","messages":[{"role":"user","content":"a b"}]}'
expect "openai usage details" "$(jv "$T/b" '[b.usage.prompt_tokens, b.usage.prompt_tokens_details.cached_tokens, b.usage.completion_tokens, b.usage.completion_tokens_details.reasoning_tokens, b.service_tier]')" '[12,10,7,4,"flex"]'
call an '{"model":"c?cached=100&cache_write=30&cache_write_1h=10&tier=priority","max_tokens":50,"messages":[{"role":"user","content":"a b"}]}'
expect "anthropic usage details" "$(jv "$T/b" '[b.usage.input_tokens, b.usage.cache_read_input_tokens, b.usage.cache_creation_input_tokens, b.usage.cache_creation.ephemeral_1h_input_tokens, b.usage.service_tier]')" '[2,100,30,10,"priority"]'
call oa '{"model":"gpt?stop=content_filter","messages":[{"role":"user","content":"a b"}]}'
expect "openai stop=" "$(jv "$T/b" 'b.choices[0].finish_reason')" 'content_filter'
call an '{"model":"c?stop=pause_turn","max_tokens":50,"messages":[{"role":"user","content":"a b"}]}'
expect "anthropic stop=" "$(jv "$T/b" 'b.stop_reason')" 'pause_turn'
call oa '{"model":"gpt?refusal=No%20way.","messages":[{"role":"user","content":"a b"}]}'
expect "openai refusal" "$(jv "$T/b" '[b.choices[0].message.content, b.choices[0].message.refusal]')" '[null,"No way."]'
call oa '{"model":"gpt?refusal=No%20way.","stream":true,"messages":[{"role":"user","content":"a b"}]}' -N
expect "openai refusal stream" "$("$NODE" -e '
	const ev = JSON.parse(process.argv[1]).slice(0, -1).map((e) => JSON.parse(e.data));
	console.log(ev.map((c) => c.choices[0].delta.refusal || "").join("") + "|" + ev.some((c) => c.choices[0].delta.content) + "|" + ev[ev.length - 1].choices[0].finish_reason);
' "$(sse "$T/b" json)")" 'No way.|false|stop'
call an '{"model":"c?refusal=1&reply=half%20a%20reply","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"a b"}]}' -N
expect "anthropic refusal stream" "$(sse "$T/b" text)/$("$NODE" -e '
	const ev = JSON.parse(process.argv[1]).map((e) => JSON.parse(e.data));
	console.log(ev[ev.length - 2].delta.stop_reason);
' "$(sse "$T/b" json)")" 'half a reply/refusal'
call oa '{"model":"gpt?choices=2","messages":[{"role":"user","content":"a b"}]}'
expect "openai choices=2 reply" "$(jv "$T/b" 'b.choices.map((c) => c.index + ":" + c.message.content)')" '["1:choice 1: echo: a b","0:echo: a b"]'
call oa '{"model":"gpt?choices=2","stream":true,"messages":[{"role":"user","content":"a b"}]}' -N
expect "openai choices=2 stream" "$("$NODE" -e '
	const ev = JSON.parse(process.argv[1]).slice(0, -1).map((e) => JSON.parse(e.data));
	const t = ["", ""];
	for (const c of ev) t[c.choices[0].index] += c.choices[0].delta.content || "";
	console.log(ev[0].choices[0].index + "|" + t.join("|"));
' "$(sse "$T/b" json)")" '1|echo: a b|choice 1: echo: a b'
call an '{"model":"c?web_search=1000","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"a b"}]}' -N
expect "anthropic web_search stream usage" "$("$NODE" -e '
	const ev = JSON.parse(process.argv[1]).map((e) => JSON.parse(e.data));
	const d = ev.filter((e) => e.type === "message_delta");
	console.log([ev[0].message.usage.input_tokens, d.length, d[0].usage.input_tokens, d[1].usage.input_tokens, d[1].usage.output_tokens, d[1].usage.server_tool_use.web_search_requests].join(","));
' "$(sse "$T/b" json)")" '2,2,1002,1002,3,1'
call oa '{"model":"gpt?fault=error_event&cut_after=0&error_type=invalid_request_error&error_code=invalid_api_key&message=bad%20key","stream":true,"messages":[{"role":"user","content":"a b"}]}' -N
expect "openai in-band error" "$("$NODE" -e '
	const ev = JSON.parse(process.argv[1]).map((e) => JSON.parse(e.data));
	const e = ev[ev.length - 1].error;
	console.log(ev.length + "," + e.type + "," + e.code + "," + e.message);
' "$(sse "$T/b" json)")" '2,invalid_request_error,invalid_api_key,bad key'
call an '{"model":"c?fault=error_event&cut_after=0&error_type=authentication_error","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"a b"}]}' -N
expect "anthropic in-band error" "$(sse "$T/b" events)" 'message_start,content_block_start,ping,error'
call oa '{"model":"gpt?fail=400&error_shape=express&message=Unexpected%20token","messages":[{"role":"user","content":"a b"}]}'
expect "error_shape=express" "$CODE $(cat "$T/b")" '400 {"error":"SyntaxError","message":"Unexpected token"}'
call oa '{"model":"gpt?fail=404&error_shape=fastify&message=no%20route","messages":[{"role":"user","content":"a b"}]}'
expect "error_shape=fastify" "$CODE $(cat "$T/b")" '404 {"statusCode":404,"error":"Not Found","message":"no route"}'
call an '{"model":"c?fail=401&error_shape=oauth&message=expired","max_tokens":5,"messages":[{"role":"user","content":"a b"}]}'
expect "error_shape=oauth" "$CODE $(cat "$T/b")" '401 {"error":"invalid_token","error_description":"expired"}'
call oa '{"model":"gpt?error_shape=soap","messages":[{"role":"user","content":"a b"}]}'
expect "error_shape: unknown value" "$CODE" '400'

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
expect "_stats after reset: keep-alive reuse" "$(jv "$T/stats" '(() => { const o = Object.assign({}, b); delete o.open_connections; return JSON.stringify(o); })()')" \
	'{"requests":2,"by_key":{"m|k":2},"connections":1,"batches":{"inline":0,"openai":0,"anthropic":0},"batch_requests":0,"files":0,"cancels":0,"results_hosts":{},"embeddings":{"requests":0,"inputs":0},"count_tokens":0}'
expect "_stats: open_connections counts the live one" "$(jv "$T/stats" 'b.open_connections >= 1')" true

# ---------------------------------------------------------------- helpers for the routes below
# req oa|an|none METHOD PATH [BODY [curl args...]]: a request with the
# protocol's auth headers (BODY "" for none, "@file" for a file); sets CODE
# and RC; body in $T/b, headers in $T/h.
req() {
	local proto=$1 method=$2 path=$3
	shift 3
	local body=
	if [ $# -gt 0 ]; then body=$1; shift; fi
	local args=()
	case $proto in
		oa) args=(-H "Authorization: Bearer $KEY") ;;
		an) args=(-H "x-api-key: $KEY" -H 'anthropic-version: 2023-06-01') ;;
	esac
	[ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
	rm -f "$T/b" "$T/h"
	CODE=$(curl -sS --max-time 30 -X "$method" -o "$T/b" -D "$T/h" -w '%{http_code}' "${args[@]}" "$BASE$path" "$@" 2>"$T/curl.err")
	RC=$?
}
# jl FILE EXPR: evaluate EXPR over the lines of a JSONL file, parsed (L).
cat >"$T/jl.js" <<'EOF'
const fs = require('fs');
const L = fs.readFileSync(process.argv[2], 'utf8').split('\n').filter((s) => s !== '').map((s) => JSON.parse(s));
const v = eval(process.argv[3]);
process.stdout.write(typeof v === 'string' ? v : JSON.stringify(v));
EOF
jl() { "$NODE" "$T/jl.js" "$@" 2>&1; }
# mkjsonl FILE N [MODEL] [URL]: an OpenAI batch input file of N chat lines
# (custom_id r0..rN-1, ~300 bytes each); lines r1 and r2 carry fail=500 and
# reply= directives when N >= 3 and MODEL is the default.
mkjsonl() {
	"$NODE" -e '
		const [f, n, model, url] = [process.argv[1], +process.argv[2], process.argv[3] || "gpt-b", process.argv[4] || "/v1/chat/completions"];
		const fd = require("fs").openSync(f, "w");
		let buf = "";
		for (let i = 0; i < n; i++) {
			const m = process.argv[3] ? model : i === 1 ? "gpt-b?fail=500" : i === 2 ? "gpt-b?reply=fixed+text" : "gpt-b";
			buf += JSON.stringify({ custom_id: "r" + i, method: "POST", url, body: { model: m, max_tokens: 50,
				messages: [{ role: "system", content: "You are a helpful assistant for the review triage team." },
					{ role: "user", content: "Review " + i + ": the app is great but it is sometimes slow to load long lists, please fix" }] } }) + "\n";
			if (buf.length > 1 << 20) { require("fs").writeSync(fd, buf); buf = ""; }
		}
		require("fs").writeSync(fd, buf);
	' "$@"
}
# poll_status oa|an ID WANT: GET the batch until its status is WANT (30 s at most).
poll_status() {
	local kind=$1 id=$2 want=$3 got= i
	for i in $(seq 1 300); do
		if [ "$kind" = oa ]; then
			req oa GET "/v1/batches/$id"
			got=$(jv "$T/b" 'b.status')
		else
			req an GET "/v1/messages/batches/$id"
			got=$(jv "$T/b" 'b.processing_status')
		fi
		[ "$got" = "$want" ] && return 0
		sleep 0.1
	done
	return 1
}
curl -sS -o /dev/null -X POST "$BASE/_reset"

# ---------------------------------------------------------------- /_config
curl -sS "$BASE/_config" >"$T/cfg"
expect "GET /_config: defaults" "$(cat "$T/cfg")" \
	'{"rpm":0,"token_count":"words","batch":{"complete_after_ms":0,"expire_fraction":0,"inline_max":0,"inline_latency_ms":0,"results_host":null,"shuffle":true}}'
CODE=$(curl -sS -o "$T/b" -w '%{http_code}' --data-binary '{"batch":{"inline_max":3,"nope":1}}' "$BASE/_config")
expect "POST /_config: unknown key 400" "$CODE/$(jv "$T/b" 'b.error.message')" "400/unknown config key batch.nope"
CODE=$(curl -sS -o "$T/b" -w '%{http_code}' --data-binary '{"batch":{"expire_fraction":1.5}}' "$BASE/_config")
expect "POST /_config: bad value 400" "$CODE" 400
CODE=$(curl -sS -o "$T/b" -w '%{http_code}' --data-binary '{"rpm":"x"}' "$BASE/_config")
expect "POST /_config: bad type 400" "$CODE" 400
CODE=$(curl -sS -o "$T/b" -w '%{http_code}' --data-binary '{"token_count":"bytes"}' "$BASE/_config")
expect "POST /_config: token_count other than words or o200k 400" "$CODE/$(jv "$T/b" 'b.error.message')" \
	'400/token_count must be "words" or "o200k"'
CODE=$(curl -sS -o "$T/b" -w '%{http_code}' --data-binary '{"batch":{"inline_max":3},"rpm":7}' "$BASE/_config")
expect "POST /_config: merges" "$CODE/$(cat "$T/b")" \
	'200/{"rpm":7,"token_count":"words","batch":{"complete_after_ms":0,"expire_fraction":0,"inline_max":3,"inline_latency_ms":0,"results_host":null,"shuffle":true}}'
curl -sS -o /dev/null -X POST "$BASE/_reset"
expect "POST /_reset restores the defaults" "$(curl -sS "$BASE/_config")" "$(cat "$T/cfg")"

# ---------------------------------------------------------------- /v1/messages/count_tokens
# the input a Messages reply to the same request would bill (words by
# default: three in the message, two in the system prompt); the members
# Anthropic does not accept there are refused; each request is counted
req an POST /anthropic/v1/messages/count_tokens '{"model":"c","system":"be brief","messages":[{"role":"user","content":"one two three"}]}'
expect "count_tokens: input_tokens" "$CODE/$(cat "$T/b")" '200/{"input_tokens":5}'
req an POST /anthropic/v1/messages/count_tokens '{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}]}'
expect "count_tokens: max_tokens refused" "$CODE/$(jv "$T/b" 'b.error.message')" '400/max_tokens: Extra inputs are not permitted'
req none POST /anthropic/v1/messages/count_tokens '{"model":"c","messages":[{"role":"user","content":"x"}]}'
expect "count_tokens: no key 401" "$CODE" 401
expect "_stats: count_tokens" "$(curl -sS "$BASE/_stats" | "$NODE" -e 'console.log(JSON.parse(require("fs").readFileSync(0)).count_tokens)')" 3
curl -sS -o /dev/null -X POST "$BASE/_reset"

# ---------------------------------------------------------------- new faults
call oa '{"model":"m?fault=redirect","messages":[{"role":"user","content":"x"}]}'
expect "fault=redirect" "$CODE/$(header location)/$(header content-length)/$(wc -c <"$T/b")" "302/http://127.0.0.1:1/elsewhere/0/0"
call an '{"model":"m?fault=redirect","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"x"}]}' -N
expect "fault=redirect (stream)" "$CODE/$(header location)" "302/http://127.0.0.1:1/elsewhere"
call oa '{"model":"m?fault=wrong_type","stream":true,"messages":[{"role":"user","content":"typed"}]}' -N
expect "fault=wrong_type: JSON body on a stream" "$CODE/$(header content-type)/$(jv "$T/b" 'b.object + "|" + b.choices[0].message.content')" \
	"200/application/json/chat.completion|echo: typed"
call an '{"model":"m?fault=wrong_type","max_tokens":9,"stream":true,"messages":[{"role":"user","content":"typed"}]}' -N
expect "fault=wrong_type (anthropic)" "$(header content-type)/$(jv "$T/b" 'b.type + "|" + b.content[0].text')" "application/json/message|echo: typed"
cat >"$T/slow.js" <<'EOF2'
const http = require("http");
const t0 = Date.now();
const r = http.request({ host: "127.0.0.1", port: +process.argv[2], method: "POST", path: "/v1/chat/completions",
	headers: { "Authorization": "Bearer " + process.argv[4], "Content-Type": "application/json" } }, (res) => {
	const th = Date.now() - t0;
	let reads = 0, body = "";
	res.on("data", (c) => { reads++; body += c; });
	res.on("end", () => {
		const len = Buffer.byteLength(body);
		console.log([res.statusCode, th < 200, reads >= len / 2, Date.now() - t0 >= (len - 1) * 3, JSON.parse(body).choices[0].message.content].join(","));
	});
});
r.end(process.argv[3]);
EOF2
expect "fault=slow_body: headers at once, then one byte per chunk_delay" "$("$NODE" "$T/slow.js" "$PORT" \
	'{"model":"m?fault=slow_body&chunk_delay=3","messages":[{"role":"user","content":"drip"}]}' "$KEY")" "200,true,true,true,echo: drip"

# ---------------------------------------------------------------- trace end_us/aborted, open_connections
call oa '{"model":"m?words=3","stream":true,"messages":[{"role":"user","content":"x"}]}' -N -H 'x-mock-trace: 1'
call oa '{"model":"m?words=30&chunk_delay=50","stream":true,"messages":[{"role":"user","content":"x"}]}' -N -H 'x-mock-trace: 1' --max-time 0.4
sleep 0.2
curl -sS "$BASE/_trace" >"$T/trace"
expect "trace: finished stream has end_us, aborted=false" "$(jv "$T/trace" '(() => { const t = b[b.length - 2]; return [t.aborted, t.end_us >= t.t_us[t.t_us.length - 1], t.t_us.length].join(","); })()')" "false,true,3"
expect "trace: client closed early: aborted=true" "$(jv "$T/trace" '(() => { const t = b[b.length - 1]; return [t.aborted, t.t_us.length < 30, t.end_us - t.t_us[0] >= 300000, t.end_us - t.t_us[0] < 2000000].join(","); })()')" "true,true,true,true"
cat >"$T/conns.js" <<'EOF2'
const net = require("net"), http = require("http");
const port = +process.argv[2];
const stats = () => new Promise((ok) => http.get({ host: "127.0.0.1", port, path: "/_stats", agent: false }, (res) => {
	let s = ""; res.on("data", (c) => s += c); res.on("end", () => ok(JSON.parse(s).open_connections)); }));
const socks = [1, 2, 3].map(() => net.connect(port, "127.0.0.1"));
setTimeout(async () => {
	const a = await stats();
	socks.forEach((s) => s.destroy());
	setTimeout(async () => { const b = await stats(); console.log(a >= 4, a - b >= 3); }, 200);
}, 200);
EOF2
expect "_stats: open_connections follows open sockets" "$("$NODE" "$T/conns.js" "$PORT")" "true true"

# ---------------------------------------------------------------- ratelimit= directive
call oa '{"model":"m?ratelimit=remaining:0,reset:6m0s,tokens_remaining:12,tokens_reset:12ms","messages":[{"role":"user","content":"x"}]}'
expect "ratelimit= (openai)" "$CODE/$(header x-ratelimit-limit-requests)/$(header x-ratelimit-remaining-requests)/$(header x-ratelimit-reset-requests)/$(header x-ratelimit-limit-tokens)/$(header x-ratelimit-remaining-tokens)/$(header x-ratelimit-reset-tokens)" \
	"200/1000/0/6m0s/1000000/12/12ms"
call oa '{"model":"m?ratelimit=limit:60,remaining:59,reset:1s&fail=429","messages":[{"role":"user","content":"x"}]}'
expect "ratelimit= on a fail= answer" "$CODE/$(header x-ratelimit-limit-requests)/$(header x-ratelimit-remaining-requests)/$(header x-ratelimit-reset-requests)" "429/60/59/1s"
call an '{"model":"m?ratelimit=remaining:3,reset:1m30s","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"x"}]}' -N
expect "ratelimit= (anthropic stream): RFC 3339 reset" "$(header anthropic-ratelimit-requests-limit)/$(header anthropic-ratelimit-requests-remaining)/$("$NODE" -e '
	const s = process.argv[1], d = Date.parse(s) - Date.now();
	console.log(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/.test(s) && d > 85000 && d <= 92000)' "$(header anthropic-ratelimit-requests-reset)")/$(header anthropic-ratelimit-tokens-limit)" "1000/3/true/1000000"
call oa '{"model":"m?ratelimit=remaining:x","messages":[{"role":"user","content":"x"}]}'
expect "ratelimit= bad value 400" "$CODE/$(jv "$T/b" 'b.error.message')" "400/invalid mock directive value ratelimit=remaining:x"
call oa '{"model":"m?ratelimit=reset:5minutes","messages":[{"role":"user","content":"x"}]}'
expect "ratelimit= bad duration 400" "$CODE" 400
call oa '{"model":"m","messages":[{"role":"user","content":"x"}]}'
expect "no rate-limit headers by default" "$(grep -ci ratelimit "$T/h")" 0

# ---------------------------------------------------------------- rpm
curl -sS -o /dev/null --data-binary '{"rpm":3}' "$BASE/_config"
R=
for i in 1 2 3; do
	call oa '{"model":"m","messages":[{"role":"user","content":"paced"}]}'
	R="$R$CODE:$(header x-ratelimit-remaining-requests) "
done
expect "rpm=3: three admitted, remaining counts down" "$R" "200:2 200:1 200:0 "
call oa '{"model":"m","messages":[{"role":"user","content":"over"}]}'
expect "rpm=3: the fourth gets 429 + Retry-After" "$CODE/$(jv "$T/b" 'b.error.type + "|" + b.error.code')/$(header retry-after | grep -Ec '^([1-9]|[1-5][0-9]|60)$')/$(header x-ratelimit-remaining-requests)" \
	"429/requests|rate_limit_exceeded/1/0"
call an '{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"over"}]}'
expect "rpm=3: anthropic 429 shape" "$CODE/$(jv "$T/b" 'b.type + "|" + b.error.type')/$(header anthropic-ratelimit-requests-remaining)" "429/error|rate_limit_error/0"
req oa GET /v1/batches
expect "rpm=3: batch routes count too" "$CODE" 429
expect "rpm: control routes are not limited" "$(curl -sS -o /dev/null -w '%{http_code}' "$BASE/_stats")" 200
curl -sS -o /dev/null -X POST "$BASE/_reset"
call oa '{"model":"m","messages":[{"role":"user","content":"after reset"}]}'
expect "rpm: /_reset turns it off" "$CODE/$(grep -ci ratelimit "$T/h")" "200/0"

# ---------------------------------------------------------------- /_arrivals
curl -sS -o /dev/null -X POST "$BASE/_reset"
call oa '{"model":"gpt-a?reply=x","messages":[{"role":"user","content":"1"}]}'
call an '{"model":"claude-a","max_tokens":5,"messages":[{"role":"user","content":"2"}]}'
CODE=$(curl -sS -o /dev/null -w '%{http_code}' --data-binary 'x' "$BASE/v1/chat/completions")
req oa GET /v1/batches
curl -sS -o /dev/null "$BASE/_stats"
curl -sS "$BASE/_arrivals" >"$T/arr"
expect "_arrivals: protocol requests only, full model strings" "$(jv "$T/arr" 'b.map((a) => a.path + "|" + a.model).join(" ")')" \
	"/v1/chat/completions|gpt-a?reply=x /v1/messages|claude-a /v1/chat/completions|null /v1/batches|null"
expect "_arrivals: epoch microseconds, in order" "$(jv "$T/arr" 'b.every((a, i) => Number.isInteger(a.t_us) && (i === 0 || a.t_us >= b[i - 1].t_us)) && Math.abs(b[0].t_us - Date.now() * 1000) < 1e7')" true

# ---------------------------------------------------------------- inline batches
curl -sS -o /dev/null -X POST "$BASE/_reset"
cat >"$T/inline.js" <<'EOF2'
// usage: node inline.js N [variant]: an inline batch body of N lines
const n = +process.argv[2], v = process.argv[3] || "";
const lines = [];
for (let i = 0; i < n; i++) {
	let model = "relay-m", content = "item " + i;
	if (i === 1) model = "relay-m?fail=500&message=upstream+down";
	if (i === 2) model = "relay-m?reply=hello+batch";
	if (i === 3) model = "relay-m?words=4";
	if (i === 4) model = "relay-m?fault=reset";
	lines.push({ custom_id: "doc_" + i, method: "POST", url: i % 2 ? "/chat/completions" : "/v1/chat/completions",
		body: { model, max_tokens: 2048, messages: [{ role: "user", content }] } });
}
if (v === "stream") lines[1].body.stream = true;
if (v === "dup") lines[2].custom_id = "doc_0";
if (v === "method") lines[1].method = "GET";
if (v === "url") lines[1].url = "/v1/completions";
if (v === "models") lines[2].body.model = "other-model";
if (v === "notobj") lines[1] = "a string";
process.stdout.write(JSON.stringify(v === "notarray" ? { input_file_content: "x" } : v === "empty" ? { input_file_content: [] } : { input_file_content: lines }));
EOF2
inline() { "$NODE" "$T/inline.js" "$@"; }
req oa POST /v1/batches "$(inline 20)"
expect "inline: 200 shape" "$CODE/$(jv "$T/b" '[/^batch_inline_\d+$/.test(b.id), b.object, b.status, JSON.stringify(b.request_counts), b.results.length].join("|")')" \
	'200/true|batch|completed|{"total":20,"completed":18,"failed":2}|20'
expect "inline: x-request-id" "$(header x-request-id | grep -c '^req_mock')" 1
expect "inline: output line shape" "$(jv "$T/b" '(() => { const r = b.results.find((x) => x.custom_id === "doc_0"); return [/^batch_req_/.test(r.id), r.response.status_code, /^req_mock/.test(r.response.request_id), r.response.body.object, r.response.body.choices[0].message.content, r.error].join("|"); })()')" \
	"true|200|true|chat.completion|echo: item 0|"
expect "inline: directives per line" "$(jv "$T/b" '(() => { const m = {}; for (const r of b.results) m[r.custom_id] = r; return [m.doc_1.response.status_code, m.doc_1.response.body.error.message, m.doc_1.response.body.error.type, m.doc_2.response.body.choices[0].message.content, m.doc_3.response.body.choices[0].message.content, m.doc_3.response.body.model].join("|"); })()')" \
	"500|upstream down|server_error|hello batch|w1 w2 w3 w4|relay-m"
expect "inline: a transport fault becomes error, response null" "$(jv "$T/b" 'JSON.stringify(b.results.find((x) => x.custom_id === "doc_4"), ["response", "error", "code"])')" \
	'{"response":null,"error":{"code":"server_error"}}'
expect "inline: results shuffled, all custom_ids once" "$(jv "$T/b" '[b.results.map((r) => r.custom_id).join() !== Array.from({ length: 20 }, (_, i) => "doc_" + i).join(), new Set(b.results.map((r) => r.custom_id)).size].join()')" "true,20"
curl -sS -o /dev/null --data-binary '{"batch":{"shuffle":false}}' "$BASE/_config"
req oa POST /x/v1/batches "$(inline 20)"
expect "inline: shuffle off keeps the order (any prefix)" "$CODE/$(jv "$T/b" 'b.results.map((r) => r.custom_id).join() === Array.from({ length: 20 }, (_, i) => "doc_" + i).join()')" "200/true"
for v in notarray empty dup method url models notobj; do
	req oa POST /v1/batches "$(inline 6 $v)"
	expect "inline: 400 for $v" "$CODE/$(jv "$T/b" 'b.error.type')" "400/invalid_request_error"
done
req oa POST /v1/batches "$(inline 6 stream)"
expect "inline: stream:true refused like the playbook's error" "$CODE/$(jv "$T/b" '/streaming is not supported in batch/i.test(b.error.message)')" "400/true"
CODE=$(curl -sS -o "$T/b" -w '%{http_code}' -H 'Authorization: Bearer sk-wrong-secret' --data-binary "$(inline 2)" "$BASE/v1/batches")
expect "inline: wrong key 401" "$CODE/$(jv "$T/b" 'b.error.code')" "401/invalid_api_key"
curl -sS -o /dev/null --data-binary '{"batch":{"inline_latency_ms":300}}' "$BASE/_config"
START=$("$NODE" -e 'console.log(Date.now())')
req oa POST /v1/batches "$(inline 3)"
END=$("$NODE" -e 'console.log(Date.now())')
expect "inline_latency_ms delays the answer" "$CODE/$(( END - START >= 300 ))" "200/1"
curl -sS -o /dev/null --data-binary '{"batch":{"inline_max":4,"inline_latency_ms":0}}' "$BASE/_config"
req oa POST /v1/batches "$(inline 5)" --max-time 1
expect "inline_max: a bigger batch never answers" "$RC" 28
req oa POST /v1/batches "$(inline 4)"
expect "inline_max: halves still answer" "$CODE/$(jv "$T/b" 'b.results.length')" "200/4"
curl -sS "$BASE/_stats" >"$T/stats"
expect "_stats: inline batches and lines" "$(jv "$T/stats" 'JSON.stringify([b.batches, b.batch_requests, b.requests])')" \
	'[{"inline":5,"openai":0,"anthropic":0},52,0]'

# ---------------------------------------------------------------- OpenAI files
curl -sS -o /dev/null -X POST "$BASE/_reset"
mkjsonl "$T/in6.jsonl" 6
sed -i 's/$/\r/' "$T/in6.jsonl"                    # CRLF line ends
req oa POST /v1/files "" -F purpose=batch -F "file=@$T/in6.jsonl;filename=input.jsonl"
expect "files: upload" "$CODE/$(jv "$T/b" '[/^file-/.test(b.id), b.object, b.bytes, typeof b.created_at, b.filename, b.purpose].join("|")')" \
	"200/true|file|$(wc -c <"$T/in6.jsonl")|number|input.jsonl|batch"
FILE6=$(jv "$T/b" 'b.id')
req oa GET "/v1/files/$FILE6"
expect "files: GET object" "$CODE/$(jv "$T/b" 'b.id + "|" + b.purpose')" "200/$FILE6|batch"
req oa GET "/v1/files/$FILE6/content"
expect "files: content is the raw bytes" "$CODE/$(cmp -s "$T/b" "$T/in6.jsonl" && echo same)" "200/same"
req oa GET /v1/files/file-nope
expect "files: unknown id 404" "$CODE/$(jv "$T/b" 'b.error.type')" "404/invalid_request_error"
req oa POST /v1/files "" -F purpose=nonsense -F "file=@$T/in6.jsonl"
expect "files: unknown purpose 400" "$CODE/$(jv "$T/b" 'b.error.param')" "400/purpose"
req oa POST /v1/files "" -F purpose=user_data -F "file=@$T/in6.jsonl;filename=notes.txt"
expect "files: other purposes accepted" "$CODE/$(jv "$T/b" 'b.purpose')" "200/user_data"
req oa POST /v1/files "" -F purpose=batch -F "file=@$T/in6.jsonl;filename=input.txt"
expect "files: batch input must be .jsonl" "$CODE" 400
req oa POST /v1/files "" -F purpose=batch
expect "files: missing file 400" "$CODE/$(jv "$T/b" 'b.error.param')" "400/file"
CODE=$(curl -sS -o /dev/null -w '%{http_code}' -F purpose=batch -F "file=@$T/in6.jsonl" "$BASE/v1/files")
expect "files: no key 401" "$CODE" 401
cat >"$T/multipart.js" <<'EOF2'
// A hand-made multipart body: preamble, quoted boundary, CRLF and
// boundary look-alikes inside the file; upload it, read it back, compare.
const http = require("http");
const [port, key] = [+process.argv[2], process.argv[3]];
const bnd = "xYz--b0und4ry";
const data = Buffer.from('{"custom_id":"a"}\r\n--xYz--b0und4r\r\n\r\n--xYz--b0und4ryX no\r\n\u00e9\u{1F389}\n');
const body = Buffer.concat([Buffer.from("preamble\r\n--" + bnd + "\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--" + bnd +
	"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"odd.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n"), data,
	Buffer.from("\r\n--" + bnd + "--\r\n")]);
const call = (method, path, payload, type, cb) => {
	const r = http.request({ host: "127.0.0.1", port, method, path, headers: Object.assign({ Authorization: "Bearer " + key },
		type ? { "Content-Type": type } : {}) }, (res) => { const c = []; res.on("data", (x) => c.push(x)); res.on("end", () => cb(res.statusCode, Buffer.concat(c))); });
	r.end(payload);
};
call("POST", "/v1/files", body, 'multipart/form-data; boundary="' + bnd + '"', (st, b) => {
	const f = JSON.parse(b);
	call("GET", "/v1/files/" + f.id + "/content", null, null, (st2, c) => console.log([st, f.bytes === data.length, st2, c.equals(data)].join(",")));
});
EOF2
expect "files: multipart parsed exactly (CRLF, look-alike boundaries, UTF-8)" "$("$NODE" "$T/multipart.js" "$PORT" "$KEY")" "200,true,200,true"
mkjsonl "$T/in100k.jsonl" 100000
req oa POST /v1/files "" -F purpose=batch -F "file=@$T/in100k.jsonl"
expect "files: 100,000 lines of ~300 bytes upload" "$CODE/$(jv "$T/b" 'b.bytes')" "200/$(wc -c <"$T/in100k.jsonl")"
FILE100K=$(jv "$T/b" 'b.id')
req oa GET "/v1/files/$FILE100K/content"
expect "files: 100,000-line content intact" "$(cmp -s "$T/b" "$T/in100k.jsonl" && echo same)" same

# ---------------------------------------------------------------- OpenAI Batch API
CREATE='{"input_file_id":"'$FILE6'","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":{"job":"nightly"}}'
req oa POST /v1/batches "$CREATE"
expect "batches: create returns validating" "$CODE/$(jv "$T/b" '[/^batch_/.test(b.id), b.object, b.endpoint, b.input_file_id === "'$FILE6'", b.completion_window, b.status, typeof b.created_at, b.expires_at - b.created_at, JSON.stringify(b.request_counts), JSON.stringify(b.metadata), b.output_file_id, b.error_file_id, b.errors].join("|")')" \
	'200/true|batch|/v1/chat/completions|true|24h|validating|number|86400|{"total":6,"completed":0,"failed":0}|{"job":"nightly"}|||'
B6=$(jv "$T/b" 'b.id')
poll_status oa "$B6" completed
expect "batches: completed at the next look (complete_after_ms 0)" "$(jv "$T/b" '[b.status, JSON.stringify(b.request_counts), typeof b.in_progress_at, typeof b.finalizing_at, typeof b.completed_at, /^file-/.test(b.output_file_id), /^file-/.test(b.error_file_id), b.model, b.usage.total_tokens > 0].join("|")')" \
	'completed|{"total":6,"completed":5,"failed":1}|number|number|number|true|true|gpt-b|true'
OUT=$(jv "$T/b" 'b.output_file_id')
ERR=$(jv "$T/b" 'b.error_file_id')
req oa GET "/v1/files/$OUT/content"
cp "$T/b" "$T/out.jsonl"
expect "batches: output file lines" "$(jl "$T/out.jsonl" '[L.length, L.every((l) => /^batch_req_/.test(l.id) && l.response.status_code === 200 && l.error === null && l.response.body.object === "chat.completion"), L.map((l) => l.custom_id).sort().join(), L.find((l) => l.custom_id === "r2").response.body.choices[0].message.content].join("|")')" \
	"5|true|r0,r2,r3,r4,r5|fixed text"
req oa GET "/v1/files/$ERR/content"
cp "$T/b" "$T/err.jsonl"
expect "batches: error file holds the non-200 line" "$(jl "$T/err.jsonl" 'JSON.stringify(L.map((l) => [l.custom_id, l.response.status_code, l.response.body.error.type, l.error]))')" '[["r1",500,"server_error",null]]'
req oa GET "/v1/files/$OUT"
expect "batches: output File object" "$(jv "$T/b" 'b.purpose + "|" + b.bytes')" "batch_output|$(wc -c <"$T/out.jsonl")"
req oa POST "/v1/batches/$B6/cancel"
expect "batches: cancel a completed batch 400" "$CODE" 400
for bad in '{"endpoint":"/v1/chat/completions","completion_window":"24h"}' \
	'{"input_file_id":"'$FILE6'","endpoint":"/v1/nope","completion_window":"24h"}' \
	'{"input_file_id":"'$FILE6'","endpoint":"/v1/completions","completion_window":"24h"}' \
	'{"input_file_id":"'$FILE6'","endpoint":"/v1/chat/completions","completion_window":"1h"}' \
	'{"input_file_id":"'$FILE6'","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":{"a":1}}' \
	"{\"input_file_id\":\"$FILE6\",\"endpoint\":\"/v1/chat/completions\",\"completion_window\":\"24h\",\"metadata\":$("$NODE" -e 'const o = {}; for (let i = 0; i < 17; i++) o["k" + i] = "v"; console.log(JSON.stringify(o))')}"; do
	req oa POST /v1/batches "$bad"
	expect "batches: create 400 ($(printf '%s' "$bad" | cut -c1-60))" "$CODE/$(jv "$T/b" 'b.error.type')" "400/invalid_request_error"
done
req oa POST /v1/batches '{"input_file_id":"file-nope","endpoint":"/v1/chat/completions","completion_window":"24h"}'
expect "batches: unknown input file 404" "$CODE" 404
req oa GET /v1/batches/batch_nope
expect "batches: unknown batch 404" "$CODE" 404

# invalid input file: the batch is created, then fails with errors.data
{
	printf '%s\n' '{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}'
	printf '%s\n' 'not json'
	printf '%s\n' '{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}'
	printf '%s\n' '{"custom_id":"b","method":"GET","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}'
	printf '%s\n' '{"custom_id":"c","method":"POST","url":"/chat/completions","body":{"model":"m","messages":[]}}'
	printf '%s\n' '{"custom_id":"d","method":"POST","url":"/v1/chat/completions","body":{"model":"m?fail=500","stream":true,"messages":[]}}'
	printf '%s\n' '{"custom_id":"e","method":"POST","url":"/v1/chat/completions","body":{"model":"other","messages":[]}}'
} >"$T/bad.jsonl"
req oa POST /v1/files "" -F purpose=batch -F "file=@$T/bad.jsonl"
req oa POST /v1/batches '{"input_file_id":"'"$(jv "$T/b" 'b.id')"'","endpoint":"/v1/chat/completions","completion_window":"24h"}'
expect "batches: invalid file still creates (validating)" "$CODE/$(jv "$T/b" 'b.status')" "200/validating"
poll_status oa "$(jv "$T/b" 'b.id')" failed
expect "batches: then failed with errors.data[{code,line}]" "$(jv "$T/b" 'b.errors.object + "|" + b.errors.data.map((e) => e.code + ":" + e.line).join() + "|" + typeof b.failed_at + "|" + b.output_file_id')" \
	"list|invalid_json_line:2,duplicate_custom_id:3,invalid_method:4,url_mismatch:5,invalid_request:6,model_mismatch:7|number|null"
req oa POST /v1/batches '{"input_file_id":"'$FILE100K'","endpoint":"/v1/chat/completions","completion_window":"24h"}'
poll_status oa "$(jv "$T/b" 'b.id')" failed
expect "batches: more than 50,000 lines fails (too_many_tasks)" "$(jv "$T/b" 'b.errors.data[0].code')" too_many_tasks

# expire_fraction: expired, expired requests in the error file as batch_expired
curl -sS -o /dev/null --data-binary '{"batch":{"expire_fraction":0.25}}' "$BASE/_config"
mkjsonl "$T/in8.jsonl" 8 gpt-e
req oa POST /v1/files "" -F purpose=batch -F "file=@$T/in8.jsonl"
req oa POST /v1/batches '{"input_file_id":"'"$(jv "$T/b" 'b.id')"'","endpoint":"/v1/chat/completions","completion_window":"24h"}'
poll_status oa "$(jv "$T/b" 'b.id')" expired
expect "expire_fraction: batch ends expired" "$(jv "$T/b" '[b.status, JSON.stringify(b.request_counts), typeof b.expired_at].join("|")')" 'expired|{"total":8,"completed":6,"failed":2}|number'
req oa GET "/v1/files/$(jv "$T/b" 'b.error_file_id')/content"
expect "expire_fraction: batch_expired lines" "$(jl "$T/b" 'L.map((l) => l.custom_id + ":" + l.response + ":" + l.error.code).sort().join()')" "r6:null:batch_expired,r7:null:batch_expired"
curl -sS -o /dev/null -X POST "$BASE/_reset"

# status over complete_after_ms, and cancel (OpenAI and Anthropic together)
curl -sS -o /dev/null --data-binary '{"batch":{"complete_after_ms":4000}}' "$BASE/_config"
mkjsonl "$T/in2k.jsonl" 2000 gpt-c
req oa POST /v1/files "" -F purpose=batch -F "file=@$T/in6.jsonl"
FILE6=$(jv "$T/b" 'b.id')
req oa POST /v1/files "" -F purpose=batch -F "file=@$T/in2k.jsonl"
FILE2K=$(jv "$T/b" 'b.id')
"$NODE" -e 'const r = []; for (let i = 0; i < 2000; i++) r.push({ custom_id: "q" + i, params: { model: "claude-c", max_tokens: 20, messages: [{ role: "user", content: "hi " + i }] } }); console.log(JSON.stringify({ requests: r }))' >"$T/an2k.json"
req oa POST /v1/batches '{"input_file_id":"'$FILE6'","endpoint":"/v1/chat/completions","completion_window":"24h"}'
T0=$("$NODE" -e 'console.log(Date.now())')
BP=$(jv "$T/b" 'b.id')
req oa POST /v1/batches '{"input_file_id":"'$FILE2K'","endpoint":"/v1/chat/completions","completion_window":"24h"}'
BX=$(jv "$T/b" 'b.id')
req an POST /v1/messages/batches "@$T/an2k.json"
AX=$(jv "$T/b" 'b.id')
# sleep_until MS: sleep until MS milliseconds after T0
sleep_until() { "$NODE" -e 'const d = +process.argv[1] + +process.argv[2] - Date.now(); setTimeout(() => {}, Math.max(0, d))' "$T0" "$1"; }
sleep_until 2000
req oa GET "/v1/batches/$BP"
cp "$T/b" "$T/bp1"
req oa POST "/v1/batches/$BX/cancel"
cp "$T/b" "$T/bx1"
req an POST "/v1/messages/batches/$AX/cancel"
cp "$T/b" "$T/ax1"
sleep_until 3300
req oa GET "/v1/batches/$BP"
cp "$T/b" "$T/bp2"
sleep_until 4300
req oa GET "/v1/batches/$BP"
cp "$T/b" "$T/bp3"
expect "complete_after_ms: in_progress in the middle third" "$(jv "$T/bp1" 'b.status + "|" + typeof b.in_progress_at + "|" + b.completed_at')" "in_progress|number|null"
expect "complete_after_ms: finalizing in the last third" "$(jv "$T/bp2" 'b.status + "|" + typeof b.finalizing_at')" "finalizing|number"
expect "complete_after_ms: completed after it" "$(jv "$T/bp3" 'b.status')" completed
expect "batches: cancel -> cancelling, part answered" "$(jv "$T/bx1" '[b.status, typeof b.cancelling_at, b.request_counts.total, b.request_counts.completed > 0 && b.request_counts.completed < 2000].join("|")')" "cancelling|number|2000|true"
expect "message batches: cancel -> canceling" "$(jv "$T/ax1" 'b.processing_status + "|" + /Z$/.test(b.cancel_initiated_at)')" "canceling|true"
req oa GET "/v1/batches/$BX"
expect "batches: then cancelled" "$(jv "$T/b" 'b.status + "|" + typeof b.cancelled_at')" "cancelled|number"
DONE_N=$(jv "$T/b" 'b.request_counts.completed')
req oa GET "/v1/files/$(jv "$T/b" 'b.output_file_id')/content"
expect "batches: cancelled output holds only answered requests" "$(jl "$T/b" 'L.length')" "$DONE_N"
req an GET "/v1/messages/batches/$AX"
expect "message batches: then ended with canceled requests" "$(jv "$T/b" '(() => { const c = b.request_counts; return [b.processing_status, c.succeeded > 0, c.canceled > 0, c.succeeded + c.canceled, c.processing].join("|"); })()')" "ended|true|true|2000|0"
CANCELED=$(jv "$T/b" 'b.request_counts.canceled')
curl -sS -o "$T/res" -H "x-api-key: $KEY" -H 'anthropic-version: 2023-06-01' "$(jv "$T/b" 'b.results_url')"
expect "message batches: canceled results" "$(jl "$T/res" 'L.length + "|" + L.filter((l) => l.result.type === "canceled").length')" "2000|$CANCELED"
req oa GET '/v1/batches?limit=2'
expect "batches: list newest first" "$(jv "$T/b" '[b.object, b.data.length, b.data[0].id === "'$BX'", b.data[1].id === "'$BP'", b.first_id === "'$BX'", b.last_id === "'$BP'", b.has_more].join("|")')" "list|2|true|true|true|true|false"
req oa GET "/v1/batches?limit=1&after=$BX"
expect "batches: list after=" "$(jv "$T/b" 'b.data.map((x) => x.id).join() + "|" + b.has_more')" "$BP|false"
req oa GET '/v1/batches?limit=0'
expect "batches: list bad limit 400" "$CODE" 400
curl -sS -o /dev/null -X POST "$BASE/_reset"

# a 50,000-line batch
head -n 50000 "$T/in100k.jsonl" >"$T/in50k.jsonl"
req oa POST /v1/files "" -F purpose=batch -F "file=@$T/in50k.jsonl"
req oa POST /v1/batches '{"input_file_id":"'"$(jv "$T/b" 'b.id')"'","endpoint":"/v1/chat/completions","completion_window":"24h"}'
poll_status oa "$(jv "$T/b" 'b.id')" completed
expect "batches: 50,000 requests complete" "$(jv "$T/b" 'JSON.stringify(b.request_counts)')" '{"total":50000,"completed":49999,"failed":1}'
req oa GET "/v1/files/$(jv "$T/b" 'b.output_file_id')/content"
expect "batches: 49,999 output lines, distinct custom_ids" "$(wc -l <"$T/b")/$(grep -o '"custom_id":"r[0-9]*"' "$T/b" | sort -u | wc -l)" "49999/49999"

# ---------------------------------------------------------------- Anthropic Message Batches
curl -sS -o /dev/null -X POST "$BASE/_reset"
AREQ='{"requests":[
 {"custom_id":"ok-1","params":{"model":"claude-b","max_tokens":20,"messages":[{"role":"user","content":"hello batch"}]}},
 {"custom_id":"fail_2","params":{"model":"claude-b?fail=529","max_tokens":20,"messages":[{"role":"user","content":"x"}]}},
 {"custom_id":"bad3","params":{"model":"claude-b","messages":[{"role":"user","content":"no max_tokens"}]}},
 {"custom_id":"fault4","params":{"model":"claude-b?fault=hang","max_tokens":20,"messages":[{"role":"user","content":"x"}]}},
 {"custom_id":"other5","params":{"model":"claude-other?reply=mixed+models+are+fine","max_tokens":20,"messages":[{"role":"user","content":"x"}]}}]}'
req an POST /v1/messages/batches "$AREQ"
expect "message batches: create" "$CODE/$(jv "$T/b" '[/^msgbatch_/.test(b.id), b.type, b.processing_status, JSON.stringify(b.request_counts), b.ended_at, b.results_url, b.archived_at, b.cancel_initiated_at, /^\d{4}-\d\d-\d\dT.*Z$/.test(b.created_at), Date.parse(b.expires_at) - Date.parse(b.created_at)].join("|")')" \
	'200/true|message_batch|in_progress|{"processing":5,"succeeded":0,"errored":0,"canceled":0,"expired":0}|||||true|86400000'
expect "message batches: request-id" "$(header request-id | grep -c '^req_mock')" 1
AB=$(jv "$T/b" 'b.id')
poll_status an "$AB" ended
expect "message batches: ended" "$(jv "$T/b" 'JSON.stringify(b.request_counts) + "|" + /Z$/.test(b.ended_at) + "|" + b.results_url')" \
	"{\"processing\":0,\"succeeded\":2,\"errored\":3,\"canceled\":0,\"expired\":0}|true|http://127.0.0.1:$PORT/v1/messages/batches/$AB/results"
CODE=$(curl -sS -o "$T/b" -w '%{http_code}' "$BASE/v1/messages/batches/$AB/results")
expect "message batches: results need the key" "$CODE" 401
req an GET "/v1/messages/batches/$AB/results"
cp "$T/b" "$T/res"
expect "message batches: succeeded result" "$(jl "$T/res" '(() => { const r = L.find((l) => l.custom_id === "ok-1").result; return [r.type, r.message.type, r.message.role, r.message.content[0].text, r.message.usage.output_tokens].join("|"); })()')" \
	"succeeded|message|assistant|echo: hello batch|3"
expect "message batches: errored results nest the error" "$(jl "$T/res" 'JSON.stringify(["fail_2", "bad3", "fault4"].map((c) => { const r = L.find((l) => l.custom_id === c).result; return [r.type, r.error.type, r.error.error.type, r.error.error.message]; }))')" \
	'[["errored","error","overloaded_error","mock error 529"],["errored","error","invalid_request_error","max_tokens: Field required"],["errored","error","api_error","mock fault hang"]]'
expect "message batches: mixed models" "$(jl "$T/res" 'L.find((l) => l.custom_id === "other5").result.message.content[0].text')" "mixed models are fine"
req an POST "/v1/messages/batches/$AB/cancel"
expect "message batches: cancel an ended batch 400" "$CODE/$(jv "$T/b" 'b.error.type')" "400/invalid_request_error"
abad() { "$NODE" -e '
	const v = process.argv[1];
	const r = (id, p) => ({ custom_id: id, params: Object.assign({ model: "c", max_tokens: 5, messages: [{ role: "user", content: "x" }] }, p || {}) });
	let reqs = [r("a"), r("b")];
	if (v === "pattern") reqs[1].custom_id = "has space";
	if (v === "long") reqs[1].custom_id = "x".repeat(65);
	if (v === "dup") reqs[1].custom_id = "a";
	if (v === "empty") reqs = [];
	if (v === "stream") reqs[1] = r("b", { stream: true });
	if (v === "noparams") delete reqs[1].params;
	if (v === "toomany") reqs = Array.from({ length: 100001 }, (_, i) => r("r" + i));
	console.log(JSON.stringify({ requests: reqs }));' "$1"; }
for v in pattern long dup empty stream noparams toomany; do
	abad $v >"$T/abad.json"
	req an POST /v1/messages/batches "@$T/abad.json"
	expect "message batches: 400 for $v" "$CODE/$(jv "$T/b" 'b.type + "|" + b.error.type')" "400/error|invalid_request_error"
done
CODE=$(curl -sS -o "$T/b" -w '%{http_code}' -H "x-api-key: $KEY" --data-binary "$AREQ" "$BASE/v1/messages/batches")
expect "message batches: anthropic-version required" "$CODE" 400
req an GET /v1/messages/batches/msgbatch_nope
expect "message batches: unknown id 404" "$CODE/$(jv "$T/b" 'b.error.type')" "404/not_found_error"
curl -sS -o /dev/null --data-binary '{"batch":{"expire_fraction":0.5}}' "$BASE/_config"
req an POST /x/v1/messages/batches '{"requests":[{"custom_id":"e1","params":{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}]}},{"custom_id":"e2","params":{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"y"}]}}]}'
AE=$(jv "$T/b" 'b.id')
poll_status an "$AE" ended
expect "message batches: expire_fraction (any prefix in results_url)" "$(jv "$T/b" 'JSON.stringify(b.request_counts) + "|" + b.results_url')" \
	"{\"processing\":0,\"succeeded\":1,\"errored\":0,\"canceled\":0,\"expired\":1}|http://127.0.0.1:$PORT/x/v1/messages/batches/$AE/results"
req an GET "/x/v1/messages/batches/$AE/results"
expect "message batches: expired result" "$(jl "$T/b" 'L.map((l) => l.custom_id + ":" + l.result.type).sort().join()')" "e1:succeeded,e2:expired"
req an GET '/v1/messages/batches?limit=1'
expect "message batches: list" "$(jv "$T/b" '[b.data.length, b.data[0].id === "'$AE'", b.first_id === "'$AE'", b.last_id === "'$AE'", b.has_more].join("|")')" "1|true|true|true|true"
req an GET "/v1/messages/batches?after_id=$AE"
expect "message batches: list after_id" "$(jv "$T/b" 'b.data.map((x) => x.id).join() + "|" + b.has_more')" "$AB|false"
req an DELETE "/v1/messages/batches/$AE"
expect "message batches: delete an ended batch" "$CODE/$(jv "$T/b" 'b.type')" "200/message_batch_deleted"
curl -sS -o /dev/null -X POST "$BASE/_reset"
"$NODE" -e 'const r = []; for (let i = 0; i < 100000; i++) r.push({ custom_id: "req_" + i, params: { model: "claude-big", max_tokens: 20, messages: [{ role: "user", content: "Review " + i + ": love it, works fine" }] } }); console.log(JSON.stringify({ requests: r }))' >"$T/an100k.json"
req an POST /v1/messages/batches "@$T/an100k.json"
expect "message batches: 100,000 requests accepted" "$CODE/$(jv "$T/b" 'b.request_counts.processing')" "200/100000"
poll_status an "$(jv "$T/b" 'b.id')" ended
expect "message batches: 100,000 requests end" "$(jv "$T/b" 'b.request_counts.succeeded')" 100000
req an GET "$(jv "$T/b" 'b.results_url' | sed "s#^$BASE##")"
expect "message batches: 100,000 result lines" "$(wc -l <"$T/b")/$(grep -c '"result":{"type":"succeeded","message":{"id":"msg_mock' "$T/b")" "100000/100000"

# ---------------------------------------------------------------- batch stats and reset
curl -sS -o /dev/null -X POST "$BASE/_reset"
req oa POST /v1/batches "$(inline 3)"
req oa POST /v1/files "" -F purpose=batch -F "file=@$T/in8.jsonl"
req oa POST /v1/batches '{"input_file_id":"'"$(jv "$T/b" 'b.id')"'","endpoint":"/v1/chat/completions","completion_window":"24h"}'
OB=$(jv "$T/b" 'b.id')
req an POST /v1/messages/batches '{"requests":[{"custom_id":"s1","params":{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}]}}]}'
curl -sS -o /dev/null --data-binary '{"batch":{"complete_after_ms":60000}}' "$BASE/_config"
req an POST /v1/messages/batches '{"requests":[{"custom_id":"s2","params":{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}]}}]}'
req an POST "/v1/messages/batches/$(jv "$T/b" 'b.id')/cancel"
curl -sS "$BASE/_stats" >"$T/stats"
expect "_stats: batches, batch_requests, files, cancels" "$(jv "$T/stats" 'JSON.stringify([b.batches, b.batch_requests, b.files, b.cancels])')" \
	'[{"inline":1,"openai":1,"anthropic":2},13,1,1]'
curl -sS -o /dev/null -X POST "$BASE/_reset"
req oa GET "/v1/batches/$OB"
expect "POST /_reset drops batches" "$CODE" 404
expect "POST /_reset clears batch counters" "$(curl -sS "$BASE/_stats" | "$NODE" -e 'const b = JSON.parse(require("fs").readFileSync(0)); console.log(JSON.stringify([b.batches, b.batch_requests, b.files, b.cancels]))')" \
	'[{"inline":0,"openai":0,"anthropic":0},0,0,0]'

# ---------------------------------------------------------------- embeddings
curl -sS -o /dev/null -X POST "$BASE/_reset"
req oa POST /v1/embeddings '{"model":"text-embedding-3-small","input":["the cat sat on the mat","dogs bark"],"dimensions":4}'
expect "embeddings: shape" "$CODE/$(jv "$T/b" '[b.object, b.model, b.data.length, b.data.map((d) => d.object + d.index + ":" + d.embedding.length).join(","), JSON.stringify(b.usage)].join("|")')" \
	'200/list|text-embedding-3-small|2|embedding0:4,embedding1:4|{"prompt_tokens":8,"total_tokens":8}'
expect "embeddings: length 1" "$(jv "$T/b" 'b.data.every((d) => Math.abs(Math.hypot(...d.embedding) - 1) < 1e-5)')" true
cp "$T/b" "$T/e2"
req oa POST /v1/embeddings '{"model":"e","input":"the cat sat on the mat","dimensions":4}'
expect "embeddings: a string input, deterministic" "$(jv "$T/b" 'JSON.stringify(b.data[0].embedding)')" "$(jv "$T/e2" 'JSON.stringify(b.data[0].embedding)')"
req oa POST /v1/embeddings '{"model":"e","input":"the cat sat on the mat","dimensions":4,"encoding_format":"base64"}'
expect "embeddings: base64 float32" "$(jv "$T/b" '(() => { const u = Buffer.from(b.data[0].embedding, "base64"); const f = [0, 1, 2, 3].map((i) => u.readFloatLE(4 * i)); return u.length === 16 && f.every((x, i) => Math.abs(x - '"$(jv "$T/e2" 'JSON.stringify(b.data[0].embedding)')"'[i]) < 1e-5); })()')" true
req oa POST /v1/embeddings '{"model":"e","input":["x"]}'
expect "embeddings: 1536 dimensions by default" "$(jv "$T/b" 'b.data[0].embedding.length')" 1536
req oa POST /v1/embeddings '{"model":"text-embedding-3-large","input":["x"]}'
expect "embeddings: 3072 for text-embedding-3-large" "$(jv "$T/b" 'b.data[0].embedding.length')" 3072
req oa POST /v1/embeddings '{"model":"e?dims=7","input":["x"]}'
expect "embeddings: dims=" "$(jv "$T/b" 'b.data[0].embedding.length')" 7
req oa POST /v1/embeddings '{"model":"e","input":[[1,2,3],[4]],"dimensions":2}'
expect "embeddings: token arrays" "$CODE/$(jv "$T/b" 'b.data.length + "," + b.usage.prompt_tokens')" "200/2,4"
req oa POST /v1/embeddings '{"model":"e","input":["a cat on a mat","the cat sat on the mat","stock markets fell"],"dimensions":64}'
expect "embeddings: texts sharing words are near" "$(jv "$T/b" '(() => { const [q, a, c] = b.data.map((d) => d.embedding); const dot = (x, y) => x.reduce((s, v, i) => s + v * y[i], 0); return dot(q, a) > 0.3 && dot(q, a) > 2 * dot(q, c); })()')" true
req oa POST /v1/embeddings '{"model":"e","input":["a",""]}'
expect "embeddings: an empty input is a 400" "$CODE/$(jv "$T/b" 'b.error.message + "|" + b.error.type')" "400/'\$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.|invalid_request_error"
req oa POST /v1/embeddings '{"model":"e","input":[]}'
expect "embeddings: no inputs is a 400" "$CODE" 400
req oa POST /v1/embeddings "{\"model\":\"e\",\"input\":[$(printf '"x",%.0s' $(seq 1 2048))\"x\"]}"
expect "embeddings: 2049 inputs is a 400" "$CODE" 400
req oa POST /v1/embeddings '{"model":"e"}'
expect "embeddings: input is required" "$CODE/$(jv "$T/b" 'b.error.param + "," + b.error.code')" "400/input,missing_required_parameter"
req oa POST /v1/embeddings '{"model":"text-embedding-ada-002","input":"x","dimensions":8}'
expect "embeddings: no dimensions on ada-002" "$CODE/$(jv "$T/b" 'b.error.message')" "400/This model does not support specifying dimensions."
req oa POST /v1/embeddings '{"model":"e","input":"x","dimensions":0}'
expect "embeddings: dimensions below 1" "$CODE/$(jv "$T/b" 'b.error.param')" "400/dimensions"
req oa POST /v1/embeddings '{"model":"e","input":"x","encoding_format":"int8"}'
expect "embeddings: encoding_format" "$CODE/$(jv "$T/b" 'b.error.param')" "400/encoding_format"
req oa POST /v1/embeddings '{"model":"e?max_input_tokens=3","input":["a b","c d e f"]}'
expect "embeddings: an input over the context length fails the request" "$CODE/$(jv "$T/b" 'b.error.message')" \
	"400/This model's maximum context length is 3 tokens, however you requested 4 tokens (4 in your prompt; 0 for the completion). Please reduce your prompt; or completion length."
"$NODE" -e 'const w = "w ".repeat(8000); process.stdout.write(JSON.stringify({model: "e", input: Array(38).fill(w), dimensions: 2}))' >"$T/big.json"
req oa POST /v1/embeddings "@$T/big.json"
expect "embeddings: 300,000 tokens a request at most" "$CODE/$(jv "$T/b" 'b.error.message')" "400/Requested 304000 tokens, max 300000 tokens per request"
req oa POST /v1/embeddings '{"model":"e?fault=fewer_vectors&when=b","input":["a","b","c"],"dimensions":2}'
expect "embeddings: fewer_vectors leaves out the input with when=" "$(jv "$T/b" 'b.data.map((d) => d.index).join(",")')" "0,2"
req oa POST /v1/embeddings '{"model":"e?fault=shuffled","input":["a","b","c"],"dimensions":2}'
expect "embeddings: shuffled keeps each index" "$(jv "$T/b" 'b.data.map((d) => d.index).join(",")')" "2,1,0"
req oa POST /v1/embeddings '{"model":"e?fault=non_numeric","input":["a","b"],"dimensions":2}'
expect "embeddings: non_numeric (the last input by default)" "$(jv "$T/b" 'JSON.stringify(b.data.map((d) => typeof d.embedding[0]))')" '["number","string"]'
req oa POST /v1/embeddings '{"model":"e?fault=wrong_dims&when=a","input":["a","b"],"dimensions":3}'
expect "embeddings: wrong_dims" "$(jv "$T/b" 'b.data.map((d) => d.embedding.length).join(",")')" "2,3"
req oa POST /v1/embeddings '{"model":"e?fail=503&times=1","input":["t"]}'
expect "embeddings: fail= and times=" "$CODE" 503
req oa POST /v1/embeddings '{"model":"e?fail=503&times=1","input":["t"],"dimensions":2}'
expect "embeddings: then served" "$CODE" 200
req none POST /v1/embeddings '{"model":"e","input":["t"]}'
expect "embeddings: the key is checked" "$CODE" 401
# embedding lines in batches: the inline relay's and the OpenAI Batch API's
req oa POST /v1/batches '{"input_file_content":[{"custom_id":"e1","method":"POST","url":"/v1/embeddings","body":{"model":"e","input":"the cat","dimensions":3}},{"custom_id":"e2","method":"POST","url":"/embeddings","body":{"model":"e?max_input_tokens=2","input":"far too long","dimensions":3}}]}'
expect "batches: inline embedding lines" "$CODE/$(jv "$T/b" '(() => { const m = {}; for (const r of b.results) m[r.custom_id] = r; return [m.e1.response.status_code, m.e1.response.body.data[0].embedding.length, m.e1.response.body.usage.prompt_tokens, m.e2.response.status_code, /maximum context length is 2 tokens/.test(m.e2.response.body.error.message)].join("|"); })()')" \
	"200/200|3|2|400|true"
{
	printf '%s\n' '{"custom_id":"x1","method":"POST","url":"/v1/embeddings","body":{"model":"e","input":"the cat sat","dimensions":4}}'
	printf '%s\n' '{"custom_id":"x2","method":"POST","url":"/v1/embeddings","body":{"model":"e?fail=500&when=dog","input":"a dog","dimensions":4}}'
	printf '%s\n' '{"custom_id":"x3","method":"POST","url":"/v1/embeddings","body":{"model":"e","input":["two","inputs"],"dimensions":4}}'
} >"$T/emb.jsonl"
req oa POST /v1/files "" -F purpose=batch -F "file=@$T/emb.jsonl"
req oa POST /v1/batches '{"input_file_id":"'"$(jv "$T/b" 'b.id')"'","endpoint":"/v1/embeddings","completion_window":"24h"}'
expect "batches: endpoint /v1/embeddings" "$CODE/$(jv "$T/b" 'b.endpoint')" "200//v1/embeddings"
EB=$(jv "$T/b" 'b.id')
poll_status oa "$EB" completed
expect "batches: embedding batch completed" "$(jv "$T/b" 'JSON.stringify(b.request_counts) + "|" + b.usage.input_tokens + "|" + b.usage.output_tokens')" '{"total":3,"completed":2,"failed":1}|5|0'
req oa GET "/v1/files/$(jv "$T/b" 'b.output_file_id')/content"
cp "$T/b" "$T/eout.jsonl"
expect "batches: embedding output lines" "$(jl "$T/eout.jsonl" 'L.map((l) => l.custom_id + ":" + l.response.body.data.map((d) => d.index + "/" + d.embedding.length).join(";")).sort().join(" ")')" "x1:0/4 x3:0/4;1/4"
"$NODE" -e 'const inp = Array(2048).fill("x"); for (let i = 0; i < 25; i++) console.log(JSON.stringify({custom_id: "m" + i, method: "POST", url: "/v1/embeddings", body: {model: "e", input: inp}}))' >"$T/many.jsonl"
req oa POST /v1/files "" -F purpose=batch -F "file=@$T/many.jsonl"
req oa POST /v1/batches '{"input_file_id":"'"$(jv "$T/b" 'b.id')"'","endpoint":"/v1/embeddings","completion_window":"24h"}'
poll_status oa "$(jv "$T/b" 'b.id')" failed
expect "batches: more than 50,000 embedding inputs fails" "$(jv "$T/b" 'b.errors.data.map((e) => e.code + ":" + e.line).join()')" "too_many_tasks:25"
curl -sS "$BASE/_stats" >"$T/stats"
expect "_stats: embeddings" "$(jv "$T/stats" 'JSON.stringify(b.embeddings) + "," + b.requests')" '{"requests":24,"inputs":23},0'
curl -sS -o /dev/null -X POST "$BASE/_reset"
expect "POST /_reset clears the embedding counters" "$(jv <(curl -sS "$BASE/_stats") 'JSON.stringify(b.embeddings)')" '{"requests":0,"inputs":0}'

# ------------------------------------------------ provider numbers and text
call oa '{"model":"m?usage=%7B%22prompt_tokens%22%3A1e15%2C%22prompt_tokens%22%3A-1%7D","messages":[{"role":"user","content":"x"}]}'
expect_match "usage=JSON spliced verbatim" "$T/b" '"usage":{"prompt_tokens":1e15,"prompt_tokens":-1}'
call oa '{"model":"m?usage=none","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"a"}]}' -N
expect "usage=none: no usage chunk" "$(grep -c '"usage":{' "$T/b")" 0
call an '{"model":"m?usage=%7B%22output_tokens%22%3A-5%7D","max_tokens":5,"messages":[{"role":"user","content":"x"}]}'
expect_match "usage=JSON (anthropic)" "$T/b" '"usage":{"output_tokens":-5}'
call oa '{"model":"m?fail=400&echo_key=1&message=was+KEY&error_code=KEY&error_type=t&error_param=p","messages":[{"role":"user","content":"x"}]}'
expect "echo_key=1 and error_* fields" "$CODE/$(jv "$T/b" 'b.error.message + "|" + b.error.code + "|" + b.error.type + "|" + b.error.param')" "400/was $KEY|$KEY|t|p"
call oa '{"model":"m?fail=400&message_bytes=100000","messages":[{"role":"user","content":"x"}]}'
expect "message_bytes=N" "$(jv "$T/b" 'b.error.message.length')" 100000
call oa '{"model":"m?fail=502&body=plain+KEY&echo_key=1","messages":[{"role":"user","content":"x"}]}'
expect "body=TEXT" "$CODE/$(header content-type)/$(cat "$T/b")" "502/text/plain/plain $KEY"
call oa '{"model":"m?fail=999","messages":[{"role":"user","content":"x"}]}'
expect "fail=999" "$CODE" 999
call oa '{"model":"m?header_bytes=2000&header=retry-after:inf&header=x-a:b","messages":[{"role":"user","content":"x"}]}'
expect "header_bytes=N and header=NAME:VALUE" "$(header x-mock-filler | wc -c)/$(header retry-after)/$(header x-a)" "2001/inf/b"
call oa '{"model":"m?fault=error_event&message=m+KEY&echo_key=1&error_code=KEY","stream":true,"messages":[{"role":"user","content":"a b c"}]}' -N
expect "error_event with message and error_code" "$("$NODE" -e 'const e = JSON.parse(process.argv[1]); const x = JSON.parse(e[e.length - 1].data).error; console.log(x.message + "|" + x.code)' "$(sse "$T/b" json)")" "m $KEY|$KEY"

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
