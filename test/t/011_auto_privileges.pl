# Enrich on insert with least privilege: the configuring role must be able
# to UPDATE the target, the worker writes as that role (column privileges
# and row-level security apply), and a dropped, altered or forbidden target
# fails its queue items with a clear error while the worker goes on.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EnrichTest;

start_emulator();
my $node = enrich_node('autopriv');
my $pid0 = worker_pid($node);
isnt($pid0, '', 'the enrich worker is running');
emu_control({ reset => JSON::PP::true });

sub wait_idle
{
	my ($what) = @_;
	is($node->safe_psql('postgres', "SELECT enrich.wait('60 s')"), 't', "enrich.wait: $what");
}

# The status and last error of the newest queue item for a key.
sub item
{
	my ($key) = @_;
	return $node->safe_psql('postgres', qq{
SELECT status || ' | ' || coalesce(last_error, '') FROM enrich.queue
 WHERE kind = 'company' AND key = '$key' ORDER BY id DESC LIMIT 1});
}

sub worker_alive
{
	my ($what) = @_;
	is($node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'enrich worker'"), $pid0,
		"the same worker is still running ($what)");
}

$node->safe_psql('postgres', q{
CREATE ROLE alice LOGIN;
CREATE ROLE bob LOGIN;
GRANT EXECUTE ON FUNCTION enrich.auto_enrich(regclass, text, name, name),
                          enrich.stop_auto_enrich(regclass) TO alice, bob;
CREATE TABLE t1 (id int PRIMARY KEY, domain text, note text, info jsonb);
CREATE INDEX ON t1 (domain);
-- who the worker's UPDATE runs as
CREATE TABLE write_log (tbl text, usr name);
GRANT INSERT ON write_log TO alice, bob;
CREATE FUNCTION log_writer() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO write_log VALUES (TG_TABLE_NAME, current_user); RETURN NEW; END$$;
CREATE TRIGGER log_writer BEFORE UPDATE OF info ON t1 FOR EACH ROW EXECUTE FUNCTION log_writer();
GRANT SELECT ON t1 TO alice, bob;
GRANT UPDATE (note) ON t1 TO bob;
});

# Not the owner, no UPDATE on the result column: refused with 42501.
is(sqlstate_of($node, 'postgres',
	q{SET ROLE alice; SELECT enrich.auto_enrich('t1', 'company', 'domain', 'info')}),
	'42501', 'a role with SELECT only is refused (42501)');
is(sqlstate_of($node, 'postgres',
	q{SET ROLE bob; SELECT enrich.auto_enrich('t1', 'company', 'domain', 'info')}),
	'42501', 'a role with UPDATE on another column only is refused (42501)');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.auto_targets}), '0', 'nothing was configured');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_trigger WHERE tgrelid = 't1'::regclass AND tgname LIKE 'enrich%'}),
	'0', 'no trigger was created');
is(sqlstate_of($node, 'postgres',
	q{SET ROLE alice; SELECT enrich.refresh()}), '42501', 'refresh is not granted to PUBLIC');

# UPDATE on the result column only (a column privilege) is enough.
$node->safe_psql('postgres', q{REVOKE SELECT ON t1 FROM alice; GRANT SELECT (domain), UPDATE (info) ON t1 TO alice});
my ($rc, $out, $err) = $node->psql('postgres',
	q{SET ROLE alice; SELECT enrich.auto_enrich('t1', 'company', 'domain', 'info')});
is($rc, 0, 'UPDATE (info) and SELECT (domain) column privileges are enough for auto_enrich') or diag($err);
is($node->safe_psql('postgres', q{SELECT run_as::text FROM enrich.auto_targets WHERE target = 't1'::regclass}),
	'alice', 'recorded to run as alice');
$node->safe_psql('postgres', q{
INSERT INTO t1 (id, domain) SELECT g, format('priv-%s.com', g) FROM generate_series(1, 20) g;
});
wait_idle('t1 rows');
is($node->safe_psql('postgres', q{SELECT count(*) FROM t1 WHERE info->>'domain' = domain}), '20',
	'all 20 rows written through the column privilege');
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT usr, ',') || ' ' || count(*) FROM write_log WHERE tbl = 't1'}),
	'alice 20', 'the worker wrote every row as alice');

# The ordinary case: table-level SELECT and UPDATE (no column grants).
$node->safe_psql('postgres', q{
CREATE ROLE carol LOGIN;
GRANT EXECUTE ON FUNCTION enrich.auto_enrich(regclass, text, name, name),
                          enrich.stop_auto_enrich(regclass) TO carol;
CREATE TABLE t1b (id int PRIMARY KEY, domain text, info jsonb);
CREATE INDEX ON t1b (domain);
GRANT SELECT, UPDATE ON t1b TO carol;
});
($rc, $out, $err) = $node->psql('postgres',
	q{SET ROLE carol; SELECT enrich.auto_enrich('t1b', 'company', 'domain', 'info')});
is($rc, 0, 'table-level SELECT and UPDATE are enough for auto_enrich') or diag($err);
$node->safe_psql('postgres', q{INSERT INTO t1b VALUES (1, 'table-grant-1.com')});
wait_idle('t1b row');
is($node->safe_psql('postgres', q{SELECT info->>'domain' FROM t1b}), 'table-grant-1.com',
	'and the row is written as carol');

# Row-level security: alice may update tenant 'a' rows only.  (Column
# grants here, so that this part tests RLS alone.)
$node->safe_psql('postgres', q{
CREATE TABLE t2 (id int PRIMARY KEY, tenant text, domain text, info jsonb);
CREATE INDEX ON t2 (domain);
ALTER TABLE t2 ENABLE ROW LEVEL SECURITY;
CREATE POLICY see_all ON t2 FOR SELECT TO alice USING (true);
CREATE POLICY upd_a ON t2 FOR UPDATE TO alice USING (tenant = 'a') WITH CHECK (tenant = 'a');
GRANT SELECT (id, tenant, domain), UPDATE (info) ON t2 TO alice;
});
$node->safe_psql('postgres', q{SET ROLE alice; SELECT enrich.auto_enrich('t2', 'company', 'domain', 'info')});
$node->safe_psql('postgres', q{
INSERT INTO t2 VALUES
  (1, 'a', 'rls-a-1.com'), (2, 'a', 'rls-a-2.com'), (3, 'b', 'rls-b-1.com'), (4, 'b', 'rls-b-2.com'),
  (5, 'a', 'rls-shared.com'), (6, 'b', 'rls-shared.com'), (7, 'b', 'www.rls-shared.com');
});
wait_idle('t2 rows');
is($node->safe_psql('postgres', q{SELECT string_agg(id || tenant || '=' || coalesce(info->>'domain', 'NULL'), ',' ORDER BY id) FROM t2}),
	'1a=rls-a-1.com,2a=rls-a-2.com,3b=NULL,4b=NULL,5a=rls-shared.com,6b=NULL,7b=NULL',
	'RLS applies: only tenant a rows are written, also for a key shared across tenants');
my $b_items = $node->safe_psql('postgres', q{
SELECT string_agg(key || ':' || status, ',' ORDER BY key) FROM enrich.queue WHERE key IN ('rls-b-1.com', 'rls-b-2.com')});
# Observed behaviour: an UPDATE filtered out by a policy is not an error, so
# the items of rows alice may not write end 'done' (answer cached, nothing written).
is($b_items, 'rls-b-1.com:done,rls-b-2.com:done',
	'items of rows hidden by RLS end done (the UPDATE matches no visible row; no error)');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.companies WHERE domain LIKE 'rls-b-%'}), '2',
	'their answers are cached all the same');

# Revoke the privilege after configuring: new items fail with a clear error.
$node->safe_psql('postgres', q{REVOKE UPDATE (info) ON t1 FROM alice});
$node->safe_psql('postgres', q{INSERT INTO t1 (id, domain) VALUES (101, 'revoked-1.com'), (102, 'priv-1.com')});
wait_idle('after the revoke');
like(item('revoked-1.com'), qr/^failed \| could not write the answer into table t1: permission denied for table t1/,
	'a new item fails: could not write ... permission denied');
is($node->safe_psql('postgres', q{SELECT count(*) FROM t1 WHERE id > 100 AND info IS NOT NULL}), '0',
	'nothing written after the revoke, a cached key included');
is($node->safe_psql('postgres', q{SELECT count(*) FROM write_log WHERE tbl = 't1'}), '20',
	'no write happened as anyone else');
worker_alive('after a permission error');

# Other targets (configured by the owner) still get filled.
$node->safe_psql('postgres', q{
CREATE TABLE t4 (id int PRIMARY KEY, domain text, info jsonb);
CREATE INDEX ON t4 (domain);
SELECT enrich.auto_enrich('t4', 'company', 'domain', 'info');
INSERT INTO t4 VALUES (1, 'other-1.com');
});
wait_idle('t4 first row');
is($node->safe_psql('postgres', q{SELECT info->>'domain' FROM t4 WHERE id = 1}), 'other-1.com', 'another target is filled');

# Dropping the target while its item is in flight.
$node->safe_psql('postgres', q{
CREATE TABLE t3 (id int PRIMARY KEY, domain text, info jsonb);
CREATE INDEX ON t3 (domain);
SELECT enrich.auto_enrich('t3', 'company', 'domain', 'info');
});
my $t3oid = $node->safe_psql('postgres', q{SELECT 't3'::regclass::oid});
emu_control({ latency_ms => 3000 });
$node->safe_psql('postgres', q{
INSERT INTO t3 VALUES (1, 'drop-1.com'), (2, 'drop-shared.com');
INSERT INTO t4 VALUES (2, 'drop-shared.com'), (3, 'other-2.com');
});
ok(poll_until($node, q{SELECT count(*) = 2 FROM enrich.queue WHERE key IN ('drop-1.com', 'drop-shared.com') AND status = 'in_flight'}, 't', 30),
	't3 items are in flight');
$node->safe_psql('postgres', q{DROP TABLE t3});
wait_idle('after DROP TABLE');
emu_control({ latency_ms => 0 });
like(item('drop-1.com'), qr/^failed \| could not write the answer into table .*no longer exists/,
	'the dropped table\'s item fails with a clear error');
like(item('drop-shared.com'), qr/^failed \| could not write the answer into table .*$t3oid.*no longer exists/,
	'a key shared with the dropped table reports the failure');
is($node->safe_psql('postgres', q{SELECT string_agg(id || '=' || coalesce(info->>'domain', 'NULL'), ',' ORDER BY id) FROM t4}),
	'1=other-1.com,2=drop-shared.com,3=other-2.com',
	'the other target is still filled, also for the key it shares with the dropped one');
worker_alive('after DROP TABLE');

# Renaming the result column.
$node->safe_psql('postgres', q{
CREATE TABLE t5 (id int PRIMARY KEY, domain text, info jsonb);
CREATE INDEX ON t5 (domain);
SELECT enrich.auto_enrich('t5', 'company', 'domain', 'info');
ALTER TABLE t5 RENAME COLUMN info TO details;
INSERT INTO t5 VALUES (1, 'renamed-1.com');
});
wait_idle('after RENAME COLUMN');
like(item('renamed-1.com'), qr/^failed \| could not write the answer into table t5: column "info" .*does not exist/,
	'a renamed result column fails the item with a clear error');
is($node->safe_psql('postgres', q{SELECT details IS NULL FROM t5}), 't', 'nothing was written to the renamed column');

# Dropping the result column.
$node->safe_psql('postgres', q{
CREATE TABLE t6 (id int PRIMARY KEY, domain text, info jsonb);
CREATE INDEX ON t6 (domain);
SELECT enrich.auto_enrich('t6', 'company', 'domain', 'info');
ALTER TABLE t6 DROP COLUMN info;
INSERT INTO t6 VALUES (1, 'dropcol-1.com');
});
wait_idle('after DROP COLUMN');
like(item('dropcol-1.com'), qr/^failed \| could not write the answer into table t6: column "info" .*does not exist/,
	'a dropped result column fails the item with a clear error');

# Renaming or dropping the key column must not break the application's
# INSERTs: the INSERT goes through, and the row is either still filled or
# its item fails with a clear error.
$node->safe_psql('postgres', q{
CREATE TABLE t7 (id int PRIMARY KEY, domain text, info jsonb);
CREATE INDEX ON t7 (domain);
SELECT enrich.auto_enrich('t7', 'company', 'domain', 'info');
ALTER TABLE t7 RENAME COLUMN domain TO website;
});
($rc, $out, $err) = $node->psql('postgres', q{INSERT INTO t7 VALUES (1, 'renamedkey-1.com')});
is($rc, 0, 'an INSERT after renaming the key column succeeds') or diag($err);
wait_idle('after renaming the key column');
my $t7 = $node->safe_psql('postgres', q{SELECT info->>'domain' FROM t7 WHERE id = 1});
my $t7item = item('renamedkey-1.com');
ok($t7 eq 'renamedkey-1.com' || $t7item =~ /^failed \| could not write the answer into table t7: .*domain/,
	'and the row is filled or its item fails with a clear error') or diag("row: '$t7', item: '$t7item'");

$node->safe_psql('postgres', q{
CREATE TABLE t8 (id int PRIMARY KEY, domain text, info jsonb);
SELECT enrich.auto_enrich('t8', 'company', 'domain', 'info');
ALTER TABLE t8 DROP COLUMN domain CASCADE;
});
($rc, $out, $err) = $node->psql('postgres', q{INSERT INTO t8 VALUES (1)});
is($rc, 0, 'an INSERT after dropping the key column succeeds') or diag($err);
worker_alive('after key column changes');

# Dropping the configuring role's privilege on a shared key: the other target still gets it.
$node->safe_psql('postgres', q{INSERT INTO t1 (id, domain) VALUES (103, 'both-1.com'); INSERT INTO t4 VALUES (4, 'both-1.com')});
wait_idle('a key in a forbidden and an allowed target');
is($node->safe_psql('postgres', q{SELECT info->>'domain' FROM t4 WHERE id = 4}), 'both-1.com',
	'the allowed target is filled');
is($node->safe_psql('postgres', q{SELECT info IS NULL FROM t1 WHERE id = 103}), 't', 'the forbidden one is not');

# The role that configured a target with column privileges can stop it.
($rc, $out, $err) = $node->psql('postgres', q{SET ROLE alice; SELECT enrich.stop_auto_enrich('t2')});
is($rc, 0, 'alice (UPDATE on the result column) can stop her own auto_enrich') or diag($err);
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.auto_targets WHERE target = 't2'::regclass}),
	'0', 't2 is no longer enriched');
is(sqlstate_of($node, 'postgres', q{SET ROLE bob; SELECT enrich.stop_auto_enrich('t4')}), '42501',
	'bob, who cannot UPDATE t4, cannot stop its auto_enrich');

worker_alive('at the end');
$node->safe_psql('postgres', q{INSERT INTO t4 VALUES (5, 'last-1.com')});
wait_idle('last row');
is($node->safe_psql('postgres', q{SELECT info->>'domain' FROM t4 WHERE id = 5}), 'last-1.com',
	'the worker still fills targets after all those failures');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.queue WHERE status NOT IN ('done', 'no_match', 'failed')}),
	'0', 'nothing is left queued');
$node->stop;
done_testing();
