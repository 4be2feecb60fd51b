# The worker as a DBA runs it: X-RateLimit-* headers obeyed (nothing sent
# at Remaining = 0 until Reset), concurrency capped by the open-file limit
# (said once in the log, nothing lost), a clean exit on SIGTERM mid-run
# (restarted, nothing lost, no server crash), kept-alive HTTP/2
# connections, and enrich.stats while it works.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EnrichTest;

start_emulator();
# 100 open files allow about 24 connections for the worker
my $node = enrich_node('ops', extra_conf => "max_files_per_process = 100\n");

sub statuses
{
	my ($prefix) = @_;
	return $node->safe_psql('postgres', qq{
SELECT coalesce(string_agg(status || '=' || c, ',' ORDER BY status), '')
  FROM (SELECT status, count(*) c FROM enrich.queue WHERE key LIKE '$prefix-%' GROUP BY 1) s});
}

# 1. X-RateLimit-*: a LeadLex quota of 25 per 3 s period.  One request at
# a time, so the worker sees Remaining reach 0 before it sends the next:
# it must wait for Reset, and the provider never answers 429.
set_conf($node, 'enrich.max_concurrency' => 1);
emu_control({ reset => JSON::PP::true,
	daily_quota => { leadlex => { limit => 25, period_s => 3 } } });
my $t0 = time();
$node->safe_psql('postgres',
	q{SELECT count(enrich.enqueue_company(format('quota-%s.com', g))) FROM generate_series(1, 40) g});
ok(poll_until($node, q{SELECT count(*) = 25 FROM enrich.queue WHERE key LIKE 'quota-%' AND status = 'done'}, 't', 10),
	'25 done within the first quota period');
is($node->safe_psql('postgres', q{SELECT rate_limit_remaining FROM enrich.stats WHERE provider = 'leadlex'}), '0',
	'enrich.stats shows X-RateLimit-Remaining 0');
is($node->safe_psql('postgres', q{SELECT pause_reason FROM enrich.stats WHERE provider = 'leadlex'}), 'rate_limited',
	'and the provider paused until Reset');
is($node->safe_psql('postgres', q{SELECT enrich.wait('20 s')}), 't', 'the rest goes out after Reset');
my $secs = time() - $t0;
is(statuses('quota'), 'done=40', 'every item done');
my $l = emu_ledger();
is($l->{by_status}{leadlex}{429} // 0, 0, 'no request sent at Remaining = 0 before Reset (no 429)');
is($l->{requests}{leadlex}, 40, 'one request per item');
note sprintf('40 items under a quota of 25 per 3 s: %.1f s', $secs);
set_conf($node, 'enrich.max_concurrency' => 16);

# With concurrency, at most the requests already in flight meet the 429.
emu_control({ reset => JSON::PP::true,
	daily_quota => { leadlex => { limit => 50, period_s => 3 } } });
$node->safe_psql('postgres',
	q{SELECT count(enrich.enqueue_company(format('quota16-%s.com', g))) FROM generate_series(1, 120) g});
is($node->safe_psql('postgres', q{SELECT enrich.wait('30 s')}), 't', 'quota with concurrency: drained');
is(statuses('quota16'), 'done=120', 'quota with concurrency: every item done');
$l = emu_ledger();
note sprintf('quota of 50 per 3 s, 120 items at concurrency 16: %d answered 429', $l->{by_status}{leadlex}{429} // 0);
cmp_ok($l->{by_status}{leadlex}{429} // 0, '<=', 3 * 16, 'at most one round of concurrent requests per period meets a 429');

# 2. The open-file limit caps the worker's concurrency, said once in the log.
emu_control({ reset => JSON::PP::true, latency_ms => 100, daily_quota => { leadlex => undef } });
my $logpos = -s $node->logfile;
set_conf($node, 'enrich.max_concurrency' => 100);
$t0 = time();
$node->safe_psql('postgres',
	q{SELECT count(enrich.enqueue_company(format('fd-%s.com', g))) FROM generate_series(1, 300) g});
ok(poll_until($node, q{SELECT in_flight > 0 FROM enrich.stats WHERE provider = 'leadlex'}, 't', 10),
	'enrich.stats shows requests in flight');
is($node->safe_psql('postgres', q{SELECT enrich.wait('60 s')}), 't', 'fd cap: drained');
$secs = time() - $t0;
is(statuses('fd'), 'done=300', 'fd cap: every item done, none lost to "out of file descriptors"');
$l = emu_ledger();
my $log = slurp_file($node->logfile, $logpos);
my @said = $log =~ /enrich\.max_concurrency = 100 exceeds the (\d+) connections the open-file limit allows/g;
is(scalar(@said), 1, 'the cap is said once in the log');
my $cap = $said[0] // 0;
note sprintf('fd cap %d: 300 requests at 100 ms in %.1f s, peak %d, %d connections', $cap, $secs,
	$l->{peak_concurrency}{leadlex}, $l->{connections}{https});
cmp_ok($l->{peak_concurrency}{leadlex}, '<=', $cap, 'peak concurrency within the cap');
unlike($log, qr/out of file descriptors|too many open files/i, 'no descriptor error in the log');
my $avg = $node->safe_psql('postgres', q{SELECT round(avg_latency_ms) FROM enrich.stats WHERE provider = 'leadlex'});
note "enrich.stats avg_latency_ms: $avg";
set_conf($node, 'enrich.max_concurrency' => 16);

# 3. Kept-alive connections, HTTP/2 where offered.
emu_control({ reset => JSON::PP::true });
$node->safe_psql('postgres',
	q{SELECT count(enrich.enqueue_company(format('keep-%s.com', g))) FROM generate_series(1, 1000) g});
is($node->safe_psql('postgres', q{SELECT enrich.wait('60 s')}), 't', 'keep-alive: drained');
$l = emu_ledger();
note 'connections for 1000 requests: ' . JSON::PP->new->canonical->encode($l->{connections});
cmp_ok($l->{connections}{https}, '<=', 16, 'connections are kept alive (no more than one per slot for 1000 requests)');

# 4. SIGTERM mid-run: the worker exits cleanly and is started again, no
# server crash, nothing lost, nothing charged twice.
emu_control({ reset => JSON::PP::true, latency_ms => 50, latency_jitter_ms => 50 });
my $bystander = $node->background_psql('postgres');
my $bpid = $bystander->query_safe('SELECT pg_backend_pid()');
$logpos = -s $node->logfile;
$node->safe_psql('postgres',
	q{SELECT count(enrich.enqueue_company(format('term-%s.com', g))) FROM generate_series(1, 500) g});
ok(poll_until($node, q{
SELECT count(*) FILTER (WHERE status = 'done') >= 50 AND count(*) FILTER (WHERE status = 'in_flight') > 0
  FROM enrich.queue WHERE key LIKE 'term-%'}, 't', 30),
	'SIGTERM: under way');
my $wpid = worker_pid($node);
$t0 = time();
kill 'TERM', $wpid;
ok(poll_until($node, "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $wpid", 't', 10),
	'SIGTERM: the worker exits');
note sprintf('the worker was gone %.2f s after SIGTERM (as seen by polling)', time() - $t0);
ok(poll_until($node,
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'enrich worker' AND pid <> $wpid", 't', 30),
	'SIGTERM: a new worker is started');
is($node->safe_psql('postgres', q{SELECT enrich.wait('60 s')}), 't', 'SIGTERM: drained');
is(statuses('term'), 'done=500', 'SIGTERM: every item done');
is($bystander->query_safe('SELECT pg_backend_pid()'), $bpid, 'other sessions were not disturbed (no crash restart)');
$bystander->quit;
$log = slurp_file($node->logfile, $logpos);
unlike($log, qr/terminating any other active server processes|was terminated by signal/,
	'the server log shows no crash');
$l = emu_ledger();
is(scalar(grep { $_ != 1 } values %{ $l->{charged_inputs}{leadlex} }), 0, 'SIGTERM: no key charged twice');
is($l->{charged}{leadlex}{wbk_test_key}, 500, 'SIGTERM: each key charged once');
# the new worker had to connect afresh
note 'connections across the SIGTERM: ' . JSON::PP->new->canonical->encode($l->{connections});
cmp_ok($l->{connections}{https}, '>=', 1, 'the new worker connected');
is($l->{connections}{h2_sessions}, $l->{connections}{https}, 'every connection speaks HTTP/2 (offered over TLS)');

$node->stop;
done_testing();
