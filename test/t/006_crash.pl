# Crash safety: the worker killed with SIGKILL mid-run (several times) and
# an immediate shutdown mid-run lose nothing: every item is done exactly
# once, and no LeadLex key is charged twice (interrupted requests are sent
# again with the same Idempotency-Key, which LeadLex replays for free).
# Also the "charged, answer lost" case without a crash.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EnrichTest;

start_emulator();
# the test modules turn restart_after_crash off; a DBA's server has it on
my $node = enrich_node('crash', extra_conf => "restart_after_crash = on\n");
emu_control({ reset => JSON::PP::true, latency_ms => 50, latency_jitter_ms => 50 });

my $per_round = 1000;
my ($total, $matching) = (0, 0);

# Queues a round of keys (5% without a match) and waits until it is well
# under way with requests in flight.
sub start_round
{
	my ($name) = @_;
	$node->safe_psql('postgres', qq{
SELECT count(enrich.enqueue_company(
         CASE WHEN g % 20 = 0 THEN format('nomatch-$name-%s.com', g) ELSE format('$name-%s.com', g) END))
  FROM generate_series(1, $per_round) g});
	$total += $per_round;
	$matching += $per_round - $per_round / 20;
	ok(poll_until($node, qq{
SELECT count(*) FILTER (WHERE status IN ('done', 'no_match')) >= 150
   AND count(*) FILTER (WHERE status = 'in_flight') > 0
  FROM enrich.queue WHERE key LIKE '%$name-%'}, 't', 60),
		"$name: under way with requests in flight");
	return;
}

# Waits for the round to finish after the interruption.
sub finish_round
{
	my ($name) = @_;
	ok(poll_until($node, q{SELECT enrich.wait('5 s')}, 't', 120), "$name: the queue drains after the restart");
	is($node->safe_psql('postgres', qq{
SELECT count(*) FILTER (WHERE status IN ('done', 'no_match')) FROM enrich.queue WHERE key LIKE '%$name-%'}),
		$per_round, "$name: every item finished");
	return;
}

for my $r (1 .. 3)
{
	my $name = "kill$r";
	start_round($name);
	my $pid = worker_pid($node);
	like($pid, qr/^\d+$/, "$name: the worker's pid");
	is(kill('KILL', $pid), 1, "$name: SIGKILL the worker mid-run");
	ok(poll_until($node,
			"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'enrich worker' AND pid <> $pid",
			't', 60),
		"$name: the server restarts the worker");
	finish_round($name);
}

# An immediate shutdown mid-run, then a start.
start_round('immediate');
$node->stop('immediate');
$node->start;
finish_round('immediate');

ok($node->log_contains(qr/enrich worker queued \d+ interrupted request/),
	'the worker says it queued interrupted requests again');

# Everything exactly once.
is($node->safe_psql('postgres', q{
SELECT count(*) || '/' || count(DISTINCT key) || '/' ||
       count(*) FILTER (WHERE status = 'done') || '/' || count(*) FILTER (WHERE status = 'no_match')
  FROM enrich.queue}),
	sprintf('%d/%d/%d/%d', $total, $total, $matching, $total - $matching),
	'one queue item per key, every one done or no_match');
is($node->safe_psql('postgres', q{
SELECT count(*) || '/' || count(DISTINCT domain) || '/' || count(*) FILTER (WHERE matched) FROM enrich.companies}),
	sprintf('%d/%d/%d', $total, $total, $matching), 'every key cached exactly once');
my $l = emu_ledger();
my @twice = grep { $l->{charged_inputs}{leadlex}{$_} != 1 } keys %{ $l->{charged_inputs}{leadlex} };
is(scalar(@twice), 0, 'no LeadLex key charged twice') or diag 'charged twice: ' . join(' ', @twice[0 .. ($#twice < 9 ? $#twice : 9)]);
is($l->{charged}{leadlex}{wbk_test_key}, $matching, 'LeadLex charged once per matching key');
cmp_ok($l->{idempotent_replays}, '>', 0, 'interrupted requests were sent again with their Idempotency-Key');
note sprintf('%d keys, %d LeadLex requests, %d idempotent replays', $total, $l->{requests}{leadlex},
	$l->{idempotent_replays});

# The answer lost after the provider charged (a reset after the charge):
# the retry carries the same Idempotency-Key and is not charged again.
emu_control({ reset => JSON::PP::true,
	faults => [ { provider => 'leadlex', kind => 'reset', after_charge => JSON::PP::true, count => 20 } ] });
$node->safe_psql('postgres', q{SELECT count(enrich.enqueue_company(format('lost-%s.com', g))) FROM generate_series(1, 100) g});
is($node->safe_psql('postgres', q{SELECT enrich.wait('60 s')}), 't', 'lost answers: the queue drains');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.queue WHERE key LIKE 'lost-%' AND status = 'done'}), '100',
	'lost answers: every item done');
$l = emu_ledger();
is($l->{faults_applied}{leadlex}{reset}, 20, 'twenty answers were lost after the charge');
is($l->{charged}{leadlex}{wbk_test_key}, 100, 'yet each key was charged once');
is($l->{idempotent_replays}, 20, 'the retries were replayed');

$node->stop;
done_testing();
