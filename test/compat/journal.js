#!/usr/bin/env node
// What aimock saw: reads aimock's request journal (GET /__aimock/journal)
// and prints it in a stable form for compat.sql's expected output.
//
//   node journal.js reset   forget the requests seen so far
//   node journal.js count   how many requests, and the status of each
//   node journal.js last    the last request: method, path, the headers
//                           pg_llm sets, and the body as aimock read it
//
// AIMOCK_URL and AIMOCK_KEY come from run.sh.  For the Anthropic protocol
// aimock journals the body after translating it to the OpenAI shape (the
// system prompt as a system message, tool results as tool messages).
'use strict';

const base = process.env.AIMOCK_URL;
const key = process.env.AIMOCK_KEY;
if (!base) {
  console.error('journal.js: AIMOCK_URL is not set');
  process.exit(2);
}
const headers = key ? { authorization: `Bearer ${key}` } : {};

async function call(method, path) {
  const res = await fetch(base + path, { method, headers });
  if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status}`);
  return res.json();
}

// The request headers that say something about pg_llm, in a fixed order;
// aimock redacts the credentials, so only their presence shows.
const SHOWN = ['content-type', 'accept', 'anthropic-version', 'authorization', 'x-api-key'];

function sorted(v) {
  if (Array.isArray(v)) return v.map(sorted);
  if (v && typeof v === 'object') {
    const o = {};
    for (const k of Object.keys(v).sort()) o[k] = sorted(v[k]);
    return o;
  }
  return v;
}

async function main() {
  const cmd = process.argv[2];
  if (cmd === 'reset') {
    await call('POST', '/__aimock/reset/journal');
  } else if (cmd === 'count') {
    const all = await call('GET', '/__aimock/journal');
    const st = all.map((e) => e.response && e.response.status);
    console.log(`aimock saw ${all.length} request(s): ${st.join(', ')}`);
  } else if (cmd === 'last') {
    const all = await call('GET', '/__aimock/journal');
    const e = all[all.length - 1];
    if (!e) {
      console.log('aimock saw no request');
      return;
    }
    console.log(`${e.method} ${e.path} -> ${e.response.status}`);
    for (const h of SHOWN) {
      const v = e.headers[h];
      console.log(`  header ${h}: ${v === undefined ? '(absent)' : v}`);
    }
    const body = e.body || {};
    for (const k of Object.keys(body).sort()) {
      if (k === '_endpointType' || body[k] === undefined) continue;
      console.log(`  body ${k}: ${JSON.stringify(sorted(body[k]))}`);
    }
  } else {
    console.error('usage: journal.js reset|count|last');
    process.exit(2);
  }
}

main().catch((err) => {
  console.error(`journal.js: ${err.message}`);
  process.exit(1);
});
