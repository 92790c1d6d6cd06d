#!/usr/bin/env node
/*
 * test/mock/server.js
 *
 * A local, deterministic mock LLM provider for the pg_llm tests, the demo
 * and the benchmarks.  It speaks the OpenAI Chat Completions protocol
 * (POST .../chat/completions) and the Anthropic Messages protocol
 * (POST .../messages), streaming (SSE) and non-streaming, and injects
 * faults on demand through directives carried in the request's model
 * string, e.g. "mock?fail=429&times=2&retry_after=1".
 *
 * It listens on 127.0.0.1 only, makes no outbound connection, and uses
 * nothing but Node's standard library.  It must stay cheap per request: a
 * benchmark drives thousands of small requests per second through it, so
 * the hot path does one JSON.parse, one JSON.stringify and no logging
 * (unless --verbose).  It never echoes a received API key, unless a
 * request asks for it (echo_key=1, to play a provider that does).
 *
 * The reference for every route and directive is test/mock/README.md.
 */
'use strict';

const http = require('http');
const fs = require('fs');
const batchApi = require('./batch.js');
const embeddings = require('./embeddings.js');

/* ------------------------------------------------------------------ */
/* Configuration and state                                             */
/* ------------------------------------------------------------------ */

/* Parse the command line; exits with status 2 on a bad option. */
function parseArgs(argv) {
	const cfg = { port: 0, portFile: null, apiKey: 'sk-mock', latency: 0, verbose: false, config: null };
	for (let i = 0; i < argv.length; i++) {
		let a = argv[i];
		let v = null;
		const eq = a.indexOf('=');
		if (a.startsWith('--') && eq > 0) {
			v = a.slice(eq + 1);
			a = a.slice(0, eq);
		}
		const val = () => {
			if (v !== null)
				return v;
			if (i + 1 >= argv.length)
				usage('missing value for ' + a);
			return argv[++i];
		};
		switch (a) {
			case '--port': cfg.port = intArg(a, val()); break;
			case '--port-file': cfg.portFile = val(); break;
			case '--api-key': cfg.apiKey = val(); break;
			case '--latency': cfg.latency = intArg(a, val()); break;
			case '--verbose': cfg.verbose = true; break;
			case '--config': cfg.config = val(); break;
			case '-h':
			case '--help': usage(null); break;
			default: usage('unknown option ' + a);
		}
	}
	return cfg;
}

/* Parse a non-negative integer option value or exit. */
function intArg(name, s) {
	if (!/^\d+$/.test(s))
		usage('bad value for ' + name + ': ' + s);
	return parseInt(s, 10);
}

/* Print usage (and an error, if any) and exit. */
function usage(err) {
	const text = 'usage: node server.js [--port N] [--port-file PATH] [--api-key KEY] [--latency MS] [--config JSON] [--verbose]\n';
	if (err) {
		process.stderr.write('mock: ' + err + '\n' + text);
		process.exit(2);
	}
	process.stdout.write(text);
	process.exit(0);
}

const cfg = parseArgs(process.argv.slice(2));

/* Wall clock in microseconds built from one Date.now() plus hrtime deltas,
 * so consecutive values are monotonic and comparable with CLOCK_REALTIME
 * readings taken in another process. */
const HR0 = process.hrtime.bigint();
const EPOCH0_US = BigInt(Date.now()) * 1000n;
function nowUs() {
	return Number(EPOCH0_US + (process.hrtime.bigint() - HR0) / 1000n);
}

const LOG_KEEP = 50;        /* entries kept for GET /_requests */
const TRACE_KEEP = 20;      /* traced streams kept for GET /_trace */
const MAX_KEYS = 100000;    /* per-key counters kept without a times= directive */
const ARRIVALS_KEEP = 200000;   /* arrivals kept for GET /_arrivals */
const RPM_WINDOW_MS = 60000;    /* the rpm knob's sliding window */

const state = {
	requests: 0,            /* chat protocol requests since start/reset */
	connections: 0,         /* TCP connections accepted since start/reset */
	byKey: new Map(),       /* "model|prompt" -> count */
	log: [],                /* last LOG_KEEP protocol requests */
	traces: [],             /* last TRACE_KEEP traced streams */
	arrivals: 0,            /* protocol requests recorded in the ring below */
	rpmTimes: [],           /* admission times (ms) in the rpm window ... */
	rpmHead: 0,             /* ... from this index on */
	embedRequests: 0,       /* embedding requests since start/reset */
	embedInputs: 0,         /* inputs of the embedding requests answered 200 */
	countRequests: 0,       /* count_tokens requests since start/reset */
};
/* The last ARRIVALS_KEEP arrivals, a ring indexed by count % ARRIVALS_KEEP:
 * preallocated, so that recording one allocates nothing. */
const arrivalT = new Float64Array(ARRIVALS_KEEP);
const arrivalPath = new Array(ARRIVALS_KEEP).fill(null);
const arrivalModel = new Array(ARRIVALS_KEEP).fill(null);
let idCounter = 0;          /* never reset, so ids stay unique */
const sockets = new Set();  /* every open socket, destroyed at shutdown */

/* ------------------------------------------------------------------ */
/* Runtime knobs (GET/POST /_config, --config)                         */
/* ------------------------------------------------------------------ */

/* Validators of the knobs: return the value or throw a message.  A nested
 * object is a group of knobs. */
const KNOBS = {
	rpm: knobInt,
	/* how input tokens are counted: "words" (the default: one token a
	 * word), or "o200k": OpenAI's o200k_base vocabulary (gpt-tokenizer,
	 * installed by npm in test/mock), each message's text plus 3 tokens of
	 * framing a message and 3 a request, as OpenAI bills chat requests */
	token_count: (v, k) => {
		if (v !== 'words' && v !== 'o200k')
			throw k + ' must be "words" or "o200k"';
		if (v === 'o200k')
			loadTokenizer();
		return v;
	},
	batch: {
		complete_after_ms: knobInt,
		expire_fraction: (v, k) => {
			if (typeof v !== 'number' || !(v >= 0 && v <= 1))
				throw k + ' must be a number from 0 to 1';
			return v;
		},
		inline_max: knobInt,
		inline_latency_ms: knobInt,
		results_host: (v, k) => {
			if (v !== null && (typeof v !== 'string' || !/^[A-Za-z0-9.-]{1,253}$/.test(v)))
				throw k + ' must be a host name or null';
			return v;
		},
		shuffle: (v, k) => {
			if (typeof v !== 'boolean')
				throw k + ' must be true or false';
			return v;
		},
	},
};

/* Knob value that must be a non-negative integer. */
function knobInt(v, k) {
	if (!Number.isInteger(v) || v < 0)
		throw k + ' must be a non-negative integer';
	return v;
}

/* The built-in defaults of every knob. */
function defaultSettings() {
	return { rpm: 0, token_count: 'words', batch: { complete_after_ms: 0, expire_fraction: 0, inline_max: 0,
		inline_latency_ms: 0, results_host: null, shuffle: true } };
}

/* Validate obj against the knob table and merge it into target; all or
 * nothing.  Returns null or an error message. */
function applyConfig(target, obj) {
	const staged = [];
	const walk = (o, table, dst, prefix) => {
		if (o === null || typeof o !== 'object' || Array.isArray(o))
			throw (prefix || 'the configuration') + ' must be a JSON object';
		for (const k of Object.keys(o)) {
			const rule = table[k];
			const name = prefix ? prefix + '.' + k : k;
			if (!Object.prototype.hasOwnProperty.call(table, k))
				throw 'unknown config key ' + name;
			if (typeof rule === 'function')
				staged.push([dst, k, rule(o[k], name)]);
			else
				walk(o[k], rule, dst[k], name);
		}
	};
	try {
		walk(obj, KNOBS, target, '');
	} catch (e) {
		return String(e);
	}
	for (const [dst, k, v] of staged)
		dst[k] = v;
	return null;
}

/* Settings restored by POST /_reset: the defaults plus --config. */
const baseSettings = defaultSettings();
if (cfg.config !== null) {
	let parsed;
	try {
		parsed = JSON.parse(cfg.config);
	} catch (e) {
		usage('--config is not JSON: ' + e.message);
	}
	const err = applyConfig(baseSettings, parsed);
	if (err)
		usage('--config: ' + err);
}
let settings = JSON.parse(JSON.stringify(baseSettings));

/* ------------------------------------------------------------------ */
/* Arrivals and the rpm limiter                                        */
/* ------------------------------------------------------------------ */

/* Record the arrival of a protocol request (t in epoch microseconds);
 * returns its number, for setArrivalModel(). */
function recordArrival(t, path, model) {
	const i = state.arrivals % ARRIVALS_KEEP;
	arrivalT[i] = t;
	arrivalPath[i] = path;
	arrivalModel[i] = model;
	return state.arrivals++;
}

/* Fill in the model of arrival number n, if it is still kept. */
function setArrivalModel(n, model) {
	if (n >= state.arrivals - ARRIVALS_KEEP)
		arrivalModel[n % ARRIVALS_KEEP] = model;
}

/* GET /_arrivals: the kept arrivals, oldest first, as JSON text. */
function arrivalsJson() {
	const total = state.arrivals;
	const parts = [];
	for (let n = Math.max(0, total - ARRIVALS_KEEP); n < total; n++) {
		const i = n % ARRIVALS_KEEP;
		parts.push('{"t_us":' + arrivalT[i] + ',"path":' + JSON.stringify(arrivalPath[i]) +
			',"model":' + JSON.stringify(arrivalModel[i]) + '}');
	}
	return '[' + parts.join(',') + ']';
}

/* Requests admitted in the last 60 s (older entries are dropped). */
function rpmUsed(now) {
	const w = state.rpmTimes;
	let h = state.rpmHead;
	while (h < w.length && w[h] <= now - RPM_WINDOW_MS)
		h++;
	if (h > 1024 && h * 2 > w.length) {
		state.rpmTimes = w.slice(h);
		h = 0;
	}
	state.rpmHead = h;
	return state.rpmTimes.length - h;
}

/* The rpm gate (only called when settings.rpm > 0): admits the request and
 * returns the window's rate-limit headers, or answers 429 itself and
 * returns null.  reqId names the request-id header value. */
function rpmGate(proto, res, reqId) {
	const now = Date.now();
	const limit = settings.rpm;
	const used = rpmUsed(now);
	const w = state.rpmTimes;
	if (used >= limit) {
		const waitMs = w[state.rpmHead] + RPM_WINDOW_MS - now;
		const h = windowHeaders(proto, limit, 0, waitMs);
		h['Content-Type'] = 'application/json';
		h[proto === ANTHROPIC ? 'request-id' : 'x-request-id'] = reqId;
		h['Retry-After'] = String(Math.max(1, Math.ceil(waitMs / 1000)));
		const msg = 'Rate limit reached for requests (mock rpm ' + limit + '): Limit ' + limit +
			', Used ' + used + ', Requested 1. Please try again in ' + goDuration(waitMs) + '.';
		sendRaw(res, 429, h, proto === ANTHROPIC ? errorBody(ANTHROPIC, msg, 'rate_limit_error')
			: errorBody(OPENAI, msg, 'requests', null, 'rate_limit_exceeded'));
		return null;
	}
	w.push(now);
	const oldest = w[state.rpmHead];
	return windowHeaders(proto, limit, limit - used - 1, oldest + RPM_WINDOW_MS - now);
}

/* Rate-limit headers of the rpm window: limit, remaining, and the reset =
 * time until the oldest admitted request leaves the window. */
function windowHeaders(proto, limit, remaining, resetMs) {
	if (proto === ANTHROPIC)
		return { 'anthropic-ratelimit-requests-limit': String(limit),
			'anthropic-ratelimit-requests-remaining': String(remaining),
			'anthropic-ratelimit-requests-reset': rfc3339After(resetMs) };
	return { 'x-ratelimit-limit-requests': String(limit),
		'x-ratelimit-remaining-requests': String(remaining),
		'x-ratelimit-reset-requests': goDuration(resetMs) };
}

/* A Go-style duration for ms milliseconds: 0s, 12ms, 1.5s, 6m0s, 1h2m3s. */
function goDuration(ms) {
	if (!(ms > 0))
		return '0s';
	if (ms < 1000)
		return +ms.toFixed(3) + 'ms';
	let s = ms / 1000;
	const h = Math.floor(s / 3600);
	s -= h * 3600;
	const m = Math.floor(s / 60);
	s = +(s - m * 60).toFixed(3);
	if (h > 0)
		return h + 'h' + m + 'm' + s + 's';
	return m > 0 ? m + 'm' + s + 's' : s + 's';
}

/* Milliseconds of a Go-style duration ("1h2m3.5s", "12ms", "0"), or NaN. */
function goDurationMs(v) {
	if (v === '0')
		return 0;
	if (!/^(?:\d+(?:\.\d+)?(?:h|m|s|ms|us|\u00b5s|ns))+$/.test(v))
		return NaN;
	const unit = { h: 3600000, m: 60000, s: 1000, ms: 1, us: 1e-3, '\u00b5s': 1e-3, ns: 1e-6 };
	let ms = 0;
	for (const p of v.matchAll(/(\d+(?:\.\d+)?)(ms|us|\u00b5s|ns|h|m|s)/g))
		ms += parseFloat(p[1]) * unit[p[2]];
	return ms;
}

/* An RFC 3339 UTC timestamp ms milliseconds from now, rounded up to the
 * second (the form of Anthropic's *-reset headers). */
function rfc3339After(ms) {
	const t = Math.ceil((Date.now() + Math.max(0, ms)) / 1000) * 1000;
	return new Date(t).toISOString().replace('.000Z', 'Z');
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

const OPENAI = 'openai';
const ANTHROPIC = 'anthropic';

/* Number of whitespace-separated words in s. */
function countWords(s) {
	if (typeof s !== 'string' || s.length === 0)
		return 0;
	const m = s.match(/\S+/g);
	return m ? m.length : 0;
}

/* The text of a message content: a string, or the texts of an array of
 * parts joined with nothing in between. */
function contentText(c) {
	if (typeof c === 'string')
		return c;
	if (!Array.isArray(c))
		return '';
	let out = '';
	for (const p of c)
		if (p && typeof p.text === 'string')
			out += p.text;
	return out;
}

/* Words in a message content, counted part by part (tool results too). */
function contentWords(c) {
	if (typeof c === 'string')
		return countWords(c);
	if (!Array.isArray(c))
		return 0;
	let n = 0;
	for (const p of c) {
		if (!p || typeof p !== 'object')
			continue;
		if (typeof p.text === 'string')
			n += countWords(p.text);
		else if (p.content !== undefined)
			n += contentWords(p.content);
	}
	return n;
}

/* The text of the first user message. */
function firstUserText(messages) {
	if (Array.isArray(messages))
		for (const m of messages)
			if (m && m.role === 'user')
				return contentText(m.content);
	return '';
}

/* The prompt: the text of the last user message. */
function lastUserText(messages) {
	if (!Array.isArray(messages))
		return '';
	for (let i = messages.length - 1; i >= 0; i--) {
		const m = messages[i];
		if (m && m.role === 'user')
			return contentText(m.content);
	}
	return '';
}

/* The system prompt text (OpenAI system/developer messages, or the
 * Anthropic top-level system string or text blocks). */
function systemText(proto, body) {
	if (proto === ANTHROPIC)
		return contentText(body.system);
	let s = '';
	if (Array.isArray(body.messages))
		for (const m of body.messages)
			if (m && (m.role === 'system' || m.role === 'developer'))
				s += contentText(m.content) + '\n';
	return s;
}

/* The o200k_base tokenizer, loaded on first use. */
var o200k = null;  /* var: --config may load it before this line runs */
function loadTokenizer() {
	if (!o200k) {
		try {
			o200k = require('gpt-tokenizer/encoding/o200k_base');
		} catch (e) {
			throw 'token_count "o200k" needs gpt-tokenizer: run npm install in test/mock';
		}
	}
	return o200k;
}

/* The text of a message content (a string or text parts). */
function contentAll(c) {
	if (typeof c === 'string')
		return c;
	if (!Array.isArray(c))
		return '';
	let s = '';
	for (const p of c)
		if (p && typeof p === 'object')
			s += typeof p.text === 'string' ? p.text : p.content !== undefined ? contentAll(p.content) : '';
	return s;
}

/* Input tokens as OpenAI's o200k_base counts them: each message's text
 * and 3 tokens of framing, 3 for the request, and tools as JSON. */
function realTokens(proto, body) {
	const t = loadTokenizer();
	let n = 3;
	if (Array.isArray(body.messages))
		for (const m of body.messages)
			if (m)
				n += 3 + t.countTokens(contentAll(m.content));
	if (proto === ANTHROPIC && body.system !== undefined)
		n += 3 + t.countTokens(contentAll(body.system));
	if (Array.isArray(body.tools))
		n += t.countTokens(JSON.stringify(body.tools));
	return n;
}

/* Input tokens: words of every message content plus the system prompt,
 * or the o200k_base count (the knob token_count). */
function inputTokens(proto, body) {
	if (settings.token_count === 'o200k')
		return realTokens(proto, body);
	let n = 0;
	if (Array.isArray(body.messages))
		for (const m of body.messages)
			if (m)
				n += contentWords(m.content);
	if (proto === ANTHROPIC)
		n += contentWords(body.system);
	return n;
}

const POSITIVE = new Set(['good', 'great', 'love', 'loved', 'loves', 'excellent',
	'fast', 'happy', 'nice', 'works', 'working', 'amazing', 'perfect']);
const NEGATIVE = new Set(['bad', 'slow', 'broken', 'broke', 'hate', 'hated',
	'terrible', 'awful', 'crash', 'crashes', 'crashed', 'crashing', 'refund', 'worst']);

/* Deterministic sentiment of a text: more positive words than negative
 * ones gives "positive", the reverse "negative", a tie "neutral". */
function sentimentOf(text) {
	const words = text.toLowerCase().match(/[a-z]+/g) || [];
	let score = 0;
	for (const w of words) {
		if (POSITIVE.has(w))
			score++;
		else if (NEGATIVE.has(w))
			score--;
	}
	return score > 0 ? 'positive' : score < 0 ? 'negative' : 'neutral';
}

/* Split a reply into stream pieces: each word with its following
 * whitespace (leading whitespace is a piece of its own), so that the
 * pieces concatenate to the reply exactly. */
function pieces(text) {
	return text.match(/\S+\s*|\s+/g) || [];
}

/* The first n words of text, keeping the original spacing between them. */
function firstWords(text, n) {
	const ws = text.match(/\s*\S+/g) || [];
	return ws.slice(0, n).join('').replace(/^\s+/, '');
}

/* Split a string into about three pieces (for tool-call argument deltas). */
function thirds(s) {
	const step = Math.max(1, Math.ceil(s.length / 3));
	const out = [];
	for (let i = 0; i < s.length; i += step)
		out.push(s.slice(i, i + step));
	return out.length ? out : [''];
}

/* Placeholder for the raw bytes 0xFF 0xFE of fault=badutf8: private-use
 * characters survive JSON.stringify unescaped and are swapped for the bad
 * bytes when the output is turned into a Buffer. */
const BAD_MARK = '\uE0FF\uE0FE';
const BAD_BYTES = Buffer.from([0xff, 0xfe]);

const NO_FAULTS = new Set();

/* Turn output text into bytes, replacing BAD_MARK by 0xFF 0xFE. */
function toBytes(s, bad) {
	if (!bad || s.indexOf(BAD_MARK) < 0)
		return s;
	const parts = s.split(BAD_MARK);
	const bufs = [];
	parts.forEach((p, i) => {
		if (i > 0)
			bufs.push(BAD_BYTES);
		bufs.push(Buffer.from(p, 'utf8'));
	});
	return Buffer.concat(bufs);
}

/* ------------------------------------------------------------------ */
/* Error bodies                                                        */
/* ------------------------------------------------------------------ */

/* OpenAI error type and code for an HTTP status. */
function openaiErrorKind(status, quota) {
	if (status === 429 && quota)
		return { type: 'insufficient_quota', code: 'insufficient_quota' };
	switch (status) {
		case 400: return { type: 'invalid_request_error', code: null };
		case 401: return { type: 'invalid_request_error', code: 'invalid_api_key' };
		case 402: return { type: 'invalid_request_error', code: 'insufficient_balance' };
		case 403: return { type: 'invalid_request_error', code: 'unsupported_country_region_territory' };
		case 404: return { type: 'invalid_request_error', code: 'model_not_found' };
		case 408: return { type: 'timeout_error', code: null };
		case 409: return { type: 'invalid_request_error', code: 'conflict' };
		case 422: return { type: 'invalid_request_error', code: null };
		case 429: return { type: 'requests', code: 'rate_limit_exceeded' };
	}
	return { type: status >= 500 ? 'server_error' : 'invalid_request_error', code: null };
}

/* Anthropic error type for an HTTP status. */
function anthropicErrorType(status, quota) {
	switch (status) {
		case 400: return 'invalid_request_error';
		case 401: return 'authentication_error';
		case 402: return 'billing_error';
		case 403: return 'permission_error';
		case 404: return 'not_found_error';
		case 413: return 'request_too_large';
		case 429: return quota ? 'billing_error' : 'rate_limit_error';
		case 500: return 'api_error';
		case 503: return 'overloaded_error';
		case 504: return 'timeout_error';
		case 529: return 'overloaded_error';
	}
	return status >= 500 ? 'api_error' : 'invalid_request_error';
}

/* Protocol-shaped error body as JSON text. */
function errorBody(proto, message, type, param, code) {
	if (proto === ANTHROPIC)
		return JSON.stringify({ type: 'error', error: { type, message }, request_id: 'req_mock' });
	return JSON.stringify({ error: { message, type, param: param || null, code: code || null } });
}

/* Send a complete JSON (or other) response with a Content-Length. */
function sendRaw(res, status, headers, payload) {
	if (res.destroyed || res.headersSent)
		return;
	headers['Content-Length'] = Buffer.byteLength(payload);
	res.writeHead(status, headers);
	res.end(payload);
}

/* Send a 400 (or other) protocol error with the request-id header. */
function sendProtoError(ctx, status, message, type, param, code) {
	if (type === undefined)
		type = ctx.proto === ANTHROPIC ? anthropicErrorType(status, false)
			: openaiErrorKind(status, false).type;
	sendRaw(ctx.res, status, jsonHeaders(ctx), errorBody(ctx.proto, message, type, param, code));
}

/* Standard headers of a JSON protocol response (plus the rate-limit
 * headers of the rpm window or of a ratelimit= directive, if any). */
function jsonHeaders(ctx) {
	const h = { 'Content-Type': 'application/json' };
	if (ctx.proto === ANTHROPIC)
		h['request-id'] = 'req_mock' + ctx.id;
	else
		h['x-request-id'] = 'req_mock' + ctx.id;
	if (ctx.rl)
		Object.assign(h, ctx.rl);
	addFiller(h, ctx);
	return h;
}

/* header_bytes=N: one more header whose value is N bytes long; header=
 * NAME:VALUE: that header, as it is. */
function addFiller(h, ctx) {
	if (ctx.d && ctx.d.header_bytes !== undefined)
		h['x-mock-filler'] = 'f'.repeat(ctx.d.header_bytes);
	if (ctx.d && ctx.d.header)
		for (const [k, v] of ctx.d.header)
			h[k] = v;
}

/* ------------------------------------------------------------------ */
/* Directives                                                          */
/* ------------------------------------------------------------------ */

const FAULTS = new Set(['reset', 'hang', 'malformed', 'html', 'notjson', 'big',
	'badutf8', 'empty_choices', 'null_content', 'leading_ws', 'truncate',
	'error_event', 'crlf', 'cr', 'split', 'no_done', 'comments',
	'redirect', 'wrong_type', 'slow_body', 'groq_usage'].concat(embeddings.FAULTS));

/* Validators of each directive: return the parsed value or throw a message. */
const DIRECTIVES = {
	latency: nonNegInt,
	chunk_delay: nonNegInt,
	reply: (v) => v,
	message: (v) => v,
	words: nonNegInt,
	echo: (v) => { if (v !== 'request') throw 'invalid mock directive value echo=' + v; return v; },
	fail: (v) => {
		const n = nonNegInt(v, 'fail');
		if (n < 200 || n > 999)
			throw 'invalid mock directive value fail=' + v;
		return n;
	},
	error_param: (v) => v,
	message_bytes: nonNegInt,
	body: (v) => v,
	usage: (v) => {
		if (/[\x00-\x1f\x7f]/.test(v) || v === '')
			throw 'invalid mock directive value usage=' + v;
		return v;
	},
	header_bytes: nonNegInt,
	header: (v) => {
		const c = v.indexOf(':');
		if (c < 1 || !/^[A-Za-z0-9-]+$/.test(v.slice(0, c)) || /[\x00-\x1f\x7f]/.test(v))
			throw 'invalid mock directive value header=' + v;
		return [[v.slice(0, c), v.slice(c + 1)]];
	},
	echo_key: (v) => { if (v !== '1') throw 'invalid mock directive value echo_key=' + v; return v; },
	quota: (v) => v === '1' || v === 'true',
	retry_after: headerValue,
	retry_after_ms: headerValue,
	should_retry: (v) => { if (v !== 'true' && v !== 'false') throw 'invalid mock directive value should_retry=' + v; return v; },
	times: nonNegInt,
	when: (v) => { if (v === '') throw 'invalid mock directive value when='; return v; },
	fault: (v) => {
		const kinds = v.split(',');
		for (const k of kinds)
			if (!FAULTS.has(k))
				throw 'unknown mock fault ' + k;
		return kinds;
	},
	bytes: nonNegInt,
	ratelimit: parseRateLimit,
	dims: (v, k) => {
		const n = nonNegInt(v, k);
		if (n < 1)
			throw 'invalid mock directive value dims=' + v;
		return n;
	},
	max_input_tokens: nonNegInt,
	shape: (v) => { if (!SHAPE_FAULTS.has(v)) throw 'invalid mock directive value shape=' + v; return v; },
	shape_times: nonNegInt,
	stop: (v, k) => word(v, k),
	refusal: (v) => v,
	choices: (v, k) => {
		const n = nonNegInt(v, k);
		if (n < 1 || n > 8)
			throw 'invalid mock directive value ' + k + '=' + v;
		return n;
	},
	cached: nonNegInt,
	cache_write: nonNegInt,
	cache_write_1h: nonNegInt,
	reasoning: nonNegInt,
	tier: (v, k) => word(v, k),
	web_search: nonNegInt,
	cut_after: nonNegInt,
	error_type: (v, k) => word(v, k),
	error_code: (v, k) => word(v, k),
	error_shape: (v, k) => {
		if (!ERROR_SHAPES.has(v))
			throw 'invalid mock directive value ' + k + '=' + v;
		return v;
	},
};

/* Almost-valid answers to a structured-output request (shape=KIND). */
const SHAPE_FAULTS = new Set(['missing', 'label', 'type', 'extra', 'prose']);

/* Shapes of error bodies of the web frameworks relays are built on. */
const ERROR_SHAPES = new Set(['express', 'fastify', 'fastapi', 'fastapi_list', 'oauth']);

/* Directive value that must be a short word (a finish reason, a type). */
function word(v, name) {
	if (!/^[A-Za-z0-9_.-]{1,64}$/.test(v))
		throw 'invalid mock directive value ' + name + '=' + v;
	return v;
}

/* Keys of the ratelimit= directive: counts, and Go-style durations. */
const RL_COUNTS = new Set(['limit', 'remaining', 'tokens_limit', 'tokens_remaining']);
const RL_DURATIONS = new Set(['reset', 'tokens_reset']);

/* ratelimit=remaining:N,reset:DUR[,limit:N][,tokens_remaining:N]...:
 * returns the completed settings or throws a message. */
function parseRateLimit(v) {
	const o = {};
	for (const item of v.split(',')) {
		const c = item.indexOf(':');
		const k = c < 0 ? item : item.slice(0, c);
		const x = c < 0 ? '' : item.slice(c + 1);
		if (RL_COUNTS.has(k) && /^\d+$/.test(x))
			o[k] = parseInt(x, 10);
		else if (RL_DURATIONS.has(k) && !isNaN(goDurationMs(x)))
			o[k] = x;
		else
			throw 'invalid mock directive value ratelimit=' + v;
	}
	const r = {};
	r.limit = o.limit !== undefined ? o.limit : Math.max(1000, o.remaining || 0);
	r.remaining = o.remaining !== undefined ? o.remaining : r.limit;
	r.reset = o.reset !== undefined ? o.reset : '0s';
	r.tokens_limit = o.tokens_limit !== undefined ? o.tokens_limit
		: Math.max(1000000, o.tokens_remaining || 0);
	r.tokens_remaining = o.tokens_remaining !== undefined ? o.tokens_remaining : r.tokens_limit;
	r.tokens_reset = o.tokens_reset !== undefined ? o.tokens_reset : '0s';
	return r;
}

/* The headers of a ratelimit= directive: OpenAI x-ratelimit-* with the
 * durations as given, Anthropic anthropic-ratelimit-* with RFC 3339 resets. */
function rateLimitHeaders(proto, r) {
	if (proto === ANTHROPIC)
		return {
			'anthropic-ratelimit-requests-limit': String(r.limit),
			'anthropic-ratelimit-requests-remaining': String(r.remaining),
			'anthropic-ratelimit-requests-reset': rfc3339After(goDurationMs(r.reset)),
			'anthropic-ratelimit-tokens-limit': String(r.tokens_limit),
			'anthropic-ratelimit-tokens-remaining': String(r.tokens_remaining),
			'anthropic-ratelimit-tokens-reset': rfc3339After(goDurationMs(r.tokens_reset)),
		};
	return {
		'x-ratelimit-limit-requests': String(r.limit),
		'x-ratelimit-remaining-requests': String(r.remaining),
		'x-ratelimit-reset-requests': r.reset,
		'x-ratelimit-limit-tokens': String(r.tokens_limit),
		'x-ratelimit-remaining-tokens': String(r.tokens_remaining),
		'x-ratelimit-reset-tokens': r.tokens_reset,
	};
}

/* Directive value that must be a non-negative integer. */
function nonNegInt(v, name) {
	if (!/^\d+$/.test(v))
		throw 'invalid mock directive value ' + name + '=' + v;
	return parseInt(v, 10);
}

/* Directive value copied into a header: no control characters. */
function headerValue(v, name) {
	if (/[\x00-\x1f\x7f]/.test(v) || v === '')
		throw 'invalid mock directive value ' + name + '=' + v;
	return v;
}

/* Split the model string into the echoed name and its directives.
 * Returns { name, d } or { error }. */
function parseModel(model) {
	const q = model.indexOf('?');
	if (q < 0)
		return { name: model, d: null };
	const d = {};
	const sp = new URLSearchParams(model.slice(q + 1));
	for (const [k, v] of sp) {
		const f = DIRECTIVES[k];
		if (!f)
			return { error: 'unknown mock directive ' + k };
		try {
			const val = f(v, k);
			/* fault= and header= may repeat (fault= may list kinds with commas): they add up */
			if (k === 'fault' || k === 'header')
				d[k] = (d[k] || []).concat(val);
			else
				d[k] = val;
		} catch (e) {
			return { error: String(e) };
		}
	}
	return { name: model.slice(0, q), d };
}

/* ------------------------------------------------------------------ */
/* Request validation                                                  */
/* ------------------------------------------------------------------ */

/* Check the key (and anthropic-version); returns null or an error. */
function checkAuth(proto, h) {
	if (proto === OPENAI) {
		if (h.authorization !== 'Bearer ' + cfg.apiKey)
			return { status: 401, body: '{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}' };
		return null;
	}
	if (h['x-api-key'] !== cfg.apiKey)
		return { status: 401, body: '{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"},"request_id":"req_mock"}' };
	if (h['anthropic-version'] === undefined)
		return { status: 400, body: '{"type":"error","error":{"type":"invalid_request_error","message":"anthropic-version header is required"},"request_id":"req_mock"}' };
	return null;
}

/* OpenAI request checks; returns null or {message, param, code}. */
function validateOpenAI(b) {
	if (typeof b.model !== 'string' || b.model === '')
		return { message: 'you must provide a model parameter', param: null, code: null };
	if (!Array.isArray(b.messages))
		return { message: "Missing required parameter: 'messages'.", param: 'messages', code: 'missing_required_parameter' };
	const so = validateOpenAIShape(b);
	if (so)
		return so;
	const t = b.temperature;
	if (t !== undefined && t !== null) {
		if (typeof t !== 'number')
			return { message: "Invalid type for 'temperature': expected a decimal, but got a " + typeof t + ' instead.', param: 'temperature', code: 'invalid_type' };
		if (t > 2)
			return { message: "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got " + t + ' instead.', param: 'temperature', code: 'decimal_above_max_value' };
		if (t < 0)
			return { message: "Invalid 'temperature': decimal below minimum value. Expected a value >= 0, but got " + t + ' instead.', param: 'temperature', code: 'decimal_below_min_value' };
	}
	return null;
}

/* Anthropic request checks; returns null or {message}. */
function validateAnthropic(b) {
	if (typeof b.model !== 'string' || b.model === '')
		return { message: 'model: Field required' };
	if (b.max_tokens === undefined)
		return { message: 'max_tokens: Field required' };
	if (!Number.isInteger(b.max_tokens))
		return { message: 'max_tokens: Input should be a valid integer' };
	if (b.max_tokens < 1)
		return { message: 'max_tokens: Input should be greater than or equal to 1' };
	if (!Array.isArray(b.messages))
		return { message: 'messages: Field required' };
	if (b.messages.length === 0)
		return { message: 'messages: at least one message is required' };
	for (const m of b.messages)
		if (m && m.role === 'system')
			return { message: 'messages: Unexpected role "system". The Messages API accepts a top-level `system` parameter, not "system" as an input message role.' };
	const so = validateAnthropicShape(b);
	if (so)
		return so;
	const t = b.temperature;
	if (t !== undefined) {
		if (typeof t !== 'number')
			return { message: 'temperature: Input should be a valid number' };
		if (t > 1)
			return { message: 'temperature: Input should be less than or equal to 1' };
		if (t < 0)
			return { message: 'temperature: Input should be greater than or equal to 0' };
	}
	return null;
}

/* ------------------------------------------------------------------ */
/* Structured output: request shapes and answers                       */
/* ------------------------------------------------------------------ */

const NAME_RE = /^[a-zA-Z0-9_-]{1,64}$/;
const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/* Strict mode's rules (OpenAI): every object schema closed, with all of
 * its properties required.  Returns the path of a breach, or null. */
function strictBreach(schema, path) {
	if (!isObj(schema))
		return null;
	if (schema.type === 'object' || isObj(schema.properties)) {
		if (schema.additionalProperties !== false)
			return path + ": 'additionalProperties' is required to be supplied and to be false";
		const props = isObj(schema.properties) ? Object.keys(schema.properties) : [];
		const req = Array.isArray(schema.required) ? schema.required : [];
		for (const k of props)
			if (!req.includes(k))
				return path + ": 'required' is required to be supplied and to be an array including every key in properties. Missing '" + k + "'";
		for (const k of props) {
			const b = strictBreach(schema.properties[k], path + ', properties.' + k);
			if (b)
				return b;
		}
	}
	for (const k of ['items', 'additionalProperties']) {
		const b = strictBreach(schema[k], path + ', ' + k);
		if (b)
			return b;
	}
	for (const list of [schema.anyOf, isObj(schema.$defs) ? Object.values(schema.$defs) : null])
		if (Array.isArray(list))
			for (const sub of list) {
				const b = strictBreach(sub, path);
				if (b)
					return b;
			}
	return null;
}

/* OpenAI's response_format json_schema and function tools, as documented;
 * returns null or {message, param, code}. */
function validateOpenAIShape(b) {
	const rf = b.response_format;
	if (rf !== undefined && rf !== null) {
		if (!isObj(rf) || !['text', 'json_object', 'json_schema'].includes(rf.type))
			return { message: "Invalid value for 'response_format.type'.", param: 'response_format.type', code: 'invalid_value' };
		if (rf.type === 'json_schema') {
			const js = rf.json_schema;
			if (!isObj(js))
				return { message: "Missing required parameter: 'response_format.json_schema'.", param: 'response_format.json_schema', code: 'missing_required_parameter' };
			if (typeof js.name !== 'string' || !NAME_RE.test(js.name))
				return { message: "Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.", param: 'response_format.json_schema.name', code: 'invalid_value' };
			if (js.schema !== undefined && !isObj(js.schema))
				return { message: "Invalid type for 'response_format.json_schema.schema': expected an object.", param: 'response_format.json_schema.schema', code: 'invalid_type' };
			if (js.strict !== undefined && js.strict !== null && typeof js.strict !== 'boolean')
				return { message: "Invalid type for 'response_format.json_schema.strict': expected a boolean.", param: 'response_format.json_schema.strict', code: 'invalid_type' };
			if (js.strict === true) {
				if (!isObj(js.schema) || js.schema.type !== 'object')
					return { message: "Invalid schema for response_format '" + js.name + "': schema must be a JSON Schema of 'type: \"object\"'.", param: 'response_format', code: 'invalid_json_schema' };
				const breach = strictBreach(js.schema, 'context=()');
				if (breach)
					return { message: "Invalid schema for response_format '" + js.name + "': In " + breach + '.', param: 'response_format', code: 'invalid_json_schema' };
			}
		}
	}
	const names = [];
	if (b.tools !== undefined) {
		if (!Array.isArray(b.tools))
			return { message: "Invalid type for 'tools': expected an array.", param: 'tools', code: 'invalid_type' };
		for (let i = 0; i < b.tools.length; i++) {
			const t = b.tools[i];
			if (!isObj(t) || t.type !== 'function' || !isObj(t.function) ||
				typeof t.function.name !== 'string' || !NAME_RE.test(t.function.name))
				return { message: "Invalid 'tools[" + i + "]': expected {\"type\": \"function\", \"function\": {\"name\": ...}}.", param: 'tools[' + i + ']', code: 'invalid_value' };
			if (t.function.parameters !== undefined && !isObj(t.function.parameters))
				return { message: "Invalid type for 'tools[" + i + "].function.parameters': expected an object.", param: 'tools[' + i + '].function.parameters', code: 'invalid_type' };
			names.push(t.function.name);
		}
	}
	const tc = b.tool_choice;
	if (tc !== undefined && tc !== null) {
		if (typeof tc === 'string') {
			if (!['none', 'auto', 'required'].includes(tc))
				return { message: "Invalid value for 'tool_choice'.", param: 'tool_choice', code: 'invalid_value' };
		} else if (!isObj(tc) || tc.type !== 'function' || !isObj(tc.function) || typeof tc.function.name !== 'string')
			return { message: "Invalid 'tool_choice': expected {\"type\": \"function\", \"function\": {\"name\": ...}}.", param: 'tool_choice', code: 'invalid_value' };
		else if (!names.includes(tc.function.name))
			return { message: "Invalid value for 'tool_choice': tool '" + tc.function.name + "' not found in 'tools'.", param: 'tool_choice', code: 'invalid_value' };
		if (names.length === 0)
			return { message: "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.", param: 'tool_choice', code: null };
	}
	return null;
}

/* Anthropic's tools and tool_choice, as documented (no response_format:
 * the Messages API refuses fields it does not know); null or {message}. */
function validateAnthropicShape(b) {
	if (b.response_format !== undefined)
		return { message: 'response_format: Extra inputs are not permitted' };
	const names = [];
	if (b.tools !== undefined) {
		if (!Array.isArray(b.tools))
			return { message: 'tools: Input should be a valid list' };
		for (let i = 0; i < b.tools.length; i++) {
			const t = b.tools[i];
			if (!isObj(t) || typeof t.name !== 'string' || !/^[a-zA-Z0-9_-]{1,128}$/.test(t.name))
				return { message: 'tools.' + i + '.name: String should match pattern \'^[a-zA-Z0-9_-]{1,128}$\'' };
			if (!isObj(t.input_schema))
				return { message: 'tools.' + i + '.input_schema: Field required' };
			if (t.input_schema.type !== 'object')
				return { message: 'tools.' + i + '.input_schema.type: Input should be \'object\'' };
			if (t.function !== undefined || t.parameters !== undefined)
				return { message: 'tools.' + i + '.function: Extra inputs are not permitted' };
			names.push(t.name);
		}
	}
	const tc = b.tool_choice;
	if (tc !== undefined) {
		if (!isObj(tc) || !['auto', 'any', 'tool', 'none'].includes(tc.type))
			return { message: "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'" };
		if (tc.type === 'tool') {
			if (typeof tc.name !== 'string')
				return { message: 'tool_choice.tool.name: Field required' };
			if (!names.includes(tc.name))
				return { message: 'tool_choice: tool `' + tc.name + '` not found in `tools`' };
		}
	}
	return null;
}

/* The schema of a structured-output request and how the answer goes back:
 * { schema, tool } (tool: the forced tool's name), or null. */
function structuredRequest(proto, b) {
	const tc = b.tool_choice;
	let forced = null;
	if (proto === ANTHROPIC && isObj(tc) && tc.type === 'tool')
		forced = tc.name;
	else if (proto === OPENAI && isObj(tc) && tc.type === 'function' && isObj(tc.function))
		forced = tc.function.name;
	if (forced !== null && Array.isArray(b.tools))
		for (const t of b.tools) {
			const name = proto === ANTHROPIC ? t.name : t.function && t.function.name;
			const schema = proto === ANTHROPIC ? t.input_schema : t.function && t.function.parameters;
			if (name === forced && isObj(schema))
				return { schema, tool: forced };
		}
	const rf = b.response_format;
	if (proto === OPENAI && isObj(rf) && rf.type === 'json_schema' && isObj(rf.json_schema) &&
		isObj(rf.json_schema.schema) && (isObj(rf.json_schema.schema.properties) || rf.json_schema.schema.$ref))
		return { schema: rf.json_schema.schema, tool: null };
	/* the constrained prompt: the schema is the last line of the instruction */
	const m = /matches this JSON Schema[^\n]*\n(\{.*\})\s*$/s.exec(systemText(proto, b));
	if (m) {
		try {
			return { schema: JSON.parse(m[1]), tool: null };
		} catch (e) {
			return null;
		}
	}
	return null;
}

/* A value of the prompt for a key: "key: value" or "key=value". */
function promptValue(prompt, key) {
	if (!key)
		return undefined;
	const esc = key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
	const m = new RegExp('\\b' + esc + '\\s*[:=]\\s*([^,;\\n]+)', 'i').exec(prompt);
	return m ? m[1].trim() : undefined;
}

/* A deterministic answer valid against a schema of the subset pg_llm
 * validates: enums pick the label the prompt names (or its sentiment),
 * strings and numbers come from "key: value" in the prompt, booleans say
 * no when the prompt has a negation. */
function sample(schema, root, prompt, key, depth) {
	if (!isObj(schema) || depth > 12)
		return null;
	if (typeof schema.$ref === 'string') {
		const ref = schema.$ref === '#' ? root
			: schema.$ref.startsWith('#/$defs/') && isObj(root.$defs) ? root.$defs[schema.$ref.slice(8).replace(/~1/g, '/').replace(/~0/g, '~')] : null;
		return sample(ref, root, prompt, key, depth + 1);
	}
	if (Array.isArray(schema.anyOf) && schema.anyOf.length > 0)
		return sample(schema.anyOf[0], root, prompt, key, depth + 1);
	if (schema.const !== undefined)
		return schema.const;
	if (Array.isArray(schema.enum) && schema.enum.length > 0) {
		const low = prompt.toLowerCase();
		for (const v of schema.enum)
			if (typeof v === 'string' && v !== '' && new RegExp('\\b' + v.toLowerCase().replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + '\\b').test(low))
				return v;
		const s = sentimentOf(prompt);
		return schema.enum.includes(s) ? s : schema.enum[0];
	}
	let type = schema.type;
	if (Array.isArray(type))
		type = type.find((t) => t !== 'null') || 'null';
	if (type === undefined)
		type = isObj(schema.properties) ? 'object' : schema.items ? 'array' : 'string';
	const given = promptValue(prompt, key);
	switch (type) {
		case 'object': {
			const o = {};
			if (isObj(schema.properties))
				for (const k of Object.keys(schema.properties))
					o[k] = sample(schema.properties[k], root, prompt, k, depth + 1);
			return o;
		}
		case 'array': {
			const n = Math.min(Math.max(schema.minItems || 0, 1), schema.maxItems === undefined ? 1 : schema.maxItems);
			const a = [];
			for (let i = 0; i < n; i++)
				a.push(sample(schema.items, root, prompt, key, depth + 1));
			return a;
		}
		case 'number':
		case 'integer': {
			let v = given !== undefined && !isNaN(parseFloat(given)) ? parseFloat(given) : 1;
			if (typeof schema.minimum === 'number' && v < schema.minimum)
				v = schema.minimum;
			if (typeof schema.maximum === 'number' && v > schema.maximum)
				v = schema.maximum;
			return type === 'integer' ? Math.round(v) : v;
		}
		case 'boolean':
			if (given !== undefined)
				return /^(true|yes)$/i.test(given);
			return !/\b(no|not|never|false|isn't|doesn't)\b/i.test(prompt);
		case 'null':
			return null;
		default: {
			let v = given !== undefined ? given : 'x';
			while (typeof schema.minLength === 'number' && v.length < schema.minLength)
				v += 'x';
			if (typeof schema.maxLength === 'number')
				v = v.slice(0, schema.maxLength);
			return v;
		}
	}
}

/* Spoil a valid answer the way shape=KIND says: a required field gone, a
 * label not in its enum, a string where a number goes, a field too many.
 * Returns the spoiled object (prose is handled by the caller). */
function spoil(kind, schema, root, obj) {
	const resolve = (s) => (isObj(s) && typeof s.$ref === 'string' && isObj(root.$defs) &&
		s.$ref.startsWith('#/$defs/') ? root.$defs[s.$ref.slice(8)] : s);
	schema = resolve(schema);
	const props = isObj(schema) && isObj(schema.properties) ? schema.properties : {};
	const keys = Object.keys(props);
	if (kind === 'missing') {
		const req = Array.isArray(schema.required) && schema.required.length ? schema.required : keys;
		if (req.length)
			delete obj[req[0]];
	} else if (kind === 'label') {
		const k = keys.find((x) => Array.isArray(resolve(props[x]).enum)) || keys[0];
		if (k !== undefined)
			obj[k] = 'not-a-label';
	} else if (kind === 'type') {
		const k = keys.find((x) => ['number', 'integer', 'boolean'].includes(resolve(props[x]).type));
		if (k !== undefined)
			obj[k] = String(obj[k]);
		else if (keys.length)
			obj[keys[0]] = 12.5;
	} else if (kind === 'extra')
		obj.unexpected_field = true;
	return obj;
}

/* The assistant messages already in the conversation: how often the
 * question was asked before (pg_llm asks again after a bad answer). */
function priorAnswers(messages) {
	let n = 0;
	if (Array.isArray(messages))
		for (const m of messages)
			if (m && m.role === 'assistant')
				n++;
	return n;
}

/* ------------------------------------------------------------------ */
/* Reply computation                                                   */
/* ------------------------------------------------------------------ */

/* The text of each choice: choice i > 0 says "choice i: " first. */
function choiceTexts(r) {
	const t = [r.text];
	for (let i = 1; i < r.nChoices; i++)
		t.push(r.kind === 'tool' ? '' : 'choice ' + i + ': ' + r.text);
	return t;
}

/* A reply with nothing said yet: one choice, no usage details. */
function newReply(inTok) {
	return { kind: 'text', text: '', finish: 'stop', inTok, outTok: 0,
		nChoices: 1, reversed: false, cached: 0, cacheWrite: 0, cacheWrite1h: 0, reasoning: 0,
		webSearch: 0 };
}

/* Decide what the assistant says: { kind: 'text', text, finish } or
 * { kind: 'tool', name, args, input }, plus usage numbers. */
function computeReply(ctx) {
	const b = ctx.body;
	const d = ctx.d || {};
	const proto = ctx.proto;
	const prompt = ctx.prompt;
	const r = newReply(inputTokens(proto, b));
	/* what usage details and endings the directives ask for */
	r.stop = d.stop;
	r.refusal = d.refusal;
	r.cached = d.cached || 0;
	r.cacheWrite = d.cache_write || 0;
	r.cacheWrite1h = Math.min(d.cache_write_1h || 0, r.cacheWrite);
	r.reasoning = d.reasoning || 0;
	r.tier = d.tier;
	r.webSearch = d.web_search || 0;
	/* OpenAI: n choices (or choices=N whatever n says); Anthropic has one */
	r.nChoices = proto === OPENAI
		? Math.max(d.choices || 1, Number.isInteger(b.n) && b.n > 0 ? Math.min(b.n, 8) : 1) : 1;
	r.reversed = d.choices !== undefined;

	/* structured output: a valid answer, or on shape=KIND an almost-valid
	 * one for the first shape_times asks (default 1) of a conversation */
	const sr = d.reply === undefined && d.echo === undefined ? structuredRequest(proto, b) : null;
	if (sr !== null) {
		/* the question is the first user message: a retry adds others */
		const asked = firstUserText(b.messages);
		let obj = sample(sr.schema, sr.schema, asked, null, 0);
		const bad = d.shape !== undefined && ctx.shapeActive !== false &&
			priorAnswers(b.messages) < (d.shape_times === undefined ? 1 : d.shape_times);
		if (bad && d.shape !== 'prose')
			obj = spoil(d.shape, sr.schema, sr.schema, obj);
		if (bad && d.shape === 'prose')
			r.text = 'Sure! I think the answer is the second one, but it depends on the details.';
		else if (sr.tool !== null) {
			r.kind = 'tool';
			r.name = sr.tool;
			r.input = obj;
			r.args = JSON.stringify(obj);
			r.finish = 'tool_calls';
			r.outTok = Math.max(1, countWords(r.args));
			return r;
		} else
			r.text = JSON.stringify(obj);
		r.outTok = Math.max(1, countWords(r.text));
		return r;
	}

	const tool = firstToolName(proto, b.tools);
	if (tool !== null && /call tool/i.test(prompt) && d.reply === undefined) {
		r.kind = 'tool';
		r.name = tool;
		r.input = { q: prompt };
		r.args = JSON.stringify(r.input);
		r.finish = 'tool_calls';
		r.outTok = Math.max(1, countWords(r.args));
		return r;
	}

	let text;
	if (d.reply !== undefined)
		text = d.reply;
	else if (d.words !== undefined) {
		const w = new Array(d.words);
		for (let i = 0; i < d.words; i++)
			w[i] = 'w' + (i + 1);
		text = w.join(' ');
	} else if (d.echo === 'request')
		text = JSON.stringify(b);
	else if (/sentiment/i.test(prompt) || /sentiment/i.test(systemText(proto, b)))
		text = sentimentOf(prompt);
	else
		text = 'echo: ' + prompt;

	if (ctx.faults.has('badutf8'))
		text = (text.length ? text + ' ' : '') + 'bad' + BAD_MARK + 'utf8';

	/* echo=request is sent exactly: never truncated nor wrapped */
	const exact = d.echo === 'request' && d.reply === undefined && d.words === undefined;
	const limit = proto === OPENAI
		? (Number.isInteger(b.max_completion_tokens) ? b.max_completion_tokens : b.max_tokens)
		: b.max_tokens;
	if (!exact && Number.isInteger(limit) && limit >= 0 && countWords(text) > limit) {
		text = firstWords(text, limit);
		r.finish = 'length';
	}

	/* JSON mode wraps the computed text; an explicit reply= is sent as is. */
	const rf = b.response_format;
	if (proto === OPENAI && !exact && d.reply === undefined && rf &&
		(rf.type === 'json_object' || rf.type === 'json_schema'))
		text = JSON.stringify({ answer: text });

	if (r.refusal !== undefined && proto === OPENAI)
		text = '';
	r.text = text;
	r.outTok = 0;
	for (const t of choiceTexts(r))
		r.outTok += Math.max(1, countWords(t));
	if (r.refusal !== undefined && proto === OPENAI)
		r.outTok = Math.max(1, countWords(r.refusal));
	return r;
}

/* Name of the first tool of the request, or null. */
function firstToolName(proto, tools) {
	if (!Array.isArray(tools) || tools.length === 0 || !tools[0])
		return null;
	const t = tools[0];
	if (proto === ANTHROPIC)
		return typeof t.name === 'string' ? t.name : null;
	if (t.function && typeof t.function.name === 'string')
		return t.function.name;
	return typeof t.name === 'string' ? t.name : null;
}

/* Anthropic stop_reason for a reply (stop= and refusal= first). */
function anthropicStop(r) {
	if (r.stop !== undefined)
		return r.stop;
	if (r.refusal !== undefined)
		return 'refusal';
	const finish = r.finish;
	return finish === 'length' ? 'max_tokens' : finish === 'tool_calls' ? 'tool_use' : 'end_turn';
}

/* OpenAI finish_reason for a reply (stop= first). */
function openaiFinish(r) {
	return r.stop !== undefined ? r.stop : r.finish;
}

/* OpenAI usage object: cached tokens are part of the prompt tokens,
 * reasoning tokens part of the completion tokens. */
function openaiUsage(r) {
	const prompt = r.inTok + r.cached;
	const completion = r.outTok + r.reasoning;
	return {
		prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion,
		prompt_tokens_details: { cached_tokens: r.cached, audio_tokens: 0 },
		completion_tokens_details: { reasoning_tokens: r.reasoning, audio_tokens: 0,
			accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
	};
}

/* Anthropic usage object: input_tokens excludes the tokens read from and
 * written to the cache; web_search=N adds the N input tokens of the
 * search results (they are counted only at the end of a stream). */
function anthropicUsage(r, start) {
	const u = { input_tokens: r.inTok + (start ? 0 : r.webSearch),
		output_tokens: start ? 1 : r.outTok,
		cache_creation_input_tokens: r.cacheWrite, cache_read_input_tokens: r.cached };
	if (r.cacheWrite > 0)
		u.cache_creation = { ephemeral_5m_input_tokens: r.cacheWrite - r.cacheWrite1h,
			ephemeral_1h_input_tokens: r.cacheWrite1h };
	if (r.webSearch > 0 && !start)
		u.server_tool_use = { web_search_requests: 1 };
	u.service_tier = r.tier !== undefined ? r.tier : 'standard';
	return u;
}

/* The usage= directive: 'none' drops the usage object, any other value is
 * spliced in verbatim (absurd, negative or duplicate-key numbers). */
const USAGE_MARK = '\uE0C1usage';

/* Put the usage= directive's text where USAGE_MARK stands in JSON text. */
function spliceUsage(ctx, text) {
	const u = ctx.d ? ctx.d.usage : undefined;
	if (u === undefined || u === 'none')
		return text;
	return text.split(JSON.stringify(USAGE_MARK)).join(keyed(ctx, u));
}

/* The usage value to put in an object: the computed one, the mark of a
 * usage= text, or undefined (dropped by JSON.stringify) for usage=none. */
function usageValue(ctx, computed) {
	const u = ctx.d ? ctx.d.usage : undefined;
	if (u === undefined)
		return computed;
	return u === 'none' ? undefined : USAGE_MARK;
}

/* Non-streaming response body (JSON text) for a computed reply. */
function replyBody(ctx, r) {
	return spliceUsage(ctx, replyBodyOf(ctx, r));
}

function replyBodyOf(ctx, r) {
	const f = ctx.faults;
	if (ctx.proto === ANTHROPIC) {
		let content;
		if (f.has('empty_choices') || f.has('null_content'))
			content = [];
		else if (r.kind === 'tool')
			content = [{ type: 'tool_use', id: 'toolu_mock1', name: r.name, input: r.input }];
		else
			content = [{ type: 'text', text: r.text }];
		if (r.kind === 'text' && r.text === '' && !f.has('empty_choices'))
			content = [];
		return JSON.stringify({
			id: 'msg_mock' + ctx.id, type: 'message', role: 'assistant', model: ctx.model,
			content, stop_reason: anthropicStop(r), stop_sequence: null,
			usage: usageValue(ctx, anthropicUsage(r, false)),
		});
	}
	let choices;
	if (f.has('empty_choices'))
		choices = [];
	else {
		choices = [];
		const texts = choiceTexts(r);
		for (let i = 0; i < r.nChoices; i++) {
			const msg = { role: 'assistant', content: texts[i], refusal: null, annotations: [] };
			let finish = openaiFinish(r);
			if (f.has('null_content')) {
				msg.content = null;
				finish = 'stop';
			} else if (r.refusal !== undefined) {
				msg.content = null;
				msg.refusal = r.refusal;
			} else if (r.kind === 'tool') {
				msg.content = null;
				msg.tool_calls = [{ id: 'call_mock1', type: 'function',
					function: { name: r.name, arguments: r.args } }];
			}
			choices.push({ index: i, message: msg, logprobs: null, finish_reason: finish });
		}
		if (r.reversed)
			choices.reverse();
	}
	const out = { id: 'chatcmpl-mock' + ctx.id, object: 'chat.completion', created: ctx.created,
		model: ctx.model, choices, usage: usageValue(ctx, openaiUsage(r)) };
	if (r.tier !== undefined)
		out.service_tier = r.tier;
	return JSON.stringify(out);
}

/* ------------------------------------------------------------------ */
/* Streaming                                                           */
/* ------------------------------------------------------------------ */

/*
 * Stream events are { s, piece, final }: s is the SSE text with '\n' line
 * ends, piece marks a content delta (delayed by chunk_delay, traced, and
 * counted by truncate/error_event), final marks [DONE] / message_stop.
 */

/* OpenAI chunk events for a reply. */
function openaiEvents(ctx, r) {
	const iu = ctx.includeUsage;
	const head = '{"id":"chatcmpl-mock' + ctx.id + '","object":"chat.completion.chunk","created":' +
		ctx.created + ',"model":' + JSON.stringify(ctx.model) +
		(r.tier !== undefined ? ',"service_tier":' + JSON.stringify(r.tier) : '') + ',"choices":';
	const tail = iu ? ',"usage":null}\n\n' : '}\n\n';
	const ev = [];
	const chunkOf = (index, delta, finish, piece) => ev.push({
		s: 'data: ' + head + '[{"index":' + index + ',"delta":' + JSON.stringify(delta) +
			',"logprobs":null,"finish_reason":' + (finish ? '"' + finish + '"' : 'null') + '}]' + tail,
		piece: !!piece,
	});
	const chunk = (delta, finish, piece) => chunkOf(0, delta, finish, piece);

	if (ctx.faults.has('empty_choices'))
		ev.push({ s: 'data: ' + head + '[]' + tail, piece: false });
	else if (ctx.faults.has('null_content')) {
		chunk({ role: 'assistant', content: null }, null);
		chunk({}, 'stop');
	} else if (r.kind === 'tool') {
		chunk({ role: 'assistant', content: null, tool_calls: [{ index: 0, id: 'call_mock1',
			type: 'function', function: { name: r.name, arguments: '' } }], refusal: null }, null);
		for (const p of thirds(r.args))
			chunk({ tool_calls: [{ index: 0, function: { arguments: p } }] }, null, true);
		chunk({}, 'tool_calls');
	} else if (r.refusal !== undefined) {
		/* a refusal streams in delta.refusal, content stays null */
		chunk({ role: 'assistant', content: null, refusal: '' }, null);
		for (const p of pieces(r.refusal))
			chunk({ refusal: p }, null, true);
		chunk({}, openaiFinish(r));
	} else if (r.nChoices > 1) {
		/* the choices' chunks in turn, the last choice first */
		const order = [];
		for (let i = r.nChoices - 1; i >= 0; i--)
			order.push(i);
		const ps = choiceTexts(r).map(pieces);
		for (const i of order)
			chunkOf(i, { role: 'assistant', content: '' }, null);
		const most = Math.max(...ps.map((x) => x.length));
		for (let k = 0; k < most; k++)
			for (const i of order)
				if (k < ps[i].length)
					chunkOf(i, { content: ps[i][k] }, null, i === 0);
		for (const i of order)
			chunkOf(i, {}, openaiFinish(r));
	} else {
		chunk({ role: 'assistant', content: '' }, null);
		for (const p of pieces(r.text))
			chunk({ content: p }, null, true);
		chunk({}, openaiFinish(r));
	}
	const u = usageValue(ctx, openaiUsage(r));
	if (ctx.faults.has('groq_usage') && u !== undefined) {
		/* Groq: the usage in x_groq on the last chunk, whatever include_usage says */
		const last = ev[ev.length - 1];
		last.s = spliceUsage(ctx, last.s.replace(/\}\n\n$/, ',"x_groq":{"id":"req_mock' + ctx.id +
			'","usage":' + JSON.stringify(u) + '}}\n\n'));
	} else if (iu && u !== undefined)
		ev.push({ s: spliceUsage(ctx, 'data: ' + head + '[],"usage":' + JSON.stringify(u) + '}\n\n'), piece: false });
	ev.push({ s: 'data: [DONE]\n\n', piece: false, final: true });
	return ev;
}

/* One Anthropic SSE event (with ctx: the usage= text spliced in). */
function anEvent(name, obj, piece, final, ctx) {
	const s = 'event: ' + name + '\ndata: ' + JSON.stringify(obj) + '\n\n';
	return { s: ctx ? spliceUsage(ctx, s) : s, piece: !!piece, final: !!final };
}

/* Anthropic events for a reply. */
function anthropicEvents(ctx, r) {
	const ev = [];
	ev.push(anEvent('message_start', { type: 'message_start', message: {
		id: 'msg_mock' + ctx.id, type: 'message', role: 'assistant', model: ctx.model,
		content: [], stop_reason: null, stop_sequence: null,
		usage: usageValue(ctx, anthropicUsage(r, true)) } }, false, false, ctx));
	const empty = ctx.faults.has('empty_choices') || ctx.faults.has('null_content') ||
		(r.kind === 'text' && r.text === '');
	if (!empty) {
		if (r.kind === 'tool') {
			ev.push(anEvent('content_block_start', { type: 'content_block_start', index: 0,
				content_block: { type: 'tool_use', id: 'toolu_mock1', name: r.name, input: {} } }));
			ev.push(anEvent('ping', { type: 'ping' }));
			for (const p of thirds(r.args))
				ev.push(anEvent('content_block_delta', { type: 'content_block_delta', index: 0,
					delta: { type: 'input_json_delta', partial_json: p } }, true));
		} else {
			ev.push(anEvent('content_block_start', { type: 'content_block_start', index: 0,
				content_block: { type: 'text', text: '' } }));
			ev.push(anEvent('ping', { type: 'ping' }));
			for (const p of pieces(r.text))
				ev.push(anEvent('content_block_delta', { type: 'content_block_delta', index: 0,
					delta: { type: 'text_delta', text: p } }, true));
		}
		ev.push(anEvent('content_block_stop', { type: 'content_block_stop', index: 0 }));
	}
	/* message_delta usage is cumulative: with server tools (web_search=)
	 * the input count grows, and a first message_delta comes before the
	 * last; a client that adds them up counts twice */
	const final = anthropicUsage(r, false);
	if (r.webSearch > 0)
		ev.push(anEvent('message_delta', { type: 'message_delta',
			delta: { stop_reason: null, stop_sequence: null },
			usage: Object.assign({}, final, { output_tokens: Math.max(1, r.outTok >> 1) }) }));
	delete final.service_tier;
	ev.push(anEvent('message_delta', { type: 'message_delta',
		delta: { stop_reason: anthropicStop(r), stop_sequence: null },
		usage: usageValue(ctx, final) }, false, false, ctx));
	ev.push(anEvent('message_stop', { type: 'message_stop' }, false, true));
	return ev;
}

/* Apply the stream faults that reshape the event list. */
function shapeEvents(ctx, ev) {
	const f = ctx.faults;
	if (f.has('truncate') || f.has('error_event')) {
		let total = 0;
		for (const e of ev)
			if (e.piece)
				total++;
		const d = ctx.d || {};
		const keep = d.cut_after !== undefined ? Math.min(d.cut_after, total) : Math.ceil(total / 2);
		let cut = 1;            /* no pieces at all: keep the first event */
		let seen = 0;
		for (let i = 0; i < ev.length; i++) {
			if (keep === 0 && ev[i].piece) {
				cut = i;        /* cut_after=0: every event before the first piece */
				break;
			}
			if (keep > 0 && ev[i].piece && ++seen === keep) {
				cut = i + 1;
				break;
			}
		}
		ev = ev.slice(0, cut);
		if (f.has('error_event')) {
			const field = (v, dflt) => (v !== undefined ? keyed(ctx, v) : dflt);
			ev.push({ s: ctx.proto === ANTHROPIC
				? 'event: error\ndata: ' + JSON.stringify({ type: 'error', error: {
					type: field(d.error_type, 'overloaded_error'), message: errorMessage(ctx, 'Overloaded') } }) + '\n\n'
				: 'data: ' + JSON.stringify({ error: { message: errorMessage(ctx, 'mock stream error'),
					type: field(d.error_type, 'server_error'), param: field(d.error_param, null),
					code: field(d.error_code, null) } }) + '\n\n',
			piece: false });
		}
	} else if (f.has('no_done'))
		ev = ev.filter((e) => !e.final);

	if (f.has('leading_ws') || f.has('comments')) {
		let filler = '';
		if (f.has('leading_ws'))
			filler += ': keep-alive\n\n';
		if (f.has('comments'))
			filler += ': OPENROUTER PROCESSING\n\n' +
				(ctx.proto === ANTHROPIC ? 'event: ping\ndata: {"type": "ping"}\n\n' : '');
		const out = [];
		for (const e of ev) {
			out.push({ s: filler, piece: false });
			out.push(e);
		}
		ev = out;
	}
	if (f.has('crlf') || f.has('cr')) {
		const eol = f.has('crlf') ? '\r\n' : '\r';
		for (const e of ev)
			e.s = e.s.replace(/\n/g, eol);
	}
	return ev;
}

/* Headers of a streaming response. */
function streamHeaders(ctx) {
	const h = { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' };
	if (ctx.proto === ANTHROPIC)
		h['request-id'] = 'req_mock' + ctx.id;
	else
		h['x-request-id'] = 'req_mock' + ctx.id;
	if (ctx.rl)
		Object.assign(h, ctx.rl);
	addFiller(h, ctx);
	return h;
}

/* Send a streamed reply: each event is one res.write(); pieces after the
 * first wait chunk_delay ms; traced requests record each piece's send time. */
function streamReply(ctx, r) {
	const res = ctx.res;
	let ev = ctx.proto === ANTHROPIC ? anthropicEvents(ctx, r) : openaiEvents(ctx, r);
	ev = shapeEvents(ctx, ev);
	const bad = ctx.faults.has('badutf8');
	const delay = (ctx.d && ctx.d.chunk_delay) || 0;

	res.writeHead(200, streamHeaders(ctx));
	if (ctx.faults.has('split')) {
		writeSplit(res, Buffer.from(toBytes(ev.map((e) => e.s).join(''), bad)), delay);
		return;
	}

	let trace = null;
	if (ctx.req.headers['x-mock-trace'] === '1')
		trace = startTrace(ctx);

	let i = 0;
	let pieceNo = 0;
	let waited = false;
	const step = () => {
		while (i < ev.length) {
			if (res.destroyed)
				return;
			const e = ev[i];
			if (e.piece) {
				if (pieceNo > 0 && delay > 0 && !waited) {
					waited = true;
					setTimeout(step, delay);
					return;
				}
				waited = false;
				pieceNo++;
				if (trace)
					trace.t_us.push(nowUs());
			}
			res.write(toBytes(e.s, bad));
			i++;
		}
		res.end();
	};
	step();
}

/* Start the trace of a stream: piece times, and the end time (finish or
 * close) with aborted = the client closed the connection first. */
function startTrace(ctx) {
	const trace = { id: ctx.id, t_us: [], end_us: null, aborted: false };
	state.traces.push(trace);
	if (state.traces.length > TRACE_KEEP)
		state.traces.shift();
	const res = ctx.res;
	res.on('finish', () => {
		trace.end_us = nowUs();
	});
	res.on('close', () => {
		if (trace.end_us === null) {
			trace.end_us = nowUs();
			trace.aborted = true;
		}
	});
	return trace;
}

/* Write buf in 1-3 byte slices, always cutting inside every multi-byte
 * UTF-8 character and between CR and LF (or CR and CR), with chunk_delay
 * or a setImmediate between writes.  The response must be open already. */
function writeSplit(res, buf, delay) {
	let off = 0;
	let k = 0;
	const step = () => {
		if (res.destroyed)
			return;
		if (off >= buf.length) {
			res.end();
			return;
		}
		const want = 1 + (k++ % 3);
		let end = off + 1;
		while (end < buf.length && end - off < want) {
			const b = buf[end];
			const prev = buf[end - 1];
			if ((b & 0xc0) === 0x80 || prev === 0x0d)
				break;
			end++;
		}
		res.write(buf.subarray(off, end));
		off = end;
		if (delay > 0)
			setTimeout(step, delay);
		else
			setImmediate(step);
	};
	step();
}

/* ------------------------------------------------------------------ */
/* Faults that replace the whole response                              */
/* ------------------------------------------------------------------ */

/* fail=STATUS: a protocol error with optional retry headers. */
function sendFailure(ctx) {
	const h = jsonHeaders(ctx);
	addRetryHeaders(h, ctx.d);
	if (ctx.d.body !== undefined) {
		h['Content-Type'] = 'text/plain';
		sendRaw(ctx.res, ctx.d.fail, h, keyed(ctx, ctx.d.body));
		return;
	}
	sendRaw(ctx.res, ctx.d.fail, h, failureBody(ctx));
}

/* The protocol error body (JSON text) of a fail=STATUS directive. */
function failureBody(ctx) {
	const d = ctx.d;
	const status = d.fail;
	const quota = d.quota && status === 429;
	let message = errorMessage(ctx, 'mock error ' + status);
	if (quota)
		message = ctx.proto === ANTHROPIC
			? 'Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.'
			: 'You exceeded your current quota, please check your plan and billing details.';
	let body;
	if (d.error_shape !== undefined)
		body = frameworkErrorBody(d.error_shape, status, message);
	else if (ctx.proto === ANTHROPIC)
		body = errorBody(ANTHROPIC, message, d.error_type !== undefined ? keyed(ctx, d.error_type)
			: anthropicErrorType(status, quota));
	else {
		const k = openaiErrorKind(status, quota);
		body = errorBody(OPENAI, message,
			d.error_type !== undefined ? keyed(ctx, d.error_type) : k.type,
			d.error_param !== undefined ? keyed(ctx, d.error_param) : null,
			d.error_code !== undefined ? keyed(ctx, d.error_code) : k.code);
	}
	return body;
}

/* The reason phrases the web frameworks put in "error". */
const REASONS = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found',
	413: 'Payload Too Large', 422: 'Unprocessable Entity', 429: 'Too Many Requests',
	500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable' };

/* An error body shaped by a web framework (error_shape=): what relays
 * built on Express, Fastify, NestJS or FastAPI answer, and OAuth proxies. */
function frameworkErrorBody(shape, status, message) {
	const reason = REASONS[status] || 'Error';
	switch (shape) {
		case 'express':
			return JSON.stringify({ error: status === 400 ? 'SyntaxError'
				: status === 413 ? 'PayloadTooLargeError' : 'Error', message });
		case 'fastify':
			return JSON.stringify({ statusCode: status, error: reason, message });
		case 'fastapi':
			return JSON.stringify({ detail: message });
		case 'fastapi_list':
			return JSON.stringify({ detail: [{ loc: ['body', 'model'], msg: message, type: 'value_error' }] });
		case 'oauth':
			return JSON.stringify({ error: 'invalid_token', error_description: message });
	}
	return JSON.stringify({ error: reason });
}

/* The error message of a fail= or error_event answer: message= (or the
 * default), padded with 'x' to message_bytes=N, with the key if asked. */
function errorMessage(ctx, dflt) {
	const d = ctx.d || {};
	let m = keyed(ctx, d.message !== undefined ? d.message : dflt);
	if (d.message_bytes !== undefined && Buffer.byteLength(m) < d.message_bytes)
		m += 'x'.repeat(d.message_bytes - Buffer.byteLength(m));
	return m;
}

/* With echo_key=1, every KEY in a text becomes the key the request carried
 * (a provider that echoes it); otherwise the text as it is. */
function keyed(ctx, text) {
	if (!ctx.d || ctx.d.echo_key === undefined || typeof text !== 'string' || !ctx.req)
		return text;
	const h = ctx.req.headers;
	const key = h['x-api-key'] !== undefined ? h['x-api-key']
		: String(h.authorization || '').replace(/^Bearer /, '');
	return text.split('KEY').join(key);
}

/* Add Retry-After, retry-after-ms and x-should-retry from the directives. */
function addRetryHeaders(h, d) {
	if (d.retry_after !== undefined) {
		const m = /^date:(\d+)$/.exec(d.retry_after);
		h['Retry-After'] = m ? new Date(Date.now() + parseInt(m[1], 10) * 1000).toUTCString()
			: d.retry_after;
	}
	if (d.retry_after_ms !== undefined)
		h['retry-after-ms'] = d.retry_after_ms;
	if (d.should_retry !== undefined)
		h['x-should-retry'] = d.should_retry;
}

/* Where fault=redirect points: a port nothing listens on. */
const REDIRECT_TO = 'http://127.0.0.1:1/elsewhere';

const HTML_PAGE = '<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n' +
	'<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>mock-gateway</center>\r\n</body>\r\n</html>\r\n';

/* The 8-byte repeating filler of fault=big: 64 KB holds it exactly. */
const BIG_WRITE = 65536;
const BIG_FILL = Buffer.alloc(BIG_WRITE, 'abcdefg ');
const BIG_MARK = '\uE0B1';

/* fault=big: content of bytes=N bytes (default 20,000,000), written in
 * 64 KB writes with back-pressure.  Valid JSON / SSE when complete. */
function sendBig(ctx) {
	const res = ctx.res;
	const n = ctx.d.bytes !== undefined ? ctx.d.bytes : 20000000;
	const r = newReply(inputTokens(ctx.proto, ctx.body));
	r.text = BIG_MARK;
	r.outTok = Math.max(1, Math.ceil(n / 8));
	const queue = [];           /* strings, or numbers = filler byte counts */
	let headers;
	if (!ctx.stream) {
		const [pre, post] = replyBody(ctx, r).split(BIG_MARK);
		headers = jsonHeaders(ctx);
		headers['Content-Length'] = Buffer.byteLength(pre) + n + Buffer.byteLength(post);
		queue.push(pre);
		for (let left = n; left > 0; left -= BIG_WRITE)
			queue.push(Math.min(left, BIG_WRITE));
		queue.push(post);
	} else {
		headers = streamHeaders(ctx);
		const ev = ctx.proto === ANTHROPIC ? anthropicEvents(ctx, r) : openaiEvents(ctx, r);
		for (const e of ev) {
			if (!e.piece) {
				queue.push(e.s);
				continue;
			}
			const [pre, post] = e.s.split(BIG_MARK);
			for (let left = n; left > 0; left -= BIG_WRITE) {
				queue.push(pre);
				queue.push(Math.min(left, BIG_WRITE));
				queue.push(post);
			}
		}
	}
	res.writeHead(200, headers);
	let i = 0;
	const go = () => {
		while (i < queue.length) {
			if (res.destroyed)
				return;
			const q = queue[i++];
			const ok = res.write(typeof q === 'number'
				? (q === BIG_WRITE ? BIG_FILL : BIG_FILL.subarray(0, q)) : q);
			if (!ok) {
				res.once('drain', go);
				return;
			}
		}
		res.end();
	};
	go();
}

/* Send a non-streaming reply, applying leading_ws, truncate, split and
 * badutf8 to the body bytes. */
function sendReply(ctx, r) {
	sendBody(ctx, replyBody(ctx, r));
}

/* Send a non-streaming body (JSON text), applying leading_ws, truncate,
 * split and badutf8 to its bytes. */
function sendBody(ctx, text) {
	const res = ctx.res;
	const f = ctx.faults;
	if (f.has('leading_ws'))
		text = '\n\n\n' + text;
	const payload = toBytes(text, f.has('badutf8'));
	if (!f.has('truncate') && !f.has('split')) {
		sendRaw(res, 200, jsonHeaders(ctx), payload);
		return;
	}
	const buf = Buffer.isBuffer(payload) ? payload : Buffer.from(payload, 'utf8');
	const h = jsonHeaders(ctx);
	h['Content-Length'] = buf.length;
	res.writeHead(200, h);
	if (f.has('split')) {
		writeSplit(res, buf, (ctx.d && ctx.d.chunk_delay) || 0);
		return;
	}
	/* truncate: half the body, then drop the connection */
	res.write(buf.subarray(0, buf.length >> 1), () => res.socket && res.socket.destroy());
}

/* fault=slow_body: 200 and the headers at once, then the JSON body one
 * byte at a time, chunk_delay ms apart (default 100). */
function sendSlow(ctx, r) {
	const res = ctx.res;
	const buf = Buffer.from(replyBody(ctx, r), 'utf8');
	const delay = ctx.d.chunk_delay !== undefined ? ctx.d.chunk_delay : 100;
	const h = jsonHeaders(ctx);
	h['Content-Length'] = buf.length;
	res.writeHead(200, h);
	res.flushHeaders();
	let i = 0;
	const step = () => {
		if (res.destroyed)
			return;
		res.write(buf.subarray(i, i + 1));
		if (++i >= buf.length) {
			res.end();
			return;
		}
		if (delay > 0)
			setTimeout(step, delay);
		else
			setImmediate(step);
	};
	step();
}

/* ------------------------------------------------------------------ */
/* Protocol request handling                                           */
/* ------------------------------------------------------------------ */

/* Answer one protocol request whose body has been read; t = its arrival
 * time (epoch microseconds). */
function handleProtocol(proto, req, res, path, raw, t) {
	const embed = path.endsWith('/embeddings');
	if (embed)
		state.embedRequests++;
	else
		state.requests++;
	const id = ++idCounter;
	const text = raw.toString('utf8');
	let body;
	let parsed = false;
	try {
		body = JSON.parse(text);
		parsed = body !== null && typeof body === 'object' && !Array.isArray(body);
	} catch (e) {
		/* reported below, after the auth check */
	}
	logRequest(path, req.headers, parsed ? body : text);
	recordArrival(t, path, parsed && typeof body.model === 'string' ? body.model : null);

	const ctx = { proto, req, res, id, body, model: '', d: null, faults: NO_FAULTS,
		prompt: '', stream: false, includeUsage: false, created: Math.floor(Date.now() / 1000),
		rl: null, embed };

	const authErr = checkAuth(proto, req.headers);
	if (authErr) {
		later(res, cfg.latency, () => sendRaw(res, authErr.status, jsonHeaders(ctx), authErr.body));
		return;
	}
	if (settings.rpm > 0) {
		ctx.rl = rpmGate(proto, res, 'req_mock' + id);
		if (ctx.rl === null)
			return;
	}
	if (!parsed) {
		later(res, cfg.latency, () => sendProtoError(ctx, 400, proto === ANTHROPIC
			? 'There was an issue with the JSON body of your request.'
			: "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
		'invalid_request_error'));
		return;
	}

	const model = typeof body.model === 'string' ? body.model : '';
	const pm = parseModel(model);
	if (pm.error) {
		sendProtoError(ctx, 400, pm.error, 'invalid_request_error');
		return;
	}
	ctx.model = pm.name;
	ctx.d = pm.d;
	ctx.prompt = embed ? embeddings.keyText(body) : lastUserText(body.messages);
	ctx.stream = !embed && body.stream === true;
	ctx.includeUsage = proto === OPENAI && ctx.stream && !!body.stream_options &&
		body.stream_options.include_usage === true;

	const d = pm.d;
	if (d !== null && d.ratelimit !== undefined)
		ctx.rl = Object.assign(ctx.rl || {}, rateLimitHeaders(proto, d.ratelimit));
	const active = countKey(model, ctx.prompt, d);
	if (active && d.fault)
		ctx.faults = new Set(d.fault);
	ctx.shapeActive = active;

	const latency = d && d.latency !== undefined ? d.latency : cfg.latency;
	later(res, latency, () => respond(ctx, active));
}

/* Count one request of the key "model|prompt"; returns whether its
 * directives are active (the count decides whether times=N still lets a
 * fail/fault through). */
function countKey(model, prompt, d) {
	const key = model + '|' + prompt;
	let n = state.byKey.get(key);
	if (n !== undefined || state.byKey.size < MAX_KEYS || (d && d.times !== undefined)) {
		n = (n || 0) + 1;
		state.byKey.set(key, n);
	}
	return d !== null && (d.times === undefined || n <= d.times) &&
		(d.when === undefined || String(prompt || '').includes(d.when));
}

/* Run fn now, or after ms milliseconds unless the client has gone. */
function later(res, ms, fn) {
	if (!ms) {
		fn();
		return;
	}
	const t = setTimeout(fn, ms);
	res.on('close', () => clearTimeout(t));
}

/* Produce the response: failures and whole-response faults first, then
 * validation, then the (possibly reshaped) normal reply. */
function respond(ctx, active) {
	const res = ctx.res;
	if (res.destroyed)
		return;
	if (active && ctx.d.fail !== undefined) {
		sendFailure(ctx);
		return;
	}
	const f = ctx.faults;
	if (f.has('reset')) {
		ctx.req.socket.destroy();
		return;
	}
	if (f.has('hang'))
		return;                 /* the socket stays in `sockets` until it closes */
	if (f.has('malformed')) {
		sendRaw(res, 200, jsonHeaders(ctx), '{"id": "x", "choices": [ this is not json');
		return;
	}
	if (f.has('html')) {
		const h = { 'Content-Type': 'text/html' };
		addRetryHeaders(h, ctx.d);
		sendRaw(res, 502, h, HTML_PAGE);
		return;
	}
	if (f.has('notjson')) {
		sendRaw(res, 200, { 'Content-Type': 'text/plain' }, 'Service temporarily unavailable');
		return;
	}
	if (f.has('redirect')) {
		sendRaw(res, 302, { 'Location': REDIRECT_TO }, '');
		return;
	}
	const bad = ctx.embed ? embeddings.validate(ctx.body, ctx.model, ctx.d)
		: ctx.proto === ANTHROPIC ? validateAnthropic(ctx.body) : validateOpenAI(ctx.body);
	if (bad) {
		sendProtoError(ctx, 400, bad.message, 'invalid_request_error', bad.param, bad.code);
		return;
	}
	if (ctx.embed) {
		state.embedInputs += embeddings.inputCount(ctx.body);
		sendBody(ctx, embeddings.replyText(ctx.body, ctx.model, ctx.d, f));
		return;
	}
	if (f.has('big')) {
		sendBig(ctx);
		return;
	}
	const r = computeReply(ctx);
	if (f.has('wrong_type') && ctx.stream)
		sendRaw(res, 200, jsonHeaders(ctx), replyBody(ctx, r));
	else if (f.has('slow_body') && !ctx.stream)
		sendSlow(ctx, r);
	else if (ctx.stream)
		streamReply(ctx, r);
	else
		sendReply(ctx, r);
}


/* ------------------------------------------------------------------ */
/* Requests inside a batch                                             */
/* ------------------------------------------------------------------ */

/* Faults that still shape a batch line's answer body, and faults that make
 * the line fail without an HTTP answer; the others are ignored there. */
const LINE_BODY_FAULTS = new Set(['empty_choices', 'null_content']);
const LINE_FAIL_FAULTS = new Set(['reset', 'hang', 'malformed', 'html', 'notjson', 'truncate']);

/*
 * Answer the body of one request inside a batch as the chat route (or,
 * when url ends with /embeddings, the embeddings route) would answer it
 * non-streaming, without a socket.  Returns { id, status, text, inTok,
 * outTok } (text = the JSON answer body) or, for a transport fault,
 * { id, status: 0, fault }.  latency, retry headers and stream faults are
 * ignored; the per-key counts (times=) are shared with the chat routes.
 * headers: those of the batch's request (echo_key=1 reads the key there).
 */
function answerLine(proto, body, url, headers) {
	if (typeof url === 'string' && url.endsWith('/embeddings'))
		return answerEmbeddingLine(body);
	const id = ++idCounter;
	const ctx = { proto, req: headers ? { headers } : null, res: null, id, body, model: '', d: null, faults: NO_FAULTS,
		prompt: '', stream: false, includeUsage: false, created: Math.floor(Date.now() / 1000),
		rl: null };
	const fail = (message) => ({ id, status: 400,
		text: errorBody(proto, message, 'invalid_request_error') });
	if (body === null || typeof body !== 'object' || Array.isArray(body))
		return fail('the request body must be a JSON object');
	const model = typeof body.model === 'string' ? body.model : '';
	const pm = parseModel(model);
	if (pm.error)
		return fail(pm.error);
	ctx.model = pm.name;
	ctx.d = pm.d;
	ctx.prompt = lastUserText(body.messages);
	const d = pm.d;
	const active = countKey(model, ctx.prompt, d);
	ctx.shapeActive = active;
	if (active && d.fail !== undefined)
		return { id, status: d.fail, text: failureBody(ctx) };
	if (active && d.fault) {
		for (const k of d.fault)
			if (LINE_FAIL_FAULTS.has(k))
				return { id, status: 0, fault: k };
		ctx.faults = new Set(d.fault.filter((k) => LINE_BODY_FAULTS.has(k)));
	}
	const bad = proto === ANTHROPIC ? validateAnthropic(body) : validateOpenAI(body);
	if (bad)
		return { id, status: 400,
			text: errorBody(proto, bad.message, 'invalid_request_error', bad.param, bad.code) };
	const r = computeReply(ctx);
	return { id, status: 200, text: replyBody(ctx, r), inTok: r.inTok, outTok: r.outTok };
}

/* answerLine() for an embedding request: the embeddings route's answer,
 * with its fail=, transport faults and the embedding faults. */
function answerEmbeddingLine(body) {
	const id = ++idCounter;
	const ctx = { proto: OPENAI, d: null };
	const fail = (message) => ({ id, status: 400,
		text: errorBody(OPENAI, message, 'invalid_request_error') });
	if (body === null || typeof body !== 'object' || Array.isArray(body))
		return fail('the request body must be a JSON object');
	const model = typeof body.model === 'string' ? body.model : '';
	const pm = parseModel(model);
	if (pm.error)
		return fail(pm.error);
	const d = pm.d;
	ctx.d = d;
	const active = countKey(model, embeddings.keyText(body), d);
	let faults = NO_FAULTS;
	if (active && d.fail !== undefined)
		return { id, status: d.fail, text: failureBody(ctx) };
	if (active && d.fault) {
		for (const k of d.fault)
			if (LINE_FAIL_FAULTS.has(k))
				return { id, status: 0, fault: k };
		faults = new Set(d.fault);
	}
	const bad = embeddings.validate(body, pm.name, d);
	if (bad)
		return { id, status: 400,
			text: errorBody(OPENAI, bad.message, 'invalid_request_error', bad.param, bad.code) };
	return { id, status: 200, text: embeddings.replyText(body, pm.name, d, faults),
		inTok: embeddings.tokenCount(body), outTok: 0 };
}

/* Remember a protocol request for GET /_requests, keys redacted. */
function logRequest(path, headers, body) {
	const h = Object.assign({}, headers);
	if (h.authorization !== undefined)
		h.authorization = '<redacted>';
	if (h['x-api-key'] !== undefined)
		h['x-api-key'] = '<redacted>';
	state.log.push({ path, headers: h, body });
	if (state.log.length > LOG_KEEP)
		state.log.shift();
}

/* ------------------------------------------------------------------ */
/* HTTP server                                                         */
/* ------------------------------------------------------------------ */

/* Route a request. */
function onRequest(req, res) {
	const url = req.url;
	const q = url.indexOf('?');
	const path = q < 0 ? url : url.slice(0, q);
	let proto = null;
	if (path.endsWith('/chat/completions') || path.endsWith('/embeddings'))
		proto = OPENAI;
	else if (path.endsWith('/messages'))
		proto = ANTHROPIC;

	if (cfg.verbose) {
		const t0 = Date.now();
		res.on('finish', () => process.stderr.write('mock: ' + req.method + ' ' + path + ' ' +
			res.statusCode + ' ' + (Date.now() - t0) + 'ms\n'));
	}

	if (path.endsWith('/messages/count_tokens') && req.method === 'POST') {
		const chunks = [];
		req.on('data', (c) => chunks.push(c));
		req.on('end', () => countTokens(req, res, Buffer.concat(chunks)));
		return;
	}
	if (proto !== null && req.method === 'POST') {
		const t = nowUs();
		const chunks = [];
		req.on('data', (c) => chunks.push(c));
		req.on('end', () => handleProtocol(proto, req, res, path,
			chunks.length === 1 ? chunks[0] : Buffer.concat(chunks), t));
		return;
	}
	if (path.startsWith('/_'))
		onControl(req, res, path);
	else if (!batchApi.route(req, res, path, q < 0 ? '' : url.slice(q + 1)))
		notFound(req, res, path);
}

/* The members Anthropic's count_tokens accepts: the input of a Messages
 * request, without max_tokens and the sampling options. */
const COUNT_KEYS = new Set(['model', 'messages', 'system', 'tools', 'tool_choice',
	'thinking', 'mcp_servers']);

/* POST /v1/messages/count_tokens: {"input_tokens": N}, counted as the
 * usage of a Messages reply to the same request counts them. */
function countTokens(req, res, raw) {
	state.countRequests++;
	const ctx = { proto: ANTHROPIC, req, res, id: ++idCounter, rl: null };
	let body = null;
	try {
		body = JSON.parse(raw.toString('utf8'));
	} catch (e) {
		/* below */
	}
	logRequest(req.url, req.headers, body);
	const authErr = checkAuth(ANTHROPIC, req.headers);
	if (authErr) {
		sendRaw(res, authErr.status, jsonHeaders(ctx), authErr.body);
		return;
	}
	if (body === null || typeof body !== 'object' || Array.isArray(body)) {
		sendProtoError(ctx, 400, 'There was an issue with the JSON body of your request.', 'invalid_request_error');
		return;
	}
	for (const k of Object.keys(body))
		if (!COUNT_KEYS.has(k)) {
			sendProtoError(ctx, 400, k + ': Extra inputs are not permitted', 'invalid_request_error');
			return;
		}
	if (typeof body.model !== 'string' || !Array.isArray(body.messages) || body.messages.length === 0) {
		sendProtoError(ctx, 400, 'messages: Field required', 'invalid_request_error');
		return;
	}
	sendRaw(res, 200, { 'Content-Type': 'application/json' },
		JSON.stringify({ input_tokens: inputTokens(ANTHROPIC, body) }));
}

/* Answer 404 with an OpenAI-shaped error. */
function notFound(req, res, path) {
	req.resume();
	sendRaw(res, 404, { 'Content-Type': 'application/json' }, JSON.stringify({ error: {
		message: 'mock: no route for ' + req.method + ' ' + path, type: 'invalid_request_error',
		param: null, code: 'not_found' } }));
}

/* ------------------------------------------------------------------ */
/* Control routes (/_health, /_reset, /_stats, /_config, ...)         */
/* ------------------------------------------------------------------ */

/* Route a control request (path starts with /_). */
function onControl(req, res, path) {
	const json = { 'Content-Type': 'application/json' };
	const m = req.method;
	if (m === 'GET' && path === '/_health')
		sendRaw(res, 200, { 'Content-Type': 'text/plain' }, 'ok');
	else if (m === 'POST' && path === '/_reset') {
		resetAll();
		req.resume();
		sendRaw(res, 200, json, '{}');
	} else if (m === 'GET' && path === '/_stats')
		sendRaw(res, 200, json, JSON.stringify(statsObject()));
	else if (m === 'GET' && path === '/_requests')
		sendRaw(res, 200, json, JSON.stringify(state.log));
	else if (m === 'GET' && path === '/_trace')
		sendRaw(res, 200, json, JSON.stringify(state.traces));
	else if (m === 'GET' && path === '/_arrivals')
		sendRaw(res, 200, json, arrivalsJson());
	else if (m === 'GET' && path === '/_config') {
		req.resume();
		sendRaw(res, 200, json, JSON.stringify(settings));
	} else if (m === 'POST' && path === '/_config')
		postConfig(req, res);
	else
		notFound(req, res, path);
}

/* POST /_config: merge a JSON object of knobs; 400 on any bad key. */
function postConfig(req, res) {
	const json = { 'Content-Type': 'application/json' };
	const chunks = [];
	req.on('data', (c) => chunks.push(c));
	req.on('end', () => {
		let obj;
		let err;
		try {
			obj = JSON.parse(Buffer.concat(chunks).toString('utf8'));
		} catch (e) {
			err = 'the body is not JSON: ' + e.message;
		}
		if (!err)
			err = applyConfig(settings, obj);
		if (err)
			sendRaw(res, 400, json, errorBody(OPENAI, err, 'invalid_request_error'));
		else
			sendRaw(res, 200, json, JSON.stringify(settings));
	});
}

/* POST /_reset: counters, logs, traces, arrivals, the rpm window, the
 * knobs (back to the defaults and --config), batches and files. */
function resetAll() {
	state.requests = 0;
	state.connections = 0;
	state.byKey.clear();
	state.log = [];
	state.traces = [];
	state.arrivals = 0;
	arrivalPath.fill(null);
	arrivalModel.fill(null);
	state.rpmTimes = [];
	state.rpmHead = 0;
	state.embedRequests = 0;
	state.countRequests = 0;
	state.embedInputs = 0;
	settings = JSON.parse(JSON.stringify(baseSettings));
	batchApi.reset();
}

/* The GET /_stats object. */
function statsObject() {
	const b = batchApi.stats();
	return { requests: state.requests, by_key: Object.fromEntries(state.byKey),
		connections: state.connections, open_connections: sockets.size,
		batches: b.batches, batch_requests: b.batch_requests, files: b.files, cancels: b.cancels,
		results_hosts: b.results_hosts,
		embeddings: { requests: state.embedRequests, inputs: state.embedInputs },
		count_tokens: state.countRequests };
}

/* Write a file atomically: a temporary file renamed into place. */
function writeAtomic(path, text) {
	const tmp = path + '.tmp.' + process.pid;
	fs.writeFileSync(tmp, text);
	fs.renameSync(tmp, path);
}

batchApi.init({
	OPENAI, ANTHROPIC, answerLine, checkAuth, errorBody, openaiErrorKind, anthropicErrorType,
	sendRaw, nowUs, recordArrival, setArrivalModel,
	nextId: () => ++idCounter,
	settings: () => settings,
	rpmGate: (proto, res, reqId) => (settings.rpm > 0 ? rpmGate(proto, res, reqId) : {}),
});

const server = http.createServer({ noDelay: true, keepAlive: true }, onRequest);
server.keepAliveTimeout = 120000;
server.headersTimeout = 121000;
server.requestTimeout = 0;

server.on('connection', (sock) => {
	state.connections++;
	sockets.add(sock);
	sock.on('close', () => sockets.delete(sock));
});

server.on('clientError', (err, sock) => {
	if (sock.writable && err.code !== 'ECONNRESET')
		sock.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
	else
		sock.destroy();
});

/* Close the listener, destroy every socket (hung ones included), exit 0. */
function shutdown() {
	server.close();
	for (const s of sockets)
		s.destroy();
	process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.on('error', (err) => {
	process.stderr.write('mock: ' + err.message + '\n');
	process.exit(1);
});

/* a backlog of 4096 (Node's default is 511): a client opening a thousand
 * connections at once must not see SYNs dropped and retried a second later */
server.listen(cfg.port, '127.0.0.1', 4096, () => {
	const port = server.address().port;
	if (cfg.portFile) {
		writeAtomic(cfg.portFile + '.pid', process.pid + '\n');
		writeAtomic(cfg.portFile, port + '\n');
	}
	process.stdout.write('MOCK_PORT=' + port + '\n');
	if (cfg.verbose)
		process.stderr.write('mock: listening on 127.0.0.1:' + port + ' pid ' + process.pid + '\n');
});
