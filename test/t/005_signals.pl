# The worker and its signals: SIGHUP (a reload) changes its settings while
# it runs; SIGTERM (pg_terminate_backend) makes it exit at once, even with
# requests in flight, and the postmaster starts it again, which then drains
# what was left; and an enqueue's commit wakes it from a long nap, while a
# row that reaches the queue without llm.enqueue waits for the nap to end.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $port = start_mock();
# a 6 s lease, so that the 3 s requests in flight at the SIGTERM can be
# done by the next worker within their lease
my $node = llm_node('signals', $port, conf => { 'llm.lease_time' => "'6s'" });
create_docs($node, 100);
ok(wait_workers($node, 1, 30), 'the queue worker runs');
my ($pid) = worker_pids($node);

# ---- SIGHUP: llm.batch_size from 50 to 7 ----

# items claimed together share started_at (the claim transaction's now())
my $claims = "SELECT count(*) || '|' || max(n) FROM (SELECT count(*) AS n FROM llm.queue "
  . "WHERE (target_key->>'id')::int BETWEEN %d AND %d GROUP BY started_at) c";

is(enqueue_docs($node, 'mock?latency=100', 'id BETWEEN 1 AND 30'), 30, '30 items enqueued');
ok(wait_drained($node, 30), 'they are done');
is(q1($node, sprintf($claims, 1, 30)), '1|30', 'with llm.batch_size = 50 one claim took all 30');

$node->append_conf('postgresql.conf', "llm.batch_size = 7\n");
$node->reload;
ok(poll_until($node, "SHOW llm.batch_size", '7', 10), 'the reload set llm.batch_size = 7');
is(enqueue_docs($node, 'mock?latency=100', 'id BETWEEN 31 AND 60'), 30, '30 more items enqueued');
ok(wait_drained($node, 30), 'the worker still drains after the reload');
is(q1($node, sprintf($claims, 31, 60)), '5|7',
	'it claims 7 at a time now: 30 items in 5 claims (7, 7, 7, 7, 2)');
is(join(',', worker_pids($node)), $pid, 'the same worker process did it: a reload does not restart it');

# ---- SIGTERM: pg_terminate_backend with requests in flight ----

is(enqueue_docs($node, 'mock?latency=3000', 'id BETWEEN 61 AND 70'), 10, '10 slow items enqueued');
ok(poll_until($node, "SELECT sum(in_flight) FROM $QUEUE_WORKERS", '10', 10),
	'their requests are in flight');
my $log_offset = -s $node->logfile;
my $t_term = time;
# pg_terminate_backend(pid, timeout) returns once the process is gone;
# the second column is read after it
my ($gone, $ms) = split /\|/, q1($node,
	"SELECT pg_terminate_backend($pid, 10000), "
	  . "round(1000 * extract(epoch FROM clock_timestamp() - statement_timestamp()))");
is($gone, 't', "pg_terminate_backend($pid) ended the worker");
cmp_ok($ms, '<', 1000, "it exited promptly (${ms} ms), without waiting for the 3 s requests");
ok(wait_workers($node, 1, 20, $pid), 'the postmaster started a new worker');
my $restart_s = time - $t_term;
note sprintf('new worker %.2f s after SIGTERM', $restart_s);
cmp_ok($restart_s, '<', 12, 'within its restart interval (5 s) and some slack');
ok($node->log_contains(qr/background worker "pg_llm worker[^"]*" \(PID $pid\) exited with exit code 1/,
		$log_offset),
	'the postmaster logged the exit');
ok(!$node->log_contains(qr/reinitializing|terminated by signal/, $log_offset),
	'a SIGTERM is not a crash: no restart of the instance');
my ($pid2) = worker_pids($node);

ok(wait_drained($node, 30), 'the new worker drains the items the old one had in flight');
is(q1($node, "SELECT count(*) FILTER (WHERE status = 'done' AND attempts = 1) || '|' || "
	  . "count(*) FILTER (WHERE d.writes = 1 AND d.summary = 'echo: ' || d.body) "
	  . "FROM llm.queue q JOIN docs d ON d.id = (q.target_key->>'id')::int "
	  . "WHERE d.id BETWEEN 61 AND 70"),
	'10|10', 'each was handed back (its attempt not counted), claimed again, done and written once');
ok($node->log_contains(qr/10 queue items handed back before stopping/, $log_offset),
	'the stopping worker handed its 10 items back');
is(enqueue_docs($node, 'mock', 'id BETWEEN 71 AND 75'), 5, '5 new items enqueued');
ok(wait_drained($node, 20), 'the new worker drains new items');

# ---- waking: an enqueue's commit, not the nap ----

$node->append_conf('postgresql.conf', "llm.worker_naptime = '60s'\n");
$node->reload;
ok(poll_until($node, "SHOW llm.worker_naptime", '1min', 10), 'the reload set llm.worker_naptime = 60s');
# idle in its wait (the reload's SIGHUP woke it once; give it time to go back)
usleep(500_000);
ok(poll_until($node, "SELECT state || '|' || wait_event_type FROM pg_stat_activity WHERE pid = $pid2",
		'idle|Extension', 10),
	'the worker is idle, waiting');

# a row put into llm.queue directly: nothing wakes the worker
q1($node, "INSERT INTO llm.queue (prompt, model, target_table, target_column, target_key, enqueued_by) "
	  . "VALUES ('doc 76', 'mock', 'docs', 'summary', '{\"id\": 76}', "
	  . "(SELECT oid FROM pg_roles WHERE rolname = current_user))");
ok(stays($node, "SELECT status FROM llm.queue WHERE target_key = '{\"id\": 76}'", 'pending', 3),
	'an item inserted without llm.enqueue stays pending: the worker is in its 60 s nap');

for my $id (77 .. 79)
{
	my $t0 = time;
	enqueue_docs($node, 'mock', "id = $id");
	ok(poll_until($node, "SELECT status FROM llm.queue WHERE target_key = '{\"id\": $id}'", 'done', 10),
		"the enqueue of item $id woke the worker");
	my $s = time - $t0;
	my $server_ms = q1($node,
		"SELECT round(1000 * extract(epoch FROM finished_at - created_at)) FROM llm.queue "
		  . "WHERE target_key = '{\"id\": $id}'");
	note sprintf('item %d done %.2f s after the enqueue (%d ms in the server)', $id, $s, $server_ms);
	cmp_ok($server_ms, '<', 3000, "item $id done within a few seconds of its enqueue, not after the nap");
}
is(q1($node, "SELECT status FROM llm.queue WHERE target_key = '{\"id\": 76}'"), 'done',
	'the directly inserted item went with the first woken claim');
is(q1($node, "SELECT count(*) FROM docs WHERE id BETWEEN 76 AND 79 AND writes = 1"), 4,
	'and all four rows were written once');
is(join(',', worker_pids($node)), $pid2, 'all by the same worker');

$node->stop;
stop_mock();
done_testing();
