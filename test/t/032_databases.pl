# One cluster, many databases: the launcher keeps a worker in every
# database with the extension and none elsewhere; CREATE EXTENSION is
# served within 5 s without a restart, DROP EXTENSION lets its worker go,
# DROP DATABASE is not blocked; a terminated worker alone comes back, a
# crashed one with the cluster, nothing lost; enrich.max_concurrency holds
# for all workers together, and a short queue is not starved by a long one.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EnrichTest;

start_emulator();
my $node = enrich_node('dbs', extra_conf => "restart_after_crash = on\nmax_worker_processes = 16\n");
emu_control({ reset => JSON::PP::true });

sub workers
{
	return $node->safe_psql('postgres',
		q{SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') FROM pg_stat_activity WHERE backend_type = 'enrich worker'});
}

sub served_query
{
	my ($want) = @_;
	return qq{SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') = '$want' FROM pg_stat_activity WHERE backend_type = 'enrich worker'};
}

# 1. Three more databases, the extension in one of them (and postgres).
$node->safe_psql('postgres', 'CREATE DATABASE crm; CREATE DATABASE ops; CREATE DATABASE plain;');
$node->safe_psql('crm', 'CREATE EXTENSION enrich');
$node->safe_psql('ops', 'CREATE EXTENSION enrich; DROP EXTENSION enrich;');
ok(poll_until($node, served_query('crm,postgres'), 't', 30), 'a worker serves each database with the extension')
  or diag workers();
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'enrich launcher' AND datname IS NULL}),
	'1', 'the launcher is in pg_stat_activity, connected to no database');

for my $db (qw(postgres crm))
{
	$node->safe_psql($db, qq{
CREATE TABLE accounts (id serial PRIMARY KEY, domain text, company jsonb);
SELECT enrich.auto_enrich('accounts', 'company', 'domain', 'company');
INSERT INTO accounts (domain) VALUES ('$db-auto.com');
SELECT enrich.enqueue_company('$db-queued.com');
});
}
for my $db (qw(postgres crm))
{
	is($node->safe_psql($db, q{SELECT enrich.wait('60 s')}), 't', "$db: the queue drains");
	is($node->safe_psql($db, qq{SELECT status FROM enrich.queue WHERE key = '$db-queued.com'}), 'done',
		"$db: the queued item is done");
	is($node->safe_psql($db, q{SELECT company->>'domain' FROM accounts}), "$db-auto.com",
		"$db: the auto_enrich row is filled");
	is($node->safe_psql($db, q{SELECT count(*) FROM enrich.companies WHERE domain LIKE '%-queued.com'}), '1',
		"$db: only its own answers in its cache");
}
is(workers(), 'crm,postgres', 'no worker in ops (dropped extension) or plain');

# 2. CREATE EXTENSION in a running cluster: served within 5 s.
$node->safe_psql('postgres', 'CREATE DATABASE late');
my $t0 = time();
$node->safe_psql('late', 'CREATE EXTENSION enrich');
ok(poll_until($node, served_query('crm,late,postgres'), 't', 5), 'CREATE EXTENSION: served within 5 s');
note sprintf('worker in the new database after %.2f s', time() - $t0);
$node->safe_psql('late', q{SELECT enrich.enqueue_company('late-db.com')});
is($node->safe_psql('late', q{SELECT enrich.wait('30 s')}), 't', 'the new database\'s queue drains');

# 3. DROP EXTENSION: its worker goes (and is not started again).
$node->safe_psql('late', 'DROP EXTENSION enrich');
ok(poll_until($node, served_query('crm,postgres'), 't', 30), 'DROP EXTENSION: its worker leaves');
like(slurp_file($node->logfile), qr/enrich worker leaves database "late": the extension is not installed there/,
	'and says why in the log');

# 4. DROP DATABASE of a served database, without FORCE.
my ($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE crm');
is($rc, 0, 'DROP DATABASE of a served database succeeds') or diag $err;
ok(poll_until($node, served_query('postgres'), 't', 30), 'and no worker is left for it');

# 5. A terminated worker alone comes back; the others stay.
$node->safe_psql('postgres', 'CREATE DATABASE crm2');
$node->safe_psql('crm2', 'CREATE EXTENSION enrich');
ok(poll_until($node, served_query('crm2,postgres'), 't', 30), 'crm2 is served');
my $pg_pid = worker_pid($node, 'postgres');
my $crm2_pid = worker_pid($node, 'crm2');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($crm2_pid)");
ok(poll_until($node,
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'enrich worker' AND datname = 'crm2' AND pid <> $crm2_pid",
		't', 30),
	'a terminated worker is started again');
is(worker_pid($node, 'postgres'), $pg_pid, 'the other database\'s worker is the same');

# A served database as a TEMPLATE (PostgreSQL wants no one connected to
# it): its worker steps away for the copy and comes back; the copy, which
# has the extension, is served too.
($rc, $out, $err) = $node->psql('postgres', 'CREATE DATABASE crm2_copy TEMPLATE crm2');
is($rc, 0, 'CREATE DATABASE ... TEMPLATE a served database succeeds') or diag $err;
ok(poll_until($node, served_query('crm2,crm2_copy,postgres'), 't', 30), 'the copy is served, and the template again');
($rc, $out, $err) = $node->psql('postgres', 'ALTER DATABASE crm2_copy RENAME TO crm2_renamed');
is($rc, 0, 'ALTER DATABASE ... RENAME of a served database succeeds') or diag $err;
ok(poll_until($node, served_query('crm2,crm2_renamed,postgres'), 't', 30), 'and it is served under its new name');
($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE crm2_renamed');
is($rc, 0, 'and dropped') or diag $err;
ok(poll_until($node, served_query('crm2,postgres'), 't', 30), 'leaving the two databases');

# 6. kill -9 of a worker: the postmaster restarts the cluster (any process
# attached to shared memory that dies so does that), and both come back
# with their queues whole.
emu_control({ latency_ms => 200 });
for my $db (qw(postgres crm2))
{
	$node->safe_psql($db,
		"SELECT count(enrich.enqueue_company(format('kill-$db-%s.com', g))) FROM generate_series(1, 40) g");
}
ok(poll_until($node, q{SELECT count(*) > 0 FROM enrich.queue WHERE status = 'in_flight'}, 't', 30),
	'requests in flight');
$crm2_pid = worker_pid($node, 'crm2');
kill 'KILL', $crm2_pid;
ok(poll_until($node, served_query('crm2,postgres'), 't', 60), 'after the crash restart both are served again');
emu_control({ latency_ms => 0 });
for my $db (qw(postgres crm2))
{
	is($node->safe_psql($db, q{SELECT enrich.wait('60 s')}), 't', "$db: the queue drains after the crash");
	is($node->safe_psql($db,
			"SELECT count(*) FILTER (WHERE status = 'done') || '/' || count(*) FROM enrich.queue WHERE key LIKE 'kill-$db-%'"),
		'40/40', "$db: every item done");
}

# 7. One budget for the cluster: two databases spending at once under a
# limit of 30 buy 30 together, and both see the same use.
emu_control({ reset => JSON::PP::true, latency_ms => 20 });
$node->safe_psql('crm2', q{SELECT enrich.set_credit_limit('leadlex', 30)});
for my $db (qw(postgres crm2))
{
	$node->safe_psql($db,
		"SELECT count(enrich.enqueue_company(format('budget-$db-%s.com', g))) FROM generate_series(1, 40) g");
}
for my $db (qw(postgres crm2))
{
	ok($node->poll_query_until($db,
			q{SELECT count(*) FROM enrich.queue WHERE key LIKE 'budget-%' AND status IN ('queued', 'in_flight')}, '0'),
		"budget: the $db queue settles");
}
ok(poll_until($node, q{SELECT used FROM enrich.credits WHERE provider = 'leadlex'}, '30', 60),
	'budget: 30 used');
is(emu_ledger()->{charged}{leadlex}{wbk_test_key}, 30, 'budget: the provider charged 30 for both databases together');
is($node->safe_psql('crm2', q{SELECT used FROM enrich.credits WHERE provider = 'leadlex'}), '30',
	'budget: the other database sees the same use');
ok(poll_until($node, q{SELECT used FROM enrich.credit_limits WHERE provider = 'leadlex'}, '30', 30),
	'budget: each database\'s worker writes the cluster\'s use into its enrich.credit_limits');
my $done = 0;
$done += $node->safe_psql($_, q{SELECT count(*) FROM enrich.queue WHERE key LIKE 'budget-%' AND status = 'done'})
  for qw(postgres crm2);
is($done, 30, 'budget: 30 items done across the two databases, the rest wait');
$node->safe_psql('crm2', q{SELECT enrich.set_credit_limit('leadlex', NULL)});
for my $db (qw(postgres crm2))
{
	is($node->safe_psql($db, q{SELECT enrich.wait('60 s')}), 't', "budget: $db drains once the limit is lifted");
}

# 8. max_concurrency 6 for all workers together, at 100 ms a request.
set_conf($node, 'enrich.max_concurrency' => 6);
emu_control({ reset => JSON::PP::true, latency_ms => 100 });
for my $db (qw(postgres crm2))
{
	$node->safe_psql($db,
		"SELECT count(enrich.enqueue_company(format('conc-$db-%s.com', g))) FROM generate_series(1, 60) g");
}
for my $db (qw(postgres crm2))
{
	is($node->safe_psql($db, q{SELECT enrich.wait('60 s')}), 't', "concurrency: $db drains");
}
my $peak = emu_ledger()->{peak_concurrency}{leadlex};
note "peak concurrency of two databases' workers under max_concurrency 6: $peak";
cmp_ok($peak, '<=', 6, 'two databases together never above max_concurrency');
cmp_ok($peak, '>=', 5, 'and near it');

# 9. Fairness: 10 items in one database finish while another drains 20,000.
emu_control({ latency_ms => 50 });
$node->safe_psql('postgres',
	"SELECT count(enrich.enqueue_company(format('big-%s.com', g))) FROM generate_series(1, 20000) g");
ok(poll_until($node, q{SELECT count(*) > 0 FROM enrich.queue WHERE key LIKE 'big-%' AND status = 'done'}, 't', 30),
	'the long queue is being drained');
$node->safe_psql('crm2',
	"SELECT count(enrich.enqueue_company(format('small-%s.com', g))) FROM generate_series(1, 10) g");
is($node->safe_psql('crm2', q{SELECT enrich.wait('60 s')}), 't', 'fairness: the short queue drains');
my $left = $node->safe_psql('postgres',
	q{SELECT count(*) FROM enrich.queue WHERE key LIKE 'big-%' AND status <> 'done'});
note "items of the long queue left when the short one was done: $left";
cmp_ok($left, '>', 10000, 'while the long queue still has most of its items');
emu_control({ latency_ms => 0 });
set_conf($node, 'enrich.max_concurrency' => undef);
is($node->safe_psql('postgres', q{SELECT enrich.wait('300 s')}), 't', 'the long queue drains too');

done_testing();
