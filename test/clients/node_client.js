'use strict';
/*
 * The node-postgres client of the streaming client matrix
 * (test/clients/run.sh).  Runs llm.chat_stream('hi', MODEL) one way and
 * prints, one line each, what reached it and when (wall clock,
 * microseconds since the epoch, comparable with the mock provider's
 * trace):
 *
 *     <t_us> ROW <text>            a row
 *     <t_us> EV <NAME> [detail]    CANCEL, BREAK, ERROR <sqlstate> <msg>,
 *                                  AFTER <value of SELECT 1>, DONE
 *
 * usage: node node_client.js MODE MODEL [N]
 *
 *   query          pg: client.query(new Query(text)), 'row' events
 *   qs1            pg-query-stream, batchSize 1, for await
 *   qs100          pg-query-stream with its default batch size (100)
 *   query-cancel N     Query row events; after N rows the pg cancel API
 *                      (new Client().cancel(client, query): a second
 *                      connection sends a CancelRequest)
 *   query-cancel-sql N Query row events; after N rows a second client runs
 *                      SELECT pg_cancel_backend(pid)
 *   qs1-break N        pg-query-stream, batchSize 1; break out of the
 *                      for await after N rows (which destroys the stream:
 *                      its cursor is closed)
 *   qs1-cancel N       pg-query-stream, batchSize 1; the pg cancel API
 *                      after N rows
 *
 * Every mode that stops a stream then runs SELECT 1 on the same connection.
 * Connection from the PG* environment variables (node-postgres reads them).
 */
const { Client, Query } = require('pg');
const QueryStream = require('pg-query-stream');

const T0_US = BigInt(Date.now()) * 1000n;
const HR0 = process.hrtime.bigint();
/* wall clock in µs: one Date.now() plus hrtime deltas, as the mock does */
function nowUs() {
  return (T0_US + (process.hrtime.bigint() - HR0) / 1000n).toString();
}
function out(t, kind, text) {
  process.stdout.write(`${t} ${kind} ${text}\n`);
}
function row(text) {
  out(nowUs(), 'ROW', String(text).replace(/[\r\n]+$/, ''));
}
function ev(name, detail) {
  out(nowUs(), 'EV', detail === undefined ? name : `${name} ${detail}`);
}
function error(err) {
  ev('ERROR', `${err.code || '?'} ${String(err.message).split('\n')[0]}`);
}

async function after(client) {
  try {
    const r = await client.query('SELECT 1 AS v');
    ev('AFTER', String(r.rows[0].v));
  } catch (err) {
    ev('AFTER-FAILED', String(err.message));
  }
}

/* Rows of a Query through its 'row' events; onRow(k) after row k. */
function runQuery(client, text, values, onRow) {
  return new Promise((resolve) => {
    const q = new Query(text, values);
    let k = 0;
    q.on('row', (r) => {
      row(r.c);
      k++;
      if (onRow)
        onRow(k, q);
    });
    q.on('error', (err) => { error(err); resolve(); });
    q.on('end', () => resolve());
    client.query(q);
  });
}

async function main() {
  const [mode, model, nArg] = process.argv.slice(2);
  const n = Number(nArg || 0);
  const text = 'SELECT llm.chat_stream($1, $2) AS c';
  const values = ['hi', model];
  const client = new Client();
  await client.connect();

  if (mode === 'query') {
    await runQuery(client, text, values);
  } else if (mode === 'qs1' || mode === 'qs100') {
    const qs = new QueryStream(text, values, mode === 'qs1' ? { batchSize: 1 } : {});
    for await (const r of client.query(qs))
      row(r.c);
  } else if (mode === 'query-cancel') {
    await runQuery(client, text, values, (k, q) => {
      if (k === n) {
        ev('CANCEL');
        new Client().cancel(client, q);
      }
    });
    await after(client);
  } else if (mode === 'query-cancel-sql') {
    const pid = client.processID;
    const other = new Client();
    await other.connect();
    await runQuery(client, text, values, (k) => {
      if (k === n) {
        ev('CANCEL');
        other.query('SELECT pg_cancel_backend($1)', [pid]).catch((err) => error(err));
      }
    });
    await other.end();
    await after(client);
  } else if (mode === 'qs1-break') {
    const qs = new QueryStream(text, values, { batchSize: 1 });
    let k = 0;
    try {
      for await (const r of client.query(qs)) {
        row(r.c);
        if (++k === n) {
          ev('BREAK');
          break;
        }
      }
    } catch (err) {
      error(err);
    }
    ev('LOOP-LEFT');
    await after(client);
  } else if (mode === 'qs1-cancel') {
    const qs = new QueryStream(text, values, { batchSize: 1 });
    let k = 0;
    try {
      for await (const r of client.query(qs)) {
        row(r.c);
        if (++k === n) {
          ev('CANCEL');
          new Client().cancel(client, qs);
        }
      }
    } catch (err) {
      error(err);
    }
    await after(client);
  } else {
    throw new Error(`node_client.js: unknown mode ${mode}`);
  }
  await client.end();
  ev('DONE');
}

main().catch((err) => {
  ev('FATAL', String(err && err.stack || err).split('\n')[0]);
  process.exit(1);
});
