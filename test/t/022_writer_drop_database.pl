# A database without a queue worker gets a usage writer on demand when a
# call is made there.  The writer stays a while in case more calls come;
# a DROP DATABASE waits only a few seconds for the database's other
# processes to leave, so the writer must leave when its database is being
# dropped.  Before, DROP DATABASE right after a call failed with "database
# ... is being accessed by other users" (the writer lived a minute), and a
# second make installcheck with it.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_mock();
my $node = llm_node('writer_drop', $port);
ok(wait_workers($node, 1, 30), 'the queue worker of postgres runs');

# two rounds: the second drop is a second installcheck's
for my $round (1 .. 2)
{
	$node->safe_psql('postgres', 'CREATE DATABASE scratch');
	is($node->safe_psql('scratch',
			"CREATE EXTENSION pg_llm; "
			  . "SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$port/v1', "
			  . "api_key => 'sk-mock', options => '{\"pass_through\": true}'); "
			  . "SELECT llm.chat('hello', 'mock') IS NOT NULL"),
		"mock\nt", "round $round: a call in a database without a queue worker");
	ok(poll_until($node,
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_llm usage writer' "
			  . "AND datname = 'scratch'", '1', 30),
		"round $round: a usage writer serves it");
	my ($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE scratch');
	is($rc, 0, "round $round: DROP DATABASE right after the call works")
	  or diag $err;
	ok(poll_until($node,
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_llm usage writer'",
			'0', 10),
		"round $round: the usage writer has left");
}

$node->stop;
done_testing();
