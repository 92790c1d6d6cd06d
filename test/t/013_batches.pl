# Provider batch APIs (via => 'batch_api') against the mock's three batch
# protocols: each end to end with write-back and usage at the batch price;
# requests the provider refuses fail alone; a relay's inline batch that
# times out is split in half down to single requests; expired requests are
# sent again without using an attempt, and realtime after three expiries;
# kill -9 after a submission never submits twice (Anthropic and
# OpenAI, and OpenAI's lookup by our token when the crash came between the
# provider's answer and our record of it); purging the items of a batch or
# dropping a job cancels the provider batch; a role's rights and budget
# hold for batch items as for realtime ones.
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
my $node = llm_node('batches', $port,
	conf => { 'llm.batch_poll_interval' => 1, 'llm.lease_time' => "'30s'" });
my $base = "http://127.0.0.1:$port";
q1($node, qq{
SELECT llm.create_provider('relay', 'openai', '$base/v1', api_key => 'sk-mock',
                           options => '{"batch_api": "inline", "batch_timeout_ms": 1500}');
SELECT llm.create_provider('claude', 'anthropic', '$base/anthropic/v1', api_key => 'sk-mock');
SELECT llm.add_model('oai', 'mock', 'gpt-4o-mini?fail=400&when=poison&message=refused+here',
                     input_usd_per_mtok => 2, output_usd_per_mtok => 4);
SELECT llm.add_model('ant', 'claude', 'claude-x?fail=400&when=poison&message=refused+there',
                     input_usd_per_mtok => 2, output_usd_per_mtok => 4, batch_price_factor => 0.4);
SELECT llm.add_model('inl', 'relay', 'deepseek-chat');
});
create_docs($node, 300);
ok(wait_workers($node, 1, 30), 'the queue worker runs');

# the mock's batch knobs
sub mock_config
{
	my ($knobs) = @_;
	my $r = HTTP::Tiny->new(timeout => 10)->post("$base/_config",
		{ content => encode_json({ batch => $knobs }),
		  headers => { 'Content-Type' => 'application/json' } });
	die "mock /_config: $r->{status} $r->{content}" unless $r->{success};
	return;
}

# empty the queue and the target rows (their write counter too)
sub reset_docs
{
	q1($node, q{
DELETE FROM llm.queue;
ALTER TABLE docs DISABLE TRIGGER docs_count_write;
UPDATE docs SET summary = NULL, writes = 0, body = 'doc ' || id;
ALTER TABLE docs ENABLE TRIGGER docs_count_write;
TRUNCATE doc_writes;
});
	return;
}

sub enqueue_batch
{
	my ($model, $where) = @_;
	return q1($node, qq{
SELECT count(llm.enqueue(body, '$model', target_table => 'docs', target_column => 'summary',
                         target_key => jsonb_build_object('id', id), via => 'batch_api'))
FROM docs WHERE $where});
}

sub wait_finished
{
	my ($timeout) = @_;
	return poll_until($node,
		"SELECT count(*) FROM llm.queue WHERE status IN ('pending', 'running', 'submitted')",
		'0', $timeout // 60);
}

# every item done or failed as expected, each row written once with its reply
sub check_rows
{
	my ($n, $poisoned, $label) = @_;
	is(q1($node, "SELECT count(*) FILTER (WHERE status = 'done') || '/' || count(*) FILTER (WHERE status = 'failed') FROM llm.queue"),
		($n - $poisoned) . "/$poisoned", "$label: items done and failed");
	is(q1($node, "SELECT count(*) FROM docs WHERE writes = 1 AND summary = 'echo: ' || body"),
		$n - $poisoned, "$label: each answered row written once, with its own reply");
	is(q1($node, "SELECT count(*) FROM docs WHERE writes > 1"), 0, "$label: no row written twice");
	return;
}

# ---- OpenAI Batch: files, batch, polls, output and error files ----
reset_docs();
q1($node, "UPDATE docs SET body = 'poison ' || id WHERE id % 50 = 0");
mock_config({ complete_after_ms => 1500 });
my $before = mock_stats($port);
is(enqueue_batch('oai', 'true'), 300, 'openai: 300 items enqueued with via => batch_api');
ok(wait_finished(60), 'openai: the batch is submitted, polled and read');
check_rows(300, 6, 'openai');
is(q1($node, "SELECT DISTINCT error FROM llm.queue WHERE status = 'failed'"),
	'provider "mock" answered the batch request with an error: HTTP 400: refused here',
	'openai: a refused request fails with the provider\'s words');
my $after = mock_stats($port);
is($after->{batches}{openai} - $before->{batches}{openai}, 1, 'openai: one batch for one model');
is($after->{files} - $before->{files}, 1, 'openai: one file uploaded');
is($after->{requests} - $before->{requests}, 0, 'openai: no realtime call');
is(q1($node, "SELECT kind || ' ' || status || ' ' || requests || ' ' || succeeded || ' ' || errored "
	  . "|| ' ' || (provider_batch_id IS NOT NULL) || ' ' || (submitted_at <= finished_at) FROM llm.batches"),
	'openai ended 300 294 6 true true', 'openai: llm.batches shows the batch and its counts');
ok(poll_until($node, "SELECT count(*) FROM llm.usage WHERE mode = 'batch_api' AND model = 'oai'", 300, 10),
	'openai: one usage row per answered request');
is(q1($node, "SELECT sum(cost_usd) = sum(input_tokens * 2 / 1e6 + output_tokens * 4 / 1e6) * 0.5 "
	  . "FROM llm.usage WHERE mode = 'batch_api' AND model = 'oai' AND outcome = 'ok'"),
	't', 'openai: priced at half the model\'s prices');

# ---- Anthropic Message Batches, with kill -9 after the submission ----
reset_docs();
q1($node, "UPDATE docs SET body = 'poison ' || id WHERE id % 50 = 0");
mock_config({ complete_after_ms => 4000 });
$before = mock_stats($port);
is(enqueue_batch('ant', 'id <= 200'), 200, 'anthropic: 200 items enqueued');
ok(poll_until($node, "SELECT count(*) FROM llm.batches WHERE kind = 'anthropic' AND status = 'submitted' "
		  . "AND provider_batch_id IS NOT NULL", 1, 30),
	'anthropic: the batch is submitted and its id recorded');
my ($pid) = worker_pids($node);
kill 'KILL', $pid;
ok(wait_workers($node, 1, 60, $pid), 'anthropic: a new worker runs after kill -9');
ok(wait_finished(60), 'anthropic: the batch is resumed and read');
check_rows(200, 4, 'anthropic');
$after = mock_stats($port);
is($after->{batches}{anthropic} - $before->{batches}{anthropic}, 1,
	'anthropic: the batch was submitted once, whatever the crash');
is(q1($node, "SELECT DISTINCT error FROM llm.queue WHERE status = 'failed'"),
	'provider "claude" answered the batch request with an error: invalid_request_error: refused there',
	'anthropic: an errored request fails with the provider\'s error');
ok(poll_until($node, "SELECT count(*) FROM llm.usage WHERE mode = 'batch_api' AND model = 'ant'", 200, 10),
	'anthropic: one usage row per answered request');
is(q1($node, "SELECT sum(cost_usd) = sum(input_tokens * 2 / 1e6 + output_tokens * 4 / 1e6) * 0.4 "
	  . "FROM llm.usage WHERE mode = 'batch_api' AND model = 'ant' AND outcome = 'ok'"),
	't', 'anthropic: priced with the model\'s batch_price_factor');

# ---- Anthropic: a results_url on another origin ----
# The provider's key goes only to the provider's own origin: a results_url
# that names another host is not followed; the results are read from the
# documented endpoint under the provider's base URL instead.
reset_docs();
mock_config({ complete_after_ms => 0, results_host => 'localhost' });
$before = mock_stats($port);
is(enqueue_batch('ant', 'id <= 20'), 20, 'results_url elsewhere: 20 items enqueued');
ok(wait_finished(60), 'results_url elsewhere: the batch is read');
check_rows(20, 0, 'results_url elsewhere');
$after = mock_stats($port);
my %hosts = %{ $after->{results_hosts} };
is(join(',', grep { /^localhost/ } sort keys %hosts), '',
	'results_url elsewhere: nothing was requested from the other origin');
ok(($hosts{"127.0.0.1:$port"} // 0) > ($before->{results_hosts}{"127.0.0.1:$port"} // 0),
	'results_url elsewhere: the results came from the provider\'s own origin');
mock_config({ results_host => undef });

# ---- OpenAI: a crash after the provider created the batch, before our record ----
reset_docs();
mock_config({ complete_after_ms => 3000 });
$before = mock_stats($port);
is(enqueue_batch('oai', 'id <= 100'), 100, 'lookup: 100 items enqueued');
ok(poll_until($node, "SELECT count(*) FROM llm.batches WHERE status = 'submitted' AND kind = 'openai'", 1, 30),
	'lookup: the batch is submitted');
# the worker goes elsewhere while the record is made to look as if the
# crash came first; then it comes back
$node->append_conf('postgresql.conf', "llm.database = 'template1'\n");
$node->restart;
q1($node, "UPDATE llm._batch SET provider_batch_id = NULL, status = 'preparing', submitted_at = NULL "
	  . "WHERE status = 'submitted'");
$node->append_conf('postgresql.conf', "llm.database = 'postgres'\n");
$node->restart;
ok(wait_finished(60), 'lookup: the batch is found by its token and read');
check_rows(100, 0, 'lookup');
$after = mock_stats($port);
is($after->{batches}{openai} - $before->{batches}{openai}, 1, 'lookup: no second batch was created');
is($after->{files} - $before->{files}, 1, 'lookup: no second file was uploaded');

# ---- inline: split on timeout, down to single requests ----
reset_docs();
mock_config({ complete_after_ms => 0, inline_max => 10 });
$before = mock_stats($port);
is(enqueue_batch('inl', 'id <= 50'), 50, 'inline: 50 items enqueued');
ok(wait_finished(60), 'inline: the batches time out, are split and answered');
check_rows(50, 0, 'inline split');
is(q1($node, "SELECT string_agg(status || '=' || n, ',' ORDER BY status) FROM "
	  . "(SELECT status, count(*) AS n FROM llm.batches WHERE kind = 'inline' GROUP BY 1) s"),
	'ended=8,split=7', 'inline: 50 split into 25, 12 and 13, 6 and 7: seven splits, eight answers');
$after = mock_stats($port);
is($after->{batches}{inline} - $before->{batches}{inline}, 15, 'inline: the relay saw every try');
reset_docs();
q1($node, "DELETE FROM llm._batch");
mock_config({ inline_max => 1 });
is(enqueue_batch('inl', 'id <= 4'), 4, 'inline: 4 items enqueued, the relay answering single requests only');
ok(wait_finished(60), 'inline: split down to single requests');
check_rows(4, 0, 'inline single');
is(q1($node, "SELECT count(*) FILTER (WHERE status = 'split') || '/' || count(*) FILTER (WHERE status = 'ended' AND requests = 1) "
	  . "FROM llm.batches"), '3/4', 'inline: 4, then 2 and 2, then four single requests');
mock_config({ inline_max => 0 });

# ---- OpenAI: expired requests are sent again ----
reset_docs();
q1($node, "DELETE FROM llm._batch");
mock_config({ complete_after_ms => 500, expire_fraction => 0.2 });
is(enqueue_batch('oai', 'id <= 50'), 50, 'expiry: 50 items enqueued');
# the mock takes its knobs when the provider batch is created: the
# fraction is set back only once it is (a row in llm.batches comes before)
ok(poll_until($node, "SELECT count(*) FROM llm.batches WHERE provider_batch_id IS NOT NULL", 1, 30),
	'expiry: the first batch is created at the provider');
mock_config({ expire_fraction => 0 });
ok(wait_finished(60), 'expiry: the expired requests went out again');
check_rows(50, 0, 'expiry');
is(q1($node, "SELECT string_agg(requests || ':' || succeeded || ':' || expired, ' ' ORDER BY id) FROM llm.batches"),
	'50:40:10 10:10:0', 'expiry: 10 of 50 expired and were sent in a second batch');
is(q1($node, "SELECT count(*) FILTER (WHERE batch_expiries = 1) || '/' || count(*) FILTER (WHERE attempts = 1) "
	  . "|| '/' || count(*) FILTER (WHERE via = 'batch_api') FROM llm.queue"),
	'10/50/50', 'expiry: counted in the 10 items, none of them using an attempt, all still batch items');

# ---- expiries use no attempt; the llm.batch_max_expiries-th (3) sends
# the item realtime on its chain (Anthropic: results of type "expired") ----
reset_docs();
q1($node, "DELETE FROM llm._batch");
$node->append_conf('postgresql.conf', "llm.max_attempts = 2\n");
$node->reload;
ok(poll_until($node, "SHOW llm.max_attempts", '2', 10), 'expiries: llm.max_attempts is 2');
mock_config({ complete_after_ms => 200, expire_fraction => 1 });
$before = mock_stats($port);
is(enqueue_batch('ant', 'id <= 10'), 10, 'expiries: 10 items enqueued, every batch of them to expire');
ok(wait_finished(120), 'expiries: the items finished');
check_rows(10, 0, 'expiries');
is(q1($node, "SELECT string_agg(DISTINCT via || ' ' || batch_expiries || ' ' || attempts || ' ' || (error IS NULL)::text, ', ') "
	  . "FROM llm.queue"), 'realtime 3 1 true', 'expiries: each item expired in 3 batches and was sent realtime, on its first attempt');
is(q1($node, "SELECT string_agg(requests || ':' || succeeded || ':' || errored || ':' || expired || ':' || to_realtime, ' ' ORDER BY id) "
	  . "FROM llm.batches"), '10:0:0:10:0 10:0:0:10:0 10:0:0:10:10', 'expiries: llm.batches counts the expired requests, and those sent realtime');
$after = mock_stats($port);
is($after->{batches}{anthropic} - $before->{batches}{anthropic}, 3, 'expiries: three batches');
is($after->{requests} - $before->{requests}, 10, 'expiries: then one realtime call each');
ok(poll_until($node, "SELECT count(*) FROM llm.usage u WHERE u.model = 'ant' AND u.mode = 'queue' AND u.outcome = 'ok'", 10, 10),
	'expiries: the realtime calls are in llm.usage at the realtime price');
mock_config({ expire_fraction => 0 });
$node->append_conf('postgresql.conf', "llm.max_attempts = 5\n");
$node->reload;
ok(poll_until($node, "SHOW llm.max_attempts", '5', 10), 'expiries: llm.max_attempts is 5 again');

# ---- Anthropic errored results: what the provider could not run then
# (rate_limit_error, timeout_error) goes back to the queue and is sent
# again; only the request's own fault fails it ----
reset_docs();
q1($node, "DELETE FROM llm._batch");
q1($node, "SELECT llm.add_model('ant-429', 'claude', 'claude-x?fail=429&times=1')");
q1($node, "SELECT llm.add_model('ant-504', 'claude', 'claude-x?fail=504&times=1')");
mock_config({ complete_after_ms => 200 });
$before = mock_stats($port);
is(enqueue_batch('ant-429', 'id <= 4') + enqueue_batch('ant-504', 'id BETWEEN 5 AND 8'), 8,
	'errored: 8 items enqueued, each errored once (rate_limit_error, timeout_error)');
ok(wait_finished(120), 'errored: the items finished');
check_rows(8, 0, 'errored: sent again');
$after = mock_stats($port);
is($after->{batches}{anthropic} - $before->{batches}{anthropic}, 4, 'errored: two batches a model');

# ---- cancelling: purge_queue and drop_job ----
reset_docs();
q1($node, "DELETE FROM llm._batch");
mock_config({ complete_after_ms => 600000 });
$before = mock_stats($port);
enqueue_batch('oai', 'id <= 20');
ok(poll_until($node, "SELECT count(*) FROM llm.batches WHERE status = 'submitted'", 1, 30),
	'purge: the batch is submitted');
is(q1($node, "SELECT llm.purge_queue('0 s', unfinished => true)"), 20, 'purge: its items are removed');
ok(poll_until($node, "SELECT status FROM llm.batches", 'cancelled', 30),
	'purge: the batch left without items is cancelled');
is(mock_stats($port)->{cancels} - $before->{cancels}, 1, 'purge: the provider got the cancel');

q1($node, "DELETE FROM llm._batch");
q1($node, "SELECT llm.create_job('nightly', 'docs', '{id}', '{body}', 'summary', model => 'ant', "
	  . "via => 'batch_api', track_changes => false)");
is(q1($node, "SELECT llm.run_job('nightly')"), 300, 'job: 300 items queued through the batch API');
ok(poll_until($node, "SELECT submitted FROM llm.job_status", 300, 30), 'job: llm.job_status counts them submitted');
q1($node, "SELECT llm.drop_job('nightly', cancel => true)");
is(q1($node, "SELECT count(*) FROM llm.queue"), 0, 'job: drop_job with cancel removes its items');
ok(poll_until($node, "SELECT status FROM llm.batches", 'cancelled', 30), 'job: the batch is cancelled');
is(mock_stats($port)->{cancels} - $before->{cancels}, 2, 'job: the provider got the cancel');

# ---- a role's rights and budget ----
reset_docs();
q1($node, "DELETE FROM llm._batch");
mock_config({ complete_after_ms => 0 });
q1($node, q{
CREATE ROLE analyst LOGIN;
GRANT USAGE ON SCHEMA llm TO analyst;
GRANT EXECUTE ON FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text, text, text) TO analyst;
GRANT SELECT, UPDATE (summary) ON docs TO analyst;
});
# the right to write the target is checked again when the results come
q1($node, "BEGIN; SET LOCAL ROLE analyst; "
	  . "SELECT count(llm.enqueue(body, 'oai', target_table => 'docs', target_column => 'summary', "
	  . "target_key => jsonb_build_object('id', id), via => 'batch_api')) FROM docs WHERE id <= 10; "
	  . "RESET ROLE; REVOKE UPDATE (summary) ON docs FROM analyst; COMMIT;");
ok(wait_finished(60), 'rights: the batch is answered');
is(q1($node, "SELECT count(*) FROM llm.queue WHERE status = 'failed' AND reply = 'echo: ' || prompt "
	  . "AND error LIKE '%permission denied%'"), 10,
	'rights: a role that lost the right to the target fails its items, their replies kept');
is(q1($node, "SELECT count(*) FROM docs WHERE summary IS NOT NULL"), 0, 'rights: nothing was written');
# a budget spent before the batch is built: no request goes out
q1($node, "GRANT UPDATE (summary) ON docs TO analyst; SELECT llm.set_budget('analyst', NULL, 0)");
$before = mock_stats($port);
q1($node, "SET ROLE analyst; "
	  . "SELECT count(llm.enqueue(body, 'oai', target_table => 'docs', target_column => 'summary', "
	  . "target_key => jsonb_build_object('id', id), via => 'batch_api')) FROM docs WHERE id <= 10");
ok(wait_finished(60), 'budget: the items are looked at');
is(q1($node, "SELECT count(*) FROM llm.queue WHERE status = 'failed' AND error LIKE '%budget%'"), 20 - 10,
	'budget: each item over the budget fails with the budget error');
is(mock_stats($port)->{batches}{openai} - $before->{batches}{openai}, 0, 'budget: no batch was sent');

$node->stop;
stop_mock();
done_testing();
