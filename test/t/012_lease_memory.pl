# Memory of a worker that holds items for a long time with short leases:
# it renews 50 leases three times a second for a minute (180 renewals,
# ten hours of renewals at the default lease), and its memory does not
# grow (an earlier version kept every renewal's arrays).  Measured with
# pg_log_backend_memory_contexts: the grand total logged at the start of
# the minute and at its end.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $port = start_mock();
my $node = llm_node('lease_memory', $port, conf => { 'llm.lease_time' => "'1s'" });
ok(wait_workers($node, 1, 30), 'the queue worker runs');
my ($pid) = worker_pids($node);
q1($node, "SELECT count(llm.enqueue('held ' || g, 'mock?latency=90000')) FROM generate_series(1, 50) g");
ok(poll_until($node, "SELECT sum(in_flight) FROM $QUEUE_WORKERS", '50', 20), '50 requests in flight');

# the grand total of the worker's memory contexts, as logged
sub worker_memory
{
	my $offset = -s $node->logfile;
	q1($node, "SELECT pg_log_backend_memory_contexts($pid)");
	for (1 .. 100)
	{
		my $log = slurp_file($node->logfile, $offset);
		return $1 if $log =~ /Grand total: (\d+) bytes/;
		usleep(100_000);
	}
	return -1;
}

usleep(5_000_000);
my $before = worker_memory();
cmp_ok($before, '>', 0, "the worker's memory at the start: $before bytes");
usleep(60_000_000);
my $after = worker_memory();
cmp_ok($after, '>', 0, "after a minute of renewals: $after bytes");
cmp_ok($after - $before, '<', 32768, 'it did not grow (by less than 32 kB)');
is(q1($node, "SELECT count(*) FROM llm.queue WHERE status = 'running' AND attempts = 1"), '50',
	'the 50 items stayed leased to it throughout');
is(join(',', worker_pids($node)), $pid, 'the same worker');

$node->stop('immediate');
stop_mock();
done_testing();
