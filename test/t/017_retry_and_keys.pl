# Money not spent twice by the queue (issue 19, points 5 and 7).
#
# llm.retry: replies that were paid for and could not be written back (a
# trigger's unqualified name, a column too short) are written back from
# the kept reply once the cause is fixed, without a new request and
# without a second usage row; an item that failed at the provider is sent
# again; another role's items are not touched; the role's cap holds.
#
# A refused key: a provider that answers 401 does not burn the queue.  The
# items wait (pending), nothing more is sent while the key is refused, and
# once an administrator changes the key they go out by themselves with the
# new key.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PgLlmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_mock();
my $node = llm_node('retry_and_keys', $port);
ok(wait_workers($node, 1, 30), 'the queue worker runs');

q1($node, q{
CREATE ROLE alice;
CREATE ROLE bob;
GRANT USAGE ON SCHEMA llm TO alice, bob;
GRANT EXECUTE ON FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text, text, text),
                          llm.retry(bigint[], text, text) TO alice, bob;
GRANT SELECT ON llm.queue TO alice, bob;
CREATE TABLE audit (id int, at timestamptz DEFAULT now());
GRANT INSERT ON audit TO alice;
CREATE TABLE notes (id int PRIMARY KEY, body text, label varchar(16));
INSERT INTO notes SELECT g, CASE WHEN g IN (4, 5) THEN 'a much longer note ' ELSE 'note ' END || g
  FROM generate_series(1, 6) g;
ALTER TABLE notes OWNER TO alice;
-- a trigger that names a table without its schema
CREATE FUNCTION note_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id <= 3 THEN
        INSERT INTO audit (id) VALUES (NEW.id);
    END IF;
    RETURN NEW;
END $$;
ALTER FUNCTION note_audit() OWNER TO alice;
CREATE TRIGGER note_audit BEFORE UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION note_audit();
});

# rows 1-3: the trigger's unqualified name; rows 4-5: a reply longer than
# varchar(16); row 6: a provider error
is(q1($node, q{
SET ROLE alice;
SELECT count(llm.enqueue(body, 'mock', target_table => 'notes', target_column => 'label',
                         target_key => jsonb_build_object('id', id))) FROM notes WHERE id <= 5;
SELECT count(llm.enqueue('fails', 'mock?fail=400', target_table => 'notes', target_column => 'label',
                         target_key => '{"id": 6}'));
}), "5\n1", "alice's items are queued");
ok(wait_drained($node, 60), 'the queue drains');
is(q1($node, "SELECT string_agg(status, ',' ORDER BY id) FROM llm.queue"),
	'failed,failed,failed,failed,failed,failed', 'every item failed');
like(q1($node, "SELECT error FROM llm.queue WHERE target_key = '{\"id\": 1}'"),
	qr/^the reply could not be written back: relation "audit" does not exist .*write-backs run with search_path = pg_catalog, pg_temp: qualify the names in the target table's triggers, defaults and checks with their schema, then llm.retry writes the kept reply back/,
	'the unqualified name: the error says that write-backs run with search_path = pg_catalog, pg_temp and to qualify names');
is(q1($node, "SELECT count(*) FROM llm.queue WHERE answered AND reply = 'echo: ' || prompt"), '5',
	'the five paid replies are kept');
my $sent = mock_stats($port)->{requests};
is($sent, 6, 'six requests were sent');

# bob cannot retry alice's items
is(q1($node, "SET ROLE bob; SELECT llm.retry()"), '0', "another role's retry puts none of alice's items back");

# fix the trigger, retry those items only (by error); then widen the column
q1($node, q{
CREATE OR REPLACE FUNCTION note_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id <= 3 THEN
        INSERT INTO public.audit (id) VALUES (NEW.id);
    END IF;
    RETURN NEW;
END $$;
});
is(q1($node, "SET ROLE alice; SELECT llm.retry(error_like => '%relation \"audit\" does not exist%')"), '3',
	'retry by error pattern puts the three items back');
ok(poll_until($node, "SELECT string_agg(status, ',' ORDER BY id) FROM llm.queue WHERE id <= 3", 'done,done,done', 60),
	'they are done');
is(q1($node, "SELECT count(*) FROM audit"), '3', 'their write-backs ran the fixed trigger');
q1($node, "ALTER TABLE notes ALTER COLUMN label TYPE text");
my $ids = q1($node, "SELECT array_agg(id ORDER BY id) FROM llm.queue WHERE target_key IN ('{\"id\": 4}', '{\"id\": 5}')");
is(q1($node, "SET ROLE alice; SELECT llm.retry(ids => '$ids')"), '2', 'retry by ids puts the two others back');
ok(poll_until($node, "SELECT count(*) FROM notes WHERE label = 'echo: ' || body", '5', 60),
	'all five replies are written back');
is(mock_stats($port)->{requests}, $sent, 'without a single request: the kept replies were written');
is(q1($node, "SELECT count(*) FROM llm.usage WHERE mode = 'queue' AND outcome = 'ok'"), '5',
	'and the usage rows of the first calls stay the only ones');

# the item that failed at the provider is sent again
is(q1($node, "SET ROLE alice; SELECT llm.retry()"), '1', 'retry of the rest puts the failed call back');
ok(poll_until($node, "SELECT status FROM llm.queue WHERE target_key = '{\"id\": 6}'", 'failed', 60),
	'it fails again');
is(mock_stats($port)->{requests}, $sent + 1, 'after one new request');
my ($rc0, $out0, $err0) = $node->psql('postgres', "SET ROLE alice; SELECT llm.retry(job => 'nosuchjob')");
like($err0, qr/job "nosuchjob" does not exist/, 'a job that is not the caller\'s is an error');

# the cap on queued items holds for retried items
q1($node, "SELECT llm.set_budget('alice', NULL, NULL, 0)");
my ($rc, $out, $err) = $node->psql('postgres', "SET ROLE alice; SELECT llm.retry()");
like($err, qr/role "alice" may have at most 0 items queued/, 'retry keeps to the cap on queued items');
q1($node, "SELECT llm.set_budget('alice', NULL, NULL, NULL)");

# ---- a refused key ----
q1($node, q{
SELECT llm.create_provider('locked', 'openai', 'http://127.0.0.1:} . $port . q{/v1', api_key => 'sk-wrong',
                           options => '{"pass_through": false}');
SELECT llm.add_model('locked-model', 'locked', 'mock');
CREATE TABLE tickets (id int PRIMARY KEY, label text);
INSERT INTO tickets SELECT g, NULL FROM generate_series(1, 200) g;
ALTER TABLE tickets OWNER TO bob;
});
$sent = mock_stats($port)->{requests};
is(q1($node, q{
SET ROLE bob;
SELECT count(llm.enqueue('ticket ' || id, 'locked-model', target_table => 'tickets', target_column => 'label',
                         target_key => jsonb_build_object('id', id))) FROM tickets;
}), '200', '200 items for a provider whose key is wrong');
ok(poll_until($node, "SELECT count(*) > 0 FROM llm.queue WHERE prompt LIKE 'ticket%' AND status = 'pending' "
	  . "AND error LIKE '%fix the key with llm.alter_provider(''locked'', api_key => ''...'')%'", 't', 60),
	'the items wait, saying what to do');
ok(stays($node, "SELECT count(*) FROM llm.queue WHERE prompt LIKE 'ticket%' AND status IN ('failed', 'done')", '0', 8),
	'none fails (or is done) while the key is refused');
my $refused = mock_stats($port)->{requests} - $sent;
cmp_ok($refused, '<=', 2, "one or two requests were refused ($refused), not 200");
q1($node, "SELECT llm.alter_provider('locked', api_key => 'sk-mock')");
ok(poll_until($node, "SELECT count(*) FROM tickets WHERE label = 'echo: ticket ' || id", '200', 120),
	'once the key is changed, the items go out by themselves and are written back');
is(q1($node, "SELECT count(*) FROM llm.queue WHERE prompt LIKE 'ticket%' AND status = 'done'"), '200',
	'every item is done');
is(mock_stats($port)->{requests} - $sent, 200 + $refused, 'each sent once with the new key');

$node->stop;
stop_mock();
done_testing();
