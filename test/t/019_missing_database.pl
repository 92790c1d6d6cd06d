# A database named in llm.database that does not exist yet (issue 19,
# point 8): the worker waits for it with one clear LOG line, instead of
# exiting with a bare FATAL every 5 s, and starts by itself once the
# database is created.  The worker of the database that exists runs
# meanwhile.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_mock();
my $node = llm_node('missing_database', $port, conf => { 'llm.database' => "'postgres, later'" });
ok(wait_workers($node, 1, 30), "the worker of the database that exists runs");
sleep 12;
my $log = slurp_file($node->logfile);
my @said = ($log =~ /database "later" named in llm.database does not exist; its worker starts when it is created/g);
is(scalar @said, 1, 'the missing database is said once in the log, in 12 s');
my @fatal = ($log =~ /FATAL:  database "later" does not exist/g);
is(scalar @fatal, 0, 'no worker exits with a FATAL for it (none restarts every 5 s)');
# the launcher has no database: it looks for one without reading pg_class,
# also on a cluster just started (it failed there, and every worker came
# 5 s late)
my ($read) = $log =~ /^(.*cannot read pg_class without having selected a database.*)$/m;
is($read, undef, 'the launcher reads pg_database without a database of its own');
my ($exit) = $log =~ /^(.*background worker "pg_llm launcher" \(PID \d+\) exited.*)$/m;
is($exit, undef, 'the launcher never exited');

$node->safe_psql('postgres', 'CREATE DATABASE later');
ok(wait_workers($node, 2, 30), 'once it is created, its worker starts');
$node->safe_psql('later', "CREATE EXTENSION pg_llm; "
	  . "SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$port/v1', api_key => 'sk-mock', "
	  . "options => '{\"pass_through\": true}'); "
	  . "CREATE TABLE t (id int PRIMARY KEY, answer text); INSERT INTO t VALUES (1, NULL); "
	  . "SELECT llm.enqueue('hello', 'mock', target_table => 't', target_column => 'answer', target_key => '{\"id\": 1}')");
my ($out, $end) = ('', time + 30);
while (time < $end)
{
	$out = $node->safe_psql('later', 'SELECT answer FROM t');
	last if $out eq 'echo: hello';
	sleep 1;
}
is($out, 'echo: hello', "and drains its queue");
like(slurp_file($node->logfile), qr/database "later" exists now; starting its worker/, 'the log says it started');

$node->stop;
stop_mock();
done_testing();
