# Paid answers survive the caller: an answer fetched by a synchronous call
# (or a batch function) whose transaction then rolls back, errors, hits
# statement_timeout, is cancelled or terminated is cached afterwards
# without a new call -- the worker takes the spooled answer in.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EnrichTest;

start_emulator();
my $node = enrich_node('survive');
emu_control({ reset => JSON::PP::true });

# Waits for the cache row of a domain to appear by itself (no call).
sub cached_company
{
	my ($domain, $what) = @_;
	ok(poll_until($node,
			"SELECT count(*) = 1 FROM enrich.companies WHERE domain = '$domain' AND result->>'domain' = '$domain'",
			't', 15),
		"$what: the answer is cached without a new call");
	is(emu_ledger()->{requests_by_input}{leadlex}{$domain}, 1, "$what: one request for it");
	return;
}

# Rollback.
$node->safe_psql('postgres', q{
BEGIN;
SELECT enrich_company('survive-rollback.com');
SELECT enrich_lead('linkedin.com/in/survive-rollback');
ROLLBACK;
});
cached_company('survive-rollback.com', 'rollback');
ok(poll_until($node,
		q{SELECT count(*) = 1 FROM enrich.leads WHERE linkedin_url = 'https://www.linkedin.com/in/survive-rollback' AND matched},
		't', 15),
	'rollback: the lead is cached without a new call');
is(emu_ledger()->{requests}{slintel}, 1, 'rollback: one Slintel request');

# An error later in the transaction.
my ($rc, $o, $e) = $node->psql('postgres', q{
BEGIN;
SELECT enrich_company('survive-error.com');
SELECT 1 / 0;
COMMIT;
});
like($e, qr/division by zero/, 'error: the transaction failed');
cached_company('survive-error.com', 'error');

# statement_timeout after the paid call, in the same statement.
($rc, $o, $e) = $node->psql('postgres',
	q{SET statement_timeout = '500ms'; SELECT enrich_company('survive-timeout.com'), pg_sleep(3);});
like($e, qr/statement timeout/, 'statement_timeout: the statement was cancelled');
cached_company('survive-timeout.com', 'statement_timeout');

# A cancel while the transaction goes on after the call.
my $s = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $s->query_safe('SELECT pg_backend_pid()');
$s->query_until(qr/slept/, q(BEGIN;
SELECT enrich_company('survive-cancel.com');
\echo slept
SELECT pg_sleep(60);
));
ok(poll_until($node, "SELECT wait_event = 'PgSleep' FROM pg_stat_activity WHERE pid = $pid", 't', 10),
	'cancel: the session sleeps in its transaction');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
cached_company('survive-cancel.com', 'cancel');
$s->quit;

# The session terminated after the call.
$s = $node->background_psql('postgres', on_error_stop => 0);
$pid = $s->query_safe('SELECT pg_backend_pid()');
$s->query_until(qr/slept/, q(BEGIN;
SELECT enrich_company('survive-terminate.com');
\echo slept
SELECT pg_sleep(60);
));
ok(poll_until($node, "SELECT wait_event = 'PgSleep' FROM pg_stat_activity WHERE pid = $pid", 't', 10),
	'terminate: the session sleeps in its transaction');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
cached_company('survive-terminate.com', 'terminate');
eval { $s->quit };

# A batch function's answers, rolled back.
my @batch = map { "survive-batch-$_.com" } 1 .. 10;
my $arr = 'ARRAY[' . join(',', map { "'$_'" } @batch, 'nomatch-survive-batch.com') . ']';
$node->safe_psql('postgres', qq{
BEGIN;
SELECT count(*) FROM enrich_companies($arr);
ROLLBACK;
});
ok(poll_until($node,
		q{SELECT count(*) = 11 FROM enrich.companies WHERE domain LIKE '%survive-batch%'}, 't', 15),
	'batch rolled back: all 11 answers cached without a new call');
is($node->safe_psql('postgres',
		q{SELECT count(*) FILTER (WHERE matched) || '/' || count(*) FILTER (WHERE NOT matched) FROM enrich.companies WHERE domain LIKE '%survive-batch%'}),
	'10/1', 'batch rolled back: the no-match is remembered too');
my $l = emu_ledger();
is(scalar(grep { /survive-batch/ && $l->{requests_by_input}{leadlex}{$_} != 1 } keys %{ $l->{requests_by_input}{leadlex} }),
	0, 'batch rolled back: one request per key');

# An immediate shutdown right after the rollback: the answer is still
# taken in once the server is back.
$node->safe_psql('postgres', q{
BEGIN;
SELECT enrich_company('survive-crash.com');
ROLLBACK;
});
$node->stop('immediate');
$node->start;
cached_company('survive-crash.com', 'rollback then immediate shutdown');

# None of it is fetched again.
emu_control({ reset => JSON::PP::true });
is($node->safe_psql('postgres', q{
SELECT count(*) FROM unnest(ARRAY['survive-rollback.com', 'survive-error.com', 'survive-timeout.com',
  'survive-cancel.com', 'survive-terminate.com', 'survive-batch-1.com', 'survive-crash.com']) d
 WHERE enrich_company(d)->>'domain' = d}),
	'7', 'the answers are served from the cache');
$l = emu_ledger();
is($l->{requests}{leadlex} + $l->{requests}{slintel}, 0, 'with no request');

# A request cancelled by statement_timeout before its answer came: LeadLex
# charged on arrival, so the next call the same day carries the same
# Idempotency-Key and is replayed, not charged again.
emu_control({ reset => JSON::PP::true, latency_ms => 2000 });
($rc, $o, $e) = $node->psql('postgres',
	q{SET statement_timeout = '300ms'; SELECT enrich_company('survive-midflight.com');});
like($e, qr/statement timeout/, 'mid-request statement_timeout cancels the call');
emu_control({ latency_ms => 0 });
is($node->safe_psql('postgres', q{SELECT enrich_company('survive-midflight.com')->>'domain'}),
	'survive-midflight.com', 'the next call gets the answer');
$l = emu_ledger();
is($l->{charged_inputs}{leadlex}{'survive-midflight.com'}, 1, 'charged once');
is($l->{idempotent_replays}, 1, 'the second request was a replay');

$node->stop;
done_testing();
