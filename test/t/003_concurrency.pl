# Concurrency and rate limits, measured on the emulator's ledger: the
# worker keeps enrich.max_concurrency requests in flight and never more, a
# provider's own cap from enrich.set_rate_limit holds, Slintel's default of
# 10 a second and 10 at once holds, and the batch functions return one row
# per input in order with one request per distinct key.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EnrichTest;

start_emulator();
my $node = enrich_node('conc');
set_conf($node, 'enrich.max_concurrency' => 8);
is($node->safe_psql('postgres', 'SHOW enrich.max_concurrency'), '8', 'max_concurrency set to 8');

# Drains $n companies named $prefix-N.com; returns the seconds it took.
sub drain_companies
{
	my ($prefix, $n) = @_;
	my $t0 = time();
	$node->safe_psql('postgres',
		"SELECT count(enrich.enqueue_company(format('$prefix-%s.com', g))) FROM generate_series(1, $n) g");
	is($node->safe_psql('postgres', q{SELECT enrich.wait('120 s')}), 't', "$prefix: drained");
	my $secs = time() - $t0;
	is($node->safe_psql('postgres',
			"SELECT count(*) FILTER (WHERE status = 'done') || '/' || count(*) FROM enrich.queue WHERE key LIKE '$prefix-%'"),
		"$n/$n", "$prefix: every item done");
	return $secs;
}

# 1. The worker at max_concurrency = 8 with 100 ms per request.
emu_control({ reset => JSON::PP::true, latency_ms => 100 });
my $n = 400;
my $secs = drain_companies('conc8', $n);
my $l = emu_ledger();
note sprintf('%d requests at 100 ms, max_concurrency 8: %.2f s, %.1f req/s = %.0f%% of the 80/s limit',
	$n, $secs, $n / $secs, 100 * $n / $secs / 80);
cmp_ok($l->{peak_concurrency}{leadlex}, '<=', 8, 'peak concurrency on the ledger never above 8');
is($l->{peak_concurrency}{leadlex}, 8, 'and reaches 8');
is($l->{requests}{leadlex}, $n, 'one request per item');
cmp_ok($secs, '>=', $n * 0.1 / 8 * 0.95, 'the drain took at least n x latency / 8');

# 2. A provider's own cap: LeadLex at most 3 at once.
$node->safe_psql('postgres', q{SELECT enrich.set_rate_limit('leadlex', NULL, NULL, 3)});
emu_control({ reset => JSON::PP::true, latency_ms => 100 });
$n = 90;
$secs = drain_companies('conc3', $n);
$l = emu_ledger();
note sprintf('%d requests at 100 ms, LeadLex cap 3: %.2f s (%.1f req/s; the cap allows 30/s)', $n, $secs, $n / $secs);
cmp_ok($l->{peak_concurrency}{leadlex}, '<=', 3, 'set_rate_limit(leadlex, NULL, NULL, 3): peak never above 3');
is($l->{peak_concurrency}{leadlex}, 3, 'and reaches 3');
# The cap limits how many at once, not how fast: 3 at a time at 100 ms is
# 30/s, so 90 items need about 3 s ("at the speed the provider allows").
cmp_ok($secs, '<', 9, 'the capped drain runs near the speed the cap allows (ideal 3 s)');
is($node->safe_psql('postgres', q{SELECT enrich.wait('1 s')}), 't', 'nothing left');

# 2b. A rate: LeadLex 20 per second.  The emulator enforces the same
# window exactly, so a request over it would show as a 429.
$node->safe_psql('postgres', q{SELECT enrich.set_rate_limit('leadlex', 20, '1 second')});
emu_control({ reset => JSON::PP::true,
	rate_limit => { leadlex => { per_second => 20, retry_after => JSON::PP::true } } });
$n = 60;
$secs = drain_companies('rate20', $n);
$l = emu_ledger();
note sprintf('%d requests at LeadLex 20/s: %.2f s; 429s: %d', $n, $secs, $l->{by_status}{leadlex}{429} // 0);
cmp_ok($secs, '>=', 1.9, '60 requests at 20/s take at least 2 s');
is($l->{by_status}{leadlex}{429} // 0, 0, 'no request exceeded a provider window of 20/s');
$node->safe_psql('postgres', q{SELECT enrich.set_rate_limit('leadlex', NULL, NULL)});

# 3. Slintel's default: 10 a second, 10 at once.  The emulator enforces
# Slintel's documented allowance (a sliding one-second window of 10 and 10
# concurrent), so every request over it is a 429 on the ledger.
set_conf($node, 'enrich.max_concurrency' => 16);
emu_control({ reset => JSON::PP::true, latency_ms => 100,
	rate_limit => { slintel => { per_second => 10, max_concurrent => 10, retry_after => JSON::PP::true } } });
is($node->safe_psql('postgres', q{SELECT requests || '/' || per || '/' || max_concurrency FROM enrich.rate_limits WHERE provider = 'slintel'}),
	'10/00:00:01/10', 'Slintel defaults: 10 per second, 10 at once');
my $t0 = time();
$node->safe_psql('postgres',
	q{SELECT count(enrich.enqueue_lead(format('linkedin.com/in/rate-person-%s', g))) FROM generate_series(1, 40) g});
is($node->safe_psql('postgres', q{SELECT enrich.wait('60 s')}), 't', 'leads drained');
$secs = time() - $t0;
$l = emu_ledger();
note sprintf('40 leads at Slintel defaults: %.2f s, peak %d, 429s %d', $secs,
	$l->{peak_concurrency}{slintel}, $l->{by_status}{slintel}{429} // 0);
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.queue WHERE kind = 'lead' AND status = 'done'}),
	'40', 'every lead done');
cmp_ok($secs, '>=', 2.9, '40 leads at 10/s take at least ~3 s');
cmp_ok($secs, '<', 6, 'and not much more (the speed Slintel allows)');
cmp_ok($l->{peak_concurrency}{slintel}, '<=', 10, 'Slintel peak concurrency never above 10');
is($l->{by_status}{slintel}{429} // 0, 0, 'no request exceeded Slintel\'s 10 per second');
is($l->{charged}{slintel}{sl_test_key}, 40, 'each lead charged once');

# 4. Batch functions: 200 inputs in order, statuses, one request per
# distinct key, at most max_concurrency at once in the session.
set_conf($node, 'enrich.max_concurrency' => 8);
emu_control({ reset => JSON::PP::true, latency_ms => 100 });
$node->safe_psql('postgres', q{SELECT enrich_company('batch-cached-1.com'), enrich_company('nomatch-batch-cached.com')});
emu_control({ reset => JSON::PP::true, latency_ms => 100 });
my (@inputs, @expect);
my %want_req;
for my $i (1 .. 200)
{
	my ($in, $st);
	if ($i % 50 == 0) { ($in, $st) = ("not a domain $i", 'invalid') }
	elsif ($i % 40 == 0) { ($in, $st) = ("nomatch-batch-$i.com", 'no_match'); $want_req{"nomatch-batch-$i.com"} = 1 }
	elsif ($i % 25 == 0) { ($in, $st) = ('https://www.Batch-Cached-1.com/x', 'cached') }
	elsif ($i % 33 == 0) { ($in, $st) = ('NOMATCH-batch-cached.com', 'no_match') }
	elsif ($i % 10 == 0) { ($in, $st) = (sprintf('WWW.Batch-%d.com', $i - 1), 'fetched') }   # a variant of the previous
	else { ($in, $st) = ("batch-$i.com", 'fetched'); $want_req{"batch-$i.com"} = 1 }
	push @inputs, $in;
	push @expect, "$i|$in|$st";
}
my $arr = 'ARRAY[' . join(',', map { "'$_'" } @inputs) . ']';
$t0 = time();
my $rows = $node->safe_psql('postgres',
	"SELECT n, input, status FROM enrich_companies($arr) WITH ORDINALITY AS t(input, result, status, n)");
$secs = time() - $t0;
my @got = split /\n/, $rows;
is(scalar @got, 200, 'enrich_companies over 200 inputs returns 200 rows');
is_deeply(\@got, \@expect, 'in input order, each with its status');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM enrich_companies($arr) WHERE (status IN ('fetched', 'cached')) <> (result IS NOT NULL)"),
	'0', 'a result exactly for fetched and cached rows');
$l = emu_ledger();
is($l->{requests}{leadlex}, scalar(keys %want_req), 'one request per distinct uncached key (and none the second time)');
is(scalar(grep { $l->{requests_by_input}{leadlex}{$_} != 1 } keys %{ $l->{requests_by_input}{leadlex} }), 0,
	'no key requested twice');
cmp_ok($l->{peak_concurrency}{leadlex}, '<=', 8, 'batch: peak concurrency never above max_concurrency');
is($l->{peak_concurrency}{leadlex}, 8, 'batch: and reaches it');
note sprintf('enrich_companies: %d requests at 100 ms in %.2f s', scalar(keys %want_req), $secs);

# enrich_leads likewise, under Slintel's 10 at once.
emu_control({ reset => JSON::PP::true, latency_ms => 100 });
my @leads = map { $_ % 7 == 0 ? "linkedin.com/in/nomatch-b$_" : "https://uk.linkedin.com/in/Batch-Lead-$_/" } 1 .. 30;
push @leads, 'https://www.linkedin.com/company/acme', 'linkedin.com/in/batch-lead-1';
$arr = 'ARRAY[' . join(',', map { "'$_'" } @leads) . ']';
@got = split /\n/, $node->safe_psql('postgres',
	"SELECT input || '|' || status FROM enrich_leads($arr) WITH ORDINALITY AS t(input, result, status, n) ORDER BY n");
@expect = map { "$leads[$_ - 1]|" . ($_ == 31 ? 'invalid' : $_ == 32 ? 'fetched' : $_ % 7 == 0 ? 'no_match' : 'fetched') } 1 .. 32;
is_deeply(\@got, \@expect, 'enrich_leads: one row per input, in order, with statuses');
$l = emu_ledger();
is($l->{requests}{slintel}, 30, 'one Slintel request per distinct lead');
cmp_ok($l->{peak_concurrency}{slintel}, '<=', 8, 'enrich_leads: peak within max_concurrency');

$node->stop;
done_testing();
