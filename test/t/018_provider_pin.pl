# provider => on llm.enqueue and llm.create_job (issue 19, point 9): a
# batch goes to the provider its items name, not to the model's first
# route.  The model "m" is served first by "main" (an OpenAI provider: its
# batches go through the Files and Batch API) and then by "relay" (an
# inline batch relay).  Items enqueued with provider => 'relay' form an
# inline batch at the relay (before, with the relay only second, they went
# through main's Files API); a job's items do too; a realtime item named
# for the relay is served there.  llm.queue.provider and llm.batches say
# where the items go.  A provider the model has no route on is refused
# before anything is queued.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_mock();
my $node = llm_node('provider_pin', $port);
ok(wait_workers($node, 1, 30), 'the queue worker runs');
my $base = "http://127.0.0.1:$port";
q1($node, qq{
SELECT llm.create_provider('main', 'openai', '$base/v1', api_key => 'sk-mock');
SELECT llm.create_provider('relay', 'openai', '$base/v1', api_key => 'sk-mock',
                           options => '{"batch_api": "inline"}');
SELECT llm.add_model('m', 'main', 'gpt-4o-mini', priority => 1);
SELECT llm.add_model('m', 'relay', 'deepseek-chat', priority => 2);
CREATE TABLE docs (id int PRIMARY KEY, body text, summary text);
INSERT INTO docs SELECT g, 'doc ' || g FROM generate_series(1, 30) g;
});

my $before = mock_stats($port);
is(q1($node, q{
SELECT count(llm.enqueue(body, 'm', target_table => 'docs', target_column => 'summary',
                         target_key => jsonb_build_object('id', id), via => 'batch_api', provider => 'relay'))
FROM docs WHERE id <= 10}), '10', '10 batch items enqueued for the relay');
is(q1($node, "SELECT DISTINCT provider FROM llm.queue"), 'relay', 'llm.queue says where they go');
ok(poll_until($node, "SELECT count(*) FROM docs WHERE summary = 'echo: ' || body", '10', 60),
	'they are written back');
my $after = mock_stats($port);
is(($after->{batches}{inline} // 0) - ($before->{batches}{inline} // 0), 1, 'through one inline batch at the relay');
is(($after->{batches}{openai} // 0) - ($before->{batches}{openai} // 0), 0, "none through main's Files API");
is(q1($node, "SELECT provider || ' ' || kind || ' ' || upstream_model || ' ' || requests FROM llm.batches"),
	'relay inline deepseek-chat 10', 'llm.batches shows the relay');

# a job's items
q1($node, "SELECT llm.create_job('pinned', 'docs', '{id}', 'Job: {body}', 'summary', model => 'm', "
	  . "via => 'batch_api', provider => 'relay', track_changes => false)");
q1($node, "UPDATE docs SET summary = NULL WHERE id > 10");
is(q1($node, "SELECT llm.run_job('pinned')"), '20', "the job queues its 20 rows");
is(q1($node, "SELECT string_agg(DISTINCT provider, ',') FROM llm.queue WHERE job = 'pinned'"), 'relay',
	"the job's items go to the relay");
ok(poll_until($node, "SELECT count(*) FROM docs WHERE summary = 'echo: Job: ' || body", '20', 60),
	"the job's items are written back");
is(q1($node, "SELECT string_agg(DISTINCT provider || ' ' || kind, ',') FROM llm.batches"), 'relay inline',
	"every batch went to the relay");

# a realtime item named for the relay is served there
is(q1($node, "SELECT llm.enqueue('one', 'm', provider => 'relay') IS NOT NULL"), 't', 'a realtime item for the relay');
ok(poll_until($node, "SELECT status FROM llm.queue WHERE prompt = 'one'", 'done', 30), 'it is done');
is(q1($node, "SELECT provider || ' ' || upstream_model FROM llm.usage WHERE mode = 'queue'"),
	'relay deepseek-chat', 'by the relay');

# a provider the model has no route on
my ($rc, $out, $err) = $node->psql('postgres',
	"SELECT llm.enqueue('x', 'm', provider => 'mock', via => 'batch_api')");
like($err, qr/model "m" has no route on provider "mock"/, 'a provider without a route of the model is refused');
like($err, qr/llm.add_model\('m', 'mock'/, '... with the way to add one');
($rc, $out, $err) = $node->psql('postgres',
	"SELECT llm.create_job('bad', 'docs', '{id}', '{body}', 'summary', model => 'm', provider => 'nowhere')");
like($err, qr/model "m" has no route on provider "nowhere"/, 'create_job refuses it too');
is(q1($node, "SELECT count(*) FROM llm.queue WHERE prompt = 'x'"), '0', 'nothing was queued');

$node->stop;
stop_mock();
done_testing();
