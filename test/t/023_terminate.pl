# What a process holds of the shared budget and limits is given back
# however it ends: a session terminated with a request in flight (sync
# call, batch call with more requests than the provider's concurrency cap),
# a statement_timeout, a worker terminated mid-batch.  Afterwards the
# budget is whole (a budget of N buys exactly N), the concurrency cap is
# whole (the next requests run at once), and a call over a spent budget
# fails at once with 38R02 instead of waiting for a request that no longer
# exists.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EnrichTest;

start_emulator();
my $node = enrich_node('terminate');

# reserved credits and requests in flight as the shared state counts them
sub holds
{
	return $node->safe_psql('postgres', q{
SELECT c.reserved || '/' || s.in_flight
  FROM enrich.credits c JOIN enrich.stats s USING (provider) WHERE provider = 'leadlex'});
}

# Starts $sql in a new session; returns the session and its backend pid.
sub start_session
{
	my ($sql) = @_;
	my $b = $node->background_psql('postgres', on_error_stop => 0);
	my $pid = $b->query_safe('SELECT pg_backend_pid()');
	chomp $pid;
	$b->query_until(qr/sent/, "\\echo sent\n$sql\n");
	return ($b, $pid);
}

# Terminates a backend and waits until it is gone.
sub terminate
{
	my ($pid) = @_;
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
	ok(poll_until($node, "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid", 't', 30),
		"backend $pid is gone");
}

# 1. A synchronous call terminated while its request hangs.
emu_control({ reset => JSON::PP::true,
	faults => [ { provider => 'leadlex', kind => 'hang', match => 'hang-' } ] });
$node->safe_psql('postgres', q{SELECT enrich.set_credit_limit('leadlex', 5)});
my ($s1, $pid1) = start_session(q{SELECT enrich_company('hang-sync.com');});
ok(poll_until($node, q{SELECT reserved = 1 FROM enrich.credits WHERE provider = 'leadlex'}, 't', 30),
	'sync: the hanging request holds one reserved credit');
is(holds(), '1/1', 'sync: one credit reserved, one request in flight');
terminate($pid1);
eval { $s1->quit };
is(holds(), '0/0', 'sync: the terminated session gave back its credit and its place in flight');

# A budget of 5 still buys exactly 5, and the sixth call fails at once.
emu_control({ reset => JSON::PP::true });
for my $g (1 .. 5)
{
	is($node->safe_psql('postgres', qq{SELECT enrich_company('after-sync-$g.com')->>'domain'}),
		"after-sync-$g.com", "sync: credit $g of 5 buys an answer");
}
my $t0 = time();
is(sqlstate_of($node, 'postgres', q{SET statement_timeout = '20s'; SELECT enrich_company('after-sync-6.com')}),
	'38R02', 'sync: the sixth call over the spent budget fails with 38R02');
my $took = time() - $t0;
cmp_ok($took, '<', 5, 'and does not wait for a request that no longer exists');
note sprintf('the call over the spent budget took %.3f s', $took);
my $l = emu_ledger();
is($l->{charged}{leadlex}{wbk_test_key}, 5, 'sync: exactly 5 credits charged');
is($l->{requests}{leadlex}, 5, 'sync: no request for the call over the budget');

# 2. statement_timeout ends a call whose request hangs: given back too.
emu_control({ reset => JSON::PP::true,
	faults => [ { provider => 'leadlex', kind => 'hang', match => 'hang-' } ] });
$node->safe_psql('postgres', q{SELECT enrich.set_credit_limit('leadlex', 100)});
is(sqlstate_of($node, 'postgres', q{SET statement_timeout = '500ms'; SELECT enrich_company('hang-timeout.com')}),
	'57014', 'a statement_timeout cancels the hanging call');
is(holds(), '0/0', 'statement_timeout: nothing stays held');

# 3. A batch call with more requests than the provider's cap of 4,
# terminated with 4 in flight.  (A session's first request to a provider
# goes alone, to learn its protocol: the session makes one first.)
$node->safe_psql('postgres', q{SELECT enrich.set_rate_limit('leadlex', NULL, NULL, 4)});
my ($s2, $pid2) = start_session(q{
SELECT enrich_company('warm-batch.com') IS NOT NULL;
SELECT count(*) FROM enrich_companies(ARRAY(SELECT format('hang-batch-%s.com', g) FROM generate_series(1, 10) g));});
ok(poll_until($node, q{SELECT in_flight = 4 FROM enrich.stats WHERE provider = 'leadlex'}, 't', 30),
	'batch: four requests in flight, the provider cap');
terminate($pid2);
eval { $s2->quit };
is(holds(), '0/0', 'batch: the terminated session gave back every credit and place');

# The next four requests run at once: the emulator sees four in flight.
emu_control({ reset => JSON::PP::true, latency_ms => 400 });
is($node->safe_psql('postgres', q{
SELECT enrich_company('warm-after-batch.com') IS NOT NULL;
SELECT string_agg(status, ',') FROM enrich_companies(ARRAY(SELECT format('after-batch-%s.com', g) FROM generate_series(1, 4) g))}),
	"t\nfetched,fetched,fetched,fetched", 'batch: four new requests succeed');
is(emu_ledger()->{peak_concurrency}{leadlex}, 4, 'batch: and all four were in flight at once');
$node->safe_psql('postgres', q{SELECT enrich.set_rate_limit('leadlex', NULL, NULL, NULL)});

# 4. The worker terminated with requests in flight: given back by the
# exiting worker; the restarted worker sends them again, and a budget of
# 10 buys exactly 10.
# (The worker's first request goes alone too: one item first.)
$node->safe_psql('postgres', q{SELECT enrich.enqueue_company('warm-worker.com')});
is($node->safe_psql('postgres', q{SELECT enrich.wait('30 s')}), 't', 'worker: a first item is done');
emu_control({ reset => JSON::PP::true,
	faults => [ { provider => 'leadlex', kind => 'hang', match => 'hang-' } ] });
$node->safe_psql('postgres', q{SELECT enrich.set_credit_limit('leadlex', 10)});
$node->safe_psql('postgres', q{
SELECT count(enrich.enqueue_company(format('hang-worker-%s.com', g))) FROM generate_series(1, 6) g});
ok(poll_until($node, q{SELECT reserved = 6 FROM enrich.credits WHERE provider = 'leadlex'}, 't', 30),
	'worker: six requests hang, six credits reserved');
my $wpid = worker_pid($node);
emu_control({ faults => [] });
terminate($wpid);
ok(poll_until($node, q{SELECT count(*) = 6 FROM enrich.queue WHERE key LIKE 'hang-worker-%' AND status = 'done'}, 't', 90),
	'worker: the restarted worker finishes the six items');
isnt(worker_pid($node), $wpid, 'worker: a new worker serves the queue');
$node->safe_psql('postgres', q{
SELECT count(enrich.enqueue_company(format('after-worker-%s.com', g))) FROM generate_series(1, 8) g});
ok(poll_until($node, q{
SELECT count(*) FILTER (WHERE status = 'done') || '/' || count(*) FILTER (WHERE status = 'waiting_credits')
  FROM enrich.queue WHERE key LIKE 'after-worker-%'}, '4/4', 60),
	'worker: the budget of 10 buys exactly 4 more, 4 wait for credits');
$l = emu_ledger();
is($l->{charged}{leadlex}{wbk_test_key}, 10, 'worker: exactly 10 credits charged');
is($node->safe_psql('postgres', q{SELECT used || '/' || reserved FROM enrich.credits WHERE provider = 'leadlex'}),
	'10/0', 'worker: enrich.credits says 10 used, none reserved');

$node->stop;
done_testing();
