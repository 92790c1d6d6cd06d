# Leases: an item that kills its worker on every claim runs out of
# llm.max_attempts like any other and fails, instead of cycling; and an
# item whose request outlasts the lease keeps it (the worker renews the
# leases it holds), so it is sent once, written once and counted once.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_mock();
my $node = llm_node('lease_overrun', $port,
	conf => { 'llm.lease_time' => "'2s'", 'llm.max_attempts' => 2 });
create_docs($node, 2);
ok(wait_workers($node, 1, 30), 'the queue worker runs');

my $item = "SELECT status || '|' || attempts FROM llm.queue WHERE target_key = '{\"id\": %d}'";

# ---- an item that crashes its worker on every claim ----

# a request that does not end (60 s) stands for one that kills the worker;
# kill -9 the worker each time it holds the item
is(enqueue_docs($node, 'mock?latency=60000', 'id = 1'), 1, 'a "poison" item enqueued');
for my $k (1 .. 2)
{
	ok(poll_until($node, sprintf($item, 1) . " AND (SELECT sum(in_flight) FROM $QUEUE_WORKERS) = 1",
			"running|$k", 20),
		"claim $k of the item is in flight");
	my ($pid) = worker_pids($node);
	kill 'KILL', $pid;
	ok(wait_workers($node, 1, 30, $pid), "kill -9 of the worker holding it (claim $k); a new worker runs");
}
# llm.max_attempts = 2 claims are used up: the next expired lease should
# end it; wait for that, or for a third claim
ok(poll_until($node, "SELECT status = 'failed' OR attempts > 2 FROM llm.queue "
		  . "WHERE target_key = '{\"id\": 1}'", 't', 20),
	'the item failed or was claimed again');
my ($status, $attempts) = split /\|/, q1($node, sprintf($item, 1));
note "after two crashes with llm.max_attempts = 2: status $status, attempts $attempts";
is($status, 'failed', 'an item that crashed its worker on each of its llm.max_attempts claims fails for good');
cmp_ok($attempts, '<=', 2, 'it is never claimed more than llm.max_attempts times');
is(q1($node, "SELECT writes FROM docs WHERE id = 1"), 0, 'its target row was never written');
q1($node, "DELETE FROM llm.queue WHERE target_key = '{\"id\": 1}'");

# ---- an item whose request outlasts its lease ----

# 3 s requests with a 2 s lease and no crash: the worker renews the leases
# it holds, so nobody takes the item back while its request is in flight
my $completed0 = q1($node, "SELECT completed FROM $QUEUE_WORKERS");
is(enqueue_docs($node, 'mock?latency=3000', 'id = 2'), 1, 'an item slower than the lease enqueued');
ok(poll_until($node, "SELECT status IN ('done', 'failed') OR attempts > 1 FROM llm.queue "
		  . "WHERE target_key = '{\"id\": 2}'", 't', 25),
	'the item ended, or was claimed again');
($status, $attempts) = split /\|/, q1($node, sprintf($item, 2));
my $completed = q1($node, "SELECT completed FROM $QUEUE_WORKERS") - $completed0;
my $sent = mock_stats($port)->{by_key}{'mock?latency=3000|doc 2'} // 0;
note "status $status, attempts $attempts, requests sent $sent, llm.workers completed +$completed";
is($status, 'done', 'the item is done under its renewed lease');
is($attempts, 1, 'it was claimed once');
is($sent, 1, 'its request was sent once');
is(q1($node, "SELECT writes FROM docs WHERE id = 2"), 1, 'its reply was written once');
is($completed, 1, 'llm.workers counts it once');

$node->stop;
stop_mock();
done_testing();
