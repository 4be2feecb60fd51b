# The ledger and budgets that survive: a budget spent by each path (sync,
# batch, worker), then a clean restart, an immediate shutdown and a SIGKILL
# of the postmaster between spends: enrich.credits shows the same use, the
# budget never buys more than its limit across all of them (counted on the
# emulator's ledger), and enrich.ledger has every charge once (emulator
# charges = ledger rows), with its role and path.  An answer paid for in a
# transaction that was open at an immediate shutdown is taken in from the
# spool after the start and counted.  enrich.spend sums the ledger.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EnrichTest;

start_emulator();
my $node = enrich_node('ledger', extra_conf => "restart_after_crash = on\n");
emu_control({ reset => JSON::PP::true });
$node->safe_psql('postgres', q{
CREATE ROLE ledger_app LOGIN;
GRANT EXECUTE ON FUNCTION enrich_company(text), enrich_companies(text[]),
                          enrich.enqueue_company(text) TO ledger_app;
SELECT enrich.set_credit_limit('leadlex', 20, '1 month');
});

sub used
{
	return $node->safe_psql('postgres', q{SELECT used FROM enrich.credits WHERE provider = 'leadlex'});
}

sub charged
{
	return emu_ledger()->{charged}{leadlex}{wbk_test_key} // 0;
}

# Ledger rows, distinct charges, distinct keys.
sub ledger_rows
{
	return $node->safe_psql('postgres', q{
SELECT count(*) || '/' || count(DISTINCT charge) || '/' || count(DISTINCT key)
  FROM enrich.ledger WHERE provider = 'leadlex'});
}

# 1. Each path spends, on behalf of ledger_app: 3 sync, 2 batch, 2 queued.
$node->safe_psql('postgres', q{
SET ROLE ledger_app;
SELECT count(enrich_company(format('led-sync-%s.com', g))) FROM generate_series(1, 3) g;
SELECT count(*) FROM enrich_companies(ARRAY['led-batch-1.com', 'led-batch-2.com']);
SELECT enrich.enqueue_company('led-worker-1.com'), enrich.enqueue_company('led-worker-2.com');
});
ok(poll_until($node, q{SELECT count(*) FROM enrich.queue WHERE key LIKE 'led-worker-%' AND status = 'done'}, '2', 30),
	'the queued items are done');
is(used(), '7', 'seven credits used');
is(charged(), 7, 'seven charged by the provider');
is(ledger_rows(), '7/7/7', 'seven ledger rows, one per charge');
is($node->safe_psql('postgres', q{
SELECT string_agg(path || '=' || n, ',' ORDER BY path) FROM
  (SELECT path, count(*) n FROM enrich.ledger WHERE role = 'ledger_app'::regrole GROUP BY path) s}),
	'batch=2,sync=3,worker=2', 'each charge with its path, all on behalf of ledger_app');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM enrich.ledger WHERE request_id IS NULL OR database <> current_database()}),
	'0', 'with the request id and the database');

# 2. A clean restart.
$node->stop('fast');
$node->start;
is(used(), '7', 'a clean restart keeps the use');

# 3. An immediate shutdown, after more spending.
$node->safe_psql('postgres',
	q{SELECT count(enrich_company(format('led-imm-%s.com', g))) FROM generate_series(1, 3) g});
is(used(), '10', 'ten used');
$node->stop('immediate');
$node->start;
is(used(), '10', 'an immediate shutdown keeps the use');

# 4. A SIGKILL of the postmaster, after more spending.
$node->safe_psql('postgres',
	q{SELECT count(enrich_company(format('led-kill-%s.com', g))) FROM generate_series(1, 2) g});
ok(kill_postmaster($node), 'the killed postmaster\'s processes are gone');
my $started = $node->start(fail_ok => 1);
ok($started, 'the server starts again');
is(used(), '12', 'a killed postmaster keeps the use');

# 4b. A SIGKILL of a backend: the postmaster restarts every process and
# makes shared memory anew (it keeps running: its start time stays).
$node->safe_psql('postgres', q{SELECT enrich_company('led-crash.com') IS NOT NULL});
ok(crash_restart($node), 'SIGKILL a backend: the postmaster restarts every process');
ok(poll_until($node, q{SELECT used FROM enrich.credits WHERE provider = 'leadlex'}, '13', 60),
	'the crash restart keeps the use');

# 4c. The worker killed mid-batch, its requests in flight: LeadLex charged
# them on arrival; after the crash restart they are sent again with the
# same Idempotency-Keys and replayed for free, and those answers record the
# charges.
emu_control({ latency_ms => 2000 });
$node->safe_psql('postgres',
	q{SELECT count(enrich.enqueue_company(format('led-mid-%s.com', g))) FROM generate_series(1, 3) g});
my $inflight = 0;
for (1 .. 300)
{
	if ((emu_ledger()->{in_flight}{leadlex} // 0) >= 1) { $inflight = 1; last; }
	select(undef, undef, undef, 0.05);
}
ok($inflight, 'requests of the worker are in flight')
  or diag 'in flight: ' . (emu_ledger()->{in_flight}{leadlex} // 'none') . '; queue: '
  . $node->safe_psql('postgres', q{SELECT string_agg(key || ' ' || status || ' ' || coalesce(last_error, ''), '; ') FROM enrich.queue WHERE key LIKE 'led-mid-%'})
  . '; workers: ' . $node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'enrich worker'});
my $worker = worker_pid($node);
ok(kill('KILL', $worker), 'SIGKILL the worker');
emu_control({ latency_ms => 0 });
ok(poll_until($node, q{SELECT count(*) FROM enrich.queue WHERE key LIKE 'led-mid-%' AND status = 'done'}, '3', 60),
	'after the crash restart the three items are done');
is(charged(), 16, 'charged once each');
is(used(), '16', 'and counted once each');

# 5. An answer paid for in a transaction still open at an immediate
# shutdown: spooled, not committed.  After the start the worker takes it
# in from the spool; it counts once.
my $open = $node->background_psql('postgres', on_error_stop => 0);
$open->query_safe(q{BEGIN; SELECT enrich_company('led-open.com') IS NOT NULL;});
is(charged(), 17, 'the open transaction bought one answer');
$node->stop('immediate');
eval { $open->quit };
$node->start;
ok(poll_until($node, q{SELECT count(*) FROM enrich.ledger WHERE key = 'led-open.com'}, '1', 30),
	'its charge reaches the ledger from the spool');
ok(poll_until($node, q{SELECT used FROM enrich.credits WHERE provider = 'leadlex'}, '17', 30),
	'and counts in the budget once');
is(ledger_rows(), '17/17/17', 'seventeen ledger rows, one per charge');

# 6. The budget is never exceeded across all that: 20 in all.
my $ok = 0;
my $refused = 0;
for my $g (1 .. 10)
{
	my $state = sqlstate_of($node, 'postgres', "SELECT enrich_company('led-last-$g.com') IS NOT NULL");
	if ($state eq '') { $ok++ }
	elsif ($state eq '38R02') { $refused++ }
}
is($ok, 3, 'three more calls are paid for');
is($refused, 7, 'and the rest are refused');
is(charged(), 20, 'the provider charged 20 in all: never past the budget');
is(used(), '20', 'enrich.credits says 20');
$node->stop('immediate');
$node->start;
is(used(), '20', 'still 20 after another immediate shutdown');
is(sqlstate_of($node, 'postgres', "SELECT enrich_company('led-over.com')"), '38R02',
	'and nothing more can be bought');
is(charged(), 20, 'nothing more was charged');

# 7. enrich.spend sums the ledger: by day, provider and role.
is($node->safe_psql('postgres', q{SELECT sum(credits) FROM enrich.spend WHERE provider = 'leadlex'}),
	'20', 'enrich.spend sums to what the provider charged');
is($node->safe_psql('postgres', q{SELECT credits FROM enrich.spend WHERE role = 'ledger_app'::regrole}),
	'7', 'ledger_app spent seven');
my $l = emu_ledger();
my %ours = map { split /\|/ } split /\n/, $node->safe_psql('postgres',
	q{SELECT key || '|' || count(*) FROM enrich.ledger WHERE provider = 'leadlex' GROUP BY key});
is_deeply(\%ours, $l->{charged_inputs}{leadlex}, 'the ledger has per key what the provider charged');

# 8. Retention deletes rows older than enrich.ledger_retention, but keeps
# a budget's current period whatever the setting says.  (An old row is
# planted to see a pass happen.)
$node->safe_psql('postgres', q{
INSERT INTO enrich.ledger (charge, at, provider, key, path)
SELECT gen_random_uuid(), period_start - interval '1 day', 'leadlex', 'led-old.com', 'sync'
  FROM enrich.credit_limits WHERE provider = 'leadlex'});
set_conf($node, 'enrich.ledger_retention' => '1s');
ok(poll_until($node, q{SELECT count(*) FROM enrich.ledger WHERE key = 'led-old.com'}, '0', 30),
	'a row from before the period goes');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.ledger}), '20',
	'the current period stays');
$node->safe_psql('postgres', q{SELECT enrich.set_credit_limit('leadlex', NULL)});
ok(poll_until($node, q{SELECT count(*) FROM enrich.ledger}, '0', 30),
	'without a budget, every row older than enrich.ledger_retention goes');

$node->stop;
done_testing();
