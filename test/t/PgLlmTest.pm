# Helpers shared by the TAP tests in test/t: a local mock provider started
# and stopped by PID, a private instance with the queue worker preloaded, a
# target table that counts its writes, and polls with their own timeouts.
#
# Each test still builds its own instance and mock; nothing is shared
# between test files.

package PgLlmTest;

use strict;
use warnings;

use Exporter 'import';
use FindBin;
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

our @EXPORT = qw(start_mock stop_mock mock_stats llm_node poll_until
  stays worker_pids wait_workers create_docs enqueue_docs wait_drained
  check_exactly_once q1 $QUEUE_WORKERS);

# llm.workers restricted to the queue workers (it also lists usage writers)
our $QUEUE_WORKERS = "(SELECT * FROM llm.workers WHERE pid IN "
  . "(SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_llm worker')) w";

my @mocks;

# Start test/mock/server.js on a free loopback port; returns the port.
# Extra arguments go to the mock (for example '--latency', 50).
sub start_mock
{
	my (@args) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir('mock');
	my $js = $ENV{PG_LLM_MOCK_JS} // "$FindBin::RealBin/../mock/server.js";
	die "mock provider not found at $js" unless -r $js;
	my $h = IPC::Run::start(
		[ 'node', $js, '--port', '0', '--port-file', "$dir/port", @args ],
		'<', '/dev/null', '>', "$dir/mock.out", '2>', "$dir/mock.log");
	my $deadline = time + 15;
	usleep(50_000) while !-s "$dir/port" && time < $deadline;
	die "the mock provider did not start: "
	  . PostgreSQL::Test::Utils::slurp_file("$dir/mock.log")
	  unless -s "$dir/port";
	chomp(my $port = PostgreSQL::Test::Utils::slurp_file("$dir/port"));
	chomp(my $pid = PostgreSQL::Test::Utils::slurp_file("$dir/port.pid"));
	push @mocks, { h => $h, pid => $pid, port => $port };
	note "mock provider on 127.0.0.1:$port (pid $pid)";
	return $port;
}

# Stop every mock this test started, by PID.
sub stop_mock
{
	while (my $m = pop @mocks)
	{
		kill 'TERM', $m->{pid};
		eval { $m->{h}->finish; };
	}
}

END { stop_mock(); }

# The mock's counters: {requests, by_key => {"<model>|<prompt>" => n}, ...}.
sub mock_stats
{
	my ($port) = @_;
	my $r = HTTP::Tiny->new(timeout => 10)->get("http://127.0.0.1:$port/_stats");
	die "mock /_stats: $r->{status} $r->{content}" unless $r->{success};
	return decode_json($r->{content});
}

# A new instance with pg_llm preloaded and a worker for "postgres" (unless
# the settings say otherwise), the extension created and the provider
# "mock" pointing at the mock on $port.  %opt: conf => {name => value}.
sub llm_node
{
	my ($name, $port, %opt) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	my %conf = (
		shared_preload_libraries => "'pg_llm'",
		'llm.database' => "'postgres'",
		'llm.lease_time' => "'3s'",
		'llm.worker_naptime' => "'200ms'",
		'llm.worker_concurrency' => 50,
		# Cluster.pm turns it off; a killed worker must restart the instance
		restart_after_crash => 'on',
		max_worker_processes => 16,
		%{ $opt{conf} // {} });
	$node->append_conf('postgresql.conf',
		join('', map { "$_ = $conf{$_}\n" } sort keys %conf));
	$node->start;
	$node->safe_psql('postgres',
		"CREATE EXTENSION pg_llm; "
		  . "SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$port/v1', api_key => 'sk-mock', options => '{\"pass_through\": true}');"
	);
	return $node;
}

# One value from a query.
sub q1
{
	my ($node, $sql) = @_;
	return $node->safe_psql('postgres', $sql);
}

# Poll a query until it returns $expected, for at most $timeout seconds of
# wall-clock time (poll_query_until counts attempts, which stretch when
# psql is slow); connection errors (a restarting instance) mean "not yet".
sub poll_until
{
	my ($node, $sql, $expected, $timeout) = @_;
	$timeout //= 30;
	my $end = time + $timeout;
	my ($out, $err) = ('', '');
	while (1)
	{
		$node->psql('postgres', $sql, stdout => \$out, stderr => \$err);
		return 1 if $out eq $expected && $err eq '';
		last if time >= $end;
		usleep(100_000);
	}
	diag "timed out after ${timeout}s waiting for\n$sql\nto return '$expected'; "
	  . "last answer '$out'" . ($err ne '' ? ", error: $err" : '');
	return 0;
}

# Does a query keep returning $expected for $seconds?  (For what must not
# happen; returns false at the first other answer.)
sub stays
{
	my ($node, $sql, $expected, $seconds) = @_;
	my $end = time + $seconds;
	while (time < $end)
	{
		my $got = q1($node, $sql);
		if ($got ne $expected)
		{
			diag "expected '$expected' to stay, got '$got'";
			return 0;
		}
		usleep(100_000);
	}
	return 1;
}

# PIDs of the running queue workers, sorted.
sub worker_pids
{
	my ($node) = @_;
	my $out = q1($node,
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_llm worker' ORDER BY pid");
	return grep { $_ ne '' } split /\n/, $out;
}

# Wait until $n workers run (and, with $exclude, none of those PIDs).
sub wait_workers
{
	my ($node, $n, $timeout, @exclude) = @_;
	my $not = @exclude ? ' AND pid NOT IN (' . join(',', @exclude) . ')' : '';
	return poll_until($node,
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_llm worker'$not",
		$n, $timeout);
}

# A target table of $n rows whose result column counts its writes: every
# UPDATE of summary adds one to writes and a row to doc_writes (with the
# writing backend's PID), in the writer's transaction.  The trigger names
# its table with its schema: the worker's write-back runs with search_path
# pinned to pg_catalog, pg_temp.
sub create_docs
{
	my ($node, $n) = @_;
	q1($node, qq{
CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL, summary text,
                   writes int NOT NULL DEFAULT 0);
CREATE TABLE doc_writes (id int NOT NULL, pid int NOT NULL,
                         xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
                         at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION docs_count_write() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    NEW.writes := OLD.writes + 1;
    INSERT INTO public.doc_writes (id, pid) VALUES (NEW.id, pg_backend_pid());
    RETURN NEW;
END
\$\$;
CREATE TRIGGER docs_count_write BEFORE UPDATE OF summary ON docs
    FOR EACH ROW EXECUTE FUNCTION docs_count_write();
INSERT INTO docs (id, body) SELECT g, 'doc ' || g FROM generate_series(1, $n) g;
});
	return;
}

# Enqueue one item per docs row (optionally only WHERE $where) in one
# transaction, with write-back into docs.summary; returns the count.
sub enqueue_docs
{
	my ($node, $model, $where) = @_;
	$where = $where ? "WHERE $where" : '';
	return q1($node, qq{
SELECT count(llm.enqueue('doc ' || id, '$model', target_table => 'docs',
                         target_column => 'summary',
                         target_key => jsonb_build_object('id', id)))
FROM docs $where});
}

# Wait until no item is pending or running.
sub wait_drained
{
	my ($node, $timeout) = @_;
	return poll_until($node,
		"SELECT count(*) FROM llm.queue WHERE status IN ('pending', 'running', 'submitted')",
		'0', $timeout);
}

# The crash-safety property: $n items, all done, and every target row
# written exactly once, with its own reply.
sub check_exactly_once
{
	my ($node, $n, $label) = @_;
	is(q1($node, "SELECT count(*) || '/' || count(DISTINCT target_key) FROM llm.queue"),
		"$n/$n", "$label: $n queue items, one per target row: none lost or added");
	is(q1($node, "SELECT string_agg(status || '=' || n, ',' ORDER BY status) "
		  . "FROM (SELECT status, count(*) AS n FROM llm.queue GROUP BY status) s"),
		"done=$n", "$label: every item is done");
	is(q1($node, "SELECT coalesce(string_agg(id || ':' || writes, ',' ORDER BY id), 'none') "
		  . "FROM docs WHERE writes <> 1"),
		'none', "$label: no target row written twice or never");
	is(q1($node, "SELECT count(*) FROM docs WHERE writes = 1 AND summary = 'echo: ' || body"),
		$n, "$label: every target row holds its own reply");
	is(q1($node, "SELECT count(*) || '/' || count(DISTINCT id) FROM doc_writes"),
		"$n/$n", "$label: the write audit has one write per row");
	is(q1($node, "SELECT count(*) FROM llm.queue q JOIN docs d ON d.id = (q.target_key->>'id')::int "
		  . "WHERE q.reply = d.summary AND q.error IS NULL AND q.lease_until IS NULL "
		  . "AND q.finished_at IS NOT NULL"),
		$n, "$label: each queue reply is the one written, with no error or lease left");
	return;
}

1;
