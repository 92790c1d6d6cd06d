# Fairness between the roles that enqueue: one role's backlog of slow
# items does not hold another role's items back.  Claims take turns
# between roles, and a free slot goes to the role with the fewest requests
# in flight: with 60 slow items of one role and 5 quick items of another
# queued together, the quick ones are sent first and finish long before
# any slow one (an earlier version claimed the oldest 50, all slow, and
# made the quick ones wait for them).
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_mock();
my $node = llm_node('fair_roles', $port);
ok(wait_workers($node, 1, 30), 'the queue worker runs');
q1($node, q{
CREATE ROLE busy;
CREATE ROLE quick;
GRANT USAGE ON SCHEMA llm TO busy, quick;
GRANT EXECUTE ON FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text, text) TO busy, quick;
});

# one transaction: the slow backlog first, then the quick items
q1($node, q{
BEGIN;
SET LOCAL ROLE busy;
SELECT count(llm.enqueue('slow ' || g, 'mock?latency=4000')) FROM generate_series(1, 60) g;
SET LOCAL ROLE quick;
SELECT count(llm.enqueue('quick ' || g, 'mock')) FROM generate_series(1, 5) g;
COMMIT;
});
ok(poll_until($node, "SELECT count(*) FROM llm.queue WHERE prompt LIKE 'quick%' AND status = 'done'",
		'5', 30), "the quick role's items are done");
is(q1($node, "SELECT count(*) FROM llm.queue WHERE prompt LIKE 'slow%' AND status = 'done'"), '0',
	'while none of the slow role\'s items is: they did not wait behind the backlog');
ok(wait_drained($node, 60), 'the backlog drains too');
is(q1($node, "SELECT count(*) FROM llm.queue WHERE status = 'done'"), '65', 'everything is done');
is(q1($node, "SELECT (SELECT max(finished_at) FROM llm.queue WHERE prompt LIKE 'quick%') < "
	  . "(SELECT min(finished_at) FROM llm.queue WHERE prompt LIKE 'slow%')"), 't',
	'every quick item finished before the first slow one');

$node->stop;
stop_mock();
done_testing();
