/*
 * test/mock/batch.js
 *
 * The provider batch APIs of the mock LLM provider; server.js requires
 * this file and hands it its reply machinery through init().  Three kinds:
 *
 *   inline     a relay's synchronous POST .../batches {"input_file_content"}
 *   openai     POST .../files (multipart) + POST .../batches {"input_file_id"}
 *   anthropic  POST .../messages/batches {"requests"}
 *
 * Every request inside a batch is answered by server.js's answerLine(),
 * exactly as the chat route would answer that body (directives included).
 * Batches move through their states on the clock (the complete_after_ms
 * knob) and are computed in slices between other requests, so a batch of
 * 100,000 requests does not stall the chat routes.  Everything lives in
 * memory and POST /_reset drops it.  Loopback only, standard library only.
 *
 * The reference for every route, shape and knob is test/mock/README.md.
 */
'use strict';

let core = null;            /* server.js helpers, set by init() */

const MB = 1024 * 1024;
const DAY_MS = 24 * 3600 * 1000;
const SLICE = 500;                      /* requests answered per event-loop turn */
const WRITE_CHUNK = MB;                 /* bytes per write of a JSONL download */
const FILE_MAX = 512 * MB;              /* any upload */
const BATCH_FILE_MAX = 200 * MB;        /* an upload with purpose=batch */
const JSON_BODY_MAX = 256 * MB;         /* a JSON request body of these routes */
const OA_MAX_LINES = 50000;
const OA_MAX_EMBED_INPUTS = 50000;      /* embedding inputs in a /v1/embeddings batch */
const AN_MAX_REQUESTS = 100000;
const ERRORS_KEEP = 1000;               /* validation errors kept per batch */
const PURPOSES = new Set(['assistants', 'batch', 'fine-tune', 'vision', 'user_data', 'evals']);
const ENDPOINTS = new Set(['/v1/responses', '/v1/chat/completions', '/v1/embeddings',
	'/v1/completions', '/v1/moderations', '/v1/images/generations', '/v1/images/edits', '/v1/videos']);
const CHAT_URLS = new Set(['/v1/chat/completions', '/chat/completions']);
const EMBED_URLS = new Set(['/v1/embeddings', '/embeddings']);
const CUSTOM_ID_RE = /^[a-zA-Z0-9_-]{1,64}$/;
const EXPIRED_MESSAGE = 'This request could not be executed before the completion window expired.';

const AN_RE = /^(.*)\/messages\/batches(?:\/([^/]+)(?:\/(cancel|results))?)?$/;
const OA_BATCH_RE = /^(.*)\/batches(?:\/([^/]+)(?:\/(cancel))?)?$/;
const OA_FILE_RE = /^(.*)\/files(?:\/([^/]+)(?:\/(content))?)?$/;

const st = {
	files: new Map(),       /* file id -> file */
	batches: new Map(),     /* OpenAI batch id -> batch (insertion = creation order) */
	msgBatches: new Map(),  /* Anthropic batch id -> batch */
	counts: null,           /* GET /_stats counters */
};

/* Fresh GET /_stats counters. */
function freshCounts() {
	return { batches: { inline: 0, openai: 0, anthropic: 0 }, batch_requests: 0, files: 0, cancels: 0,
		results_hosts: {} };
}
st.counts = freshCounts();

/* ------------------------------------------------------------------ */
/* Module interface                                                    */
/* ------------------------------------------------------------------ */

/* Receive server.js's helpers. */
function init(c) {
	core = c;
}

/* POST /_reset: drop every batch and file (work in progress stops). */
function reset() {
	for (const b of st.batches.values())
		b.dropped = true;
	for (const b of st.msgBatches.values())
		b.dropped = true;
	st.files.clear();
	st.batches.clear();
	st.msgBatches.clear();
	st.counts = freshCounts();
}

/* The batch counters of GET /_stats. */
function stats() {
	return st.counts;
}

/*
 * Route a request that is neither a chat route nor a control route.
 * Returns false when no batch route matches (server.js answers 404).
 */
function route(req, res, path, query) {
	const m = req.method;
	let h = null;
	let proto = core.OPENAI;
	let g;
	if ((g = AN_RE.exec(path)) !== null) {
		proto = core.ANTHROPIC;
		const [, prefix, id, sub] = g;
		if (!id)
			h = m === 'POST' ? (x) => anCreate(x, prefix) : m === 'GET' ? anList : null;
		else if (!sub)
			h = m === 'GET' ? (x) => anRetrieve(x, id) : m === 'DELETE' ? (x) => anDelete(x, id) : null;
		else if (sub === 'cancel')
			h = m === 'POST' ? (x) => anCancel(x, id) : null;
		else
			h = m === 'GET' ? (x) => anResults(x, id) : null;
	} else if ((g = OA_BATCH_RE.exec(path)) !== null) {
		const [, , id, sub] = g;
		if (!id)
			h = m === 'POST' ? oaBatchPost : m === 'GET' ? oaList : null;
		else if (!sub)
			h = m === 'GET' ? (x) => oaRetrieve(x, id) : null;
		else
			h = m === 'POST' ? (x) => oaCancel(x, id) : null;
	} else if ((g = OA_FILE_RE.exec(path)) !== null) {
		const [, , id, sub] = g;
		if (!id)
			h = m === 'POST' ? fileUpload : null;
		else if (!sub)
			h = m === 'GET' ? (x) => fileRetrieve(x, id) : m === 'DELETE' ? (x) => fileDelete(x, id) : null;
		else
			h = m === 'GET' ? (x) => fileContent(x, id) : null;
	}
	if (h === null)
		return false;
	dispatch({ req, res, path, query: new URLSearchParams(query), proto,
		id: core.nextId(), arrival: core.recordArrival(core.nowUs(), path, null), rl: {} }, h);
	return true;
}

/* Read the body (at most the route's limit, else 413), check the key and
 * the rpm window, then run the handler with x.body (a Buffer). */
function dispatch(x, handler) {
	const limit = x.proto === core.OPENAI && OA_FILE_RE.test(x.path) ? FILE_MAX : JSON_BODY_MAX;
	const chunks = [];
	let size = 0;
	x.req.on('data', (c) => {
		size += c.length;
		if (size <= limit)
			chunks.push(c);
		else
			chunks.length = 0;
	});
	x.req.on('end', () => {
		const auth = core.checkAuth(x.proto, x.req.headers);
		if (auth) {
			core.sendRaw(x.res, auth.status, headers(x), auth.body);
			return;
		}
		const rl = core.rpmGate(x.proto, x.res, 'req_mock' + x.id);
		if (rl === null)
			return;
		x.rl = rl;
		if (size > limit) {
			fail(x, 413, 'request body too large: the limit is ' + limit / MB + ' MB', null, null,
				x.proto === core.ANTHROPIC ? 'request_too_large' : 'invalid_request_error');
			return;
		}
		x.body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
		handler(x);
	});
}

/* ------------------------------------------------------------------ */
/* Responses                                                           */
/* ------------------------------------------------------------------ */

/* Headers of an answer: JSON, the request id, rate-limit headers. */
function headers(x, type) {
	const h = { 'Content-Type': type || 'application/json' };
	h[x.proto === core.ANTHROPIC ? 'request-id' : 'x-request-id'] = 'req_mock' + x.id;
	return Object.assign(h, x.rl);
}

/* Answer 200 with a JSON object. */
function reply(x, obj) {
	core.sendRaw(x.res, 200, headers(x), JSON.stringify(obj));
}

/* Answer an error in the protocol's shape; the type defaults by status. */
function fail(x, status, message, param, code, type) {
	if (type === undefined)
		type = x.proto === core.ANTHROPIC ? core.anthropicErrorType(status, false)
			: core.openaiErrorKind(status, false).type;
	core.sendRaw(x.res, status, headers(x), core.errorBody(x.proto, message, type, param, code));
}

/* Send a body made of parts (strings or Buffers, `bytes` bytes in all)
 * with a Content-Length, in writes of about 1 MB, honouring back-pressure. */
function sendParts(x, type, parts, bytes) {
	const res = x.res;
	const h = headers(x, type);
	h['Content-Length'] = bytes;
	res.writeHead(200, h);
	let i = 0;
	const go = () => {
		while (i < parts.length) {
			if (res.destroyed)
				return;
			let chunk;
			if (typeof parts[i] !== 'string')
				chunk = parts[i++];
			else {
				chunk = '';
				while (i < parts.length && typeof parts[i] === 'string' && chunk.length < WRITE_CHUNK)
					chunk += parts[i++];
			}
			if (!res.write(chunk)) {
				res.once('drain', go);
				return;
			}
		}
		res.end();
	};
	go();
}

/* Parse x.body as a JSON object; answers 400 and returns null otherwise. */
function jsonBody(x) {
	let o;
	try {
		o = JSON.parse(x.body.toString('utf8'));
	} catch (e) {
		o = undefined;
	}
	if (o === null || typeof o !== 'object' || Array.isArray(o)) {
		fail(x, 400, x.proto === core.ANTHROPIC ? 'There was an issue with the JSON body of your request.'
			: 'We could not parse the JSON body of your request.', null, null, 'invalid_request_error');
		return null;
	}
	return o;
}

/* ------------------------------------------------------------------ */
/* Helpers shared by the batch kinds                                   */
/* ------------------------------------------------------------------ */

/* The model name of a model string (the part before '?'). */
function modelName(m) {
	if (typeof m !== 'string')
		return '';
	const q = m.indexOf('?');
	return q < 0 ? m : m.slice(0, q);
}

/* A seeded pseudo-random generator (mulberry32): returns () -> [0, 1). */
function prng(seed) {
	let a = seed >>> 0;
	return () => {
		a = (a + 0x6d2b79f5) >>> 0;
		let t = a;
		t = Math.imul(t ^ (t >>> 15), t | 1);
		t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
		return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
	};
}

/* Shuffle arr in place, deterministically for a given seed. */
function shuffle(arr, seed) {
	const rnd = prng(seed);
	for (let i = arr.length - 1; i > 0; i--) {
		const j = Math.floor(rnd() * (i + 1));
		const t = arr[i];
		arr[i] = arr[j];
		arr[j] = t;
	}
	return arr;
}

/*
 * A batch record (OpenAI and Anthropic alike) holds n requests: the first
 * `stop` are answered, the rest expire (expire_fraction).  `done` of them
 * are computed so far, up to `until` (lowered to `done` by a cancel), with
 * ok[i] (1 = status 200, 2 = anything else) and results[i] (the result
 * line, newline included); doneAt is set once all are computed.  cancelAt
 * and cancelK record when a cancel came and how many requests had been
 * answered by then; `final` is the terminal state, built at the first look
 * after the end, when the working data is freed.
 */

/* Snapshot of the batch knobs taken when a batch is created. */
function knobs() {
	const b = core.settings().batch;
	return { C: b.complete_after_ms, expire: b.expire_fraction, shuffle: b.shuffle,
		resultsHost: b.results_host };
}

/* How many of n requests expire under expire_fraction f (at least one
 * when f > 0). */
function expiredCount(n, f) {
	if (!(f > 0))
		return 0;
	return Math.min(n, Math.max(1, Math.round(f * n)));
}

/* Unix seconds of a millisecond time. */
function sec(ms) {
	return Math.floor(ms / 1000);
}

/* An RFC 3339 timestamp of a millisecond time, or null. */
function iso(ms) {
	return ms === null ? null : new Date(ms).toISOString();
}

/*
 * Answer requests of batch b in slices of SLICE per event-loop turn, from
 * b.done up to b.until (b.stop, or less after a cancel); body(i) gives
 * request i's body, line(i, a) turns the answer into the stored result
 * line.  Sets b.doneAt when finished.
 */
function pump(b, proto, body, line) {
	if (b.dropped)
		return;
	const stop = Math.min(b.done + SLICE, b.until);
	for (let i = b.done; i < stop; i++) {
		const a = core.answerLine(proto, body(i), b.endpoint, b.headers);
		b.ok[i] = a.status === 200 ? 1 : 2;
		if (a.status === 200) {
			b.inTok += a.inTok;
			b.outTok += a.outTok;
		}
		b.results[i] = line(i, a);
	}
	b.done = stop;
	if (b.done < b.until)
		setImmediate(() => pump(b, proto, body, line));
	else
		b.doneAt = Date.now();
}

/* Requests answered by time `now` under a linear schedule that starts at
 * `from` and ends at `to` (never more than were computed; b.stop = the
 * requests that do not expire). */
function answeredBy(b, now, from, to) {
	const f = to > from ? Math.min(1, Math.max(0, (now - from) / (to - from))) : (now >= to ? 1 : 0);
	return Math.min(b.done, Math.floor(f * b.stop));
}

/* Successes and failures among the first k requests of b. */
function tally(b, k) {
	let ok = 0;
	let bad = 0;
	for (let i = 0; i < k; i++)
		if (b.ok[i] === 1)
			ok++;
		else
			bad++;
	return { ok, bad };
}

/* ------------------------------------------------------------------ */
/* OpenAI result lines                                                 */
/* ------------------------------------------------------------------ */

/* One BatchRequestOutput line (JSON text, no newline) for answer a. */
function oaOutputLine(customId, a) {
	const head = '{"id":"batch_req_mock' + a.id + '","custom_id":' + JSON.stringify(customId);
	if (a.status === 0)
		return head + ',"response":null,"error":{"code":"server_error","message":"mock fault ' +
			a.fault + '"}}';
	return head + ',"response":{"status_code":' + a.status + ',"request_id":"req_mock' + a.id +
		'","body":' + a.text + '},"error":null}';
}

/* The output line of a request that expired unanswered. */
function oaExpiredLine(customId) {
	return '{"id":"batch_req_mock' + core.nextId() + '","custom_id":' + JSON.stringify(customId) +
		',"response":null,"error":{"code":"batch_expired","message":"' + EXPIRED_MESSAGE + '"}}';
}

/* ------------------------------------------------------------------ */
/* Inline batches: POST .../batches {"input_file_content": [...]}     */
/* ------------------------------------------------------------------ */

/* POST .../batches: the inline relay endpoint or the OpenAI Batch API,
 * told apart by input_file_content. */
function oaBatchPost(x) {
	const o = jsonBody(x);
	if (o === null)
		return;
	if (Object.prototype.hasOwnProperty.call(o, 'input_file_content'))
		inlineBatch(x, o.input_file_content);
	else
		oaCreate(x, o);
}

/* Check an inline batch; returns null or the 400 message. */
function inlineProblem(lines) {
	const P = "'input_file_content";
	if (!Array.isArray(lines))
		return "Invalid type for 'input_file_content': expected an array of batch request lines.";
	if (lines.length === 0)
		return "Invalid 'input_file_content': the batch must contain at least one request.";
	const seen = new Set();
	let model = null;
	for (let i = 0; i < lines.length; i++) {
		const l = lines[i];
		const at = P + '[' + i + ']';
		if (l === null || typeof l !== 'object' || Array.isArray(l))
			return 'Invalid ' + at + "': expected a JSON object.";
		if (typeof l.custom_id !== 'string' || l.custom_id === '')
			return 'Missing required parameter: ' + at + ".custom_id'.";
		if (seen.has(l.custom_id))
			return 'Duplicate custom_id ' + JSON.stringify(l.custom_id) + ' in ' + at + "'.";
		seen.add(l.custom_id);
		if (l.method !== 'POST')
			return 'Invalid ' + at + ".method': only POST is supported.";
		if (!CHAT_URLS.has(l.url) && !EMBED_URLS.has(l.url))
			return 'Invalid ' + at + ".url': expected /v1/chat/completions, /chat/completions, /v1/embeddings or /embeddings.";
		const b = l.body;
		if (b === null || typeof b !== 'object' || Array.isArray(b))
			return 'Missing required parameter: ' + at + ".body'.";
		if (b.stream === true)
			return 'Streaming is not supported in batch mode: remove "stream": true from ' + at + ".body'.";
		const name = modelName(b.model);
		if (model === null)
			model = name;
		else if (name !== model)
			return 'All requests of a batch must use the same model: ' + JSON.stringify(model) +
				' and ' + JSON.stringify(name) + ' (' + at + "').";
	}
	return null;
}

/* Answer an inline batch synchronously (after inline_latency_ms), or hold
 * the socket forever when it has more than inline_max lines. */
function inlineBatch(x, lines) {
	const problem = inlineProblem(lines);
	if (problem !== null) {
		fail(x, 400, problem, 'input_file_content', null, 'invalid_request_error');
		return;
	}
	const cfg = core.settings().batch;
	const n = core.nextId();
	st.counts.batches.inline++;
	st.counts.batch_requests += lines.length;
	core.setArrivalModel(x.arrival, typeof lines[0].body.model === 'string' ? lines[0].body.model : null);
	if (cfg.inline_max > 0 && lines.length > cfg.inline_max)
		return;                 /* held: the client times out, or shutdown closes it */
	const run = () => {
		if (x.res.destroyed)
			return;
		const out = [];
		let failed = 0;
		for (const l of lines) {
			const a = core.answerLine(core.OPENAI, l.body, l.url, x.req.headers);
			if (a.status !== 200)
				failed++;
			out.push(oaOutputLine(l.custom_id, a));
		}
		if (cfg.shuffle)
			shuffle(out, n);
		const text = '{"id":"batch_inline_' + n + '","object":"batch","status":"completed",' +
			'"request_counts":{"total":' + lines.length + ',"completed":' + (lines.length - failed) +
			',"failed":' + failed + '},"results":[' + out.join(',') + ']}';
		core.sendRaw(x.res, 200, headers(x), text);
	};
	if (cfg.inline_latency_ms > 0) {
		const t = setTimeout(run, cfg.inline_latency_ms);
		x.res.on('close', () => clearTimeout(t));
	} else
		run();
}

/* ------------------------------------------------------------------ */
/* OpenAI Files: POST/GET/DELETE .../files                             */
/* ------------------------------------------------------------------ */

/* Store a file; returns it. */
function addFile(purpose, filename, parts, bytes) {
	const f = { id: 'file-mock' + core.nextId(), created_at: sec(Date.now()), filename, purpose,
		parts, bytes };
	st.files.set(f.id, f);
	return f;
}

/* The File object of f. */
function fileObject(f) {
	return { id: f.id, object: 'file', bytes: f.bytes, created_at: f.created_at,
		filename: f.filename, purpose: f.purpose, status: 'processed', status_details: null,
		expires_at: null };
}

/*
 * Split a multipart/form-data body into parts [{ name, filename, data }]
 * (data is a view of buf, not a copy).  Throws a message when malformed.
 */
function parseMultipart(buf, boundary) {
	const open = Buffer.from('--' + boundary);
	const delim = Buffer.from('\r\n--' + boundary);
	let pos = buf.indexOf(open);
	if (pos < 0)
		throw 'the multipart boundary is missing from the body';
	pos += open.length;
	const parts = [];
	for (;;) {
		if (buf[pos] === 0x2d && buf[pos + 1] === 0x2d)
			return parts;       /* the closing delimiter */
		while (buf[pos] === 0x20 || buf[pos] === 0x09)
			pos++;
		if (buf[pos] !== 0x0d || buf[pos + 1] !== 0x0a)
			throw 'malformed multipart delimiter line';
		pos += 2;
		const headEnd = buf.indexOf('\r\n\r\n', pos);
		const next = headEnd < 0 ? -1 : findDelimiter(buf, delim, headEnd + 2);
		if (headEnd < 0 || next < 0)
			throw 'unterminated multipart part';
		const head = buf.toString('utf8', pos, headEnd);
		const disp = /^content-disposition:(.*)$/im.exec(head);
		const name = disp && /(?:^|;)\s*name="([^"]*)"/i.exec(disp[1]);
		const filename = disp && /(?:^|;)\s*filename="([^"]*)"/i.exec(disp[1]);
		parts.push({ name: name ? name[1] : null, filename: filename ? filename[1] : null,
			data: buf.subarray(Math.min(headEnd + 4, next), next) });
		pos = next + delim.length;
	}
}

/* The offset of the next real delimiter (CRLF--boundary followed by "--",
 * or by optional blanks and CRLF) at or after from, or -1: look-alikes in
 * the content that continue otherwise are skipped. */
function findDelimiter(buf, delim, from) {
	for (let at = buf.indexOf(delim, from); at >= 0; at = buf.indexOf(delim, at + 1)) {
		let p = at + delim.length;
		if (buf[p] === 0x2d && buf[p + 1] === 0x2d)
			return at;
		while (buf[p] === 0x20 || buf[p] === 0x09)
			p++;
		if (buf[p] === 0x0d && buf[p + 1] === 0x0a)
			return at;
	}
	return -1;
}

/* POST .../files: multipart upload with fields purpose and file. */
function fileUpload(x) {
	const ct = x.req.headers['content-type'] || '';
	const bm = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(ct);
	if (!/^multipart\/form-data/i.test(ct) || !bm) {
		fail(x, 400, 'Invalid Content-Type header (' + ct + '), expected multipart/form-data with a boundary.');
		return;
	}
	let parts;
	try {
		parts = parseMultipart(x.body, bm[1] || bm[2]);
	} catch (e) {
		fail(x, 400, 'Could not parse the multipart form: ' + e + '.');
		return;
	}
	const purposePart = parts.find((p) => p.name === 'purpose');
	const filePart = parts.find((p) => p.name === 'file');
	if (!purposePart) {
		fail(x, 400, "Missing required parameter: 'purpose'.", 'purpose', 'missing_required_parameter');
		return;
	}
	const purpose = purposePart.data.toString('utf8');
	if (!PURPOSES.has(purpose)) {
		fail(x, 400, "Invalid value for 'purpose': expected one of " + [...PURPOSES].join(', ') +
			", got '" + purpose + "'.", 'purpose', 'invalid_value');
		return;
	}
	if (!filePart) {
		fail(x, 400, "Missing required parameter: 'file'.", 'file', 'missing_required_parameter');
		return;
	}
	const filename = filePart.filename || 'file';
	if (purpose === 'batch' && !/\.jsonl$/i.test(filename)) {
		fail(x, 400, 'Invalid file format for Batch API. Must be .jsonl', 'file', 'invalid_file_format');
		return;
	}
	if (purpose === 'batch' && filePart.data.length > BATCH_FILE_MAX) {
		fail(x, 400, 'File is too large: a batch input file may hold at most 200 MB.', 'file', 'file_too_large');
		return;
	}
	const f = addFile(purpose, filename, [filePart.data], filePart.data.length);
	st.counts.files++;
	reply(x, fileObject(f));
}

/* Look a file up; answers 404 and returns null when unknown. */
function findFile(x, id) {
	const f = st.files.get(id);
	if (!f)
		fail(x, 404, 'No such File object: ' + id, 'id', null, 'invalid_request_error');
	return f || null;
}

/* GET .../files/{id} */
function fileRetrieve(x, id) {
	const f = findFile(x, id);
	if (f)
		reply(x, fileObject(f));
}

/* GET .../files/{id}/content: the raw bytes. */
function fileContent(x, id) {
	const f = findFile(x, id);
	if (f)
		sendParts(x, 'application/octet-stream', f.parts, f.bytes);
}

/* DELETE .../files/{id} */
function fileDelete(x, id) {
	const f = findFile(x, id);
	if (f) {
		st.files.delete(id);
		reply(x, { id, object: 'file', deleted: true });
	}
}

/* ------------------------------------------------------------------ */
/* OpenAI Batch API: POST/GET .../batches                              */
/* ------------------------------------------------------------------ */

/* Check the create parameters; returns null or [status, message, param, code]. */
function oaCreateProblem(o) {
	for (const k of ['input_file_id', 'endpoint', 'completion_window'])
		if (o[k] === undefined || o[k] === null)
			return [400, "Missing required parameter: '" + k + "'.", k, 'missing_required_parameter'];
	if (typeof o.endpoint !== 'string' || !ENDPOINTS.has(o.endpoint))
		return [400, "Invalid value for 'endpoint': expected one of " + [...ENDPOINTS].join(', ') + '.',
			'endpoint', 'invalid_value'];
	if (o.endpoint !== '/v1/chat/completions' && o.endpoint !== '/v1/embeddings')
		return [400, "The mock supports only the endpoints '/v1/chat/completions' and '/v1/embeddings', not '" +
			o.endpoint + "'.", 'endpoint', 'unsupported_value'];
	if (o.completion_window !== '24h')
		return [400, "Invalid value for 'completion_window': only '24h' is supported.",
			'completion_window', 'invalid_value'];
	const md = o.metadata;
	if (md !== undefined && md !== null) {
		if (typeof md !== 'object' || Array.isArray(md))
			return [400, "Invalid type for 'metadata': expected an object.", 'metadata', 'invalid_type'];
		const keys = Object.keys(md);
		if (keys.length > 16)
			return [400, "Invalid 'metadata': at most 16 keys.", 'metadata', 'invalid_value'];
		for (const k of keys)
			if (k.length > 64 || typeof md[k] !== 'string' || md[k].length > 512)
				return [400, "Invalid 'metadata': keys of at most 64 characters and string values of " +
					'at most 512 characters.', 'metadata', 'invalid_value'];
	}
	if (typeof o.input_file_id !== 'string' || !st.files.has(o.input_file_id))
		return [404, 'No such File object: ' + o.input_file_id, 'input_file_id', null];
	if (st.files.get(o.input_file_id).purpose !== 'batch')
		return [400, "Invalid 'input_file_id': the file's purpose must be 'batch'.", 'input_file_id', 'invalid_value'];
	return null;
}

/*
 * Scan a batch input file line by line (no copy of the file).  Returns
 * { starts, ends, cids, model, errors }: the byte range of each line, the
 * custom ids, the first line's full model string, and the validation
 * errors [{code, message, param, line}] (an empty list when valid).
 */
function scanFile(buf, endpoint) {
	const starts = [];
	const ends = [];
	const cids = [];
	const errors = [];
	const seen = new Set();
	let model = null;
	let name = null;
	let inputs = 0;
	let tooManyInputs = false;
	const err = (code, message, param, line) => {
		if (errors.length < ERRORS_KEEP)
			errors.push({ code, message, param, line });
	};
	let pos = 0;
	while (pos < buf.length) {
		const nl = buf.indexOf(10, pos);
		let end = nl < 0 ? buf.length : nl;
		const next = nl < 0 ? buf.length : nl + 1;
		if (end > pos && buf[end - 1] === 13)
			end--;
		const line = starts.length + 1;
		if (line > OA_MAX_LINES) {
			return { starts, ends, cids, model, errors: [{ code: 'too_many_tasks', line: null, param: null,
				message: 'The batch input file holds more than the ' + OA_MAX_LINES + ' requests allowed.' }] };
		}
		starts.push(pos);
		ends.push(end);
		let o;
		try {
			o = JSON.parse(buf.toString('utf8', pos, end));
		} catch (e) {
			o = undefined;
		}
		pos = next;
		if (o === null || typeof o !== 'object' || Array.isArray(o)) {
			err('invalid_json_line', 'This line is not parseable as valid JSON.', null, line);
			cids.push(null);
			continue;
		}
		cids.push(o.custom_id);
		if (typeof o.custom_id !== 'string' || o.custom_id === '')
			err('missing_required_parameter', "Missing required parameter: 'custom_id'.", 'custom_id', line);
		else if (seen.has(o.custom_id))
			err('duplicate_custom_id', 'The custom_id for this request is a duplicate of another request. ' +
				'The custom_id parameter must be unique for each request in a batch.', 'custom_id', line);
		else
			seen.add(o.custom_id);
		if (o.method !== 'POST')
			err('invalid_method', "Invalid 'method': only POST is supported.", 'method', line);
		if (o.url !== endpoint)
			err('url_mismatch', "The provided URL '" + o.url + "' does not match the batch endpoint '" +
				endpoint + "'.", 'url', line);
		const b = o.body;
		if (b === null || typeof b !== 'object' || Array.isArray(b)) {
			err('missing_required_parameter', "Missing required parameter: 'body'.", 'body', line);
			continue;
		}
		if (b.stream === true)
			err('invalid_request', 'Streaming is not supported in batch mode.', 'body.stream', line);
		if (endpoint === '/v1/embeddings') {
			/* OpenAI: an embeddings batch holds at most 50,000 inputs in all */
			inputs += Array.isArray(b.input) ? b.input.length : 1;
			if (inputs > OA_MAX_EMBED_INPUTS && !tooManyInputs) {
				tooManyInputs = true;
				err('too_many_tasks', 'A /v1/embeddings batch holds at most ' + OA_MAX_EMBED_INPUTS +
					' embedding inputs across all its requests.', 'body.input', line);
			}
		}
		if (name === null) {
			name = modelName(b.model);
			model = typeof b.model === 'string' ? b.model : null;
		} else if (modelName(b.model) !== name)
			err('model_mismatch', "The model '" + modelName(b.model) + "' does not match the batch's model '" +
				name + "': a batch uses one model.", 'body.model', line);
	}
	if (starts.length === 0)
		errors.push({ code: 'empty_file', message: 'The batch input file is empty.', param: null, line: null });
	return { starts, ends, cids, model, errors };
}

/* POST .../batches {input_file_id, endpoint, completion_window, metadata?} */
function oaCreate(x, o) {
	const p = oaCreateProblem(o);
	if (p !== null) {
		fail(x, p[0], p[1], p[2], p[3], 'invalid_request_error');
		return;
	}
	const buf = st.files.get(o.input_file_id).parts[0];    /* an upload: one Buffer */
	const scan = scanFile(buf, o.endpoint);
	const now = Date.now();
	const n = scan.starts.length;
	const k = knobs();
	const seq = core.nextId();
	const b = {
		headers: x.req.headers,
		id: 'batch_mock' + seq, seq, endpoint: o.endpoint,
		input_file_id: o.input_file_id, completion_window: '24h', metadata: o.metadata || null,
		created: now, k, n, model: scan.model, buf, starts: scan.starts, ends: scan.ends, cids: scan.cids,
		errors: scan.errors.length ? scan.errors : null, expired: 0, stop: 0, until: 0, done: 0, doneAt: null,
		ok: new Uint8Array(n), results: new Array(n), inTok: 0, outTok: 0, dropped: false,
		cancelAt: null, cancelK: 0, final: null, output_file_id: null, error_file_id: null,
	};
	st.batches.set(b.id, b);
	st.counts.batches.openai++;
	st.counts.batch_requests += n;
	core.setArrivalModel(x.arrival, scan.model);
	if (b.errors === null) {
		b.expired = expiredCount(n, k.expire);
		b.stop = b.until = n - b.expired;
		if (b.stop > 0)
			setImmediate(() => oaPump(b));
		else
			b.doneAt = now;
	} else {
		b.buf = b.starts = b.ends = b.cids = b.results = null;
	}
	reply(x, oaObject(b, now, 'validating'));
}

/* Answer the requests of OpenAI batch b in slices. */
function oaPump(b) {
	pump(b, core.OPENAI, (i) => {
		const o = JSON.parse(b.buf.toString('utf8', b.starts[i], b.ends[i]));
		return o.body;
	}, (i, a) => oaOutputLine(b.cids[i], a) + '\n');
}

/* The phase times of OpenAI batch b: in_progress from v, finalizing from p,
 * done at c (all in ms). */
function oaPhases(b) {
	const C = b.k.C;
	return { v: b.created + C / 3, p: b.created + 2 * C / 3, c: b.created + C };
}

/* The status of OpenAI batch b at `now`; reaching a terminal state builds
 * the output and error files. */
function oaStatus(b, now) {
	if (b.final)
		return b.final.status;
	const ph = oaPhases(b);
	if (b.cancelAt !== null)
		return oaFinish(b, 'cancelled', now);
	if (b.errors !== null)
		return now >= ph.v ? oaFinish(b, 'failed', now) : 'validating';
	if (now < ph.v)
		return 'validating';
	if (now < ph.p || b.doneAt === null)
		return 'in_progress';
	if (now < ph.c)
		return 'finalizing';
	return oaFinish(b, b.expired > 0 ? 'expired' : 'completed', now);
}

/* Enter terminal state `status`: split the answered results into the
 * output file (status 200) and the error file (the rest, plus the expired
 * requests), shuffled if the knob was on, and free the working data. */
function oaFinish(b, status, now) {
	const answered = status === 'cancelled' ? b.cancelK : status === 'failed' ? 0 : b.stop;
	const out = [];
	const errs = [];
	let outBytes = 0;
	let errBytes = 0;
	for (let i = 0; i < answered; i++) {
		const s = b.results[i];
		if (b.ok[i] === 1) {
			out.push(s);
			outBytes += Buffer.byteLength(s);
		} else {
			errs.push(s);
			errBytes += Buffer.byteLength(s);
		}
	}
	if (status === 'expired')
		for (let i = b.stop; i < b.n; i++) {
			const s = oaExpiredLine(b.cids[i]) + '\n';
			errs.push(s);
			errBytes += Buffer.byteLength(s);
		}
	if (b.k.shuffle) {
		shuffle(out, b.seq);
		shuffle(errs, b.seq + 1);
	}
	if (out.length)
		b.output_file_id = addFile('batch_output', b.id + '_output.jsonl', out, outBytes).id;
	if (errs.length)
		b.error_file_id = addFile('batch_output', b.id + '_error.jsonl', errs, errBytes).id;
	const c = tally(b, answered);
	b.final = { status, at: Math.max(now, b.doneAt || 0), completed: c.ok,
		failed: c.bad + (status === 'expired' ? b.expired : 0) };
	b.dropped = true;
	b.buf = b.starts = b.ends = b.results = b.cids = null;
	return status;
}

/* The Batch object of b; `status` forces the reported status (create). */
function oaObject(b, now, status) {
	if (status === undefined)
		status = oaStatus(b, now);
	const ph = oaPhases(b);
	const f = b.final;
	const at = (ms) => (ms === null ? null : sec(ms));
	const started = status !== 'validating' && status !== 'failed' &&
		(b.cancelAt !== null ? b.cancelAt : now) >= ph.v;
	let counts;
	if (status === 'failed' || status === 'validating')
		counts = { total: status === 'failed' ? 0 : b.n, completed: 0, failed: 0 };
	else if (f)
		counts = { total: b.n, completed: f.completed, failed: f.failed };
	else {
		const k = status === 'cancelling' ? b.cancelK
			: status === 'finalizing' ? b.stop : answeredBy(b, now, ph.v, ph.p);
		const c = tally(b, k);
		counts = { total: b.n, completed: c.ok, failed: c.bad };
	}
	const fin = f ? f.at : null;
	return {
		id: b.id, object: 'batch', endpoint: b.endpoint,
		errors: b.errors ? { object: 'list', data: b.errors } : null,
		input_file_id: b.input_file_id, completion_window: b.completion_window, status,
		output_file_id: b.output_file_id, error_file_id: b.error_file_id,
		created_at: sec(b.created),
		in_progress_at: started ? sec(ph.v) : null,
		expires_at: sec(b.created + DAY_MS),
		finalizing_at: status === 'finalizing' || status === 'completed' ? sec(ph.p) : null,
		completed_at: status === 'completed' ? at(fin) : null,
		failed_at: status === 'failed' ? at(fin) : null,
		expired_at: status === 'expired' ? at(fin) : null,
		cancelling_at: b.cancelAt !== null ? sec(b.cancelAt) : null,
		cancelled_at: status === 'cancelled' ? at(fin) : null,
		request_counts: counts,
		metadata: b.metadata,
		model: b.model === null ? null : modelName(b.model),
		usage: { input_tokens: f ? b.inTok : 0, input_tokens_details: { cached_tokens: 0 },
			output_tokens: f ? b.outTok : 0, output_tokens_details: { reasoning_tokens: 0 },
			total_tokens: f ? b.inTok + b.outTok : 0 },
	};
}

/* Look an OpenAI batch up; answers 404 and returns null when unknown. */
function findBatch(x, id) {
	const b = st.batches.get(id);
	if (!b)
		fail(x, 404, "No batch found with id '" + id + "'.", null, null, 'invalid_request_error');
	return b || null;
}

/* GET .../batches/{id} */
function oaRetrieve(x, id) {
	const b = findBatch(x, id);
	if (b)
		reply(x, oaObject(b, Date.now()));
}

/* POST .../batches/{id}/cancel: cancelling now, cancelled at the next
 * look; requests not answered by now are left out of the results. */
function oaCancel(x, id) {
	const b = findBatch(x, id);
	if (!b)
		return;
	const now = Date.now();
	const status = oaStatus(b, now);
	if (status === 'cancelled') {       /* cancelled before: answered as is */
		reply(x, oaObject(b, now));
		return;
	}
	if (status !== 'validating' && status !== 'in_progress' && status !== 'finalizing') {
		fail(x, 400, "Cannot cancel a batch with status '" + status + "'.", null, null, 'invalid_request_error');
		return;
	}
	const ph = oaPhases(b);
	b.cancelK = status === 'validating' ? 0 : status === 'finalizing' ? b.stop : answeredBy(b, now, ph.v, ph.p);
	b.cancelAt = now;
	b.until = b.done;                   /* compute no further requests */
	st.counts.cancels++;
	reply(x, oaObject(b, now, 'cancelling'));
}

/* GET .../batches?limit=&after=: newest first. */
function oaList(x) {
	const limit = listLimit(x, 'limit', 100);
	if (limit === null)
		return;
	const all = [...st.batches.values()].reverse();
	const after = x.query.get('after');
	let from = 0;
	if (after !== null) {
		const i = all.findIndex((b) => b.id === after);
		from = i < 0 ? all.length : i + 1;
	}
	const now = Date.now();
	const page = all.slice(from, from + limit).map((b) => oaObject(b, now));
	reply(x, { object: 'list', data: page, first_id: page.length ? page[0].id : null,
		last_id: page.length ? page[page.length - 1].id : null, has_more: from + limit < all.length });
}

/* The limit query parameter (default 20, 1..max); answers 400 and
 * returns null when invalid. */
function listLimit(x, name, max) {
	const v = x.query.get(name);
	if (v === null)
		return 20;
	if (!/^\d+$/.test(v) || +v < 1 || +v > max) {
		fail(x, 400, "Invalid '" + name + "': expected an integer from 1 to " + max + '.', name, null,
			'invalid_request_error');
		return null;
	}
	return +v;
}

/* ------------------------------------------------------------------ */
/* Anthropic Message Batches: .../messages/batches                     */
/* ------------------------------------------------------------------ */

/* Check the create body; returns null or the 400 message.  The params of
 * each request are checked when it is processed (as Anthropic does): a
 * request the Messages route would refuse ends `errored`. */
function anCreateProblem(o) {
	const rs = o.requests;
	if (!Array.isArray(rs))
		return 'requests: Field required';
	if (rs.length < 1)
		return 'requests: List should have at least 1 item after validation, not 0';
	if (rs.length > AN_MAX_REQUESTS)
		return 'requests: List should have at most ' + AN_MAX_REQUESTS + ' items after validation, not ' + rs.length;
	const seen = new Set();
	for (let i = 0; i < rs.length; i++) {
		const r = rs[i];
		if (r === null || typeof r !== 'object' || Array.isArray(r))
			return 'requests.' + i + ': Input should be a valid dictionary';
		if (typeof r.custom_id !== 'string' || !CUSTOM_ID_RE.test(r.custom_id))
			return 'requests.' + i + ".custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'";
		if (seen.has(r.custom_id))
			return 'requests.' + i + '.custom_id: duplicate custom_id ' + JSON.stringify(r.custom_id) +
				': each custom_id must be unique within the batch';
		seen.add(r.custom_id);
		const p = r.params;
		if (p === null || typeof p !== 'object' || Array.isArray(p))
			return 'requests.' + i + '.params: Field required';
		if (p.stream === true)
			return 'requests.' + i + '.params.stream: streaming is not supported in batch mode';
	}
	return null;
}

/* POST .../messages/batches {"requests": [{custom_id, params}]} */
function anCreate(x, prefix) {
	const o = jsonBody(x);
	if (o === null)
		return;
	const problem = anCreateProblem(o);
	if (problem !== null) {
		fail(x, 400, problem, null, null, 'invalid_request_error');
		return;
	}
	const rs = o.requests;
	const n = rs.length;
	const k = knobs();
	const now = Date.now();
	const seq = core.nextId();
	const id = 'msgbatch_mock' + seq;
	const b = {
		headers: x.req.headers,
		id, seq, created: now, k, n, reqs: rs, cids: rs.map((r) => r.custom_id),
		expired: expiredCount(n, k.expire), stop: 0, until: 0, done: 0, doneAt: null,
		ok: new Uint8Array(n), results: new Array(n), inTok: 0, outTok: 0, dropped: false,
		cancelAt: null, cancelK: 0, final: null,
		resultsUrl: 'http://' + (k.resultsHost || '127.0.0.1') + ':' + x.req.socket.localPort + prefix +
			'/messages/batches/' + id + '/results',
	};
	b.stop = b.until = n - b.expired;
	st.msgBatches.set(id, b);
	st.counts.batches.anthropic++;
	st.counts.batch_requests += n;
	core.setArrivalModel(x.arrival, typeof rs[0].params.model === 'string' ? rs[0].params.model : null);
	if (b.stop > 0)
		setImmediate(() => anPump(b));
	else
		b.doneAt = now;
	reply(x, anObject(b, now, 'in_progress'));
}

/* One Anthropic result line (JSON text, no newline) for answer a. */
function anResultLine(customId, a) {
	const head = '{"custom_id":' + JSON.stringify(customId) + ',"result":';
	if (a.status === 200)
		return head + '{"type":"succeeded","message":' + a.text + '}}';
	const err = a.status === 0
		? core.errorBody(core.ANTHROPIC, 'mock fault ' + a.fault, 'api_error') : a.text;
	return head + '{"type":"errored","error":' + err + '}}';
}

/* Answer the requests of Anthropic batch b in slices. */
function anPump(b) {
	pump(b, core.ANTHROPIC, (i) => {
		const p = b.reqs[i].params;
		b.reqs[i] = null;
		return p;
	}, (i, a) => anResultLine(b.cids[i], a) + '\n');
}

/* The processing status of Anthropic batch b at `now`; ending builds the
 * results. */
function anStatus(b, now) {
	if (b.final)
		return 'ended';
	if (b.cancelAt !== null)
		return anFinish(b, now);
	if (now < b.created + b.k.C || b.doneAt === null)
		return 'in_progress';
	return anFinish(b, now);
}

/* End batch b: results of the answered requests, `canceled` for those a
 * cancel left unanswered, `expired` for the expired ones; shuffled if the
 * knob was on. */
function anFinish(b, now) {
	const cancelled = b.cancelAt !== null;
	const answered = cancelled ? b.cancelK : b.stop;
	const expFrom = cancelled ? b.n : b.stop;
	const lines = [];
	for (let i = 0; i < answered; i++)
		lines.push(b.results[i]);
	for (let i = answered; i < expFrom; i++)
		lines.push('{"custom_id":' + JSON.stringify(b.cids[i]) + ',"result":{"type":"canceled"}}\n');
	for (let i = expFrom; i < b.n; i++)
		lines.push('{"custom_id":' + JSON.stringify(b.cids[i]) + ',"result":{"type":"expired"}}\n');
	if (b.k.shuffle)
		shuffle(lines, b.seq);
	let bytes = 0;
	for (const s of lines)
		bytes += Buffer.byteLength(s);
	const c = tally(b, answered);
	b.final = { at: Math.max(now, b.doneAt || 0), lines, bytes,
		counts: { processing: 0, succeeded: c.ok, errored: c.bad, canceled: expFrom - answered,
			expired: b.n - expFrom } };
	b.dropped = true;
	b.reqs = b.results = b.cids = null;
	return 'ended';
}

/* The message_batch object of b; `status` forces the reported status. */
function anObject(b, now, status) {
	if (status === undefined)
		status = anStatus(b, now);
	const f = b.final;
	return {
		id: b.id, type: 'message_batch', processing_status: status,
		request_counts: f ? f.counts : { processing: b.n, succeeded: 0, errored: 0, canceled: 0, expired: 0 },
		ended_at: f ? iso(f.at) : null,
		created_at: iso(b.created),
		expires_at: iso(b.created + DAY_MS),
		archived_at: null,
		cancel_initiated_at: b.cancelAt !== null ? iso(b.cancelAt) : null,
		results_url: f ? b.resultsUrl : null,
	};
}

/* Look an Anthropic batch up; answers 404 and returns null when unknown. */
function findMsgBatch(x, id) {
	const b = st.msgBatches.get(id);
	if (!b)
		fail(x, 404, 'Message batch not found: ' + id, null, null, 'not_found_error');
	return b || null;
}

/* GET .../messages/batches/{id} */
function anRetrieve(x, id) {
	const b = findMsgBatch(x, id);
	if (b)
		reply(x, anObject(b, Date.now()));
}

/* POST .../messages/batches/{id}/cancel: canceling now, ended at the next
 * look, the requests not answered by now `canceled`. */
function anCancel(x, id) {
	const b = findMsgBatch(x, id);
	if (!b)
		return;
	const now = Date.now();
	if (b.cancelAt !== null) {          /* canceled before: answered as is */
		reply(x, anObject(b, now));
		return;
	}
	if (anStatus(b, now) === 'ended') {
		fail(x, 400, 'Message batch ' + id + ' has already ended and cannot be canceled.', null, null,
			'invalid_request_error');
		return;
	}
	b.cancelK = answeredBy(b, now, b.created, b.created + b.k.C);
	b.cancelAt = now;
	b.until = b.done;                   /* compute no further requests */
	st.counts.cancels++;
	reply(x, anObject(b, now, 'canceling'));
}

/* GET .../messages/batches/{id}/results: the JSONL results once ended. */
function anResults(x, id) {
	const host = String(x.req.headers.host || '');
	st.counts.results_hosts[host] = (st.counts.results_hosts[host] || 0) + 1;
	const b = findMsgBatch(x, id);
	if (!b)
		return;
	if (anStatus(b, Date.now()) !== 'ended') {
		fail(x, 400, 'Message batch ' + id + ' is still in progress: results are available once ' +
			'processing_status is ended.', null, null, 'invalid_request_error');
		return;
	}
	sendParts(x, 'application/binary', b.final.lines, b.final.bytes);
}

/* DELETE .../messages/batches/{id}: only once ended. */
function anDelete(x, id) {
	const b = findMsgBatch(x, id);
	if (!b)
		return;
	if (anStatus(b, Date.now()) !== 'ended') {
		fail(x, 400, 'Message batch ' + id + ' is still in progress: cancel it first.', null, null,
			'invalid_request_error');
		return;
	}
	st.msgBatches.delete(id);
	reply(x, { id, type: 'message_batch_deleted' });
}

/* GET .../messages/batches?limit=&after_id=&before_id=: newest first. */
function anList(x) {
	const limit = listLimit(x, 'limit', 1000);
	if (limit === null)
		return;
	const all = [...st.msgBatches.values()].reverse();
	const after = x.query.get('after_id');
	const before = x.query.get('before_id');
	let from = 0;
	let to = all.length;
	if (after !== null) {
		const i = all.findIndex((b) => b.id === after);
		from = i < 0 ? all.length : i + 1;
	}
	if (before !== null) {
		const i = all.findIndex((b) => b.id === before);
		to = i < 0 ? 0 : i;
		from = Math.max(from, to - limit);
	}
	const now = Date.now();
	const page = all.slice(from, Math.min(to, from + limit)).map((b) => anObject(b, now));
	const more = before !== null ? from > 0 : from + limit < to;
	reply(x, { data: page, has_more: more, first_id: page.length ? page[0].id : null,
		last_id: page.length ? page[page.length - 1].id : null });
}

module.exports = { init, route, reset, stats };
