# llm.usage_buffer_status().pending is 0 only once every call so far has
# its row in llm.usage: records a writer has taken out of shared memory
# but not committed yet are pending too.  Counted only while they were in
# shared memory, a session that waited for pending = 0 (say, before a
# TRUNCATE of llm.usage) could see the row land after it.  The writer is
# held at its INSERT by a lock on llm.usage, with the record in hand.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use IPC::Run;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_mock();
my $node = llm_node('usage_pending', $port);
ok(wait_workers($node, 1, 30), 'the queue worker runs');
is(q1($node, "SELECT pending FROM llm.usage_buffer_status()"), '0', 'nothing is pending at first');

# a session of its own, fed statements while it stays open
my %lock = (in => '', out => '', err => '');
$lock{h} = IPC::Run::start([ 'psql', '-X', '-q', '-A', '-t', '-d', $node->connstr('postgres') ],
	'<', \$lock{in}, '>', \$lock{out}, '2>', \$lock{err});
$lock{in} .= "BEGIN; LOCK TABLE llm.usage IN SHARE MODE;\n";
$lock{h}->pump_nb;
ok(poll_until($node, "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
	  . "WHERE c.relname = 'usage' AND l.mode = 'ShareLock' AND l.granted", '1', 30),
	'llm.usage is locked against the writers');

is(q1($node, "SELECT llm.chat('one', 'mock'), llm.chat('two', 'mock')"), 'echo: one|echo: two', 'two calls');
# the worker takes both records and waits for the lock at its INSERT
ok(poll_until($node, "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
	  . "WHERE c.relname = 'usage' AND l.mode = 'RowExclusiveLock' AND NOT l.granted", '1', 30),
	'a writer waits for the lock with the records');
is(q1($node, "SELECT pending FROM llm.usage_buffer_status()"), '2',
	'the records it holds are pending, though no longer in shared memory');

$lock{in} .= "COMMIT;\n\\q\n";
$lock{h}->finish;
ok(poll_until($node, "SELECT pending FROM llm.usage_buffer_status()", '0', 30), 'written, nothing is pending');
is(q1($node, "SELECT count(*) FROM llm.usage"), '2', 'and both rows are in llm.usage');
is(q1($node, "SELECT dropped FROM llm.usage_buffer_status()"), '0', 'no record was dropped');

$node->stop;
stop_mock();
done_testing();
