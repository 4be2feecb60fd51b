# The README's recipes, pasted into psql as they are written: every `sql`
# block of "Recipes for analysts", "Recipes for applications" and "Recipes
# for DBAs" runs without an error, in order, against a cluster and the
# emulator; the values the README shows (results in comments, the
# auto_enrich table before and after) are what psql prints.  Only the
# placeholders a reader must fill in are filled in: the API keys.  The
# pg_cron block is 013's.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EnrichTest;

# The README, cut into its sections' fenced blocks: [lang, text] pairs.
my %blocks;
{
	open(my $fh, '<', root_dir() . '/README.md') or die "README.md: $!";
	my ($section, $lang, $text);
	while (my $line = <$fh>)
	{
		if (defined $lang)
		{
			if ($line =~ /^```\s*$/)
			{
				push @{ $blocks{$section} }, [ $lang, $text ] if $section;
				undef $lang;
			}
			else { $text .= $line; }
			next;
		}
		if ($line =~ /^## (.*?)\s*$/) { $section = $1 =~ /^Recipes for (\w+)/ ? $1 : undef; }
		elsif ($line =~ /^```(\w*)\s*$/) { ($lang, $text) = ($1, ''); }
	}
}
is(join(' ', map { "$_:" . scalar(grep { $_->[0] eq 'sql' } @{ $blocks{$_} }) } sort keys %blocks),
	'DBAs:8 analysts:5 applications:2', 'the README has the recipes this test knows');

start_emulator();
my $node = enrich_node('readme');
emu_control({ reset => JSON::PP::true });

# Runs a block as psql -f would (aligned output, stop at the first error).
sub paste
{
	my ($db, $sql) = @_;
	my ($rc, $out, $err) = $node->psql($db, $sql,
		on_error_stop => 1,
		extra_params => [ '-P', 'format=aligned', '-P', 'tuples_only=off', '-P', 'footer=off' ]);
	return ($rc, $out, $err);
}

# Checks the statements with their result in a comment, one by one.
sub check_comments
{
	my ($db, $sql, $what) = @_;
	for my $line (split /\n/, $sql)
	{
		next unless $line =~ /^(SELECT .*;)\s*--\s*(\S+)\s*$/;
		my ($q, $want) = ($1, $2);
		is($node->safe_psql($db, $q), $want, "$what: $q gives $want");
	}
	return;
}

# Analysts: on a table of accounts (the recipes assume one).
$node->safe_psql('postgres', q{
CREATE TABLE accounts (domain text);
INSERT INTO accounts VALUES ('acme.com'), ('https://www.acme.com/about'), ('jane@acme.com'),
  ('readme-1.com'), ('readme-2.com'), ('nomatch-readme.com');
});
my $i = 0;
for my $b (grep { $_->[0] eq 'sql' } @{ $blocks{analysts} })
{
	$i++;
	my ($rc, $out, $err) = paste('postgres', $b->[1]);
	is($rc, 0, "analysts' recipe $i runs") or diag "$b->[1]\n$err";
	check_comments('postgres', $b->[1], "analysts' recipe $i");
}
is($node->safe_psql('postgres', q{SELECT company_key FROM accounts WHERE domain = 'jane@acme.com'}),
	'acme.com', 'the generated key column is there');
my $l = emu_ledger();
is($l->{requests}{leadlex}, 4, 'analysts: one request per company (acme written three ways)');
is($l->{requests}{slintel}, 1, 'analysts: one lead request');

# Applications: the auto_enrich table, before and after, as shown.
# (acme.com out of the cache again, so that the table pays for it)
$node->safe_psql('postgres', q{DROP TABLE accounts; DELETE FROM enrich.companies WHERE domain = 'acme.com'});
emu_control({ reset => JSON::PP::true, latency_ms => 1000 });
my @app = @{ $blocks{applications} };
my @shown = map { $_->[1] } grep { $_->[0] eq '' } @app;
my @app_sql = map { $_->[1] } grep { $_->[0] eq 'sql' } @app;
is(scalar(@shown), 2, 'the applications recipe shows the table twice');

# psql's table, as the README prints it (no trailing blanks).
sub table_of { my ($t) = @_; $t =~ s/[ \t]+$//mg; $t =~ s/^\n+|\n+$//g; return $t; }

my ($rc, $out, $err) = paste('postgres', $app_sql[0]);
is($rc, 0, 'applications: the auto_enrich recipe runs') or diag $err;
# the output of the last statement of the block: the table
my ($first) = $out =~ /( id \|.*)\z/s;
is(table_of($first // $out), table_of($shown[0]), 'applications: right after the commit, as shown');
($rc, $out, $err) = paste('postgres', $app_sql[1]);
is($rc, 0, 'applications: wait and look again') or diag $err;
my ($second) = $out =~ /( id \|.*)\z/s;
is(table_of($second // $out), table_of($shown[1]), 'applications: after enrich.wait(), as shown');
$l = emu_ledger();
is(join(',', map { "$_:" . ($l->{requests_by_input}{leadlex}{$_} // 0) } sort keys %{ $l->{requests_by_input}{leadlex} }),
	'acme.com:1,nomatch-co.com:1', 'applications: acme written two ways cost one request');
emu_control({ latency_ms => 0 });

# DBAs: install in a database crm, with the keys filled in.
$node->safe_psql('postgres', 'CREATE DATABASE crm');
$node->safe_psql('postgres', 'CREATE ROLE analysts');
$node->safe_psql('postgres', 'CREATE ROLE finance');
my @dba = map { $_->[1] } grep { $_->[0] eq 'sql' } @{ $blocks{DBAs} };
my $install = $dba[0];
ok($install =~ s/'wbk_\.\.\.'/'wbk_test_key'/ && $install =~ s/slintel_api_key = '\.\.\.'/slintel_api_key = 'sl_test_key'/,
	'DBAs: the install recipe has the two key placeholders');
my ($setup, $in_crm) = split /^-- restart the server.*\n/m, $install;
($rc, $out, $err) = paste('postgres', $setup);
is($rc, 0, 'DBAs: the settings') or diag $err;
# (stop and start, not pg_ctl restart: the sanitizer run wraps the postmaster)
$node->stop;
$node->start;
($rc, $out, $err) = paste('crm', $in_crm);
is($rc, 0, 'DBAs: CREATE EXTENSION and the grants in crm') or diag $err;
ok(poll_until($node, q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'enrich worker' AND datname = 'crm'}, 't', 30),
	'DBAs: a worker serves crm once its CREATE EXTENSION commits');
$i = 1;
for my $sql (@dba[1 .. $#dba])
{
	$i++;
	next if $sql =~ /pg_cron/;
	($rc, $out, $err) = paste('crm', $sql);
	is($rc, 0, "DBAs' recipe $i runs") or diag "$sql\n$err";
}
is($node->safe_psql('crm', q{SELECT string_agg(provider || ':' || coalesce(credit_limit::text, 'none'), ',' ORDER BY provider) FROM enrich.credits}),
	'leadlex:1000,slintel:none', 'DBAs: the budgets the recipe set');
is($node->safe_psql('crm', q{SELECT string_agg(role || ':' || provider || ':' || credit_limit, ',') FROM enrich.credits_by_role}),
	'analysts:leadlex:200', 'DBAs: the role budget the recipe left');
ok($node->safe_psql('crm', q{SELECT has_function_privilege('analysts', 'enrich_company(text)', 'EXECUTE')}) eq 't',
	'DBAs: analysts may enrich');
is($node->safe_psql('crm', q{SET ROLE analysts; SELECT enrich_company('readme-crm.com')->>'domain'}),
	'readme-crm.com', 'DBAs: and do, with the keys set by ALTER SYSTEM');
is($node->safe_psql('crm', q{SELECT used FROM enrich.credits_by_role WHERE role = 'analysts'::regrole}),
	'1', 'DBAs: under their budget');

$node->stop;
done_testing();
