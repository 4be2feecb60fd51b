# Upgrading gives the same objects as a fresh install: database a runs
# CREATE EXTENSION enrich VERSION '0.1.0' then ALTER EXTENSION enrich
# UPDATE, database b a fresh CREATE EXTENSION enrich, and every catalog
# fact about the extension's objects is compared.  Then the served
# database is upgraded in place with data in it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EnrichTest;

start_emulator();
my $node = enrich_node('upgrade');
emu_control({ reset => JSON::PP::true });

my $default = $node->safe_psql('postgres',
	q{SELECT default_version FROM pg_available_extensions WHERE name = 'enrich'});
$node->safe_psql('postgres', 'CREATE DATABASE a; CREATE DATABASE b;');
$node->safe_psql('a', q{CREATE EXTENSION enrich VERSION '0.1.0'});
is($node->safe_psql('a', q{SELECT extversion FROM pg_extension WHERE extname = 'enrich'}), '0.1.0', 'a: 0.1.0 installed');
$node->safe_psql('a', q{ALTER EXTENSION enrich UPDATE});
$node->safe_psql('b', q{CREATE EXTENSION enrich});
is($node->safe_psql('a', q{SELECT extversion FROM pg_extension WHERE extname = 'enrich'}), $default,
	"a: updated to the default version $default");
is($node->safe_psql('b', q{SELECT extversion FROM pg_extension WHERE extname = 'enrich'}), $default,
	"b: fresh install of $default");

# Each query returns one text line per fact; members() restricts to the
# extension's own objects.
my $members = q{
  SELECT classid, objid, objsubid FROM pg_depend
   WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
     AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'enrich')};
my $rels = qq{(SELECT objid FROM ($members) m WHERE classid = 'pg_class'::regclass)};
my $procs = qq{(SELECT objid FROM ($members) m WHERE classid = 'pg_proc'::regclass)};
my %sections = (
	members => qq{SELECT pg_describe_object(classid, objid, objsubid) FROM ($members) m},
	extension => q{SELECT extname || ' schema=' || extnamespace::regnamespace || ' relocatable=' || extrelocatable
	   || ' config=' || coalesce((SELECT string_agg(c::regclass::text, ',' ORDER BY c::regclass::text) FROM unnest(extconfig) c), '')
	   || ' conditions=' || coalesce(array_to_string(extcondition, '|'), '')
	  FROM pg_extension WHERE extname = 'enrich'},
	schemas => q{SELECT nspname || ' owner=' || nspowner::regrole || ' acl=' || coalesce(nspacl::text, '')
	  FROM pg_namespace WHERE nspname = 'enrich'},
	columns => qq{SELECT c.oid::regclass || '.' || a.attname || ' #' || row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum)
	   || ' ' || format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
	   || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
	   || CASE WHEN a.attidentity <> '' THEN ' IDENTITY ' || a.attidentity::text ELSE '' END
	   || CASE WHEN a.attgenerated <> '' THEN ' GENERATED ' || a.attgenerated::text ELSE '' END
	   || coalesce(' COLLATE ' || NULLIF(a.attcollation, 0)::regcollation::text, '')
	   || coalesce(' ACL ' || a.attacl::text, '')
	  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
	 WHERE c.oid IN $rels},
	relations => qq{SELECT c.oid::regclass || ' kind=' || c.relkind::text || ' owner=' || c.relowner::regrole
	   || ' acl=' || coalesce(c.relacl::text, '') || ' rls=' || c.relrowsecurity || ' persistence=' || c.relpersistence::text
	   || ' options=' || coalesce(c.reloptions::text, '')
	  FROM pg_class c WHERE c.oid IN $rels},
	constraints => qq{SELECT conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
	  FROM pg_constraint WHERE conrelid IN $rels},
	indexes => qq{SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid IN $rels},
	sequences => qq{SELECT s.seqrelid::regclass || ' ' || format_type(s.seqtypid, NULL) || ' start=' || s.seqstart
	   || ' inc=' || s.seqincrement || ' max=' || s.seqmax || ' min=' || s.seqmin || ' cache=' || s.seqcache || ' cycle=' || s.seqcycle
	   || ' owned_by=' || coalesce((SELECT refobjid::regclass || '.' || refobjsubid FROM pg_depend
	                               WHERE classid = 'pg_class'::regclass AND objid = s.seqrelid AND deptype = 'a'
	                                 AND refclassid = 'pg_class'::regclass), '')
	  FROM pg_sequence s WHERE s.seqrelid IN $rels},
	views => qq{SELECT c.oid::regclass || ' ' || pg_get_viewdef(c.oid) FROM pg_class c
	 WHERE c.oid IN $rels AND c.relkind IN ('v', 'm')},
	functions => qq{SELECT p.oid::regprocedure || ' acl=' || coalesce(p.proacl::text, '') || ' owner=' || p.proowner::regrole
	   || E'\\n' || CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) ELSE p.prokind::text END
	  FROM pg_proc p WHERE p.oid IN $procs},
	triggers => qq{SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t WHERE t.tgrelid IN $rels AND NOT t.tgisinternal},
	policies => qq{SELECT polrelid::regclass || ' ' || polname || ' ' || polcmd::text || ' ' || polroles::regrole[]::text
	   || ' ' || coalesce(pg_get_expr(polqual, polrelid), '') || ' ' || coalesce(pg_get_expr(polwithcheck, polrelid), '')
	  FROM pg_policy WHERE polrelid IN $rels},
	comments => qq{SELECT pg_describe_object(d.classoid, d.objoid, d.objsubid) || ': ' || d.description
	  FROM pg_description d JOIN ($members) m ON m.classid = d.classoid AND m.objid = d.objoid
	  UNION ALL
	 SELECT pg_describe_object(d.classoid, d.objoid, d.objsubid) || ': ' || d.description
	  FROM pg_description d WHERE d.classoid = 'pg_class'::regclass AND d.objsubid > 0 AND d.objoid IN $rels},
	types => qq{SELECT t.oid::regtype || ' ' || t.typtype::text || ' ' || coalesce(pg_get_expr(t.typdefaultbin, 0), '')
	  FROM pg_type t WHERE t.oid IN (SELECT objid FROM ($members) m WHERE classid = 'pg_type'::regclass)},
	data => q{SELECT 'rate_limits ' || r::text FROM enrich.rate_limits r
	  UNION ALL SELECT 'credit_limits ' || provider || ' ' || coalesce(credits::text, 'NULL') || ' ' || coalesce(per::text, 'NULL') || ' ' || used
	  FROM enrich.credit_limits},
);

# Every relation's row count goes in too (a seed row missing from one side
# shows up).
my $counts = $node->safe_psql('b', qq{
SELECT string_agg(format('SELECT %L || count(*) FROM %s', c.oid::regclass || ' rows=', c.oid::regclass), ' UNION ALL ')
  FROM pg_class c WHERE c.oid IN $rels AND c.relkind IN ('r', 'p')});
$sections{row_counts} = $counts;

sub facts
{
	my ($db, $sql) = @_;
	my $out = $node->safe_psql($db, "SELECT string_agg(x, E'\\n<<>>\\n' ORDER BY x) FROM ($sql) s(x)");
	return [ split /\n<<>>\n/, $out ];    # multi-line function bodies stay whole
}

for my $s (sort keys %sections)
{
	my $fa = facts('a', $sections{$s});
	my $fb = facts('b', $sections{$s});
	my %inb = map { $_ => 1 } @$fb;
	my %ina = map { $_ => 1 } @$fa;
	my @only_a = grep { !$inb{$_} } @$fa;
	my @only_b = grep { !$ina{$_} } @$fb;
	my $nonempty = !grep { $s eq $_ } qw(triggers policies types);
	ok(@$fb > 0, "$s: the fresh install has some (" . scalar(@$fb) . ')') if $nonempty;
	ok(!@only_a && !@only_b && @$fa == @$fb, "$s: upgraded and fresh install agree")
	  or diag("only after the upgrade:\n  " . join("\n  ", @only_a) . "\nonly in the fresh install:\n  " . join("\n  ", @only_b));
}

# The facts cover what 0.2.0 added.
like(join("\n", @{ facts('a', $sections{members}) }), qr/function enrich\.auto_enrich\(regclass,text,name,name\)/,
	'the upgraded extension has auto_enrich');
like(join("\n", @{ facts('a', $sections{columns}) }), qr/enrich\.queue\.refresh #\d+ boolean NOT NULL DEFAULT false/,
	'and queue.refresh');
is($node->safe_psql('a', q{SELECT has_function_privilege('public', 'enrich.refresh(text, interval, bigint)', 'EXECUTE')}),
	'f', 'EXECUTE on refresh is not granted to PUBLIC after the upgrade');

# The upgraded database works: normalisers and a synchronous call.
is($node->safe_psql('a', q{SELECT enrich_company('www.upgraded.com')->>'domain'}), 'upgraded.com',
	'a synchronous call works in the upgraded database');

# In place, in the database the worker serves, with data and the worker running.
$node->safe_psql('postgres', q{DROP EXTENSION enrich; CREATE EXTENSION enrich VERSION '0.1.0'});
$node->safe_psql('postgres', q{SELECT enrich_company('before-upgrade.com')});
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT enrich.enqueue_company('queued-before-upgrade.com')});
diag("enqueue at 0.1.0 with the 0.2.0 library: rc=$rc $err") if $rc;
$node->safe_psql('postgres', q{ALTER EXTENSION enrich UPDATE});
is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'enrich'}), $default,
	'postgres: updated in place');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.companies WHERE domain = 'before-upgrade.com'}), '1',
	'the cached answer survives the upgrade');
is($node->safe_psql('postgres', q{SELECT enrich.wait('30 s')}), 't', 'the worker drains the queue after the upgrade');
if ($rc == 0)
{
	is($node->safe_psql('postgres', q{SELECT status FROM enrich.queue WHERE key = 'queued-before-upgrade.com'}), 'done',
		'an item queued before the upgrade is done after it');
}
$node->safe_psql('postgres', q{
CREATE TABLE accounts (id int PRIMARY KEY, domain text, info jsonb);
SELECT enrich.auto_enrich('accounts', 'company', 'domain', 'info');
INSERT INTO accounts VALUES (1, 'before-upgrade.com'), (2, 'after-upgrade.com');
});
is($node->safe_psql('postgres', q{SELECT enrich.wait('30 s')}), 't', 'auto_enrich works after the upgrade');
is($node->safe_psql('postgres', q{SELECT string_agg(id || '=' || coalesce(info->>'domain', 'NULL'), ',' ORDER BY id) FROM accounts}),
	'1=before-upgrade.com,2=after-upgrade.com', 'both rows are filled');
is(emu_ledger()->{requests_by_input}{leadlex}{'before-upgrade.com'}, 1, 'the pre-upgrade answer was written from the cache');
$node->safe_psql('postgres', q{
UPDATE accounts SET info = NULL;
UPDATE enrich.companies SET fetched_at = now() - interval '40 days' WHERE domain = 'before-upgrade.com';
});
is($node->safe_psql('postgres', q{SELECT enrich.refresh()}), '1', 'refresh finds the pre-upgrade answer once it is stale');
is($node->safe_psql('postgres', q{SELECT enrich.wait('30 s')}), 't', 'and it is fetched');
is($node->safe_psql('postgres', q{SELECT string_agg(id || '=' || coalesce(info->>'domain', 'NULL'), ',' ORDER BY id) FROM accounts}),
	'1=before-upgrade.com,2=NULL', 'the refreshed answer reaches the target (and only it was refreshed)');
is(emu_ledger()->{requests_by_input}{leadlex}{'before-upgrade.com'}, 2, 'the stale pre-upgrade answer was asked again');

$node->stop;
done_testing();
