# enrich.refresh(): queues the stalest cached answers first, honours
# max_items, kind and credit budgets, retries old "no match" answers, asks
# the provider again despite a fresh cache, and the new answers reach the
# auto_enrich targets.
use strict;
use warnings;
use HTTP::Tiny;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EnrichTest;

my $emu = start_emulator();
my $node = enrich_node('refresh');
emu_control({ reset => JSON::PP::true });

# Clears the ledger counters only (the LeadLex idempotency store stays, so
# a request that reused an old Idempotency-Key would be a free replay).
sub ledger_reset
{
	my $r = HTTP::Tiny->new->post("$emu->{url}/_ledger/reset");
	die "ledger reset failed: $r->{status}" unless $r->{success};
}

sub wait_idle
{
	my ($what) = @_;
	is($node->safe_psql('postgres', "SELECT enrich.wait('60 s')"), 't', "enrich.wait: $what");
}

sub sql { return $node->safe_psql('postgres', $_[0]); }

# The newest queue id, and the items queued after a given one.
sub last_id { return sql(q{SELECT coalesce(max(id), 0) FROM enrich.queue}); }

sub items_after
{
	my ($id) = @_;
	return sql(qq{SELECT string_agg(kind || ':' || key, ',' ORDER BY kind, key) FROM enrich.queue WHERE id > $id AND refresh});
}

# Fill the cache through the queue: 12 companies, 2 no-match, 3 leads.
sql(q{
SELECT enrich.enqueue_company(format('ref-%s.com', lpad(g::text, 2, '0'))) FROM generate_series(1, 12) g;
SELECT enrich.enqueue_company('nomatch-ref-1.com'), enrich.enqueue_company('nomatch-ref-2.com');
SELECT enrich.enqueue_lead(format('linkedin.com/in/ref-person-%s', g)) FROM generate_series(1, 3) g;
});
wait_idle('cache filled');
is(sql(q{SELECT count(*) FILTER (WHERE matched) || '/' || count(*) FROM enrich.companies}), '12/14',
	'12 answers and 2 no-match answers cached');
is(sql(q{SELECT count(*) FROM enrich.leads}), '3', '3 leads cached');
my $l = emu_ledger();
is($l->{charged_total}{leadlex}, 12, '12 LeadLex credits for the first fill');

# An auto_enrich target holding some of the keys, filled from the cache.
sql(q{
CREATE TABLE accounts (id int PRIMARY KEY, domain text, info jsonb);
CREATE INDEX ON accounts (domain);
SELECT enrich.auto_enrich('accounts', 'company', 'domain', 'info');
INSERT INTO accounts VALUES (1, 'ref-12.com'), (2, 'WWW.REF-12.COM'), (3, 'ref-11.com'), (4, 'ref-01.com');
});
wait_idle('accounts filled from the cache');
is(sql(q{SELECT count(*) FROM accounts WHERE info->>'domain' = enrich.normalize_domain(domain)}), '4',
	'the target is filled from the cache');

# Distinct ages: ref-NN is 2*NN+1 days old (3 .. 25 days).
sql(q{UPDATE enrich.companies SET fetched_at = now() - make_interval(days => 2 * substr(domain, 5, 2)::int + 1)
     WHERE domain LIKE 'ref-%'});
my %before = map { split /\|/ } split /\n/,
  sql(q{SELECT domain || '|' || extract(epoch FROM fetched_at) FROM enrich.companies WHERE domain LIKE 'ref-%'});

# Clear the target's result column (and make one row stale), so that the
# refreshed answers can be seen arriving.
sql(q{UPDATE accounts SET info = NULL WHERE id IN (1, 2, 4); UPDATE accounts SET info = '{"stale": true}' WHERE id = 3});

ledger_reset();
is(sql(q{SELECT enrich.refresh(older_than => '10 days', max_items => 5)}), '5', 'refresh queues max_items = 5');
is(sql(q{SELECT string_agg(key, ',' ORDER BY key) FROM enrich.queue WHERE refresh}),
	'ref-08.com,ref-09.com,ref-10.com,ref-11.com,ref-12.com', 'the 5 oldest answers were queued');
is(sql(q{SELECT count(DISTINCT idempotency_key) FROM enrich.queue}), sql(q{SELECT count(*) FROM enrich.queue}),
	'each refresh item has a fresh idempotency key');
wait_idle('first refresh');
$l = emu_ledger();
is(join(',', map { "$_=" . ($l->{requests_by_input}{leadlex}{$_} // 0) } map { sprintf('ref-%02d.com', $_) } 1 .. 12),
	'ref-01.com=0,ref-02.com=0,ref-03.com=0,ref-04.com=0,ref-05.com=0,ref-06.com=0,ref-07.com=0,'
	  . 'ref-08.com=1,ref-09.com=1,ref-10.com=1,ref-11.com=1,ref-12.com=1',
	'exactly the 5 oldest were asked again, once each');
is($l->{charged_total}{leadlex}, 5, 'LeadLex charged the 5 refreshes (fresh idempotency keys)');
is($l->{idempotent_replays}, 0, 'no idempotent replay');
is(sql(q{SELECT string_agg(status, ',') FROM (SELECT DISTINCT status FROM enrich.queue WHERE refresh) s}), 'done',
	'refresh items end done');
my %after = map { split /\|/ } split /\n/,
  sql(q{SELECT domain || '|' || extract(epoch FROM fetched_at) FROM enrich.companies WHERE domain LIKE 'ref-%'});
is(join(',', grep { $after{$_} > $before{$_} } sort keys %after),
	'ref-08.com,ref-09.com,ref-10.com,ref-11.com,ref-12.com', 'fetched_at moved forward for those 5 only');
is(sql(q{SELECT count(*) FROM enrich.companies WHERE domain IN ('ref-08.com', 'ref-12.com') AND fetched_at > now() - interval '1 minute'}),
	'2', 'refreshed answers are fresh now');
is(sql(q{SELECT string_agg(id || '=' || coalesce(info->>'domain', info::text, 'NULL'), ',' ORDER BY id) FROM accounts}),
	'1=ref-12.com,2=ref-12.com,3=ref-11.com,4=NULL',
	'refreshed answers reach the auto_enrich target (all spellings; the stale value replaced); unrefreshed keys untouched');

# The rest of the stale answers, oldest first.
my $id0 = last_id();
is(sql(q{SELECT enrich.refresh(older_than => '10 days', max_items => 5)}), '3',
	'a second run queues the 3 stale answers left');
is(items_after($id0), 'company:ref-05.com,company:ref-06.com,company:ref-07.com', 'they are ref-05 .. ref-07');
wait_idle('second refresh');
is(sql(q{SELECT enrich.refresh(older_than => '10 days')}), '0', 'nothing stale is left');
is(sql(q{SELECT enrich.refresh(older_than => '0 seconds', max_items => 0)}), '0', 'max_items => 0 queues nothing');

# Oldest first across kinds, and the kind filter.
sql(q{UPDATE enrich.leads SET fetched_at = now() - interval '100 days' WHERE linkedin_url LIKE '%ref-person-1';
    UPDATE enrich.leads SET fetched_at = now() - interval '50 days' WHERE linkedin_url LIKE '%ref-person-2';
    UPDATE enrich.companies SET fetched_at = now() - interval '60 days' WHERE domain = 'ref-01.com'});
ledger_reset();
is(sql(q{SELECT enrich.refresh(older_than => '10 days', max_items => 1)}), '1', 'one item across both kinds');
is(sql(q{SELECT kind || ':' || key FROM enrich.queue WHERE refresh ORDER BY id DESC LIMIT 1}),
	'lead:https://www.linkedin.com/in/ref-person-1', 'the oldest answer of either kind is picked first');
is(sql(q{SELECT enrich.refresh(kind => 'company', older_than => '10 days')}), '1', 'kind => company picks companies only');
is(sql(q{SELECT key FROM enrich.queue WHERE refresh ORDER BY id DESC LIMIT 1}), 'ref-01.com', 'the stale company');
wait_idle('kind refresh');
is(sql(q{SELECT enrich.refresh(kind => 'lead', older_than => '10 days')}), '1', 'kind => lead picks the other stale lead');
wait_idle('lead refresh');
$l = emu_ledger();
is($l->{charged_inputs}{slintel}{'ref-person-1'} . ',' . $l->{charged_inputs}{slintel}{'ref-person-2'}, '1,1',
	'both leads were fetched (and charged) again');
is($l->{requests_by_input}{leadlex}{'ref-01.com'}, 1, 'and the company');
is(sqlstate_of($node, 'postgres', q{SELECT enrich.refresh(kind => 'person')}), '22023', 'an unknown kind is refused');
is(sqlstate_of($node, 'postgres', q{SELECT enrich.refresh(max_items => -1)}), '22023', 'a negative max_items is refused');

# Credit budgets: no more than the provider's remaining budget.
sql(q{SELECT enrich.set_credit_limit('leadlex', 3)});
sql(q{UPDATE enrich.companies SET fetched_at = now() - interval '20 days' WHERE matched});
sql(q{UPDATE enrich.leads SET fetched_at = now() - interval '20 days'});
sql(q{SELECT enrich.set_credit_limit('slintel', 2)});
ledger_reset();
$id0 = last_id();
is(sql(q{SELECT enrich.refresh(older_than => '10 days')}), '5', 'budgets 3 (LeadLex) and 2 (Slintel): 5 items queued');
is(sql(qq{SELECT string_agg(kind || '=' || n, ',' ORDER BY kind) FROM
  (SELECT kind, count(*) AS n FROM enrich.queue WHERE id > $id0 GROUP BY kind) s}),
	'company=3,lead=2', 'at most 3 companies and 2 leads');
is(sql(qq{SELECT string_agg(DISTINCT key, ',') FROM enrich.queue WHERE id > $id0 AND kind = 'company'})
	=~ /^(ref-\d\d\.com,?){3}$/ ? 'ok' : 'no', 'ok', 'three distinct companies');
wait_idle('budgeted refresh');
$l = emu_ledger();
is(($l->{requests}{leadlex} // 0) . ',' . ($l->{requests}{slintel} // 0), '3,2', 'the providers saw 3 and 2 requests');
is(sql(q{SELECT provider || '=' || remaining FROM enrich.credits WHERE provider = 'leadlex'}), 'leadlex=0', 'the LeadLex budget is spent');
is(sql(q{SELECT enrich.refresh(kind => 'company', older_than => '10 days')}), '0',
	'with the budget spent, refresh queues no company');
sql(q{SELECT enrich.set_credit_limit('leadlex', NULL); SELECT enrich.set_credit_limit('slintel', NULL)});

# No-match answers older than enrich.no_match_ttl (7 days) are retried.
sql(q{UPDATE enrich.companies SET fetched_at = now() - interval '8 days' WHERE domain = 'nomatch-ref-1.com';
    UPDATE enrich.companies SET fetched_at = now() - interval '3 days' WHERE domain = 'nomatch-ref-2.com';
    UPDATE enrich.companies SET fetched_at = now() WHERE matched});
my $nm_before = sql(q{SELECT fetched_at FROM enrich.companies WHERE domain = 'nomatch-ref-1.com'});
ledger_reset();
is(sql(q{SELECT enrich.refresh(older_than => '365 days')}), '1', 'the no-match answer past no_match_ttl is queued');
is(sql(q{SELECT key FROM enrich.queue WHERE refresh ORDER BY id DESC LIMIT 1}), 'nomatch-ref-1.com', 'the 8-day-old one');
wait_idle('no-match refresh');
is(emu_ledger()->{requests_by_input}{leadlex}{'nomatch-ref-1.com'}, 1, 'the provider was asked again');
is(sql(qq{SELECT fetched_at > '$nm_before' AND NOT matched FROM enrich.companies WHERE domain = 'nomatch-ref-1.com'}), 't',
	'the no-match answer is remembered anew');
is(sql(q{SET enrich.no_match_ttl = '1d'; SELECT enrich.refresh(older_than => '365 days')}), '1',
	'with a shorter enrich.no_match_ttl the 3-day-old one is due too');
wait_idle('second no-match refresh');
is(emu_ledger()->{requests_by_input}{leadlex}{'nomatch-ref-2.com'}, 1, 'and it was asked again');

$node->stop;
done_testing();
