-- llm.chat_stream: the reply as rows, one per chunk, in order.
-- the mock reads its directives from the model name (mock?fail=500):
-- such names have no route, so they go unchanged to the primary provider
SET llm.pass_through = on;
SELECT llm.chat_stream('one two three', 'mock');
SELECT string_agg(c, '') FROM llm.chat_stream('the whole reply joined', 'mock') c;
-- both protocols
SELECT llm.chat_stream('one two three', 'haiku');
-- with a system prompt and options
SELECT string_agg(c, '') FROM llm.chat_stream('a b c d e', 'mock', system => 'sys',
                                               options => '{"max_tokens": 3}') c;

-- framing quirks: keep-alive comments, CRLF and CR line ends, bytes split
-- anywhere (inside UTF-8 characters and CRLF pairs)
SELECT string_agg(c, '') FROM llm.chat_stream('kept alive', 'mock?fault=comments') c;
SELECT string_agg(c, '') FROM llm.chat_stream('kept alive', 'mock?fault=leading_ws') c;
SELECT string_agg(c, '') FROM llm.chat_stream('crlf framing', 'mock?fault=crlf') c;
SELECT string_agg(c, '') FROM llm.chat_stream('cr framing', 'mock?fault=cr') c;
SELECT string_agg(c, '') FROM llm.chat_stream('x', 'mock?fault=split&reply=caf%C3%A9%20%F0%9F%8E%89%20done') c;
SELECT llm.add_model('c-split', 'claude', 'claude?fault=split&reply=caf%C3%A9%20%F0%9F%8E%89%20done');
SELECT llm.add_model('c-crlf', 'claude', 'claude?fault=crlf');
SELECT llm.add_model('c-comments', 'claude', 'claude?fault=comments');
SELECT string_agg(c, '') FROM llm.chat_stream('x', 'c-split') c;
SELECT string_agg(c, '') FROM llm.chat_stream('crlf framing', 'c-crlf') c;
SELECT string_agg(c, '') FROM llm.chat_stream('pings between', 'c-comments') c;
-- a slow drip still arrives whole
SELECT string_agg(c, '') FROM llm.chat_stream('drip drip drip', 'mock?chunk_delay=20') c;
-- invalid UTF-8 becomes U+FFFD
SELECT string_agg(c, '') FROM llm.chat_stream('x', 'mock?fault=badutf8') c;

-- 429 before the first chunk is retried
SELECT string_agg(c, '') FROM llm.chat_stream('after retry', 'mock?fail=429&times=1&retry_after=0.05') c;
-- fallback before the first chunk
SET llm.max_retries = 0;
SELECT string_agg(c, '') FROM llm.chat_stream('x', 'flaky') c;
-- errors before the first chunk are the same as for llm.chat
SELECT llm.chat_stream('x', 'mock?fail=401');
RESET llm.max_retries;

-- the mock's port, for the checks of what it received
SELECT substring(base_url from ':([0-9]+)/') AS mock_port FROM llm.provider WHERE name = 'mock' \gset
\setenv MOCK_PORT :mock_port
-- a stream that fails before its first row is started again: no row was
-- shown yet (the mock counts two requests for each)
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT count(*) AS rows FROM llm.chat_stream('x', 'mock?fault=truncate&times=1&cut_after=0') c;
SELECT llm.add_model('c-error-first', 'claude', 'claude?fault=error_event&times=1&cut_after=0');
SELECT count(*) AS rows FROM llm.chat_stream('y', 'c-error-first') c;
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("requests", json.load(sys.stdin)["requests"])'

-- honest endings: the rows already delivered, then an error
\set VERBOSITY default
SELECT llm.chat_stream('one two three four five six', 'mock?fault=truncate');
SELECT llm.chat_stream('one two three four five six', 'mock?fault=error_event');
SELECT llm.add_model('c-truncate', 'claude', 'claude?fault=truncate');
SELECT llm.add_model('c-error', 'claude', 'claude?fault=error_event');
SELECT llm.chat_stream('one two three four five six', 'c-truncate');
SELECT llm.chat_stream('one two three four five six', 'c-error');
-- a finish reason followed by a clean end without [DONE] is accepted
SELECT string_agg(c, '') FROM llm.chat_stream('no done marker', 'mock?fault=no_done') c;
-- a stream that goes quiet
SET llm.stream_idle_timeout = 1;
SET llm.max_retries = 0;
\set VERBOSITY terse
SELECT count(*) FROM llm.chat_stream('x', 'mock?fault=hang');
\set VERBOSITY default
RESET llm.stream_idle_timeout;
RESET llm.max_retries;

-- LIMIT stops the stream early; cancel and statement_timeout stop it too
SELECT llm.chat_stream('one two three four five', 'mock?chunk_delay=50') LIMIT 2;
SET statement_timeout = '300ms';
SELECT llm.chat_stream('one two three four five six seven eight nine ten', 'mock?chunk_delay=100');
RESET statement_timeout;
-- the backend is healthy and holds no leftover transfer
SELECT string_agg(c, '') FROM llm.chat_stream('still fine', 'mock') c;
