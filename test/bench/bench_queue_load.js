#!/usr/bin/env node
/*
 * test/bench/bench_queue_load.js: the mock provider's own ceiling for the
 * request shape the queue worker sends (used by bench_queue.sh).
 *
 * Like test/mock/load.js (raw client): C keep-alive connections on plain
 * TCP sockets, each sending one non-streaming request at a time until N
 * requests are done or the time limit is hit; the client parses only the
 * status line and Content-Length, so it costs little and the figure is the
 * mock's.  The difference is the request: it replays one request the
 * worker really sent, as logged by the mock's GET /_requests (path,
 * headers and body, the key restored from --key), with the trailing
 * number of the last user message replaced by a counter, so that every
 * request has its own prompt as the queue items do ("Summarize: document
 * 17" becomes "... 1", "... 2", ...).  --model replaces the body's model
 * (e.g. to add ?latency=50).
 *
 * Prints one JSON line: requests, errors, seconds, rps, p50_ms, p99_ms,
 * request_bytes.  Loopback only, standard library only.
 *
 * usage: node bench_queue_load.js --port P --request FILE [--conc C]
 *        [--requests N] [--model M] [--key K] [--max-seconds S]
 */
'use strict';

const fs = require('fs');
const net = require('net');

function parseArgs(argv) {
	const o = { port: 0, request: '', conc: 50, requests: 20000, model: '', key: 'sk-mock', maxSeconds: 60 };
	const names = { '--port': 'port', '--request': 'request', '--conc': 'conc', '--requests': 'requests',
		'--model': 'model', '--key': 'key', '--max-seconds': 'maxSeconds' };
	for (let i = 0; i < argv.length; i += 2) {
		const k = names[argv[i]];
		if (!k || i + 1 >= argv.length) {
			process.stderr.write('bench_queue_load.js: bad argument ' + argv[i] + '\n');
			process.exit(2);
		}
		o[k] = typeof o[k] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
	}
	if (!o.port || !o.request) {
		process.stderr.write('bench_queue_load.js: --port and --request are required\n');
		process.exit(2);
	}
	return o;
}

/* A function i -> request bytes, from one logged request. */
function requestMaker(o) {
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

	let head = 'POST ' + logged.path + ' HTTP/1.1\r\nHost: 127.0.0.1:' + o.port + '\r\n';
	for (const [k, v] of Object.entries(logged.headers)) {
		const lk = k.toLowerCase();
		if (lk === 'host' || lk === 'content-length' || lk === 'connection' || lk === 'transfer-encoding')
			continue;
		head += k + ': ' + (lk === 'authorization' ? 'Bearer ' + o.key : lk === 'x-api-key' ? o.key : v) + '\r\n';
	}
	return (i) => {
		if (last)
			last.content = prefix + i;
		const b = JSON.stringify(body);
		return Buffer.from(head + 'Content-Length: ' + Buffer.byteLength(b) + '\r\n\r\n' + b);
	};
}

function nowMs() {
	return Number(process.hrtime.bigint()) / 1e6;
}

function run(o, make) {
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

async function main() {
	const o = parseArgs(process.argv.slice(2));
	const make = requestMaker(o);
	const t0 = nowMs();
	const r = await run(o, make);
	const secs = (nowMs() - t0) / 1000;
	r.lat.sort((a, b) => a - b);
	const pct = (p) => r.lat.length ? r.lat[Math.min(r.lat.length - 1, Math.floor(p * r.lat.length))] : 0;
	process.stdout.write(JSON.stringify({
		conc: o.conc, model: o.model, requests: r.done, errors: r.errors, seconds: +secs.toFixed(3),
		rps: Math.round(r.done / secs), p50_ms: +pct(0.5).toFixed(3), p99_ms: +pct(0.99).toFixed(3),
		request_bytes: r.bytes,
	}) + '\n');
}

main();
