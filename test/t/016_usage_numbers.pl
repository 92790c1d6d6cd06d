# The worker and a provider's absurd numbers: a usage record that cannot
# be written fails neither the others nor the items written back in the
# same transaction.  One role's items come back with prompt_tokens 1e15
# (once past numeric(14, 8): the writer's INSERT failed, the worker
# exited, the other roles' usage records of the chunk were lost and their
# items sent again and billed up to llm.max_attempts times).  Then a record
# that cannot be written at all (a CHECK an administrator added refuses
# it) is dropped alone and counted, and the others of its chunk are kept.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_mock();
my $node = llm_node('usage_numbers', $port);
ok(wait_workers($node, 1, 30), 'the queue worker runs');
my @first = worker_pids($node);

my $absurd = '%7B%22prompt_tokens%22%3A1e15%2C%22completion_tokens%22%3A5%7D';
$node->safe_psql('postgres', qq{
	SELECT llm.add_model('priced', 'mock', 'm', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
	SELECT llm.add_model('absurd', 'mock', 'm?usage=$absurd', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
	CREATE ROLE alice;
	CREATE ROLE mallory;
	GRANT USAGE ON SCHEMA llm TO alice, mallory;
	GRANT EXECUTE ON FUNCTION llm.enqueue TO alice, mallory;
});

# one transaction, so that one claim takes them all and one write-back
# writes their results and their usage together
$node->safe_psql('postgres', q{
	BEGIN;
	SET LOCAL ROLE alice;
	SELECT llm.enqueue('alice ' || i, 'priced') FROM generate_series(1, 20) i;
	SET LOCAL ROLE mallory;
	SELECT llm.enqueue('mallory ' || i, 'absurd') FROM generate_series(1, 5) i;
	COMMIT;
});
ok(wait_drained($node, 60), 'the queue drained');
is(q1($node, "SELECT string_agg(DISTINCT status || ' after ' || attempts, ', ') FROM llm.queue"),
	'done after 1', 'every item is done after one attempt: none sent again');
my $stats = mock_stats($port);
my @twice = grep { $stats->{by_key}{$_} != 1 } grep { /\|(alice|mallory) / } keys %{ $stats->{by_key} };
is(scalar(@twice), 0, 'the provider received each prompt once')
  or diag explain [ map { "$_ = $stats->{by_key}{$_}" } @twice ];
ok(poll_until($node, "SELECT count(*) FROM llm.usage", '25', 20), 'a usage row for every item');
is(q1($node, "SELECT string_agg(r.rolname || ': ' || n || ' rows, ' || paid || ' paid, ' || est || ' estimated', '; ' ORDER BY r.rolname) "
	  . "FROM (SELECT role_oid, count(*) AS n, count(*) FILTER (WHERE cost_usd > 0) AS paid, "
	  . "count(*) FILTER (WHERE estimated) AS est FROM llm.usage GROUP BY role_oid) u "
	  . "JOIN pg_roles r ON r.oid = u.role_oid"),
	'alice: 20 rows, 20 paid, 0 estimated; mallory: 5 rows, 5 paid, 5 estimated',
	'the absurd numbers are counted from the text, marked estimated; the others are the provider\'s');
is(join(',', worker_pids($node)), join(',', @first), 'the worker did not restart');
like(slurp_file($node->logfile), qr/reported usage numbers pg_llm does not bill by/,
	'the server log names the provider whose numbers were refused');

# a record the table refuses: dropped alone, counted; its chunk kept
$node->safe_psql('postgres', q{
	ALTER TABLE llm.usage ADD CONSTRAINT no_poison CHECK (model <> 'poison');
	SELECT llm.add_model('poison', 'mock', 'm');
	TRUNCATE llm.usage;
});
$node->safe_psql('postgres', q{
	BEGIN;
	SET LOCAL ROLE alice;
	SELECT llm.enqueue('again ' || i, 'priced') FROM generate_series(1, 10) i;
	RESET ROLE;
	SELECT llm.enqueue('poisoned', 'poison');
	COMMIT;
});
ok(wait_drained($node, 60), 'the queue drained again');
is(q1($node, "SELECT string_agg(DISTINCT status || ' after ' || attempts, ', ') FROM llm.queue WHERE prompt <> 'alice' AND prompt NOT LIKE 'alice %' AND prompt NOT LIKE 'mallory %'"),
	'done after 1', 'the items of the refused record\'s write-back are done after one attempt');
ok(poll_until($node, "SELECT count(*) FROM llm.usage", '10', 20), 'the other ten rows are written');
is(q1($node, "SELECT count(*) FROM llm.usage WHERE model = 'poison'"), '0', 'the refused record is not');
is(q1($node, 'SELECT dropped FROM llm.usage_buffer_status()'), '1', 'it is counted as dropped');
like(slurp_file($node->logfile), qr/a usage record could not be written: .*no_poison/,
	'the server log says why');
is(join(',', worker_pids($node)), join(',', @first), 'the worker still did not restart');

$node->stop;
stop_mock();
done_testing();
