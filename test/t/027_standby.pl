# A hot standby serves cached answers and buys nothing: enrich_company,
# enrich_lead, the batch functions, estimate_credits and the views work for
# cached keys, and everything that would send a request or queue one fails
# with 25006 before anything is sent (an answer bought there could not be
# kept).  The worker does not run on the standby; after promotion it
# starts and finishes the work the old primary left queued.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EnrichTest;

start_emulator();
my $primary = enrich_node('primary', init => { allows_streaming => 1 });
emu_control({ reset => JSON::PP::true });
$primary->safe_psql('postgres', q{
SELECT enrich_company('cached.com');
SELECT enrich_company('nomatch-standby.com');
SELECT enrich_lead('https://www.linkedin.com/in/standby-lead');
CREATE TABLE accounts (id int PRIMARY KEY, domain text, info jsonb);
});
my $standby = enrich_standby($primary, 'standby');

# Streamed after the base backup: a budget of 1 a month, an answer that
# spends it, and two items that wait for credits when the primary goes
# away.
$primary->safe_psql('postgres', q{
SELECT enrich.set_credit_limit('leadlex', 1, '1 month');
SELECT enrich_company('after-backup.com');
SELECT enrich.enqueue_company('promoted-1.com'), enrich.enqueue_company('promoted-2.com');
});
ok(poll_until($primary, q{SELECT count(*) FROM enrich.queue WHERE status = 'waiting_credits'}, '2'),
	'primary: two items wait for credits');
$primary->wait_for_catchup($standby);
my $ledger = sub { my $l = emu_ledger(); return $l->{requests}{leadlex} + $l->{requests}{slintel}; };
my $sent = $ledger->();
is($sent, 4, 'four requests so far');

is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');

# Cached reads.
is($standby->safe_psql('postgres', q{SELECT enrich_company('https://www.Cached.com/x')->>'domain'}), 'cached.com',
	'standby: enrich_company of a cached key');
is($standby->safe_psql('postgres', q{SELECT enrich_company('after-backup.com')->>'domain'}), 'after-backup.com',
	'standby: an answer streamed after the backup');
is($standby->safe_psql('postgres', q{SELECT enrich_company('nomatch-standby.com') IS NULL}), 't',
	'standby: a remembered no-match');
is($standby->safe_psql('postgres', q{SELECT enrich_lead('linkedin.com/in/standby-lead') IS NOT NULL}), 't',
	'standby: enrich_lead of a cached key');
is($standby->safe_psql('postgres',
	q{SELECT string_agg(status, ',' ORDER BY input) FROM enrich_companies('{cached.com,nomatch-standby.com,not a domain}')}),
	'cached,no_match,invalid', 'standby: enrich_companies of cached keys');
is($standby->safe_psql('postgres', q{SELECT string_agg(status, ',') FROM enrich_leads('{linkedin.com/in/standby-lead}')}),
	'cached', 'standby: enrich_leads of a cached key');
is($standby->safe_psql('postgres', q{SELECT enrich.estimate_credits('company', '{cached.com,miss-0.com}')}), '1',
	'standby: estimate_credits');
is($standby->safe_psql('postgres', q{SELECT credit_limit FROM enrich.credits WHERE provider = 'leadlex'}), '1',
	'standby: enrich.credits shows the budget');
is($standby->safe_psql('postgres', q{SELECT count(*) FROM enrich.stats}), '2', 'standby: enrich.stats');

# Everything that would buy or queue: 25006, nothing sent.
for my $sql (
	q{SELECT enrich_company('miss-1.com')},
	q{SELECT enrich_lead('linkedin.com/in/miss-lead')},
	q{SELECT * FROM enrich_companies('{cached.com,miss-2.com}')},
	q{SELECT * FROM enrich_leads('{linkedin.com/in/standby-lead,linkedin.com/in/miss-lead-2}')},
	q{SELECT enrich.enqueue_company('cached.com')},
	q{SELECT enrich.enqueue_lead('linkedin.com/in/miss-lead')},
	q{SELECT enrich.refresh()},
	q{SELECT enrich.auto_enrich('accounts', 'company', 'domain', 'info')},
	q{SELECT enrich.stop_auto_enrich('accounts')},
	q{SELECT enrich.set_credit_limit('leadlex', 10)},
	q{SELECT enrich.set_rate_limit('slintel', 5, '1 second')},
	q{SELECT enrich.resume('leadlex')})
{
	is(sqlstate_of($standby, 'postgres', $sql), '25006', "standby: 25006 from $sql");
}
my ($rc, $out, $err) = $standby->psql('postgres', q{SELECT enrich_company('miss-1.com')});
like($err, qr/cannot enrich an uncached company during recovery.*HINT:\s+Run it on the primary server/s,
	'the error says why and where to run it');
is($ledger->(), $sent, 'the standby sent no request');
is(emu_ledger()->{requests_by_input}{leadlex}{'miss-1.com'}, undef, 'none for the refused miss');
is($standby->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'enrich worker'}), '0',
	'no worker runs on the standby');
is($standby->safe_psql('postgres', q{SELECT string_agg(status, ',') FROM enrich.queue}), 'waiting_credits,waiting_credits',
	'the waiting items are left alone');

# Failover: the old primary goes, the standby is promoted; its worker
# starts and serves.
$primary->stop;
$standby->promote;
ok(poll_until($standby, q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'enrich worker'}, '1', 60),
	'after promotion the worker runs');
# the budget's use came with the ledger: spent on the old primary
is($standby->safe_psql('postgres', q{SELECT used || '/' || remaining FROM enrich.credits WHERE provider = 'leadlex'}),
	'1/0', 'the promoted standby counts what the old primary spent');
is(sqlstate_of($standby, 'postgres', q{SELECT enrich_company('miss-0.com')}), '38R02', 'and buys nothing past it');
$standby->safe_psql('postgres', q{SELECT enrich.set_credit_limit('leadlex', NULL)});
is($standby->safe_psql('postgres', q{SELECT enrich_company('miss-1.com')->>'domain'}), 'miss-1.com',
	'a miss is bought after promotion');
ok(poll_until($standby, q{SELECT string_agg(key || '=' || status, ',' ORDER BY key) FROM enrich.queue},
		'promoted-1.com=done,promoted-2.com=done', 60),
	'the worker finishes the items the old primary left waiting');
is(emu_ledger()->{requests_by_input}{leadlex}{'promoted-1.com'}, 1, 'each bought once');
is($ledger->(), $sent + 3, 'three requests since: the miss and the two items');

$standby->stop;
done_testing();
