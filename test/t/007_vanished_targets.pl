# Targets that change or go away after an item was enqueued: the table is
# dropped, a temporary table's session ends, the column is dropped, the
# column's type changes.  Each such item fails alone with a clear error:
# before its prompt is sent when the table or the column is gone (nothing
# is paid for), with its reply kept when the reply no longer fits the
# column; the worker never crashes (an earlier version dereferenced
# the missing table's schema and put the whole server in a crash-restart
# loop); the other items of the same batches are written.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_mock();
my $node = llm_node('vanished_targets', $port);
create_docs($node, 20);
ok(wait_workers($node, 1, 30), 'the queue worker runs');
my $log_offset = -s $node->logfile;

q1($node, q{
CREATE TABLE gone (id int PRIMARY KEY, note text);
CREATE TABLE lost_column (id int PRIMARY KEY, note text, keep text);
CREATE TABLE retyped (id int PRIMARY KEY, note text);
INSERT INTO gone VALUES (1, NULL);
INSERT INTO lost_column VALUES (1, NULL, NULL);
INSERT INTO retyped VALUES (1, NULL);
});

# each target changes in the transaction that enqueued into it, so the
# worker finds the change when it claims the item; good items go with them
my $enqueue = "SELECT llm.enqueue('%s', 'mock?latency=200', target_table => '%s', "
  . "target_column => 'note', target_key => '{\"id\": 1}')";
q1($node, "BEGIN; " . sprintf($enqueue, 'into a dropped table', 'gone')
	  . "; DROP TABLE gone; COMMIT;");
q1($node, "BEGIN; " . sprintf($enqueue, 'into a dropped column', 'lost_column')
	  . "; ALTER TABLE lost_column DROP COLUMN note; COMMIT;");
q1($node, "BEGIN; " . sprintf($enqueue, 'into a retyped column', 'retyped')
	  . "; ALTER TABLE retyped ALTER COLUMN note TYPE integer USING NULL; COMMIT;");
# a temporary table whose session ended: llm.enqueue refuses temporary
# tables, so the item is made the way an older version could have
q1($node, q{
CREATE TEMP TABLE scratch (id int PRIMARY KEY, note text);
INSERT INTO scratch VALUES (1, NULL);
INSERT INTO llm.queue (prompt, model, target_table, target_column, target_key, enqueued_by)
VALUES ('into an ended session''s temporary table', 'mock?latency=200', 'scratch'::regclass,
        'note', '{"id": 1}', (SELECT oid FROM pg_roles WHERE rolname = current_user));
});
is(enqueue_docs($node, 'mock?latency=200'), 20, '20 good items enqueued alongside');

ok(wait_drained($node, 30), 'the queue drains');
my %want = (
	'into a dropped table' => 'the target table no longer exists',
	'into a dropped column' => 'column "note" of table public.lost_column no longer exists',
	'into a retyped column' => 'does not fit column "note" of table public.retyped: invalid input syntax for type integer',
	"into an ended session's temporary table" => 'the target table no longer exists',
);
for my $prompt (sort keys %want)
{
	my ($status, $reply, $error) = split /\|/, q1($node,
		"SELECT status, reply, error FROM llm.queue WHERE prompt = "
		  . $node->safe_psql('postgres', "SELECT quote_literal(\$q\$$prompt\$q\$)"));
	is($status, 'failed', "$prompt: the item failed");
	like($error, qr/\Q$want{$prompt}\E/, "$prompt: the error says why");
	if ($prompt eq 'into a retyped column')
	{
		is($reply, "echo: $prompt", "$prompt: the reply it paid for is kept");
	}
	else
	{
		like($error, qr/the prompt was not sent/, "$prompt: the error says nothing was sent");
		is($reply, '', "$prompt: no reply, nothing paid for");
	}
}
is(q1($node, "SELECT count(*) FROM docs WHERE writes = 1 AND summary = 'echo: ' || body"), 20,
	'the 20 good items are written');
ok(!$node->log_contains(qr/terminated by signal|server process .* was terminated|reinitializing/, $log_offset),
	'no process crashed');
is(q1($node, "SELECT count(*) FROM llm.queue WHERE attempts > 1"), 0, 'nothing was claimed twice');
ok($node->log_contains(qr/pg_llm worker started/), 'one worker ran throughout');
is(scalar(worker_pids($node)), 1, 'and it still runs');

$node->stop;
stop_mock();
done_testing();
