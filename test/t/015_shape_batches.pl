# Answers with a shape through the three provider batch APIs (a relay's
# inline /batches, OpenAI Files and Batches, Anthropic Message Batches,
# where the answer is a forced tool's input): every answer validated when
# the batch's results are read; an invalid one goes back to the queue as a
# realtime item whose request carries the answer and the validation error,
# and every row ends with a valid label written into its enum column.  The
# invalid answers are usage rows of their own ("invalid", at the batch
# price); an item whose answers keep breaking the schema fails naming the
# rule.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_mock();
my $node = llm_node('shape_batches', $port, conf => { 'llm.batch_poll_interval' => 1 });
my $base = "http://127.0.0.1:$port";
my $schema = '{"type": "object", "properties": {"label": {"type": "string", "enum": ["positive", "neutral", "negative"]}}, "required": ["label"], "additionalProperties": false}';
q1($node, qq{
SELECT llm.create_provider('relay', 'openai', '$base/v1', api_key => 'sk-mock',
                           options => '{"batch_api": "inline"}');
SELECT llm.create_provider('claude', 'anthropic', '$base/anthropic/v1', api_key => 'sk-mock');
SELECT llm.add_model('inl', 'relay', 'relay-x?shape=label&when=bad');
SELECT llm.add_model('oai', 'mock', 'gpt-x?shape=missing&when=bad', input_usd_per_mtok => 2, output_usd_per_mtok => 4);
SELECT llm.add_model('ant', 'claude', 'claude-x?shape=type&when=bad');
SELECT llm.add_model('ant-stubborn', 'claude', 'claude-y?shape=prose&shape_times=9');
CREATE TYPE mood AS ENUM ('positive', 'neutral', 'negative');
CREATE TABLE reviews (id int PRIMARY KEY, body text NOT NULL, mood mood);
});
ok(wait_workers($node, 1, 30), 'the queue worker runs');

sub wait_finished
{
	return poll_until($node,
		"SELECT count(*) FROM llm.queue WHERE status IN ('pending', 'running', 'submitted')", '0', 90);
}

for my $model ('inl', 'oai', 'ant')
{
	q1($node, qq{
DELETE FROM llm.queue;
TRUNCATE reviews, llm.usage;
INSERT INTO reviews SELECT g, CASE WHEN g % 20 = 0 THEN 'bad: ' ELSE '' END ||
    (ARRAY['love it', 'crashes all the time', 'it arrived'])[1 + g % 3] || ' #' || g
FROM generate_series(1, 60) g;
SELECT count(llm.enqueue(body, '$model', target_table => 'reviews', target_column => 'mood',
                         target_key => jsonb_build_object('id', id), via => 'batch_api',
                         options => jsonb_build_object('json_schema', '$schema'::jsonb)))
FROM reviews;
});
	ok(wait_finished(), "$model: the batch and the items asked again finish");
	is(q1($node, 'SELECT count(mood) FROM reviews'), '60', "$model: every row has a valid label");
	is(q1($node, q{SELECT string_agg(via || ' ' || status || ' ' || invalid_answers || ': ' || n, ', ' ORDER BY via)
	               FROM (SELECT via, status, invalid_answers, count(*) n FROM llm.queue GROUP BY 1, 2, 3) s}),
		'batch_api done 0: 57, realtime done 1: 3', "$model: 3 invalid answers sent again realtime");
	ok(poll_until($node, 'SELECT count(*) FROM llm.usage', '63', 30), "$model: 63 usage rows");
	is(q1($node, q{SELECT string_agg(mode || ' ' || outcome || ': ' || n, ', ' ORDER BY mode, outcome)
	               FROM (SELECT mode, outcome, count(*) n FROM llm.usage GROUP BY 1, 2) s}),
		'batch_api invalid: 3, batch_api ok: 57, queue ok: 3', "$model: the invalid answers paid, as invalid");
	# the invalid answers of a batch are priced at the batch price, like the others
	is(q1($node, q{SELECT count(*) FROM llm.usage WHERE cost_usd IS NULL}), '0',
		"$model: every answer is priced") if $model eq 'oai';
}

# answers that keep breaking the schema: the item fails, saying where and why
q1($node, qq{
DELETE FROM llm.queue;
SELECT llm.enqueue('love it', 'ant-stubborn', target_table => 'reviews', target_column => 'mood',
                   target_key => '{"id": 1}', via => 'batch_api',
                   options => jsonb_build_object('json_schema', '$schema'::jsonb));
});
ok(wait_finished(), 'the stubborn item finishes');
like(q1($node, q{SELECT status || ' ' || invalid_answers || ' ' || error FROM llm.queue}),
	qr/^failed 2 answer of provider "claude" does not match the JSON schema: model "ant-stubborn" was asked 2 times; its last answer breaks the schema at \$, rule "json"/,
	'it fails after llm.validation_retries, naming provider, model, path and rule');

$node->stop;
done_testing();
