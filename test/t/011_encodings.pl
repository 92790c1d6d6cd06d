# Databases whose encoding is not UTF-8: LATIN1 and SQL_ASCII.  The worker
# judges replies outside any transaction, where no encoding conversion can
# be looked up (an earlier version raised "cannot perform encoding
# conversion outside a transaction" on a plain 429 there and crash-looped),
# so texts stay UTF-8 until they are written.  A reply the database cannot
# hold fails its item alone.  Also: the worker reports its writes to the
# statistics collector, so autovacuum sees llm.queue turn over.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_mock();
my $node = PostgreSQL::Test::Cluster->new('encodings');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_llm'
llm.database = 'latin1, ascii'
llm.worker_naptime = '200ms'
llm.lease_time = '10s'
max_worker_processes = 16
});
$node->start;
$node->safe_psql('postgres', q{
CREATE DATABASE latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
CREATE DATABASE ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
});
my $log_offset = -s $node->logfile;
for my $db ('latin1', 'ascii')
{
	$node->safe_psql($db, qq{
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$port/v1', api_key => 'sk-mock', options => '{"pass_through": true}');
CREATE TABLE notes (id int PRIMARY KEY, note text);
INSERT INTO notes SELECT g, NULL FROM generate_series(1, 40) g;
});
}
ok(poll_until($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_llm worker'", '2', 30),
	'a worker runs for each database');

for my $db ('latin1', 'ascii')
{
	# 30 plain items, 5 that meet a 429 first, one with a reply in
	# Latin-1 (é) and one with a character Latin-1 lacks (the euro sign)
	$node->safe_psql($db, q{
SELECT count(llm.enqueue('note ' || id,
       CASE WHEN id <= 30 THEN 'mock'
            WHEN id <= 35 THEN 'mock?fail=429&times=1&retry_after=0.2'
            WHEN id = 36 THEN 'mock?reply=caf%C3%A9'
            WHEN id = 37 THEN 'mock?reply=5+%E2%82%AC'
            ELSE 'mock' END,
       target_table => 'notes', target_column => 'note', target_key => jsonb_build_object('id', id)))
FROM notes;
});
	my $waited = 0;
	for (1 .. 300)
	{
		last if $node->safe_psql($db,
			"SELECT count(*) FROM llm.queue WHERE status IN ('pending', 'running')") eq '0';
		select(undef, undef, undef, 0.1);
	}
	is($node->safe_psql($db, "SELECT count(*) FROM llm.queue WHERE status IN ('pending', 'running')"), '0',
		"$db: the queue drains");
	is($node->safe_psql($db, "SELECT count(*) FROM notes WHERE note = 'echo: note ' || id"), '38',
		"$db: the plain and retried items are written");
	if ($db eq 'latin1')
	{
		is($node->safe_psql($db, "SELECT note = 'caf' || chr(233) FROM notes WHERE id = 36"), 't',
			'latin1: a reply in Latin-1 is converted');
		like($node->safe_psql($db, "SELECT status || ': ' || error FROM llm.queue WHERE target_key = '{\"id\": 37}'"),
			qr/^failed: .*encoding/, 'latin1: a reply Latin-1 cannot hold fails its item, saying why');
	}
	else
	{
		is($node->safe_psql($db, "SELECT count(*) FROM llm.queue WHERE status = 'done'"), '40',
			'ascii: SQL_ASCII takes every reply as bytes');
	}
}
ok(!$node->log_contains(qr/outside a transaction|terminated by signal|exited with exit code 1/, $log_offset),
	'no worker error, exit or crash');

# the statistics show the worker's updates of llm.queue
my $upd = 0;
for (1 .. 50)
{
	$upd = $node->safe_psql('latin1',
		"SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'llm.queue'::regclass");
	last if $upd > 0;
	select(undef, undef, undef, 0.2);
}
cmp_ok($upd, '>=', 80, "pg_stat_user_tables counts the worker's updates of llm.queue ($upd)");

$node->stop;
stop_mock();
done_testing();
