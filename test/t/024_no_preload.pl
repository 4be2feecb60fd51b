# enrich without shared_preload_libraries: a session never dies of it.
# The normalisers, cached reads, synchronous misses, the batch functions
# and estimate_credits work after CREATE EXTENSION or a plain LOAD; the
# queue functions raise 55000 naming shared_preload_libraries; a credit
# limit set in enrich.credit_limits is never exceeded: calls that would
# spend under it are refused with 55000 before any request.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EnrichTest;

start_emulator();
my $node = enrich_node('nopreload', extra_conf => "shared_preload_libraries = ''\n");
emu_control({ reset => JSON::PP::true });

is($node->safe_psql('postgres', q{SHOW shared_preload_libraries}), '', 'enrich is not preloaded');

# One session runs everything; its backend pid must not change.
my $s = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $s->query_safe('SELECT pg_backend_pid()');
chomp $pid;

# Runs $sql in the one session; returns its output and the SQLSTATE of an
# error ('' when none).
sub run
{
	my ($sql) = @_;
	$s->{stderr} = '';
	my $out = $s->query("\\set VERBOSITY verbose\n$sql");
	chomp $out;
	my $state = $s->{stderr} =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : '';
	return ($out, $state, $s->{stderr});
}

my ($out, $state, $err) = run(q{LOAD 'enrich'});
is($state, '', 'LOAD works without the preload') or diag $err;
unlike($err, qr/FATAL/, 'and says nothing fatal');

($out, $state) = run(q{SELECT enrich.normalize_domain('HTTPS://WWW.Acme.co.uk/x'), enrich.normalize_linkedin_url('linkedin.com/in/Jane-Doe')});
is($out, 'acme.co.uk|https://www.linkedin.com/in/jane-doe', 'the normalisers work');

($out, $state, $err) = run(q{SELECT enrich_company('www.nopreload.com')->>'domain'});
is($out, 'nopreload.com', 'a synchronous miss fetches') or diag $err;
($out, $state) = run(q{SELECT enrich_company('nopreload.com')->>'domain'});
is($out, 'nopreload.com', 'a cached read works');
is(emu_ledger()->{requests}{leadlex}, 1, 'the cached read sent no request');

($out, $state, $err) = run(q{SELECT enrich_lead('linkedin.com/in/nopreload-lead')->>'linkedin_url'});
is($state, '', 'enrich_lead works') or diag $err;

($out, $state, $err) = run(q{SELECT string_agg(input || '=' || status, ',') FROM enrich_companies(ARRAY['nopreload.com', 'nopreload-b.com', 'not a domain'])});
is($out, 'nopreload.com=cached,nopreload-b.com=fetched,not a domain=invalid', 'the batch function works') or diag $err;

($out, $state) = run(q{SELECT enrich.estimate_credits('company', ARRAY['nopreload.com', 'new-one.com', 'new-two.com'])});
is($out, '2', 'estimate_credits works');

for my $q (q{SELECT enrich.enqueue_company('queued.com')}, q{SELECT enrich.enqueue_lead('linkedin.com/in/queued')})
{
	($out, $state, $err) = run($q);
	is($state, '55000', "queueing raises 55000: $q");
	like($err, qr/shared_preload_libraries/, 'naming shared_preload_libraries');
}

# A budget set in the table (e.g. before the preload was removed) holds:
# a miss is refused before any request, a cached read still works.
$node->safe_psql('postgres', q{UPDATE enrich.credit_limits SET credits = 5 WHERE provider = 'leadlex'});
my $before = emu_ledger()->{requests}{leadlex};
($out, $state, $err) = run(q{SELECT enrich_company('over-budget.com')});
is($state, '55000', 'a miss under a set credit limit raises 55000');
like($err, qr/HINT:.*shared_preload_libraries/, 'with a hint naming shared_preload_libraries');
($out, $state, $err) = run(q{SELECT count(*) FROM enrich_companies(ARRAY['over-budget-a.com', 'over-budget-b.com'])});
is($state, '55000', 'the batch function refuses too');
is(emu_ledger()->{requests}{leadlex}, $before, 'no request was sent under the limit');
($out, $state) = run(q{SELECT enrich_company('nopreload.com')->>'domain'});
is($out, 'nopreload.com', 'cached reads work under the limit');
($out, $state, $err) = run(q{SELECT enrich.set_credit_limit('leadlex', 10)});
is($state, '55000', 'setting a limit needs the preload');
($out, $state, $err) = run(q{SELECT enrich.set_credit_limit('leadlex', NULL)});
is($state, '', 'removing a limit works without it') or diag $err;
($out, $state, $err) = run(q{SELECT enrich_company('after-limit.com')->>'domain'});
is($out, 'after-limit.com', 'and then a miss fetches again') or diag $err;
# Slintel had no limit all along.
($out, $state, $err) = run(q{SELECT enrich_lead('linkedin.com/in/nopreload-lead-2')->>'linkedin_url'});
is($state, '', 'a provider without a limit was never refused') or diag $err;

($out, $state) = run(q{SELECT pg_backend_pid()});
is($out, $pid, 'the same session all along');
$s->quit;

unlike(slurp_file($node->logfile), qr/FATAL|PANIC|server process .* was terminated/,
	'no FATAL, no crash in the server log');

$node->stop;
done_testing();
