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

# What that shutdown leaves when it comes before any WAL record of the
# rolled-back transaction reached disk: after recovery the transaction id
# counter is behind the spool file's writer.  That writer is dead, and the
# worker must take its answer in at once, not wait for the counter to pass
# it again.  The file is written here as the session would have written it.
my $next = $node->safe_psql('postgres', 'SELECT pg_snapshot_xmax(pg_current_snapshot())');
my $us = $node->safe_psql('postgres',
	q{SELECT (extract(epoch FROM now() - '2000-01-01 00:00:00+00') * 1000000)::bigint});
my $spool = $node->data_dir . '/pg_enrich';
mkdir $spool;
open(my $fh, '>', "$spool/company-lost-wal.tmp") or die "spool file: $!";
print $fh qq({"v": 1, "xid": "@{[ $next + 1000 ]}", "kind": "company", "key": "survive-lost-wal.com", )
  . qq("fetched_at": "$us", "request_id": "req-lost-wal", )
  . qq("result": {"domain": "survive-lost-wal.com", "name": "Lost WAL Inc"}}\n);
close $fh;
rename("$spool/company-lost-wal.tmp", "$spool/company-lost-wal") or die "rename: $!";
ok(poll_until($node,
		q{SELECT count(*) = 1 FROM enrich.companies WHERE domain = 'survive-lost-wal.com' AND result->>'name' = 'Lost WAL Inc'},
		't', 15),
	'a spooled answer whose writer\'s transaction id never reached disk is taken in');
ok(!-e "$spool/company-lost-wal", 'and its spool file removed');

# A spool file with no record in it yet is one its writer has just made
# (a session between creating its file and its first append, a worker that
# emptied its file after a commit): while that writer lives, the worker's
# scan leaves it, or the writer's next answers would go to a file with no
# name.  Once the writer is gone, the file goes.  (A fresh-clone run lost
# a session's file this way: its link to the answer's key then failed.)
my $live = $node->background_psql('postgres');
my $live_pid = $live->query_safe('SELECT pg_backend_pid()');
my $db = $node->safe_psql('postgres', q{SELECT oid FROM pg_database WHERE datname = 'postgres'});
my @empty_live = ("$spool/sync-$db-$live_pid-900", "$spool/batch-$db-$live_pid-900", "$spool/worker-$live_pid-1");
my @empty_dead = ("$spool/sync-$db-4194000-900", "$spool/worker-4194000-1");
for my $f (@empty_live, @empty_dead)
{
	open(my $e, '>', $f) or die "spool file $f: $!";
	close $e;
}
ok(poll_until($node, q{SELECT count(*) = 0 FROM pg_ls_dir('pg_enrich') f WHERE f LIKE '%-4194000-%'}, 't', 15),
	'empty spool files of writers that are gone are removed');
is(join(',', map { -e $_ ? 1 : 0 } @empty_live), '1,1,1',
	'empty spool files of live writers are left to them');
$live->quit;
ok(poll_until($node, qq{SELECT count(*) = 0 FROM pg_ls_dir('pg_enrich') f WHERE f LIKE '%-$live_pid-%'}, 't', 15),
	'and removed once their writer has ended');

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

# A database the worker does not serve: what an aborted transaction there
# paid for belongs to that database, not to the worker's.  The next session
# there that has to fetch something takes it in.
emu_control({ reset => JSON::PP::true });
$node->safe_psql('postgres', 'CREATE DATABASE otherdb');
$node->safe_psql('otherdb', 'CREATE EXTENSION enrich');
$node->safe_psql('otherdb', q{
BEGIN;
SELECT enrich_company('survive-otherdb.com');
SELECT count(*) FROM enrich_companies(ARRAY['survive-otherdb-batch.com', 'nomatch-survive-otherdb.com']);
ROLLBACK;
});
# two rounds of the worker's housekeeping (once a second)
sleep(2.5);
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.companies WHERE domain LIKE '%survive-otherdb%'}),
	'0', 'another database: its answers are not put in the worker\'s database');
is($node->safe_psql('otherdb', q{SELECT enrich_company('survive-otherdb-next.com')->>'domain'}),
	'survive-otherdb-next.com', 'another database: the next call there');
is($node->safe_psql('otherdb',
		q{SELECT string_agg(domain || ':' || matched, ',' ORDER BY domain) FROM enrich.companies WHERE domain LIKE '%survive-otherdb%'}),
	'nomatch-survive-otherdb.com:false,survive-otherdb-batch.com:true,survive-otherdb-next.com:true,survive-otherdb.com:true',
	'another database: takes in what the rolled-back call and batch paid for');
$l = emu_ledger();
is(join(',', map { $l->{requests_by_input}{leadlex}{$_} // 0 }
		qw(survive-otherdb.com survive-otherdb-batch.com nomatch-survive-otherdb.com survive-otherdb-next.com)),
	'1,1,1,1', 'another database: one request per key');
is($node->safe_psql('otherdb', q{SELECT enrich_company('survive-otherdb.com')->>'domain'}),
	'survive-otherdb.com', 'another database: served from its cache');
is(emu_ledger()->{requests}{leadlex}, 4, 'with no new request');
my @left = grep { !m{/(worker-[^/]*|budgets)$} } glob($node->data_dir . '/pg_enrich/*');
is(scalar(@left), 0, 'no spool file left') or diag "left: @left";

$node->stop;
done_testing();
