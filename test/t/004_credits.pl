# Credit budgets: the worker never spends past a limit and parks the rest
# as waiting_credits, resumed when the limit is raised or the period turns;
# racing synchronous sessions never overspend; estimate_credits; a 402
# storm parks work (none failed) until the provider is paid again.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EnrichTest;

start_emulator();
my $node = enrich_node('credits');

# Status counts of the items whose key starts with $prefix.
sub statuses
{
	my ($prefix) = @_;
	return $node->safe_psql('postgres', qq{
SELECT coalesce(string_agg(status || '=' || c, ',' ORDER BY status), '')
  FROM (SELECT status, count(*) c FROM enrich.queue WHERE key LIKE '$prefix-%' GROUP BY 1) s});
}

# 1. A budget of 50 over 200 matching items (and 20 without a match, which
# cost nothing).
emu_control({ reset => JSON::PP::true, latency_ms => 20 });
$node->safe_psql('postgres', q{SELECT enrich.set_credit_limit('leadlex', 50)});
is($node->safe_psql('postgres', q{SELECT credit_limit || '/' || used || '/' || remaining FROM enrich.credits WHERE provider = 'leadlex'}),
	'50/0/50', 'enrich.credits shows the new limit');
$node->safe_psql('postgres', q{
SELECT count(enrich.enqueue_company(
         CASE WHEN g % 11 = 0 THEN format('nomatch-budget-%s.com', g) ELSE format('budget-%s.com', g) END))
  FROM generate_series(1, 220) g;
});
ok(poll_until($node, q{
SELECT count(*) FILTER (WHERE status = 'done') = 50
   AND count(*) FILTER (WHERE status IN ('queued', 'in_flight')) = 0
  FROM enrich.queue WHERE key LIKE '%budget-%'}, 't', 60),
	'50 items done, the rest parked')
  or diag statuses('budget') . ' ' . statuses('nomatch-budget');
my $l = emu_ledger();
is($l->{charged}{leadlex}{wbk_test_key}, 50, 'exactly 50 credits charged on the ledger');
my $nm = $node->safe_psql('postgres', q{SELECT count(*) FROM enrich.queue WHERE status = 'no_match'});
is($l->{requests}{leadlex}, 50 + $nm, 'no request sent that the budget could not pay for');
is(statuses('budget'), sprintf('done=50,waiting_credits=%d', 150), 'the other 150 matching items wait for credits');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.queue WHERE status = 'failed'}), '0', 'none failed');
is($node->safe_psql('postgres',
		q{SELECT credit_limit || '/' || used || '/' || remaining || '/' || reserved FROM enrich.credits WHERE provider = 'leadlex'}),
	'50/50/0/0', 'enrich.credits: limit 50, used 50, remaining 0, nothing reserved');
is($node->safe_psql('postgres', q{SELECT enrich.wait('5 s')}), 't', 'enrich.wait() does not wait for the parked items');
# and they stay parked (two housekeeping turns)
select(undef, undef, undef, 2.5);
is(emu_ledger()->{requests}{leadlex}, 50 + $nm, 'nothing more is sent while the budget is spent');

# Raising the limit resumes them by themselves.
$node->safe_psql('postgres', q{SELECT enrich.set_credit_limit('leadlex', 1000)});
ok(poll_until($node, q{
SELECT count(*) FILTER (WHERE status IN ('done', 'no_match')) = 220 FROM enrich.queue WHERE key LIKE '%budget-%'},
		't', 60),
	'raising the limit resumes every parked item')
  or diag statuses('budget');
$l = emu_ledger();
is($l->{charged}{leadlex}{wbk_test_key}, 200, 'total charged 200');
is($l->{requests}{leadlex}, 220, 'one request per item');
is(scalar(grep { $_ != 1 } values %{ $l->{charged_inputs}{leadlex} }), 0, 'no key charged twice');

# 2. Eight sessions race synchronous calls for distinct keys under a
# budget of 20.
emu_control({ reset => JSON::PP::true, latency_ms => 200 });
$node->safe_psql('postgres', q{
SELECT enrich.set_credit_limit('leadlex', 20);
CREATE TABLE race_results (s int, ok int, no_credits int, other int, errors text);
});
my @sessions;
for my $s (1 .. 8)
{
	my $b = $node->background_psql('postgres');
	$b->query_until(qr/started/, qq(\\echo started
DO \$\$
DECLARE
  ok int := 0; nc int := 0; other int := 0; errs text := '';
BEGIN
  FOR g IN 1 .. 10 LOOP
    BEGIN
      PERFORM enrich_company(format('race-$s-%s.com', g));
      ok := ok + 1;
    EXCEPTION
      WHEN SQLSTATE '38R02' THEN nc := nc + 1;
      WHEN OTHERS THEN other := other + 1; errs := errs || SQLSTATE || ' ' || SQLERRM || '; ';
    END;
  END LOOP;
  INSERT INTO race_results VALUES ($s, ok, nc, other, errs);
END \$\$;
\\echo done
));
	push @sessions, $b;
}
$_->query_until(qr/done/, '') for @sessions;
$_->quit for @sessions;
$l = emu_ledger();
my ($ok, $nc, $other, $errs) = split /\|/,
  $node->safe_psql('postgres', q{SELECT sum(ok), sum(no_credits), sum(other), string_agg(errors, '') FROM race_results});
note "racing sessions: $ok succeeded, $nc got 38R02, $other other errors";
cmp_ok($l->{charged}{leadlex}{wbk_test_key} // 0, '<=', 20, 'eight racing sessions: at most 20 charged');
is($l->{requests}{leadlex}, $l->{charged}{leadlex}{wbk_test_key}, 'every request sent was paid for by the budget');
is($ok, 20, 'the whole budget of 20 was used');
is($nc, 60, 'the other 60 calls got SQLSTATE 38R02');
is($other, 0, 'and no other error') or diag $errs;
is($node->safe_psql('postgres', q{SELECT used || '/' || remaining FROM enrich.credits WHERE provider = 'leadlex'}),
	'20/0', 'enrich.credits: used 20, remaining 0');
my ($rc, $o, $e) = $node->psql('postgres', q{SELECT enrich_company('one-more.com')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($e, qr/38R02/, 'a synchronous call over budget fails with 38R02');
is(emu_ledger()->{requests}{leadlex}, 20, 'and sends nothing');

# 3. estimate_credits: distinct normalised keys without a fresh answer.
$node->safe_psql('postgres', q{
SELECT enrich.set_credit_limit('leadlex', NULL);
SELECT enrich_company('stale-1.com');
UPDATE enrich.companies SET fetched_at = now() - interval '31 days' WHERE domain = 'stale-1.com';
UPDATE enrich.companies SET fetched_at = now() - interval '8 days' WHERE domain = 'nomatch-budget-22.com';
});
emu_control({ reset => JSON::PP::true });
is($node->safe_psql('postgres', q{
SELECT enrich.estimate_credits('company',
  ARRAY['budget-1.com', 'WWW.Budget-1.com', 'est-new-1.com', 'https://www.est-new-1.com/x', 'EST-NEW-2.com',
        'nomatch-budget-11.com', 'stale-1.com', 'nomatch-budget-22.com'])}),
	'4', 'estimate_credits(company): new, stale and expired no-match keys, each once');
is($node->safe_psql('postgres', q{
SELECT enrich.estimate_credits('lead',
  ARRAY['linkedin.com/in/est-a', 'https://www.linkedin.com/in/EST-A/', 'linkedin.com/in/est-b'])}),
	'2', 'estimate_credits(lead): distinct normalised keys');
is($node->safe_psql('postgres', q{SELECT enrich.estimate_credits('company', ARRAY['budget-1.com'])}),
	'0', 'estimate_credits of a cached key is 0');
$l = emu_ledger();
is($l->{requests}{leadlex} + $l->{requests}{slintel}, 0, 'estimate_credits sends no request');

# 4. A 402 storm: the provider's balance is 0.  Work waits, none fails.
emu_control({ reset => JSON::PP::true, balance => { wbk_test_key => 0 } });
$node->safe_psql('postgres',
	q{SELECT count(enrich.enqueue_company(format('storm-%s.com', g))) FROM generate_series(1, 50) g});
ok(poll_until($node, q{SELECT count(*) = 50 FROM enrich.queue WHERE key LIKE 'storm-%' AND status = 'waiting_credits'},
		't', 30),
	'402: every item waits for credits')
  or diag statuses('storm');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.queue WHERE status = 'failed'}), '0', 'none failed');
is($node->safe_psql('postgres', q{SELECT pause_reason FROM enrich.stats WHERE provider = 'leadlex'}), 'no_credits',
	'enrich.stats shows the provider paused for credits');
$l = emu_ledger();
my $n402 = $l->{by_status}{leadlex}{402} // 0;
note "402 storm: $n402 requests answered 402 for 50 items";
cmp_ok($n402, '<=', 16, 'no more 402s than one round of concurrent requests');
select(undef, undef, undef, 2.5);
is(emu_ledger()->{requests}{leadlex}, $l->{requests}{leadlex}, 'the paused provider is not hammered');

emu_control({ balance => { wbk_test_key => 1000 } });
$node->safe_psql('postgres', q{SELECT enrich.resume('leadlex')});
ok(poll_until($node, q{SELECT count(*) = 50 FROM enrich.queue WHERE key LIKE 'storm-%' AND status = 'done'}, 't', 30),
	'topped up and resumed: every item done')
  or diag statuses('storm');
is(emu_ledger()->{charged}{leadlex}{wbk_test_key}, 50, 'each charged once');
is($node->safe_psql('postgres', q{SELECT pause_reason IS NULL FROM enrich.stats WHERE provider = 'leadlex'}), 't',
	'no pause any more');

# ... and without resume(): the once-a-minute probe finds the balance.
emu_control({ reset => JSON::PP::true, balance => { wbk_test_key => 0 } });
$node->safe_psql('postgres',
	q{SELECT count(enrich.enqueue_company(format('probe-%s.com', g))) FROM generate_series(1, 10) g});
ok(poll_until($node, q{SELECT count(*) = 10 FROM enrich.queue WHERE key LIKE 'probe-%' AND status = 'waiting_credits'},
		't', 30),
	'402 again: every item waits for credits')
  or diag statuses('probe');
my $t0 = time();
my $before = emu_ledger()->{requests}{leadlex};
emu_control({ balance => { wbk_test_key => 1000 } });
ok(poll_until($node, q{SELECT count(*) = 10 FROM enrich.queue WHERE key LIKE 'probe-%' AND status = 'done'}, 't', 90),
	'the probe finds the provider paid again, and the items complete by themselves')
  or diag statuses('probe');
note sprintf('resumed by the probe after %.0f s', time() - $t0);
$l = emu_ledger();
cmp_ok($l->{requests}{leadlex} - $before, '<=', 11, 'one probe, then one request per item');
is($l->{charged}{leadlex}{wbk_test_key}, 10, 'each charged once');

# 5. A budget per period: 10 every 2 seconds.  It resumes by itself when
# the period turns.
emu_control({ reset => JSON::PP::true });
$node->safe_psql('postgres', q{SELECT enrich.set_credit_limit('leadlex', 10, '2 seconds')});
my $start = $node->safe_psql('postgres',
	q{SELECT resets_at - period FROM enrich.credits WHERE provider = 'leadlex'});
is($node->safe_psql('postgres', q{SELECT period FROM enrich.credits WHERE provider = 'leadlex'}), '00:00:02',
	'enrich.credits shows the period');
$node->safe_psql('postgres',
	q{SELECT count(enrich.enqueue_company(format('period-%s.com', g))) FROM generate_series(1, 25) g});
ok(poll_until($node, q{
SELECT count(*) FILTER (WHERE status = 'done') = 10 AND count(*) FILTER (WHERE status = 'waiting_credits') = 15
  FROM enrich.queue WHERE key LIKE 'period-%'}, 't', 10),
	'10 done in the first period, 15 waiting')
  or diag statuses('period');
ok(poll_until($node, q{SELECT count(*) = 25 FROM enrich.queue WHERE key LIKE 'period-%' AND status = 'done'}, 't', 30),
	'the rest complete by themselves as the periods turn')
  or diag statuses('period');
is(emu_ledger()->{charged}{leadlex}{wbk_test_key}, 25, '25 charged');
my $per = $node->safe_psql('postgres', qq{
SELECT string_agg(c::text, ',' ORDER BY p)
  FROM (SELECT floor(extract(epoch FROM finished_at - '$start'::timestamptz) / 2) p, count(*) c
          FROM enrich.queue WHERE key LIKE 'period-%' GROUP BY 1) s});
note "items finished per 2 s period: $per";
is(scalar(grep { $_ > 10 } split /,/, $per), 0, 'no period spent more than 10');
cmp_ok(scalar(split /,/, $per), '>=', 3, 'the work spread over at least three periods');

$node->stop;
done_testing();
