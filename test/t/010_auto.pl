# Enrich on insert: a bulk INSERT does not wait for the provider, every row
# is filled in after commit, no-match / invalid / NULL keys leave rows alone,
# a key shared by many rows costs one credit, an UPDATE of the key
# re-enriches, a cached answer is written with no request, and
# stop_auto_enrich stops it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EnrichTest;

start_emulator();
my $node = enrich_node('auto', extra_conf => "enrich.max_concurrency = 64\n");
my $pid0 = worker_pid($node);
isnt($pid0, '', 'the enrich worker is running');

# The invalid-key counter (companies go to LeadLex).
sub invalid_keys
{
	return $node->safe_psql('postgres',
		"SELECT coalesce(sum(invalid_keys), 0) FROM enrich.stats WHERE provider = 'leadlex'");
}

sub wait_idle
{
	my ($what) = @_;
	is($node->safe_psql('postgres', "SELECT enrich.wait('90 s')"), 't', "enrich.wait: $what");
}

emu_control({ reset => JSON::PP::true, latency_ms => 500 });

$node->safe_psql('postgres', q{
CREATE TABLE accounts (id serial PRIMARY KEY, batch text, domain text, info jsonb);
});
my ($rc, $out, $err) = $node->psql('postgres',
	q{SELECT enrich.auto_enrich('accounts', 'company', 'domain', 'info')});
is($rc, 0, 'auto_enrich on accounts succeeds');
like($err, qr/creating an index on .*accounts.*domain/, 'auto_enrich says it creates an index on the key');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
 WHERE i.indrelid = 'accounts'::regclass AND a.attname = 'domain'}), '1', 'an index starts with the key column');
is($node->safe_psql('postgres', q{
SELECT string_agg(tgname || ':' || (tgtype & 1 = 1)::text, ',' ORDER BY tgname)
  FROM pg_trigger WHERE tgrelid = 'accounts'::regclass AND NOT tgisinternal}),
	'enrich_info_ins:false,enrich_info_upd:true',
	'a statement-level INSERT trigger and a row-level UPDATE trigger');
is($node->safe_psql('postgres', q{
SELECT target::text || ' ' || kind || ' ' || key_column || ' ' || result_column || ' ' || run_as::text
  FROM enrich.auto_targets}), 'accounts company domain info postgres', 'the configuration is recorded');

# 500 rows, 5 % of them no-match, at 500 ms provider latency.
my $t0 = time();
$node->safe_psql('postgres', q{
INSERT INTO accounts (batch, domain)
SELECT 'bulk', CASE WHEN g % 20 = 0 THEN format('nomatch-%s.com', g) ELSE format('auto-%s.com', g) END
  FROM generate_series(1, 500) g;
});
my $insert_s = time() - $t0;
cmp_ok($insert_s, '<', 0.4, sprintf('the 500-row INSERT returned in %.0f ms, without waiting for the provider', $insert_s * 1000));
is($node->safe_psql('postgres', q{SELECT count(*) FROM accounts WHERE info IS NOT NULL}), '0',
	'right after the INSERT no row is filled yet');
$t0 = time();
wait_idle('the bulk INSERT is done');
my $fill_s = time() - $t0;
diag(sprintf('500-row INSERT %.0f ms; filled in %.1f s after commit (500 ms latency, max_concurrency 64)',
	$insert_s * 1000, $fill_s));
is($node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE info->>'domain' = enrich.normalize_domain(domain)) || '/' ||
       count(*) FILTER (WHERE domain NOT LIKE 'nomatch-%')
  FROM accounts WHERE batch = 'bulk'}), '475/475', 'every matching row holds the answer for its own key');
is($node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE info IS NULL) || '/' || count(*)
  FROM accounts WHERE batch = 'bulk' AND domain LIKE 'nomatch-%'}), '25/25', 'no-match rows stay NULL');
my $l = emu_ledger();
is($l->{requests}{leadlex}, 500, 'one request per key');
is($l->{charged_total}{leadlex}, 475, 'charged for the 475 matches only');
is($node->safe_psql('postgres', q{
SELECT string_agg(status || '=' || n, ',' ORDER BY status)
  FROM (SELECT status, count(*) AS n FROM enrich.queue GROUP BY status) s}),
	'done=475,no_match=25', 'queue items end done or no_match');
is($node->safe_psql('postgres', 'SELECT count(*) FROM enrich.auto_inbox'), '0', 'the inbox is empty');

# Invalid and NULL keys leave their rows alone; invalid ones are counted.
my $inv0 = invalid_keys();
$node->safe_psql('postgres', q{
INSERT INTO accounts (batch, domain) VALUES
  ('bad', 'localhost'), ('bad', 'not a domain'), ('bad', '192.168.1.10'), ('bad', NULL),
  ('bad', NULL), ('bad', 'good-among-bad.com');
});
wait_idle('after invalid keys');
is($node->safe_psql('postgres', q{
SELECT string_agg(coalesce(domain, '<null>') || '=' || coalesce(info->>'domain', '<null>'), ',' ORDER BY id)
  FROM accounts WHERE batch = 'bad'}),
	'localhost=<null>,not a domain=<null>,192.168.1.10=<null>,<null>=<null>,<null>=<null>,good-among-bad.com=good-among-bad.com',
	'invalid and NULL keys leave their rows alone; the valid one in the same INSERT is filled');
is(invalid_keys() - $inv0, 3, 'the three invalid keys are counted in enrich.stats.invalid_keys');
is(emu_ledger()->{requests}{leadlex}, 501, 'only the valid key was sent');

# A key shared by 50 rows in three spellings costs one credit.
emu_control({ reset => JSON::PP::true, latency_ms => 200 });
$node->safe_psql('postgres', q{
INSERT INTO accounts (batch, domain)
SELECT 'shared', (ARRAY['acme.com', 'www.acme.com', 'ACME.COM', 'https://Acme.com/about'])[g % 4 + 1]
  FROM generate_series(1, 50) g;
});
wait_idle('after the shared key');
is($node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE info->>'name' = 'Acme Corp' AND info->>'domain' = 'acme.com') || '/' || count(*)
  FROM accounts WHERE batch = 'shared'}), '50/50', 'all 50 rows with the shared key are filled');
$l = emu_ledger();
is($l->{requests}{leadlex}, 1, 'one request for the shared key');
is($l->{charged_inputs}{leadlex}{'acme.com'}, 1, 'one credit for the shared key');
is($l->{requests_by_input}{leadlex}{'www.acme.com'} // 0, 0, 'the un-normalised spelling was never sent');

# A second INSERT of the same key, now cached: written with no request.
$node->safe_psql('postgres', q{INSERT INTO accounts (batch, domain) VALUES ('shared2', 'WWW.ACME.COM')});
wait_idle('after a cached key');
is($node->safe_psql('postgres', q{SELECT info->>'name' FROM accounts WHERE batch = 'shared2'}), 'Acme Corp',
	'a key already cached is written');
is(emu_ledger()->{requests}{leadlex}, 1, 'with no request');

# An answer cached by a synchronous call is written with no request.
is($node->safe_psql('postgres', q{SELECT enrich_company('cached-sync.com')->>'domain'}), 'cached-sync.com',
	'synchronous call caches an answer');
emu_control({ reset => JSON::PP::true });
my $hits0 = $node->safe_psql('postgres', q{SELECT cache_hits FROM enrich.stats WHERE provider = 'leadlex'});
$node->safe_psql('postgres', q{INSERT INTO accounts (batch, domain) VALUES ('cached', 'http://www.Cached-Sync.com/x')});
wait_idle('after a sync-cached key');
is($node->safe_psql('postgres', q{SELECT info->>'domain' FROM accounts WHERE batch = 'cached'}), 'cached-sync.com',
	'the cached answer is written into the row');
is(emu_ledger()->{requests}{leadlex}, 0, 'with no request to the provider');
cmp_ok($node->safe_psql('postgres', q{SELECT cache_hits FROM enrich.stats WHERE provider = 'leadlex'}), '>', $hits0,
	'counted as a cache hit');

# UPDATE of the key column re-enriches the row; other columns do not.
$node->safe_psql('postgres', q{UPDATE accounts SET domain = 'changed-7.com' WHERE batch = 'bulk' AND domain = 'auto-7.com'});
wait_idle('after a key UPDATE');
is($node->safe_psql('postgres', q{SELECT info->>'domain' FROM accounts WHERE domain = 'changed-7.com'}), 'changed-7.com',
	'UPDATE of the key writes the new answer');
is(emu_ledger()->{requests_by_input}{leadlex}{'changed-7.com'}, 1, 'one request for the new key');
$node->safe_psql('postgres', q{UPDATE accounts SET batch = 'bulk-x' WHERE domain = 'auto-8.com'});
$node->safe_psql('postgres', q{UPDATE accounts SET domain = 'auto-9.com' WHERE domain = 'auto-9.com'});
wait_idle('after non-key UPDATEs');
is(emu_ledger()->{requests}{leadlex}, 1, 'an UPDATE of another column, or to the same key, sends nothing');

# A multi-row INSERT within an explicit transaction that rolls back queues nothing.
$node->safe_psql('postgres', q{BEGIN; INSERT INTO accounts (batch, domain) VALUES ('rb', 'rolled-back.com'); ROLLBACK;});
wait_idle('after a rolled-back INSERT');
is(emu_ledger()->{requests_by_input}{leadlex}{'rolled-back.com'} // 0, 0, 'a rolled-back INSERT sends nothing');

# The lead kind works the same way.
$node->safe_psql('postgres', q{
CREATE TABLE people (id int PRIMARY KEY, profile varchar(200), lead jsonb);
CREATE INDEX ON people (profile);
SELECT enrich.auto_enrich('people', 'lead', 'profile', 'lead');
INSERT INTO people VALUES (1, 'linkedin.com/in/Jane-Doe-8a7b6c'), (2, 'https://www.linkedin.com/in/jane-doe-8a7b6c/'),
  (3, 'linkedin.com/in/nomatch-person'), (4, 'https://www.linkedin.com/company/acme');
});
wait_idle('after lead rows');
is($node->safe_psql('postgres', q{SELECT string_agg(id || '=' || coalesce(lead->>'name', '<null>'), ',' ORDER BY id) FROM people}),
	'1=Jane Doe,2=Jane Doe,3=<null>,4=<null>', 'lead rows: two spellings filled, no-match and invalid rows NULL');
is(emu_ledger()->{charged_inputs}{slintel}{'jane-doe-8a7b6c'}, 1, 'one Slintel credit for the two spellings');

# stop_auto_enrich: no triggers, no config, new rows stay NULL, no inbox rows.
$node->safe_psql('postgres', q{SELECT enrich.stop_auto_enrich('accounts')});
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_trigger WHERE tgrelid = 'accounts'::regclass AND NOT tgisinternal}),
	'0', 'stop_auto_enrich drops the triggers');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.auto_targets WHERE target = 'accounts'::regclass}),
	'0', 'and the configuration');
emu_control({ reset => JSON::PP::true });
$node->safe_psql('postgres', q{
INSERT INTO accounts (batch, domain) VALUES ('stopped', 'after-stop.com'), ('stopped', 'acme.com');
UPDATE accounts SET domain = 'after-stop-2.com' WHERE domain = 'auto-11.com';
});
is($node->safe_psql('postgres', 'SELECT count(*) FROM enrich.auto_inbox'), '0', 'no inbox rows after stop');
wait_idle('after stop');
is($node->safe_psql('postgres', q{SELECT count(*) FROM accounts WHERE batch = 'stopped' AND info IS NOT NULL}), '0',
	'new rows stay NULL, even with a cached key');
is($node->safe_psql('postgres', q{SELECT info->>'domain' FROM accounts WHERE domain = 'after-stop-2.com'}), 'auto-11.com',
	'an UPDATE of the key no longer re-enriches');
is(emu_ledger()->{requests}{leadlex}, 0, 'nothing was sent');
is($node->safe_psql('postgres', q{SELECT count(*) FROM people WHERE lead IS NOT NULL}), '2', 'the other target is untouched');

is(worker_pid($node), $pid0, 'the same worker ran throughout');
$node->stop;
done_testing();
