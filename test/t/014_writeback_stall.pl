# A plain role cannot stall the worker, nor through it every call of the
# cluster (issue 18, BAD 2).  Mallory holds a row lock on her own target
# rows in an idle transaction for 60 s, and her other target table has a
# trigger that sleeps for an hour.  Meanwhile another role's 100 items
# drain and 10,000 sync calls complete (with a usage buffer small enough
# that a stalled writer would fill it at once).  Her write-backs are put
# off, each try bounded by llm.writeback_timeout, and retried without a new
# call: the locked ones are written once the lock is gone, the sleeping
# trigger's fail with a clear error, their replies kept.  Nothing is sent
# twice (the mock's counter).  Then the wait for room in the usage buffer:
# with the writers blocked for good (llm.usage locked by a superuser), a
# chat_many that has filled it answers a cancel at once, and its records
# are not lost.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PgLlmTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

my $port = start_mock();
my $node = llm_node('writeback_stall', $port, conf => {
	'llm.writeback_timeout' => "'3s'",
	'llm.max_attempts' => 6,
	'llm.usage_buffer' => 512 });
ok(wait_workers($node, 1, 30), 'the queue worker runs');

q1($node, q{
CREATE ROLE mallory LOGIN;
CREATE ROLE victim LOGIN;
GRANT USAGE ON SCHEMA llm TO mallory, victim;
GRANT EXECUTE ON FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text, text, text),
                          llm.chat(text, text, text, jsonb),
                          llm.chat_many(text[], text, text, jsonb) TO mallory, victim;
CREATE TABLE mal_t (id int PRIMARY KEY, answer text);
INSERT INTO mal_t SELECT g FROM generate_series(1, 5) g;
ALTER TABLE mal_t OWNER TO mallory;
CREATE TABLE mal_slow (id int PRIMARY KEY, answer text);
INSERT INTO mal_slow SELECT g FROM generate_series(1, 2) g;
ALTER TABLE mal_slow OWNER TO mallory;
CREATE FUNCTION public.nap() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_catalog.pg_sleep(3600); RETURN NEW; END $$;
ALTER FUNCTION public.nap() OWNER TO mallory;
CREATE TRIGGER nap BEFORE UPDATE ON mal_slow FOR EACH ROW EXECUTE FUNCTION public.nap();
CREATE TABLE vic_t (id int PRIMARY KEY, answer text);
INSERT INTO vic_t SELECT g FROM generate_series(1, 100) g;
ALTER TABLE vic_t OWNER TO victim;
});

# a session of its own, fed statements while it stays open
sub session
{
	my ($user) = @_;
	my %s = (in => '', out => '', err => '');
	$s{h} = IPC::Run::start(
		[ 'psql', '-X', '-q', '-A', '-t', '-d', $node->connstr('postgres') . " user=$user" ],
		'<', \$s{in}, '>', \$s{out}, '2>', \$s{err});
	return \%s;
}

sub send_sql
{
	my ($s, $sql) = @_;
	$s->{in} .= "$sql\n";
	$s->{h}->pump_nb;
	return;
}

# mallory: the lock on her rows, held in an idle transaction
my $lock = session('mallory');
send_sql($lock, "BEGIN; SELECT id FROM mal_t FOR UPDATE;");
ok(poll_until($node, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'mallory' "
	  . "AND state = 'idle in transaction'", '1', 30), "mallory's transaction holds her rows");
my $locked_at = time;
is(q1($node, q{
SET ROLE mallory;
SELECT count(llm.enqueue('mal ' || id, 'mock', target_table => 'mal_t', target_column => 'answer',
                         target_key => jsonb_build_object('id', id))) FROM mal_t;
SELECT count(llm.enqueue('slow ' || id, 'mock', target_table => 'mal_slow', target_column => 'answer',
                         target_key => jsonb_build_object('id', id))) FROM mal_slow;
}), "5\n2", "mallory's items are queued");
ok(poll_until($node, "SELECT count(*) > 0 FROM llm.queue WHERE prompt LIKE 'mal %' AND status = 'pending' "
	  . "AND answered AND error LIKE '%held up longer than llm.writeback_timeout (3000 ms)%'", 't', 60),
	"a held-up write-back is put off with a clear error, its reply kept");

# another role's items drain while the lock is held
is(q1($node, q{
SET ROLE victim;
SELECT count(llm.enqueue('vic ' || id, 'mock', target_table => 'vic_t', target_column => 'answer',
                         target_key => jsonb_build_object('id', id))) FROM vic_t;
}), '100', "the victim's 100 items are queued");
ok(poll_until($node, "SELECT count(*) FROM vic_t WHERE answer = 'echo: vic ' || id", '100', 60),
	"the victim's 100 items are written back while mallory's lock is held");

# and 10,000 sync calls complete, their usage recorded
is(q1($node, "SET statement_timeout = '300s'; SET ROLE victim; "
	  . "SELECT count(llm.chat('sync ' || g, 'mock')) FROM generate_series(1, 10000) g"),
	'10000', '10,000 sync calls complete while the lock is held');
is(q1($node, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'mallory' "
	  . "AND state = 'idle in transaction'"), '1', 'the lock was held all along');
ok(poll_until($node, "SELECT count(*) FROM llm.usage WHERE mode = 'sync'", '10000', 60),
	'every sync call is in llm.usage');

# the lock goes after 60 s; the locked replies are written without a new call
my $left = 60 - (time - $locked_at);
sleep($left) if $left > 0;
send_sql($lock, "COMMIT;\\q");
$lock->{h}->finish;
ok(poll_until($node, "SELECT count(*) FROM mal_t WHERE answer = 'echo: mal ' || id", '5', 120),
	"after the lock, mallory's locked replies are written back");
ok(poll_until($node, "SELECT string_agg(status, ',') FROM llm.queue WHERE prompt LIKE 'slow %'",
		'failed,failed', 120), "the sleeping trigger's items fail");
is(q1($node, "SELECT count(*) FROM llm.queue WHERE prompt LIKE 'slow %' AND answered AND reply = 'echo: ' || prompt "
	  . "AND error LIKE 'the reply could not be written back: it was held up longer than llm.writeback_timeout (3000 ms) 6 times%llm.retry%'"),
	'2', '... with a clear error and their replies kept');
is(q1($node, "SELECT count(*) FROM mal_slow WHERE answer IS NOT NULL"), '0', '... and nothing written');
ok(wait_drained($node, 60), 'the queue drains');
is(mock_stats($port)->{requests}, 10107, 'every item and call was sent once: 5 + 2 + 100 + 10,000 requests');
is(q1($node, "SELECT count(*) FROM llm.usage WHERE mode = 'queue'"), '107', 'one usage row per item');

# the wait for room: writers blocked for good, a cancel ends it at once
my $blocker = session('postgres');
send_sql($blocker, "BEGIN; LOCK TABLE llm.usage IN ACCESS EXCLUSIVE MODE;");
ok(poll_until($node, "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
	  . "WHERE c.relname = 'usage' AND l.mode = 'AccessExclusiveLock' AND l.granted", '1', 30),
	'llm.usage is locked: no writer can write');
my $waits = q1($node, "SELECT waited FROM llm.usage_buffer_status()");
my $many = session('victim');
send_sql($many, "SELECT count(*) FROM llm.chat_many(array(SELECT 'many ' || g FROM generate_series(1, 12000) g), 'mock');");
ok(poll_until($node, "SELECT waited > $waits FROM llm.usage_buffer_status()", 't', 120),
	'chat_many waits for room in the usage buffer')
  or diag("psql said: $many->{err}; activity: "
	  . q1($node, "SELECT string_agg(usename || ' ' || state || ' ' || coalesce(wait_event_type || ':' || wait_event, '-') || ' ' || left(query, 60), E'\n') FROM pg_stat_activity WHERE usename IS NOT NULL")
	  . ' buffer: ' . q1($node, "SELECT * FROM llm.usage_buffer_status()"));
my $pid = q1($node, "SELECT pid FROM pg_stat_activity WHERE usename = 'victim' AND state = 'active'");
q1($node, "SELECT pg_cancel_backend($pid)");
ok(poll_until($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid AND state = 'active'", '0', 10),
	'a cancel ends the wait at once');
send_sql($many, "SELECT 1;");
ok(poll_until($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid AND state = 'idle'", '1', 10),
	'the session goes on');
like($many->{err}, qr/canceling statement due to user request/, 'with the usual error');
send_sql($blocker, "COMMIT;\\q");
$blocker->{h}->finish;
send_sql($many, "SELECT llm.chat('after', 'mock');\\q");
$many->{h}->finish;
my $sent = mock_stats($port)->{requests} - 10107;
ok(poll_until($node, "SELECT (SELECT count(*) FROM llm.usage WHERE mode IN ('many', 'sync')) - 10000 >= $sent",
		't', 60),
	"every request chat_many sent is in llm.usage ($sent): kept records are handed over, not lost");
is(q1($node, "SELECT dropped FROM llm.usage_buffer_status()"), '0', 'no record was dropped');

$node->stop;
stop_mock();
done_testing();
