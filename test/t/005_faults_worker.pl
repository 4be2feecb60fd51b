# Provider faults as the worker meets them: a 429 storm is waited out (no
# failure, few 429s, no attempt burnt), transient 5xx and resets are
# retried, a permanent 503 fails after enrich.max_attempts with its error
# kept, and a 401 fails its item and pauses the provider (the rest waits)
# until enrich.resume() or a reload.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EnrichTest;

start_emulator();
my $node = enrich_node('faults');

sub statuses
{
	my ($prefix) = @_;
	return $node->safe_psql('postgres', qq{
SELECT coalesce(string_agg(status || '=' || c, ',' ORDER BY status), '')
  FROM (SELECT status, count(*) c FROM enrich.queue WHERE key LIKE '$prefix-%' GROUP BY 1) s});
}

# 1. A 429 storm: the emulator admits 25 LeadLex requests a second and
# answers 429 with Retry-After beyond that.  With max_attempts 2, an item
# whose waits counted as attempts would fail.
set_conf($node, 'enrich.max_attempts' => 2);
emu_control({ reset => JSON::PP::true,
	rate_limit => { leadlex => { per_second => 25, retry_after => JSON::PP::true } } });
my $n = 200;
my $t0 = time();
$node->safe_psql('postgres',
	"SELECT count(enrich.enqueue_company(format('storm429-%s.com', g))) FROM generate_series(1, $n) g");
is($node->safe_psql('postgres', q{SELECT enrich.wait('90 s')}), 't', '429 storm: the queue drains');
my $secs = time() - $t0;
is(statuses('storm429'), "done=$n", '429 storm: every item done, none failed');
my $l = emu_ledger();
my $n429 = $l->{by_status}{leadlex}{429} // 0;
note sprintf('429 storm: %d items in %.1f s (the provider allows 25/s: %.1f s), %d answered 429, %d requests',
	$n, $secs, $n / 25, $n429, $l->{requests}{leadlex});
is($l->{charged}{leadlex}{wbk_test_key}, $n, 'each charged once');
# A 429 pauses the provider until Retry-After: at most one round of
# concurrent requests (max_concurrency 16) meets each pause.
cmp_ok($n429, '<=', int($n / 25 + 2) * 16, 'few 429s: at most one round of concurrency per pause');
cmp_ok($n429, '<', $n / 2, 'and well under the number of items');
is($node->safe_psql('postgres', q{SELECT max(attempts) FROM enrich.queue WHERE key LIKE 'storm429-%'}), '1',
	'waiting out a 429 does not count as an attempt');
is($node->safe_psql('postgres', q{SELECT errors_rate_limited > 0 FROM enrich.stats WHERE provider = 'leadlex'}), 't',
	'enrich.stats counts the 429s');

# 2. Transient faults with a count: 503s, a 502 and connection resets.
set_conf($node, 'enrich.max_attempts' => 5);
emu_control({ reset => JSON::PP::true, latency_ms => 10,
	faults => [
		{ provider => 'leadlex', kind => 'status', status => 503, count => 20 },
		{ provider => 'leadlex', kind => 'status', status => 502, count => 5 },
		{ provider => 'leadlex', kind => 'reset', count => 10 },
	] });
my %stats0 = split /\|/, $node->safe_psql('postgres',
	q{SELECT 'transient', errors_transient + errors_connect FROM enrich.stats WHERE provider = 'leadlex'});
$n = 100;
$node->safe_psql('postgres',
	"SELECT count(enrich.enqueue_company(format('flaky-%s.com', g))) FROM generate_series(1, $n) g");
is($node->safe_psql('postgres', q{SELECT enrich.wait('60 s')}), 't', 'transient faults: the queue drains');
is(statuses('flaky'), "done=$n", 'transient faults: every item retried and done');
$l = emu_ledger();
is(($l->{by_status}{leadlex}{503} // 0) . '/' . ($l->{by_status}{leadlex}{502} // 0) . '/' . ($l->{by_status}{leadlex}{reset} // 0),
	'20/5/10', 'the emulator applied every fault');
is($l->{charged}{leadlex}{wbk_test_key}, $n, 'each item charged once');
is($node->safe_psql('postgres', q{SELECT sum(attempts) FROM enrich.queue WHERE key LIKE 'flaky-%'}), $n + 35,
	'each fault cost one attempt');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM enrich.queue WHERE key LIKE 'flaky-%' AND last_error IS NOT NULL}), '0',
	'done items keep no error');
my %stats1 = split /\|/, $node->safe_psql('postgres',
	q{SELECT 'transient', errors_transient + errors_connect FROM enrich.stats WHERE provider = 'leadlex'});
cmp_ok($stats1{transient} - $stats0{transient}, '>=', 35, 'enrich.stats counts the transient errors');

# 3. A permanent 503 with max_attempts 2: failed, with the error kept.
set_conf($node, 'enrich.max_attempts' => 2);
emu_control({ reset => JSON::PP::true,
	faults => [ { provider => 'leadlex', kind => 'status', status => 503, match => 'perm-down' } ] });
$node->safe_psql('postgres', q{
SELECT enrich.enqueue_company('perm-down-1.com'), enrich.enqueue_company('perm-down-2.com'),
       enrich.enqueue_company('perm-ok-1.com');
});
is($node->safe_psql('postgres', q{SELECT enrich.wait('30 s')}), 't', 'permanent 503: the queue settles');
is($node->safe_psql('postgres', q{
SELECT string_agg(key || ':' || status || ':' || attempts, ',' ORDER BY key)
  FROM enrich.queue WHERE key LIKE 'perm-%'}),
	'perm-down-1.com:failed:2,perm-down-2.com:failed:2,perm-ok-1.com:done:1',
	'the down items fail after 2 attempts, the other is done');
like($node->safe_psql('postgres', q{SELECT last_error FROM enrich.queue WHERE key = 'perm-down-1.com'}),
	qr/unavailable|503/i, 'last_error says why');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM enrich.queue WHERE key LIKE 'perm-down-%' AND finished_at IS NOT NULL}), '2',
	'failed items are finished');
$l = emu_ledger();
is($l->{requests_by_input}{leadlex}{'perm-down-1.com'}, 2, 'two requests for a failed item, no more');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.companies WHERE domain LIKE 'perm-down-%'}), '0',
	'nothing cached for them');
# A failed key can be queued again (it is no longer waiting).
emu_control({ reset => JSON::PP::true });
my $old = $node->safe_psql('postgres', q{SELECT id FROM enrich.queue WHERE key = 'perm-down-1.com'});
my $new = $node->safe_psql('postgres', q{SELECT enrich.enqueue_company('perm-down-1.com')});
isnt($new, $old, 'a failed key is queued afresh');
is($node->safe_psql('postgres', q{SELECT enrich.wait('20 s')}), 't', 'and');
is($node->safe_psql('postgres', "SELECT status FROM enrich.queue WHERE id = $new"), 'done', 'done once the provider is up');
set_conf($node, 'enrich.max_attempts' => 5);

# 4. A 401: the item fails at once and LeadLex is paused; other items wait
# (queued, not failed) until enrich.resume(); Slintel goes on.
emu_control({ reset => JSON::PP::true,
	faults => [ { provider => 'leadlex', kind => 'status', status => 401, match => 'auth-bad' } ] });
my $bad = $node->safe_psql('postgres', q{SELECT enrich.enqueue_company('auth-bad-1.com')});
ok(poll_until($node, "SELECT status = 'failed' FROM enrich.queue WHERE id = $bad", 't', 20),
	'401: the item fails');
is($node->safe_psql('postgres', "SELECT attempts FROM enrich.queue WHERE id = $bad"), '1', 'at once, without a retry');
like($node->safe_psql('postgres', "SELECT last_error FROM enrich.queue WHERE id = $bad"), qr/key/i,
	'last_error names the key problem');
unlike($node->safe_psql('postgres', "SELECT last_error FROM enrich.queue WHERE id = $bad"), qr/wbk_test_key/,
	'and does not show the key');
is($node->safe_psql('postgres', q{SELECT pause_reason || ':' || (paused_until > now()) FROM enrich.stats WHERE provider = 'leadlex'}),
	'auth:true', 'LeadLex is paused for its key');
my $req0 = emu_ledger()->{requests}{leadlex};
$node->safe_psql('postgres', q{
SELECT count(enrich.enqueue_company(format('after-auth-%s.com', g))) FROM generate_series(1, 20) g;
SELECT count(enrich.enqueue_lead(format('linkedin.com/in/during-auth-%s', g))) FROM generate_series(1, 3) g;
});
ok(poll_until($node, q{SELECT count(*) = 3 FROM enrich.queue WHERE key LIKE '%during-auth-%' AND status = 'done'}, 't', 20),
	'Slintel is not paused: its leads are done');
select(undef, undef, undef, 1.5);
is(statuses('after-auth'), 'queued=20', 'the other LeadLex items stay queued, not failed');
is(emu_ledger()->{requests}{leadlex}, $req0, 'and nothing is sent to LeadLex');
emu_control({ faults => [] });
$node->safe_psql('postgres', q{SELECT enrich.resume('leadlex')});
ok(poll_until($node, q{SELECT count(*) = 20 FROM enrich.queue WHERE key LIKE 'after-auth-%' AND status = 'done'}, 't', 20),
	'after enrich.resume() they are done')
  or diag statuses('after-auth');

# A reload lifts the pause too (the key may have been fixed).
emu_control({ faults => [ { provider => 'leadlex', kind => 'status', status => 401, match => 'auth-bad' } ] });
$bad = $node->safe_psql('postgres', q{SELECT enrich.enqueue_company('auth-bad-2.com')});
ok(poll_until($node, "SELECT status = 'failed' FROM enrich.queue WHERE id = $bad", 't', 20), '401 again: failed');
$node->safe_psql('postgres', q{SELECT count(enrich.enqueue_company(format('after-reload-%s.com', g))) FROM generate_series(1, 5) g});
select(undef, undef, undef, 1.5);
is(statuses('after-reload'), 'queued=5', 'paused again: the items wait');
emu_control({ faults => [] });
$node->reload;
ok(poll_until($node, q{SELECT count(*) = 5 FROM enrich.queue WHERE key LIKE 'after-reload-%' AND status = 'done'}, 't', 20),
	'after a reload they are done')
  or diag statuses('after-reload');

$node->stop;
done_testing();
