# Two workers on one database (llm.database = 'postgres,postgres') drain
# one queue together: FOR UPDATE SKIP LOCKED gives each item to one of
# them, so every item is claimed once, done once and written once, and
# both do part of the work.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $n = 2000;
my $port = start_mock();
# a lease long enough that no item is taken back from a live worker: an
# item claimed twice here could only come from two workers claiming it
my $node = llm_node('two_workers', $port,
	conf => { 'llm.database' => "'postgres,postgres'", 'llm.lease_time' => "'20s'" });
create_docs($node, $n);
ok(wait_workers($node, 2, 30), 'two queue workers run');
ok(poll_until($node, "SELECT count(*) || '|' || count(DISTINCT pid) || '|' || count(*) FILTER (WHERE database = 'postgres') FROM $QUEUE_WORKERS",
		'2|2|2', 30),
	'llm.workers shows both, on database postgres');
my @pids = worker_pids($node);

my $t0 = time;
is(enqueue_docs($node, 'mock?latency=5'), $n, "$n items enqueued with write-back");
ok(wait_drained($node, 50), 'the queue drains');
note sprintf('%d items drained in %.2f s', $n, time - $t0);

check_exactly_once($node, $n, 'two workers');
is(q1($node, "SELECT count(*) FROM llm.queue WHERE attempts <> 1"), 0,
	'every item was claimed exactly once');

# who did what: the write audit records the writing backend
my %by_pid = map { split /\|/ } split /\n/,
  q1($node, "SELECT pid || '|' || count(*) FROM doc_writes GROUP BY pid");
note 'writes by worker: ' . join(', ', map { "$_: $by_pid{$_}" } sort keys %by_pid);
is(join(',', sort keys %by_pid), join(',', sort @pids), 'only the two workers wrote');
is(scalar(grep { $by_pid{$_} > 0 } @pids), 2, 'both workers wrote part of the results');

my $workers = q1($node, "SELECT pid || '|' || completed || '|' || failed FROM $QUEUE_WORKERS ORDER BY pid");
note "llm.workers (pid|completed|failed):\n$workers";
my %completed = map { my @f = split /\|/; ($f[0] => $f[1]) } split /\n/, $workers;
is(q1($node, "SELECT sum(completed) || '|' || sum(failed) FROM $QUEUE_WORKERS"), "$n|0",
	'llm.workers: the completed counts add up to the items, none failed');
is(join(',', map { $completed{$_} // 'none' } sort @pids),
	join(',', map { $by_pid{$_} } sort @pids),
	"each worker's completed count matches the rows it wrote");

$node->stop;
stop_mock();
done_testing();
