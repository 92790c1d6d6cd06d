# An immediate shutdown (no checkpoint, no clean exit of anything) in the
# middle of a drain, then a start: crash recovery replays the committed
# results, the items that were in flight come back when their lease runs
# out, and every item ends done with its target row written exactly once.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $n = 300;
my $port = start_mock();
my $node = llm_node('immediate_restart', $port);
create_docs($node, $n);
ok(wait_workers($node, 1, 30), 'the queue worker runs');
my ($pid) = worker_pids($node);

my $t0 = time;
is(enqueue_docs($node, 'mock?latency=200'), $n, "$n items enqueued with write-back");
ok(poll_until($node, "SELECT count(*) >= 20 FROM llm.queue WHERE status = 'done'", 't', 30),
	'the worker is draining');

my $log_offset = -s $node->logfile;
$node->stop('immediate');
my $t_stop = time;
$node->start;
ok($node->log_contains(qr/database system was interrupted|was not properly shut down/, $log_offset),
	'the start ran crash recovery');
ok(wait_workers($node, 1, 30, $pid), 'a new worker runs after the restart');
my ($done_at_restart) = q1($node, "SELECT count(*) FROM llm.queue WHERE status = 'done'");
cmp_ok($done_at_restart, '<', $n,
	"the shutdown came mid-drain ($done_at_restart of $n done after recovery)");
note sprintf('stopped %.2f s after the enqueue; up again %.2f s later', $t_stop - $t0, time - $t_stop);

# what recovery replayed is consistent: a done item has its row written,
# and no row is written without its item being done
is(q1($node, "SELECT count(*) FROM llm.queue q JOIN docs d ON d.id = (q.target_key->>'id')::int "
	  . "WHERE (q.status = 'done') <> (d.writes = 1) OR d.writes > 1"),
	0, 'after recovery, an item is done exactly when its row was written once');

ok(wait_drained($node, 45), 'the queue drains after the restart');
note sprintf('drained %.2f s after the stop', time - $t_stop);

check_exactly_once($node, $n, 'after an immediate restart');

my ($reclaimed, $max_attempts) = split /\|/,
  q1($node, "SELECT count(*) FILTER (WHERE attempts > 1), max(attempts) FROM llm.queue");
cmp_ok($reclaimed, '>', 0, "items in flight at the shutdown were claimed again ($reclaimed)");
is($max_attempts, 2, 'the shutdown cost at most one more attempt');

$node->stop;
stop_mock();
done_testing();
