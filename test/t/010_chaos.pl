# Chaos: a fifth of the requests meet a fault of every kind the mock has
# (429 with Retry-After, 500, 503, 529, a reset connection, a hang, a 2xx
# body cut off or not JSON), once each, on the queue, the synchronous and
# the streaming paths.  Every item and call that is not poisoned (a
# permanent 400) succeeds, every target row is written exactly once, and
# every unreadable 2xx was retried rather than failed.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $n = 1000;
my $port = start_mock();
my $node = llm_node('chaos', $port, conf => { 'llm.lease_time' => "'30s'" });
# hangs end by the provider's timeout; retries come quickly
q1($node, "SELECT llm.alter_provider('mock', options => "
	  . "'{\"timeout_ms\": 2000, \"stream_idle_timeout\": 2, \"max_retries\": 3, \"pass_through\": true}')");
create_docs($node, $n);
ok(wait_workers($node, 1, 30), 'the queue worker runs');

my @faults = ('fail=429&retry_after=0.1', 'fail=500', 'fail=503', 'fail=529', 'fault=reset',
	'fault=hang', 'fault=malformed', 'fault=notjson', 'fault=truncate', 'fault=html');
my $cases = join(' ', map { "WHEN $_ THEN 'mock?$faults[$_]&times=1'" } 0 .. $#faults);
# ids divisible by 5 meet a fault (which one follows the id); every 97th
# is poisoned with a permanent 400
is(q1($node, qq{
SELECT count(llm.enqueue('doc ' || id,
       CASE WHEN id % 97 = 0 THEN 'mock?fail=400'
            WHEN id % 5 = 0 THEN CASE (id / 5) % 10 $cases END
            ELSE 'mock' END,
       target_table => 'docs', target_column => 'summary',
       target_key => jsonb_build_object('id', id)))
FROM docs}), $n, "$n items enqueued, a fifth of them meeting a fault");
ok(wait_drained($node, 120), 'the queue drains');
my $poisoned = int($n / 97);
is(q1($node, "SELECT count(*) FROM llm.queue WHERE status = 'failed'"), $poisoned,
	"only the $poisoned poisoned items failed");
is(q1($node, "SELECT count(*) FROM llm.queue WHERE status = 'failed' AND error NOT LIKE '%HTTP 400%'"), 0,
	'each with the provider\'s 400');
is(q1($node, "SELECT count(*) FROM docs WHERE writes = 1 AND summary = 'echo: ' || body"), $n - $poisoned,
	'every other row holds its own reply');
is(q1($node, "SELECT count(*) FROM docs WHERE writes > 1"), 0, 'no row was written twice');
is(q1($node, "SELECT count(*) FROM llm.queue WHERE status = 'done' AND id IN "
	  . "(SELECT id FROM llm.queue WHERE (target_key->>'id')::int % 5 = 0 "
	  . "AND (target_key->>'id')::int % 97 <> 0)"), int($n / 5) - int($n / 485),
	'the faulty items were retried to success');

# the synchronous and streaming paths meet the same faults once per call
my $ok_sync = 0;
my $ok_stream = 0;
for my $i (0 .. $#faults)
{
	my $m = "mock?$faults[$i]&times=1";
	my ($out, $err) = ('', '');
	$node->psql('postgres', "SELECT llm.chat('sync $i', '$m')", stdout => \$out, stderr => \$err);
	$ok_sync++ if $out eq "echo: sync $i";
	diag "sync with $faults[$i]: $err" if $err ne '';
	# a stream cut off after its first rows is an error, never retried
	next if $faults[$i] eq 'fault=truncate';
	$node->psql('postgres', "SELECT string_agg(c, '') FROM (SELECT llm.chat_stream('stream $i', '$m') AS c) s",
		stdout => \$out, stderr => \$err);
	$ok_stream++ if $out eq "echo: stream $i";
	diag "stream with $faults[$i]: $err" if $err ne '';
}
is($ok_sync, scalar(@faults), 'llm.chat succeeds after each kind of fault');
is($ok_stream, scalar(@faults) - 1,
	'llm.chat_stream succeeds after each kind of fault that comes before its first row');
my ($out, $err) = ('', '');
$node->psql('postgres', "SELECT llm.chat_stream('cut words here', 'mock?fault=truncate&times=1')",
	stdout => \$out, stderr => \$err);
like($err, qr/ended before its end marker/, 'a stream cut off after its first rows is an error, not retried');

ok(poll_until($node, "SELECT count(*) FROM llm.usage WHERE mode = 'queue' AND outcome = 'ok'",
		$n - $poisoned, 10),
	'every item that succeeded has its usage row');
$node->stop;
stop_mock();
done_testing();
