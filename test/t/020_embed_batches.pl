# Embeddings through provider batch APIs (via => 'batch_api'), against the
# mock: the OpenAI Batch API with endpoint /v1/embeddings, one model per
# file and one input a line, each vector written into its row (pgvector's
# vector(64) when pgvector is installed, as test/embed_test.sh does, else
# real[]) exactly as a realtime one, its usage at the batch price; what
# goes wrong with one input (over the model's limit, a non-numeric vector,
# one of the wrong dimensions, none at all) fails that item alone, nothing
# written wrong and nothing paid twice; kill -9 after the submission
# resumes the batch as a batch of embeddings without submitting it again;
# expired requests are sent again, realtime after their last expiry;
# items whose provider no longer has a batch API go realtime; an embedding
# job through the batch API embeds its rows, and again only those whose
# rendered input changed.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use HTTP::Tiny;
use JSON::PP;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_mock();
my $node = llm_node('embed_batches', $port,
	conf => { 'llm.batch_poll_interval' => 1, 'llm.lease_time' => "'30s'" });
my $base = "http://127.0.0.1:$port";
my $vector = q1($node, "SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'") eq '1';
my $type = $vector ? 'vector(64)' : 'real[]';
q1($node, 'CREATE EXTENSION vector') if $vector;
note("target columns are $type");
q1($node, qq{
SELECT llm.add_model('emb', 'mock', 'text-embedding-3-small', input_usd_per_mtok => 20);
SELECT llm.add_model('emb-large', 'mock', 'text-embedding-3-large', input_usd_per_mtok => 130);
SELECT llm.add_model('emb-long', 'mock', 'text-embedding-3-small?max_input_tokens=4', input_usd_per_mtok => 20);
SELECT llm.add_model('emb-nn', 'mock', 'text-embedding-3-small?fault=non_numeric&when=odd', input_usd_per_mtok => 20);
SELECT llm.add_model('emb-wd', 'mock', 'text-embedding-3-small?fault=wrong_dims&when=odd', input_usd_per_mtok => 20);
SELECT llm.add_model('emb-fv', 'mock', 'text-embedding-3-small?fault=fewer_vectors&when=odd', input_usd_per_mtok => 20);
CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL, likes int NOT NULL DEFAULT 0,
                   emb $type, emb_large $type, writes int NOT NULL DEFAULT 0);
INSERT INTO docs (id, body)
SELECT g, 'doc ' || g || ' about ' || (ARRAY['cats', 'dogs', 'bread', 'markets', 'rain'])[g % 5 + 1]
FROM generate_series(1, 500) g;
CREATE FUNCTION count_write() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    NEW.writes := OLD.writes + 1;
    RETURN NEW;
END
\$\$;
CREATE TRIGGER docs_count_write BEFORE UPDATE OF emb, emb_large ON docs
FOR EACH ROW WHEN (NEW.emb IS DISTINCT FROM OLD.emb OR NEW.emb_large IS DISTINCT FROM OLD.emb_large)
EXECUTE FUNCTION count_write();
});
ok(wait_workers($node, 1, 30), 'the queue worker runs');

sub mock_config
{
	my ($knobs) = @_;
	my $r = HTTP::Tiny->new(timeout => 10)->post("$base/_config",
		{ content => encode_json({ batch => $knobs }),
		  headers => { 'Content-Type' => 'application/json' } });
	die "mock /_config: $r->{status} $r->{content}" unless $r->{success};
	return;
}

# a batch as the mock's OpenAI Batch API has it
sub provider_batch
{
	my ($id) = @_;
	my $r = HTTP::Tiny->new(timeout => 10)->get("$base/v1/batches/$id",
		{ headers => { Authorization => 'Bearer sk-mock' } });
	die "mock GET /v1/batches/$id: $r->{status}" unless $r->{success};
	return decode_json($r->{content});
}

sub reset_docs
{
	q1($node, q{
DELETE FROM llm.queue;
DELETE FROM llm._batch;
ALTER TABLE docs DISABLE TRIGGER docs_count_write;
UPDATE docs SET emb = NULL, emb_large = NULL, writes = 0;
ALTER TABLE docs ENABLE TRIGGER docs_count_write;
});
	return;
}

sub enqueue
{
	my ($model, $column, $where, $options) = @_;
	$options //= '{"dimensions": 64}';
	return q1($node, qq{
SELECT count(llm.enqueue_embedding(body, '$model', 'docs', '$column', jsonb_build_object('id', id),
                                   '$options', via => 'batch_api'))
FROM docs WHERE $where});
}

sub wait_finished
{
	my ($timeout) = @_;
	return poll_until($node,
		"SELECT count(*) FROM llm.queue WHERE status IN ('pending', 'running', 'submitted')",
		'0', $timeout // 60);
}

# rows whose vector is the one llm.embed gives now (realtime)
sub right_vectors
{
	my ($column, $model, $where) = @_;
	return q1($node, qq{
SELECT count(*) FROM docs
WHERE $where AND $column = llm.embed(body, '$model', '{"dimensions": 64}')::$type});
}

# ---- OpenAI Batch API: 500 inputs, endpoint /v1/embeddings ----
reset_docs();
mock_config({ complete_after_ms => 1500 });
my $before = mock_stats($port);
is(enqueue('emb', 'emb', 'true'), 500, 'openai: 500 embedding items enqueued with via => batch_api');
ok(wait_finished(60), 'openai: the batch is submitted, polled and read');
is(q1($node, "SELECT string_agg(status || '=' || n, ',' ORDER BY status) FROM "
	  . "(SELECT status, count(*) AS n FROM llm.queue GROUP BY 1) s"), 'done=500', 'openai: every item done');
is(right_vectors('emb', 'emb', 'true'), 500, 'openai: each row holds its own vector, as llm.embed gives it');
is(q1($node, "SELECT count(*) FILTER (WHERE writes = 1) || '/' || count(*) FILTER (WHERE writes > 1) FROM docs"),
	'500/0', 'openai: each row written once');
my $after = mock_stats($port);
is($after->{batches}{openai} - $before->{batches}{openai}, 1, 'openai: one batch');
is($after->{files} - $before->{files}, 1, 'openai: one file uploaded');
is(q1($node, "SELECT kind || ' ' || task || ' ' || status || ' ' || requests || ' ' || succeeded || ' ' || errored "
	  . "FROM llm.batches"), 'openai embed ended 500 500 0', 'openai: llm.batches shows a batch of embeddings');
my $pb = provider_batch(q1($node, 'SELECT provider_batch_id FROM llm.batches'));
is($pb->{endpoint}, '/v1/embeddings', 'openai: the provider\'s batch has the endpoint /v1/embeddings');
is($pb->{request_counts}{completed}, 500, 'openai: the provider ran 500 requests');
ok(poll_until($node, "SELECT count(*) FROM llm.usage WHERE mode = 'batch_api' AND model = 'emb'", 500, 20),
	'openai: one usage row per request');
is(q1($node, "SELECT task || ' ' || outcome || ' ' || count(*) || ' ' || sum(inputs) || ' ' || "
	  . "(sum(input_tokens) > 0) || ' ' || (sum(cost_usd) = sum(input_tokens) * 20 / 1e6 * 0.5) "
	  . "FROM llm.usage WHERE mode = 'batch_api' AND model = 'emb' GROUP BY task, outcome"),
	'embed ok 500 500 true true', 'openai: one input each, at half the input price');
is(q1($node, "SELECT embedded_inputs FROM llm.usage_summary WHERE mode = 'batch_api' AND model = 'emb'"),
	500, 'openai: usage_summary counts the embedded inputs');
is(q1($node, "SELECT batch_calls FROM llm.cost_report() WHERE model = 'emb'"), 500,
	'openai: cost_report counts the batch requests');

# ---- one model per file ----
reset_docs();
mock_config({ complete_after_ms => 0 });
$before = mock_stats($port);
q1($node, "SELECT count(llm.enqueue_embedding(body, m, 'docs', c, jsonb_build_object('id', id), '{\"dimensions\": 64}', "
	  . "via => 'batch_api')) FROM docs, (VALUES ('emb', 'emb'), ('emb-large', 'emb_large')) v(m, c) WHERE id <= 100");
ok(wait_finished(60), 'two models: both batches read');
$after = mock_stats($port);
is($after->{batches}{openai} - $before->{batches}{openai}, 2, 'two models: a batch (a file) for each');
is(q1($node, "SELECT string_agg(model || ':' || requests || ':' || succeeded, ' ' ORDER BY model) FROM llm.batches"),
	'emb:100:100 emb-large:100:100', 'two models: each batch holds its model\'s items');
is(right_vectors('emb', 'emb', 'id <= 100') . '/' . right_vectors('emb_large', 'emb-large', 'id <= 100'),
	'100/100', 'two models: each column holds its model\'s vectors');

# ---- what goes wrong with one input fails that item alone ----
reset_docs();
q1($node, "UPDATE docs SET body = 'odd ' || body WHERE id % 10 = 0");
is(enqueue('emb-long', 'emb', 'id <= 20 AND id % 10 <> 0') + 0, 18, 'faults: 18 short inputs enqueued');
q1($node, "UPDATE docs SET body = 'this odd one is far too long for it' WHERE id IN (10, 20)");
is(enqueue('emb-long', 'emb', 'id IN (10, 20)'), 2, 'faults: and 2 over the model\'s limit');
is(enqueue('emb-nn', 'emb', 'id BETWEEN 21 AND 40'), 20, 'faults: 20 items, 2 of them answered with a non-numeric vector');
is(enqueue('emb-wd', 'emb', 'id BETWEEN 41 AND 60'), 20, 'faults: 20 items, 2 answered with 63 dimensions');
is(enqueue('emb-fv', 'emb', 'id BETWEEN 61 AND 80'), 20, 'faults: 20 items, 2 answered without a vector');
is(enqueue('emb', 'emb', 'id BETWEEN 81 AND 90', '{}'), 10,
	'faults: 10 items without dimensions asked, into a 64-dimension column');
ok(wait_finished(60), 'faults: the batches are read');
is(q1($node, "SELECT string_agg(model || ':' || done || '/' || failed, ' ' ORDER BY model) FROM ("
	  . "SELECT model, count(*) FILTER (WHERE status = 'done') AS done, count(*) FILTER (WHERE status = 'failed') AS failed "
	  . "FROM llm.queue GROUP BY 1) s"),
	($vector ? 'emb:0/10' : 'emb:10/0') . ' emb-fv:18/2 emb-long:18/2 emb-nn:18/2 emb-wd:18/2',
	'faults: each faulty input fails alone');
is(q1($node, "SELECT count(*) FROM docs WHERE id <= 80 AND emb IS NULL"), 8, 'faults: nothing written for them');
is(right_vectors('emb', 'emb', 'id <= 80 AND id % 10 <> 0'), 72, 'faults: the others written right');
is(q1($node, "SELECT error FROM llm.queue WHERE model = 'emb-long' AND status = 'failed' LIMIT 1"),
	'provider "mock" answered the batch request with an error: HTTP 400: This model\'s maximum context length is 4 tokens, '
	  . 'however you requested 9 tokens (9 in your prompt; 0 for the completion). Please reduce your prompt; or completion length.',
	'faults: an input over the limit fails with the provider\'s words');
is(q1($node, "SELECT error FROM llm.queue WHERE model = 'emb-nn' AND status = 'failed' LIMIT 1"),
	'provider "mock" returned no usable vector for this input: Element 1 of the reply\'s vector for this input is not a number.',
	'faults: a non-numeric vector');
is(q1($node, "SELECT error FROM llm.queue WHERE model = 'emb-wd' AND status = 'failed' LIMIT 1"),
	'provider "mock" returned no usable vector for this input: The reply\'s vector has 63 dimensions; 64 were asked for.',
	'faults: a vector of other dimensions than asked for');
is(q1($node, "SELECT error FROM llm.queue WHERE model = 'emb-fv' AND status = 'failed' LIMIT 1"),
	'provider "mock" returned no usable vector for this input: The reply has no vector for this input.',
	'faults: no vector at all');
SKIP:
{
	skip 'pgvector is not installed', 2 unless $vector;
	like(q1($node, "SELECT error FROM llm.queue WHERE model = 'emb' AND status = 'failed' LIMIT 1"),
		qr/expected 64 dimensions, not 1536/, 'faults: a vector that does not fit the column fails at its write-back');
	is(q1($node, "SELECT count(*) FROM llm.queue WHERE model = 'emb' AND status = 'failed' "
		  . "AND array_length(string_to_array(trim(both '[]' from reply), ','), 1) = 1536"), 10,
		'faults: with its vector kept');
}
ok(poll_until($node, "SELECT count(*) FROM llm.usage WHERE mode = 'batch_api' AND model IN ('emb-fv', 'emb-long', 'emb-nn', 'emb-wd')",
		80, 20), 'faults: one usage row per request');
ok(poll_until($node, "SELECT count(*) FROM llm.usage WHERE mode = 'batch_api' AND model = 'emb'", 610, 20),
	'faults: those whose write-back failed paid once (500 + 100 + 10 in all)');
is(q1($node, "SELECT string_agg(model || ':' || outcome || ':' || n, ' ' ORDER BY model, outcome) FROM ("
	  . "SELECT model, outcome, count(*) AS n FROM llm.usage WHERE mode = 'batch_api' "
	  . "AND model IN ('emb-fv', 'emb-long', 'emb-nn', 'emb-wd') GROUP BY 1, 2) s"),
	'emb-fv:error:2 emb-fv:ok:18 emb-long:error:2 emb-long:ok:18 emb-nn:error:2 emb-nn:ok:18 emb-wd:error:2 emb-wd:ok:18',
	'faults: the failed requests in llm.usage as errors');

# ---- kill -9 after the submission: resumed as a batch of embeddings ----
reset_docs();
mock_config({ complete_after_ms => 4000 });
$before = mock_stats($port);
is(enqueue('emb', 'emb', 'id <= 200'), 200, 'kill -9: 200 items enqueued');
ok(poll_until($node, "SELECT count(*) FROM llm.batches WHERE status = 'submitted' AND provider_batch_id IS NOT NULL",
		1, 30), 'kill -9: the batch is submitted and its id recorded');
my ($pid) = worker_pids($node);
kill 'KILL', $pid;
ok(wait_workers($node, 1, 60, $pid), 'kill -9: a new worker runs');
ok(wait_finished(60), 'kill -9: the batch is resumed and read');
is(right_vectors('emb', 'emb', 'id <= 200'), 200, 'kill -9: every vector written right');
is(q1($node, "SELECT count(*) FROM docs WHERE writes > 1"), 0, 'kill -9: no row written twice');
$after = mock_stats($port);
is($after->{batches}{openai} - $before->{batches}{openai}, 1, 'kill -9: the batch was submitted once');

# ---- expired requests: sent again, realtime after the last expiry ----
reset_docs();
mock_config({ complete_after_ms => 0, expire_fraction => 1 });
is(enqueue('emb', 'emb', 'id <= 10'), 10, 'expiries: 10 items enqueued, every request expiring');
ok(wait_finished(90), 'expiries: the items end');
mock_config({ expire_fraction => 0 });
is(q1($node, "SELECT via || ' ' || count(*) || ' ' || bool_and(status = 'done') FROM llm.queue GROUP BY via"),
	'realtime 10 true', 'expiries: sent realtime after their last expiry, and done');
is(right_vectors('emb', 'emb', 'id <= 10'), 10, 'expiries: the vectors written right');

# ---- a provider without a batch API any more: realtime ----
reset_docs();
q1($node, qq{
BEGIN;
SELECT count(llm.enqueue_embedding(body, 'emb', 'docs', 'emb', jsonb_build_object('id', id),
                                   '{"dimensions": 64}', via => 'batch_api'))
FROM docs WHERE id <= 5;
SELECT llm.alter_provider('mock', options => '{"pass_through": true, "batch_api": "none"}');
COMMIT;
});
ok(wait_finished(60), 'no batch API: the items end');
is(q1($node, "SELECT via || ' ' || count(*) || ' ' || bool_and(status = 'done') || ' ' || count(batch_id) "
	  . "FROM llm.queue GROUP BY via"), 'realtime 5 true 0', 'no batch API: sent realtime');
is(right_vectors('emb', 'emb', 'id <= 5'), 5, 'no batch API: the vectors written right');
q1($node, "SELECT llm.alter_provider('mock', options => '{\"pass_through\": true}')");

# ---- an embedding job through the batch API ----
reset_docs();
q1($node, q{
SELECT llm.create_job('doc_embeddings', 'docs', '{id}', '{body}', 'emb', model => 'emb',
                      options => '{"dimensions": 64}', via => 'batch_api', task => 'embed');
SELECT llm.run_job('doc_embeddings');
});
ok(wait_finished(90), 'job: the backfill is embedded through batches');
is(right_vectors('emb', 'emb', 'true'), 500, 'job: every row embedded');
is(q1($node, "SELECT count(*) || ' ' || sum(requests) || ' ' || bool_and(task = 'embed') FROM llm.batches"),
	'1 500 true', 'job: in one batch of embeddings');
q1($node, "UPDATE docs SET likes = likes + 1");
q1($node, "UPDATE docs SET body = body WHERE id <= 50");
is(q1($node, "SELECT count(*) FROM llm.queue"), 500,
	'job: updates that leave the rendered input as it was queue nothing');
q1($node, "UPDATE docs SET body = 'changed ' || body WHERE id <= 30");
ok(wait_finished(60), 'job: the changed rows are embedded again');
is(right_vectors('emb', 'emb', 'true'), 500, 'job: every row holds the vector of its input');
is(q1($node, "SELECT string_agg(requests::text, ',' ORDER BY id) FROM llm.batches"), '500,30',
	'job: only the 30 changed rows went out again');
q1($node, "SELECT llm.drop_job('doc_embeddings')");

done_testing();
