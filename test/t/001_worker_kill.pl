# kill -9 of the queue worker in the middle of a drain, with the default
# lease time (10 minutes): the postmaster restarts every backend, the
# items the dead worker held come back at once (no live worker holds their
# lease), the queue drains within seconds of the restart, and in the end
# every item is done and every target row was written exactly once.
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
my $node = llm_node('worker_kill', $port, conf => { 'llm.lease_time' => "'10min'" });
create_docs($node, $n);
ok(wait_workers($node, 1, 30), 'the queue worker runs');

my $t0 = time;
is(enqueue_docs($node, 'mock?latency=200'), $n, "$n items enqueued with write-back");

# kill it once a few results are in, well before the end (300 items at
# 200 ms and 50 at a time take about 1.2 s)
ok(poll_until($node, "SELECT count(*) >= 20 FROM llm.queue WHERE status = 'done'", 't', 30),
	'the worker is draining');
my ($pid) = worker_pids($node);
my $log_offset = -s $node->logfile;
ok(kill('KILL', $pid), "kill -9 the worker (pid $pid)");
my $t_kill = time;

# the postmaster restarts all backends and the worker with them
ok(wait_workers($node, 1, 30, $pid), 'a new worker runs after the crash restart');
ok($node->log_contains(qr/background worker "pg_llm worker[^"]*" \(PID $pid\) was terminated by signal 9/,
		$log_offset),
	'the postmaster saw the worker die');
ok($node->log_contains(qr/all server processes terminated; reinitializing/, $log_offset),
	'the postmaster reinitialized after the crash');
my ($done_at_restart) = q1($node, "SELECT count(*) FROM llm.queue WHERE status = 'done'");
cmp_ok($done_at_restart, '<', $n, "the kill came mid-drain ($done_at_restart of $n done at restart)");
note sprintf('killed %.2f s after the enqueue; restarted %.2f s after the kill',
	$t_kill - $t0, time - $t_kill);

my $t_restart = time;
ok(wait_drained($node, 10), 'the queue drains within 10 s of the restart, long before the 10 min lease');
note sprintf('drained %.2f s after the restart', time - $t_restart);

check_exactly_once($node, $n, 'after kill -9');

# the items the dead worker held were claimed again at once
my ($reclaimed, $max_attempts) = split /\|/,
  q1($node, "SELECT count(*) FILTER (WHERE attempts > 1), max(attempts) FROM llm.queue");
cmp_ok($reclaimed, '>', 0, "items held by the dead worker were claimed again ($reclaimed)");
is($max_attempts, 2, 'one crash costs at most one more attempt');
ok($node->log_contains(qr/queue items whose worker is gone or whose lease expired were taken back/, $log_offset),
	'the worker logged the items it took back from the dead worker');

$node->stop;
stop_mock();
done_testing();
