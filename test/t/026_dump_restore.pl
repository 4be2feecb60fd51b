# pg_dump and pg_restore keep what was paid for and what was set up: the
# cached answers and no-matches with their metadata, the limits and the
# credits used, a role's budget (in force again after the restore), the auto_enrich configuration (its triggers working), the
# raw keys waiting in its inbox and the unfinished queue items, with the
# queue's sequence.  A custom-format dump goes through pg_restore into a
# new database; a plain dump goes through psql -v ON_ERROR_STOP=1 into the
# database the worker serves, which then finishes the restored work,
# buying only what was never bought.  The emulator's ledger counts every
# request.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EnrichTest;

start_emulator();
# Background worker slots for the logical replication launcher, enrich's
# launcher and the worker of postgres, and no more: the databases src and
# dst get no worker (the launcher says so in the log), so nothing moves in
# src while it is dumped, and dst is served by synchronous calls only.
my $node = enrich_node('dump', extra_conf => "max_worker_processes = 3\n");
emu_control({ reset => JSON::PP::true });

my $log_at = -s $node->logfile;
$node->safe_psql('postgres', 'CREATE DATABASE src; CREATE ROLE dump_team');
$node->safe_psql('src', q{
CREATE EXTENSION enrich;
SELECT enrich.set_role_credit_limit('dump_team', 'leadlex', 300, '1 day');
SELECT count(*) FROM enrich_companies(ARRAY(SELECT 'co-' || i || '.com' FROM generate_series(1, 100) i));
SELECT enrich_company('nomatch-dump.com');
SELECT enrich_lead('https://www.linkedin.com/in/dump-lead');
SELECT enrich.set_credit_limit('leadlex', 1000, '1 day');
SELECT enrich.set_rate_limit('slintel', 5, '1 second', 3);
UPDATE enrich.credit_limits SET used = 42 WHERE provider = 'leadlex';

-- a table filled in on insert: 50 rows already answered (as the worker
-- leaves them), three new keys and a cached one still in the inbox
CREATE TABLE accounts (id int PRIMARY KEY, domain text, info jsonb);
INSERT INTO accounts SELECT i, 'co-' || i || '.com' FROM generate_series(1, 50) i;
SELECT enrich.auto_enrich('accounts', 'company', 'domain', 'info');
UPDATE accounts a SET info = c.result FROM enrich.companies c WHERE c.domain = a.domain;
INSERT INTO enrich.auto_keys SELECT 'accounts'::regclass, domain, domain FROM accounts;
INSERT INTO accounts VALUES (51, 'pending-1.com'), (52, 'https://www.pending-2.com'), (53, 'pending-3.com'),
                            (54, 'CO-1.com');

-- queue items: queued (one of them cached), in flight, waiting for
-- credits, and a finished one
INSERT INTO enrich.queue (kind, key, status, attempts) VALUES
  ('company', 'queued-1.com', 'queued', 0),
  ('company', 'co-2.com', 'queued', 0),
  ('company', 'flight-1.com', 'in_flight', 1),
  ('lead', 'https://www.linkedin.com/in/waiting-1', 'waiting_credits', 0),
  ('company', 'co-3.com', 'done', 1);
SELECT setval('enrich.queue_id_seq', 5000);
});
ok($node->wait_for_log(qr/enrich launcher could not start a worker for database \d+: no free background worker slot/, $log_at),
	'without a free slot the launcher says so');
like(slurp_file($node->logfile, $log_at), qr/HINT:\s+Raise max_worker_processes/, 'naming the setting');
is($node->safe_psql('src', 'SELECT count(*) FROM enrich.auto_inbox'), '4', 'src: four raw keys wait in the inbox');
my $bought = emu_ledger()->{requests}{leadlex} + emu_ledger()->{requests}{slintel};
is($bought, 102, 'src: 101 companies and one lead bought');

# What must come back, fact by fact.
my %facts = (
	companies => q{SELECT md5(string_agg(c::text, '|' ORDER BY domain)) || ' ' || count(*) FROM enrich.companies c},
	leads => q{SELECT md5(string_agg(l::text, '|' ORDER BY linkedin_url)) || ' ' || count(*) FROM enrich.leads l},
	rate_limits => q{SELECT string_agg(r::text, '|' ORDER BY provider) FROM enrich.rate_limits r},
	credit_limits => q{SELECT string_agg(c::text, '|' ORDER BY provider) FROM enrich.credit_limits c},
	role_credit_limits => q{SELECT string_agg(r::text, '|' ORDER BY role::text, provider) FROM enrich.role_credit_limits r},
	auto_targets => q{SELECT string_agg(concat_ws(' ', target::text, kind, key_column, result_column, run_as::text), '|')
	  FROM enrich.auto_targets},
	auto_keys => q{SELECT md5(string_agg(concat_ws(' ', target::text, raw_key, key), '|' ORDER BY raw_key)) || ' ' || count(*)
	  FROM enrich.auto_keys},
	auto_inbox => q{SELECT string_agg(concat_ws(' ', target::text, kind, raw_key), '|' ORDER BY raw_key) FROM enrich.auto_inbox},
	queue => q{SELECT string_agg(concat_ws(' ', id, kind, key, status, attempts, idempotency_key, created_at, refresh), '|' ORDER BY id)
	  FROM enrich.queue WHERE status IN ('queued', 'in_flight', 'waiting_credits')},
	accounts => q{SELECT md5(string_agg(a::text, '|' ORDER BY id)) || ' ' || count(*) FROM accounts a},
	sequence => q{SELECT last_value FROM enrich.queue_id_seq},
);
# ... and what the worker does not change while it finishes the restored
# work in the database it serves
my %kept = (
	companies => q{SELECT md5(string_agg(c::text, '|' ORDER BY domain)) || ' ' || count(*) FROM enrich.companies c
	  WHERE domain LIKE 'co-%' OR domain LIKE 'nomatch-%'},
	leads => q{SELECT md5(string_agg(l::text, '|' ORDER BY linkedin_url)) || ' ' || count(*) FROM enrich.leads l
	  WHERE linkedin_url LIKE '%dump-lead'},
	rate_limits => $facts{rate_limits},
	role_credit_limits => $facts{role_credit_limits},
	auto_targets => $facts{auto_targets},
	auto_keys => q{SELECT md5(string_agg(concat_ws(' ', target::text, raw_key, key), '|' ORDER BY raw_key)) || ' ' || count(*)
	  FROM enrich.auto_keys WHERE raw_key LIKE 'co-%'},
	accounts => q{SELECT md5(string_agg(a::text, '|' ORDER BY id)) || ' ' || count(*) FROM accounts a WHERE id <= 50},
);
my %want = map { $_ => $node->safe_psql('src', $facts{$_}) } keys %facts;
my %want_kept = map { $_ => $node->safe_psql('src', $kept{$_}) } keys %kept;

my $dir = PostgreSQL::Test::Utils::tempdir('dumps');
my ($out, $err);
ok(IPC::Run::run([ $node->installed_command('pg_dump'), '-Fc', '-f', "$dir/src.dump", '-d', $node->connstr('src') ],
		'>', \$out, '2>', \$err), 'pg_dump -Fc')
  or diag($err);
ok(IPC::Run::run([ $node->installed_command('pg_dump'), '-f', "$dir/src.sql", '-d', $node->connstr('src') ],
		'>', \$out, '2>', \$err), 'pg_dump, plain')
  or diag($err);

# ---------------------------------------------------------------------------
# 1. pg_restore into a new database (served by synchronous calls only).

$node->safe_psql('postgres', 'CREATE DATABASE dst');
my $rc = IPC::Run::run([ $node->installed_command('pg_restore'), '-d', $node->connstr('dst'), "$dir/src.dump" ],
	'>', \$out, '2>', \$err);
ok($rc, 'pg_restore succeeds');
is($err, '', 'pg_restore prints no error');
is($node->safe_psql('dst', $facts{$_}), $want{$_}, "pg_restore: $_ as dumped") for sort keys %facts;
is($node->safe_psql('dst', q{SELECT count(*) FROM enrich.queue WHERE status = 'done'}), '0',
	'finished queue items are history: not dumped');
is($node->safe_psql('dst', q{SELECT count(*) FROM enrich.companies WHERE NOT matched}), '1', 'the no-match is there');
is(emu_ledger()->{requests}{leadlex} + emu_ledger()->{requests}{slintel}, $bought, 'the restore sent no request');

is($node->safe_psql('dst', q{SELECT enrich_company('WWW.CO-7.COM')->>'domain'}), 'co-7.com', 'a restored answer is served');
is($node->safe_psql('dst', q{SELECT enrich_company('nomatch-dump.com') IS NULL}), 't', 'a restored no-match is served');
is($node->safe_psql('dst', q{SELECT enrich_lead('linkedin.com/in/dump-lead') IS NOT NULL}), 't', 'a restored lead is served');
is($node->safe_psql('dst', q{SELECT string_agg(status, ',') FROM enrich_companies('{co-8.com,co-9.com}')}), 'cached,cached',
	'restored answers are cached for the batch functions');
is(emu_ledger()->{requests}{leadlex} + emu_ledger()->{requests}{slintel}, $bought, 'cached keys cost no request');
is($node->safe_psql('dst', q{SELECT enrich.estimate_credits('company', ARRAY['co-1.com', 'co-100.com', 'new.com'])}), '1',
	'estimate_credits counts only the key that was never bought');

is($node->safe_psql('dst', q{SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'accounts'::regclass}),
	'enrich_info_ins,enrich_info_upd', 'the auto_enrich triggers are restored');
$node->safe_psql('dst', q{INSERT INTO accounts VALUES (60, 'after-restore.com'); UPDATE accounts SET domain = 'co-9.com' WHERE id = 53});
is($node->safe_psql('dst', q{SELECT string_agg(raw_key, ',' ORDER BY raw_key) FROM enrich.auto_inbox
	WHERE target = 'accounts'::regclass AND raw_key IN ('after-restore.com', 'co-9.com')}),
	'after-restore.com,co-9.com', 'they fire after the restore: an insert and a key update reach the inbox');
is($node->safe_psql('dst', q{SELECT nextval('enrich.queue_id_seq')}), '5001', 'queue ids go on after the restored ones');

# ---------------------------------------------------------------------------
# 2. The plain dump through psql into the database the worker serves: the
#    worker is running while the rows load.

# src and dst are done with (and leave no worker to take the slot of
# postgres's)
$node->safe_psql('postgres', 'DROP DATABASE src; DROP DATABASE dst;');
# the budgets in shared memory differ from the dumped ones until the restore
$node->safe_psql('postgres', q{SELECT enrich.set_credit_limit('leadlex', NULL);
SELECT enrich.set_role_credit_limit('dump_team', 'leadlex', NULL)});
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.credits_by_role}), '0', 'no role budget before the restore');
# an empty database to restore into (the dump creates the schema too)
$node->safe_psql('postgres', 'DROP EXTENSION enrich; DROP SCHEMA enrich');
emu_control({ reset => JSON::PP::true });
$rc = IPC::Run::run([ $node->installed_command('psql'), '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
		'-f', "$dir/src.sql" ], '>', \$out, '2>', \$err);
ok($rc, 'the plain dump loads with ON_ERROR_STOP');
is($err, '', 'and prints no error');
is($node->safe_psql('postgres', $kept{$_}), $want_kept{$_}, "psql: $_ as dumped") for sort keys %kept;

ok(poll_until($node, q{SELECT NOT EXISTS (SELECT 1 FROM enrich.queue WHERE status NOT IN ('done', 'no_match'))
	AND NOT EXISTS (SELECT 1 FROM enrich.auto_inbox)}, 't', 60),
	'the worker finishes the restored work: queued, in flight, waiting for credits, and the inbox');
is($node->safe_psql('postgres', q{SELECT string_agg(id || '=' || coalesce(info->>'domain', 'NULL'), ',' ORDER BY id)
	FROM accounts WHERE id > 50}),
	'51=pending-1.com,52=pending-2.com,53=pending-3.com,54=co-1.com', 'the waiting raw keys are answered in the table');
is($node->safe_psql('postgres', q{SELECT count(*) FROM accounts WHERE id <= 50 AND info->>'domain' = domain}), '50',
	'the rows restored with their answers keep them');
my $l = emu_ledger();
is_deeply($l->{requests_by_input}{leadlex},
	{ 'queued-1.com' => 1, 'flight-1.com' => 1, 'pending-1.com' => 1, 'pending-2.com' => 1, 'pending-3.com' => 1 },
	'only keys never bought were bought, once each: nothing restored with its answer, nothing queued twice');
is_deeply($l->{requests_by_input}{slintel}, { 'waiting-1' => 1 }, 'the lead waiting for credits was bought once');
is($node->safe_psql('postgres', q{SELECT string_agg(key || '=' || status, ',' ORDER BY id) FROM enrich.queue WHERE id <= 5000}),
	'queued-1.com=done,co-2.com=done,flight-1.com=done,https://www.linkedin.com/in/waiting-1=done',
	'each restored item is done once');
is($node->safe_psql('postgres', q{SELECT min(id) FROM enrich.queue WHERE key LIKE 'pending-%'}), '5001',
	'new items get ids after the restored ones');
ok(poll_until($node, q{SELECT credit_limit = 1000 AND used >= 42 FROM enrich.credits WHERE provider = 'leadlex'}),
	'the restored budget and its use are in force');
is($node->safe_psql('postgres', q{SELECT role || ' ' || provider || ' ' || credit_limit || ' ' || period FROM enrich.credits_by_role}),
	'dump_team leadlex 300 1 day', 'and so is the restored role budget');

$node->safe_psql('postgres', q{INSERT INTO accounts VALUES (61, 'co-11.com')});
ok(poll_until($node, q{SELECT info->>'domain' FROM accounts WHERE id = 61}, 'co-11.com', 30),
	'the restored triggers feed the worker');
is(emu_ledger()->{requests_by_input}{leadlex}{'co-11.com'}, undef, 'from the restored cache, with no request');

$node->stop;
done_testing();
