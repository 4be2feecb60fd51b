# Polite under rate limits: the provider's limit is found and kept, not
# hit.  With the emulator's rate limiter: a window announced in LeadLex's
# X-RateLimit-* headers (never more started in a window than Remaining
# allows), a limit that only says 429 (learned after the first 429, paced
# by a CUBIC token bucket), Slintel's documented 10/s and 10 at once; for
# the worker, the batch functions and concurrent synchronous sessions.
# Every item finishes and 429s stay a small share of requests.  The
# margins are wide enough for a loaded 2-core machine; the timing goals
# live in test/bench/run.sh (section rate).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EnrichTest;

start_emulator();
my $node = enrich_node('ratelearn');

sub share_429
{
	my ($prov) = @_;
	my $l = emu_ledger();
	my $n429 = $l->{by_status}{$prov}{429} // 0;
	my $req = $l->{requests}{$prov} // 0;
	return ($n429, $req);
}

# 1. The worker, LeadLex announcing a fixed window of 20 a second.
emu_control({ reset => JSON::PP::true,
	rate_limit => { leadlex => { per_second => 20, window => 'fixed' } } });
my $n = 120;
my $t0 = time();
$node->safe_psql('postgres',
	"SELECT count(enrich.enqueue_company(format('window-%s.com', g))) FROM generate_series(1, $n) g");
is($node->safe_psql('postgres', q{SELECT enrich.wait('90 s')}), 't', 'window: the queue drains');
my $secs = time() - $t0;
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.queue WHERE key LIKE 'window-%' AND status = 'done'}),
	$n, 'window: every item done');
my ($n429, $req) = share_429('leadlex');
note sprintf('window 20/s: %d items in %.1f s (%.1f s at the limit), %d of %d requests answered 429',
	$n, $secs, $n / 20, $n429, $req);
cmp_ok($n429, '<=', 0.05 * $req, 'window: at most 5 % of requests answered 429');

# 2. The worker, a limit of 25 a second that only says 429 (sliding
# window, Retry-After, no rate headers on the answers): learned.  (The
# learner measures what was admitted in the last second: section 1's
# answers are let out of that second first.  A 429 at one of section 1's
# window turns may have started a pace, still growing: enrich.resume
# forgets it, so that "right after the first 429" is this section's.)
select(undef, undef, undef, 1.2);
$node->safe_psql('postgres', q{SELECT enrich.resume('leadlex')});
is($node->safe_psql('postgres', q{SELECT learned_rate IS NULL FROM enrich.stats WHERE provider = 'leadlex'}),
	't', 'enrich.resume forgets the learned pace');
emu_control({ reset => JSON::PP::true,
	rate_limit => { leadlex => { per_second => 25 } } });
$n = 250;
$t0 = time();
$node->safe_psql('postgres',
	"SELECT count(enrich.enqueue_company(format('learn-%s.com', g))) FROM generate_series(1, $n) g");
ok(poll_until($node, q{SELECT learned_rate IS NOT NULL FROM enrich.stats WHERE provider = 'leadlex'}, 't', 30),
	'learned: after the first 429 enrich.stats shows a learned rate');
my $learned = $node->safe_psql('postgres', q{SELECT round(learned_rate) FROM enrich.stats WHERE provider = 'leadlex'});
note "learned rate right after the first 429: $learned/s";
cmp_ok($learned, '<=', 40, 'learned: the pace starts below what was sent into the limit');
is($node->safe_psql('postgres', q{SELECT enrich.wait('120 s')}), 't', 'learned: the queue drains');
$secs = time() - $t0;
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.queue WHERE key LIKE 'learn-%' AND status = 'done'}),
	$n, 'learned: every item done');
($n429, $req) = share_429('leadlex');
note sprintf('429-only 25/s: %d items in %.1f s (%.1f s at the limit), %d of %d requests answered 429',
	$n, $secs, $n / 25, $n429, $req);
cmp_ok($n429, '<=', 0.10 * $req, 'learned: at most 10 % of requests answered 429');
is($node->safe_psql('postgres', q{SELECT errors_rate_limited > 0 FROM enrich.stats WHERE provider = 'leadlex'}),
	't', 'enrich.stats counts the 429s received');

# 3. The limit is lifted: the pace grows back until it ends (full speed).
emu_control({ rate_limit => undef });
$node->safe_psql('postgres',
	"SELECT count(enrich.enqueue_company(format('recover-%s.com', g))) FROM generate_series(1, 3000) g");
ok(poll_until($node, q{SELECT learned_rate IS NULL FROM enrich.stats WHERE provider = 'leadlex'}, 't', 90),
	'recovered: once 429s stop the pacing ends');
is($node->safe_psql('postgres', q{SELECT enrich.wait('120 s')}), 't', 'recovered: the queue drains');
is($node->safe_psql('postgres', q{SELECT learned_rate IS NULL FROM enrich.stats WHERE provider = 'slintel'}),
	't', 'a provider that never throttled is never paced');

# 4. Slintel at its documented 10 a second and 10 at once (the default
# local limit): no 429.
emu_control({ reset => JSON::PP::true,
	rate_limit => { slintel => { per_second => 10, max_concurrent => 10 } } });
$n = 40;
$node->safe_psql('postgres',
	"SELECT count(enrich.enqueue_lead(format('linkedin.com/in/slintel-rate-%s', g))) FROM generate_series(1, $n) g");
is($node->safe_psql('postgres', q{SELECT enrich.wait('90 s')}), 't', 'slintel: the queue drains');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.queue WHERE key LIKE '%slintel-rate-%' AND status = 'done'}),
	$n, 'slintel: every lead done');
($n429) = share_429('slintel');
is($n429, 0, 'slintel: no 429');

# 5. The batch function against the 429-only limit of 25 a second.
emu_control({ reset => JSON::PP::true,
	rate_limit => { leadlex => { per_second => 25 } } });
$n = 200;
is($node->safe_psql('postgres', qq{
SELECT string_agg(DISTINCT status, ',') FROM enrich_companies(ARRAY(SELECT format('batch-rate-%s.com', g) FROM generate_series(1, $n) g))}),
	'fetched', 'batch: every input fetched');
($n429, $req) = share_429('leadlex');
note "batch, 429-only 25/s: $n429 of $req requests answered 429";
cmp_ok($n429, '<=', 0.15 * $req, 'batch: at most 15 % of requests answered 429');

# 6. Eight sessions calling enrich_company() at once, against the window
# of 20 a second.
emu_control({ reset => JSON::PP::true,
	rate_limit => { leadlex => { per_second => 20, window => 'fixed' } } });
$node->safe_psql('postgres', q{CREATE TABLE sync_rate (s int, ok int, errors text)});
my @sessions;
for my $s (1 .. 8)
{
	my $b = $node->background_psql('postgres');
	$b->query_until(qr/started/, qq(\\echo started
DO \$\$
DECLARE
  ok int := 0; errs text := '';
BEGIN
  FOR g IN 1 .. 10 LOOP
    BEGIN
      PERFORM enrich_company(format('sync-rate-$s-%s.com', g));
      ok := ok + 1;
    EXCEPTION WHEN OTHERS THEN errs := errs || SQLSTATE || ' ' || SQLERRM || '; ';
    END;
  END LOOP;
  INSERT INTO sync_rate VALUES ($s, ok, errs);
END \$\$;
\\echo done
));
	push @sessions, $b;
}
$_->query_until(qr/done/, '') for @sessions;
$_->quit for @sessions;
my ($ok, $errs) = split /\|/, $node->safe_psql('postgres', q{SELECT sum(ok), string_agg(errors, '') FROM sync_rate});
is($ok, 80, 'sync: all 80 calls of eight sessions succeed') or diag $errs;
($n429, $req) = share_429('leadlex');
note "eight sync sessions, window 20/s: $n429 of $req requests answered 429";
cmp_ok($n429, '<=', 0.05 * $req, 'sync: at most 5 % of requests answered 429');

$node->stop;
done_testing();
