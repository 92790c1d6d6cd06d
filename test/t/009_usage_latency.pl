# Usage rows appear within a second of the call, in every database: in
# the database of a queue worker that is asleep in its 10 s nap, and in a
# database without a worker (a usage writer starts on demand).  A record
# is written when it arrives (the writer is woken on the first record),
# not when a nap ends, and no record waits behind another database's.
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
my $node = llm_node('usage_latency', $port, conf => { 'llm.worker_naptime' => "'10s'" });
ok(wait_workers($node, 1, 30), 'the queue worker runs');
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other',
	"CREATE EXTENSION pg_llm; "
	  . "SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$port/v1', api_key => 'sk-mock', options => '{\"pass_through\": true}');");

# let the worker fall into its nap
usleep(1_500_000);

# Call, then poll for the call's row; returns the seconds it took to appear.
sub row_delay
{
	my ($db, $tag) = @_;
	$node->safe_psql($db, "SELECT llm.chat('$tag', 'mock')");
	my $t0 = time;
	my $end = $t0 + 15;
	while (time < $end)
	{
		my $n = $node->safe_psql($db,
			"SELECT count(*) FROM llm.usage WHERE ts > now() - interval '1 minute' "
			  . "AND latency_ms IS NOT NULL AND mode = 'sync'");
		return time - $t0 if $n >= $main::expected{$db};
		usleep(20_000);
	}
	return 99;
}

our %expected = (postgres => 0, other => 0);
for my $round (1 .. 5)
{
	for my $db ('postgres', 'other')
	{
		$expected{$db}++;
		my $d = row_delay($db, "round $round");
		cmp_ok($d, '<', 1.0, sprintf('%s, call %d: its usage row was there after %.3f s', $db, $round, $d));
	}
	# the next call comes while the writers nap again
	usleep(1_200_000);
}
is($node->safe_psql('postgres', 'SELECT dropped FROM llm.usage_buffer_status()'), '0',
	'no record was dropped');

$node->stop;
stop_mock();
done_testing();
