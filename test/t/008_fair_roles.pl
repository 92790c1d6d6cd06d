# Fairness between the roles that enqueue: one role's backlog of slow
# items does not hold another role's items back (issue 18).  A role whose
# items arrive while another role's fill every slot and more wait behind
# them is served within one of its own calls' time: its items are claimed
# at once (the worker looks for the other roles' items after each wake-up,
# however many it holds), and a role with nothing in flight gets one of a
# few spare slots beyond llm.worker_concurrency.  130 slow items of one
# role (3 s each, three waves of 50 slots), 50 of them in flight, then 3
# quick items of another: the quick ones are done before any slow one (an
# earlier version made them wait for the first wave, a slow call's time).
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_mock();
# a long nap: an idle worker sleeps until an enqueue wakes it
my $node = llm_node('fair_roles', $port,
	conf => { 'llm.lease_time' => "'60s'", 'llm.worker_naptime' => "'60s'" });
ok(wait_workers($node, 1, 30), 'the queue worker runs');
q1($node, q{
CREATE ROLE busy;
CREATE ROLE quick;
GRANT USAGE ON SCHEMA llm TO busy, quick;
GRANT EXECUTE ON FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text, text, text) TO busy, quick;
});

# the slow backlog first, every slot taken
q1($node, q{
SET ROLE busy;
SELECT count(llm.enqueue('slow ' || g, 'mock?latency=3000')) FROM generate_series(1, 130) g;
});
ok(poll_until($node, "SELECT count(*) >= 50 FROM llm.queue WHERE prompt LIKE 'slow%' AND status = 'running'",
		't', 30), "the slow role's items take every slot");
is(q1($node, "SELECT count(*) FROM llm.queue WHERE status = 'done'"), '0', 'none is done yet');

# then the quick items of another role
q1($node, q{
SET ROLE quick;
SELECT count(llm.enqueue('quick ' || g, 'mock')) FROM generate_series(1, 3) g;
});
ok(poll_until($node, "SELECT count(*) FROM llm.queue WHERE prompt LIKE 'quick%' AND status = 'done'",
		'3', 60), "the quick role's items are done");
my $slow_before = q1($node, "SELECT count(*) FROM llm.queue WHERE prompt LIKE 'slow%' AND finished_at < "
	  . "(SELECT max(finished_at) FROM llm.queue WHERE prompt LIKE 'quick%')");
is($slow_before, '0', 'the quick items did not wait for a slow call to end: none finished before them');
ok(wait_drained($node, 60), 'the backlog drains too');
is(q1($node, "SELECT count(*) FROM llm.queue WHERE status = 'done'"), '133', 'everything is done');
ok(poll_until($node, "SELECT claimed || '/' || in_flight FROM $QUEUE_WORKERS", '0/0', 5),
	'llm.workers shows nothing claimed once the queue has drained (not the count before the last write)');

$node->stop;
stop_mock();
done_testing();
