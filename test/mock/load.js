#!/usr/bin/env node
/*
 * test/mock/load.js: a small closed-loop load generator for the mock
 * provider (used by ceiling.sh).  C keep-alive connections each send one
 * non-streaming request at a time until N requests are done or the time
 * limit is hit, then it prints one JSON line with the throughput and the
 * latency percentiles.
 *
 * Two clients: "raw" (default) writes a prebuilt request on plain TCP
 * sockets and parses only the status line and Content-Length, so the
 * client costs little and the figure is the mock's own ceiling; "http"
 * uses http.request over an http.Agent with keepAlive, as a Node
 * application would.  Loopback only, standard library only.
 *
 * --request FILE replays, with the raw client, one request a client really
 * sent as logged by the mock's GET /_requests (path, headers and body, the
 * key restored from --key), with the trailing number of the last user
 * message replaced by a counter, so that every request has its own prompt
 * (test/bench/bench_queue.sh uses it to replay the queue worker's
 * requests); --model then replaces the body's model.
 *
 * usage: node load.js --port P [--conc C] [--requests N] [--model M]
 *        [--proto openai|anthropic] [--key K] [--client raw|http]
 *        [--max-seconds S] [--request FILE]
 */
'use strict';

const fs = require('fs');
const net = require('net');
const http = require('http');

/* Parse --name value pairs into an options object. */
function parseArgs(argv) {
	const o = { port: 0, conc: 1, requests: 20000, model: '', proto: 'openai',
		key: 'sk-mock', client: 'raw', maxSeconds: 60, request: '' };
	const names = { '--port': 'port', '--conc': 'conc', '--requests': 'requests',
		'--model': 'model', '--proto': 'proto', '--key': 'key', '--client': 'client',
		'--max-seconds': 'maxSeconds', '--request': 'request' };
	for (let i = 0; i < argv.length; i += 2) {
		const k = names[argv[i]];
		if (!k || i + 1 >= argv.length) {
			process.stderr.write('load.js: bad argument ' + argv[i] + '\n');
			process.exit(2);
		}
		o[k] = typeof o[k] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
	}
	if (!o.request && !o.model)
		o.model = 'mock';
	if (!o.port) {
		process.stderr.write('load.js: --port is required\n');
		process.exit(2);
	}
	return o;
}

/* The request path, headers and body for the chosen protocol. */
function requestParts(o) {
	if (o.proto === 'anthropic')
		return {
			path: '/v1/messages',
			headers: { 'x-api-key': o.key, 'anthropic-version': '2023-06-01', 'Content-Type': 'application/json' },
			body: JSON.stringify({ model: o.model, max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] }),
		};
	return {
		path: '/v1/chat/completions',
		headers: { 'Authorization': 'Bearer ' + o.key, 'Content-Type': 'application/json' },
		body: JSON.stringify({ model: o.model, messages: [{ role: 'user', content: 'hi' }] }),
	};
}

/* The bytes of one raw request. */
function rawRequest(o, path, headers, body) {
	let head = 'POST ' + path + ' HTTP/1.1\r\nHost: 127.0.0.1:' + o.port + '\r\n';
	for (const [k, v] of Object.entries(headers))
		head += k + ': ' + v + '\r\n';
	return Buffer.from(head + 'Content-Length: ' + Buffer.byteLength(body) + '\r\n\r\n' + body);
}

/*
 * A function i -> request bytes: the same request every time, or a logged
 * one (--request) with the counter in its last user message.
 */
function requestMaker(o) {
	if (!o.request) {
		const parts = requestParts(o);
		const bytes = rawRequest(o, parts.path, parts.headers, parts.body);
		return () => bytes;
	}
	let logged = JSON.parse(fs.readFileSync(o.request, 'utf8'));
	if (Array.isArray(logged))
		logged = logged[logged.length - 1];
	const body = typeof logged.body === 'string' ? JSON.parse(logged.body) : logged.body;
	if (o.model)
		body.model = o.model;
	const msgs = body.messages || [];
	let last = null;
	for (let j = msgs.length - 1; j >= 0; j--)
		if (msgs[j].role === 'user' && typeof msgs[j].content === 'string') {
			last = msgs[j];
			break;
		}
	const prefix = last ? last.content.replace(/\d+$/, '') : '';
	const headers = {};
	for (const [k, v] of Object.entries(logged.headers)) {
		const lk = k.toLowerCase();
		if (lk === 'host' || lk === 'content-length' || lk === 'connection' || lk === 'transfer-encoding')
			continue;
		headers[k] = lk === 'authorization' ? 'Bearer ' + o.key : lk === 'x-api-key' ? o.key : v;
	}
	return (i) => {
		if (last)
			last.content = prefix + i;
		return rawRequest(o, logged.path, headers, JSON.stringify(body));
	};
}

/* Monotonic milliseconds. */
function nowMs() {
	return Number(process.hrtime.bigint()) / 1e6;
}

/* Raw-socket client: resolves with { done, errors, lat[], bytes }. */
function runRaw(o, make) {
	const deadline = nowMs() + o.maxSeconds * 1000;
	const lat = [];
	let issued = 0;
	let done = 0;
	let errors = 0;
	let open = 0;
	let bytes = 0;

	return new Promise((resolve) => {
		const finish = () => {
			if (--open === 0)
				resolve({ done, errors, lat, bytes });
		};
		for (let c = 0; c < o.conc; c++) {
			const sock = net.connect(o.port, '127.0.0.1');
			sock.setNoDelay(true);
			open++;
			let buf = null;
			let t0 = 0;
			const next = () => {
				if (issued >= o.requests || nowMs() > deadline) {
					sock.end();
					return;
				}
				const req = make(++issued);

				bytes = req.length;
				t0 = nowMs();
				sock.write(req);
			};
			sock.on('connect', next);
			sock.on('data', (chunk) => {
				buf = buf ? Buffer.concat([buf, chunk]) : chunk;
				for (;;) {
					const he = buf.indexOf('\r\n\r\n');
					if (he < 0)
						return;
					const headText = buf.toString('latin1', 0, he);
					const m = /\r\ncontent-length: *(\d+)/i.exec(headText);
					const need = he + 4 + (m ? parseInt(m[1], 10) : 0);
					if (buf.length < need)
						return;
					if (headText.slice(9, 12) !== '200')
						errors++;
					done++;
					lat.push(nowMs() - t0);
					buf = buf.length === need ? null : buf.subarray(need);
					next();
					if (!buf)
						return;
				}
			});
			sock.on('error', () => {
				errors++;
			});
			sock.on('close', finish);
		}
	});
}

/* http.Agent client: resolves with { done, errors, lat[] }. */
function runHttp(o, parts) {
	const agent = new http.Agent({ keepAlive: true, maxSockets: o.conc });
	const deadline = nowMs() + o.maxSeconds * 1000;
	const lat = [];
	let issued = 0;
	let done = 0;
	let errors = 0;
	let workers = o.conc;

	return new Promise((resolve) => {
		const loop = () => {
			if (issued >= o.requests || nowMs() > deadline) {
				if (--workers === 0) {
					agent.destroy();
					resolve({ done, errors, lat });
				}
				return;
			}
			issued++;
			const t0 = nowMs();
			const req = http.request({ host: '127.0.0.1', port: o.port, method: 'POST', path: parts.path,
				headers: parts.headers, agent }, (res) => {
				res.resume();
				res.on('end', () => {
					if (res.statusCode !== 200)
						errors++;
					done++;
					lat.push(nowMs() - t0);
					loop();
				});
			});
			req.on('error', () => {
				errors++;
				loop();
			});
			req.end(parts.body);
		};
		for (let c = 0; c < o.conc; c++)
			loop();
	});
}

/* Run the load and print the summary line. */
async function main() {
	const o = parseArgs(process.argv.slice(2));
	const t0 = nowMs();
	const r = o.client === 'http' ? await runHttp(o, requestParts(o)) : await runRaw(o, requestMaker(o));
	const secs = (nowMs() - t0) / 1000;
	r.lat.sort((a, b) => a - b);
	const pct = (p) => r.lat.length ? r.lat[Math.min(r.lat.length - 1, Math.floor(p * r.lat.length))] : 0;
	process.stdout.write(JSON.stringify({
		client: o.client, proto: o.proto, model: o.model, conc: o.conc,
		requests: r.done, errors: r.errors, seconds: +secs.toFixed(3),
		rps: Math.round(r.done / secs), p50_ms: +pct(0.5).toFixed(3), p99_ms: +pct(0.99).toFixed(3),
		request_bytes: r.bytes,
	}) + '\n');
}

main();
