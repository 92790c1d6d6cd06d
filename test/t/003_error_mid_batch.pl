# Errors inside one claimed batch stay with their own item: a write-back
# that raises (a trigger on the target refuses one row), a provider call
# that fails for good (HTTP 400) and one that fails once and is retried
# (HTTP 500, then 200), among items that succeed.  The failing write-back
# leaves nothing behind (its subtransaction is rolled back, write counter
# included) and the others are done and written once.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $n = 20;
my $port = start_mock();
my $node = llm_node('error_mid_batch', $port);
create_docs($node, $n);
# fires after docs_count_write (triggers fire in name order), so the
# refused row's counter was already bumped when the error comes
q1($node, q{
CREATE FUNCTION docs_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id = 7 THEN
        RAISE EXCEPTION 'row % refuses the reply', NEW.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER docs_refuse BEFORE UPDATE OF summary ON docs
    FOR EACH ROW EXECUTE FUNCTION docs_refuse();
});
ok(wait_workers($node, 1, 30), 'the queue worker runs');

# one transaction, so that one claim takes all of them; the same latency
# for all, so that their results come back together
is(q1($node, q{
SELECT count(llm.enqueue('doc ' || id,
                         CASE id WHEN 8 THEN 'mock?latency=300&fail=400'
                                 WHEN 9 THEN 'mock?latency=300&fail=500&times=1'
                                 ELSE 'mock?latency=300' END,
                         target_table => 'docs', target_column => 'summary',
                         target_key => jsonb_build_object('id', id)))
FROM docs}), $n, "$n items enqueued in one transaction");
ok(wait_drained($node, 30), 'the queue drains');

is(q1($node, "SELECT count(DISTINCT started_at) FROM llm.queue"), 1,
	'all the items were claimed in one batch');

# the item whose write-back raised
is(q1($node, "SELECT status || '|' || attempts || '|' || coalesce(reply, '<null>') || '|' || error "
	  . "FROM llm.queue WHERE target_key = '{\"id\": 7}'"),
	'failed|1|echo: doc 7|the reply could not be written back: row 7 refuses the reply',
	'the item whose write-back raised failed, with the error kept and the reply it paid for recorded');
is(q1($node, "SELECT coalesce(summary, '<null>') || '|' || writes FROM docs WHERE id = 7"),
	'<null>|0', 'its row is untouched: the rolled-back write left no trace, not even in the counter');

# the provider call that fails for good
like(q1($node, "SELECT status || '|' || attempts || '|' || error FROM llm.queue "
	  . "WHERE target_key = '{\"id\": 8}'"),
	qr/^failed\|1\|provider "mock" returned HTTP 400: .*mock error 400/,
	'the item refused with HTTP 400 failed at once, with the error kept');
is(q1($node, "SELECT coalesce(summary, '<null>') || '|' || writes FROM docs WHERE id = 8"),
	'<null>|0', 'its row is untouched');

# the provider call retried after a 500
is(q1($node, "SELECT status || '|' || attempts || '|' || reply FROM llm.queue "
	  . "WHERE target_key = '{\"id\": 9}'"),
	'done|1|echo: doc 9', 'the item that got a 500 once was retried within its claim and is done');
is(q1($node, "SELECT summary || '|' || writes FROM docs WHERE id = 9"),
	'echo: doc 9|1', 'its row was written once');

my $stats = mock_stats($port);
is($stats->{by_key}{'mock?latency=300&fail=500&times=1|doc 9'}, 2,
	'the retried item was sent twice (500, then 200)');
is($stats->{by_key}{'mock?latency=300&fail=400|doc 8'}, 1, 'the 400 was not retried');
is($stats->{requests}, $n + 1, 'no other request was repeated');

# everything else in the batch
is(q1($node, "SELECT count(*) FROM llm.queue WHERE status = 'done' AND error IS NULL "
	  . "AND reply = 'echo: ' || (SELECT body FROM docs WHERE id = (target_key->>'id')::int)"),
	$n - 2, 'all the other items are done with their own reply');
is(q1($node, "SELECT coalesce(string_agg(id || ':' || writes, ',' ORDER BY id), 'none') FROM docs "
	  . "WHERE id NOT IN (7, 8) AND (writes <> 1 OR summary IS DISTINCT FROM 'echo: ' || body)"),
	'none', 'and their rows written exactly once');
is(q1($node, "SELECT count(*) || '/' || count(DISTINCT id) FROM doc_writes"),
	($n - 2) . '/' . ($n - 2), 'the write audit agrees');

# how the failure sat among its neighbours: items written in the same
# transaction share finished_at (the transaction's now())
my $neighbours = q1($node, "SELECT count(*) FROM llm.queue WHERE status = 'done' AND finished_at = "
	  . "(SELECT finished_at FROM llm.queue WHERE target_key = '{\"id\": 7}')");
note "$neighbours done items were committed in the same write transaction as the refused one";

is(q1($node, "SELECT completed || '|' || failed FROM $QUEUE_WORKERS"),
	($n - 2) . '|2', 'llm.workers counts the done and failed items');
like(q1($node, "SELECT last_error FROM $QUEUE_WORKERS"), qr/./, 'llm.workers keeps a last error');

$node->stop;
stop_mock();
done_testing();
