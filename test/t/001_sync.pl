# Synchronous calls across sessions: one request per key however many
# sessions ask at once, cancel within a second, paid answers that survive
# the caller's rollback or error.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EnrichTest;

start_emulator();
my $node = enrich_node('sync');

# Eight sessions race for the same 10 keys at 300 ms provider latency.
emu_control({ reset => JSON::PP::true, latency_ms => 300 });
my @sessions;
for my $i (1 .. 8)
{
	my $s = $node->background_psql('postgres');
	$s->query_until(qr/started/, q(\echo started
SELECT count(enrich_company(format('race-%s.com', g))) FROM generate_series(1, 10) g;
\echo done
));
	push @sessions, $s;
}
$_->query_until(qr/done/, '') for @sessions;
$_->quit for @sessions;
my $l = emu_ledger();
is($l->{requests}{leadlex}, 10, 'eight racing sessions make one request per key');
is($l->{charged}{leadlex}{wbk_test_key}, 10, 'and are charged once per key');
is($node->safe_psql('postgres', "SELECT count(*) FROM enrich.companies WHERE domain LIKE 'race-%'"),
	'10', 'every raced key is cached');

# pg_cancel_backend stops a hanging request within a second.
emu_control({ reset => JSON::PP::true,
	faults => [ { provider => 'leadlex', kind => 'hang', match => 'hang-cancel' } ] });
my $s = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $s->query_safe('SELECT pg_backend_pid()');
$s->query_until(qr/sent/, q(\echo sent
SELECT enrich_company('hang-cancel.com');
));
$node->poll_query_until('postgres',
	"SELECT wait_event IS NOT NULL FROM pg_stat_activity WHERE pid = $pid AND state = 'active'")
  or die 'session never started waiting';
my $t0 = time();
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$s->{stdin} .= "\\echo after\n";
$s->{run}->pump until $s->{stdout} =~ /after/ || time() - $t0 > 10;
my $elapsed = time() - $t0;
like($s->{stderr}, qr/canceling statement due to user request/, 'cancel reports 57014');
cmp_ok($elapsed, '<', 1.0, 'the cancel took effect within a second');
$s->{stdout} = '';
$s->{stderr} = '';
is(scalar $s->query('SELECT pg_backend_pid()'), $pid, 'the same backend goes on');
$s->quit;

# A paid answer survives the caller's rollback: the next call finds it.
emu_control({ reset => JSON::PP::true });
$node->safe_psql('postgres', q{
BEGIN;
SELECT enrich_company('rollback-1.com');
SELECT enrich_lead('linkedin.com/in/rollback-person');
ROLLBACK;
});
is($node->safe_psql('postgres', q{SELECT enrich_company('rollback-1.com')->>'domain'}),
	'rollback-1.com', 'answer served after the rollback');
is($node->safe_psql('postgres', q{SELECT enrich_lead('linkedin.com/in/rollback-person') IS NOT NULL}),
	't', 'lead served after the rollback');
$l = emu_ledger();
is($l->{requests}{leadlex} + $l->{requests}{slintel}, 2, 'no second request after a rollback');
is($l->{charged}{slintel}{sl_test_key}, 1, 'Slintel, which charges repeats, charged once');

# ... and an error after the paid call (statement_timeout during pg_sleep).
my ($ret, $o, $e) = $node->psql('postgres',
	q{SET statement_timeout = '500ms'; SELECT enrich_company('timeout-1.com'), pg_sleep(2);});
like($e, qr/statement timeout/, 'statement cancelled after the paid call');
is($node->safe_psql('postgres', q{SELECT enrich_company('timeout-1.com')->>'domain'}),
	'timeout-1.com', 'answer served after the statement timeout');
is(emu_ledger()->{requests_by_input}{leadlex}{'timeout-1.com'}, 1, 'one request for it');

# ... and a rolled-back subtransaction inside a committed transaction.
$node->safe_psql('postgres', q{
DO $$
BEGIN
  BEGIN
    PERFORM enrich_company('subxact-1.com');
    RAISE EXCEPTION 'roll back the subtransaction';
  EXCEPTION WHEN raise_exception THEN NULL;
  END;
END $$;
});
is($node->safe_psql('postgres', q{SELECT enrich_company('subxact-1.com')->>'domain'}),
	'subxact-1.com', 'answer served after a rolled-back subtransaction');
is(emu_ledger()->{requests_by_input}{leadlex}{'subxact-1.com'}, 1, 'one request for it');

$node->stop;
done_testing();
