# Synchronous misses never stall: with the provider answering at once,
# no enrich_company() or enrich_lead() call that has to fetch takes
# 500 ms or more.  Over loopback libcurl often finishes a transfer inside
# the call that runs its timer, before enrich waits on the socket; a wait
# that did not look for finished transfers first slept until its 1 s
# poll, on nearly every call (issue 16).  A stall detector, not a timing
# goal: 500 ms is about a hundred times what a miss takes here.
#
# Each call is timed inside the server, with clock_timestamp() around it
# in a PL/pgSQL loop (one statement, as `SELECT enrich_company(domain)
# FROM accounts` runs); the loop stops at the third stall so that a
# broken build fails in seconds, not minutes.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EnrichTest;

my $emu = start_emulator();
my $node = enrich_node('stall');

$node->safe_psql('postgres', q{
CREATE FUNCTION stall_probe(kind text, prefix text, n int,
	OUT calls int, OUT answered int, OUT stalls int, OUT slowest_ms int)
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz;
	ms float8;
	r jsonb;
BEGIN
	calls := 0; answered := 0; stalls := 0; slowest_ms := 0;
	FOR g IN 1 .. n LOOP
		t0 := clock_timestamp();
		IF kind = 'company' THEN
			r := enrich_company(format('%s-%s.com', prefix, g));
		ELSE
			r := enrich_lead(format('https://www.linkedin.com/in/%s-%s', prefix, g));
		END IF;
		ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
		calls := calls + 1;
		IF r IS NOT NULL THEN answered := answered + 1; END IF;
		slowest_ms := greatest(slowest_ms, ceil(ms)::int);
		IF ms >= 500 THEN
			stalls := stalls + 1;
			EXIT WHEN stalls >= 3;
		END IF;
	END LOOP;
END $$;
});

# Runs n misses of one kind in one statement and checks them.
sub probe
{
	my ($label, $kind, $prefix, $n, $setup) = @_;
	emu_control({ reset => JSON::PP::true, latency_ms => 0, latency_jitter_ms => 0 });
	my $out = $node->safe_psql('postgres',
		($setup // '') . "SELECT calls, answered, stalls, slowest_ms FROM stall_probe('$kind', '$prefix', $n)");
	my ($calls, $answered, $stalls, $slowest) = split /\|/, $out;
	is($stalls, 0, "$label: no call of $calls took 500 ms or more (slowest $slowest ms)");
	is($calls, $n, "$label: all $n calls ran");
	is($answered, $n, "$label: every call returned the provider's answer");
	my $l = emu_ledger();
	my $prov = $kind eq 'company' ? 'leadlex' : 'slintel';
	is($l->{requests}{$prov}, $n, "$label: one request per call");
	return;
}

# LeadLex over HTTPS (HTTP/2), the default set-up
probe('LeadLex, HTTPS', 'company', 'stall-tls', 500);

# LeadLex over plain HTTP (HTTP/1.1), where answers come fastest
probe('LeadLex, HTTP', 'company', 'stall-plain', 500,
	"SET enrich.leadlex_url = 'http://127.0.0.1:$emu->{http}/functions/v1/api-gateway';\n");

# Slintel over HTTPS (HTTP/1.1 keep-alive), without its default local
# limit of 10 calls a second (waiting for it is no stall)
$node->safe_psql('postgres', q{SELECT enrich.set_rate_limit('slintel', NULL, NULL)});
probe('Slintel, HTTPS', 'lead', 'stall-lead', 500);

# every answer is cached once
is($node->safe_psql('postgres', "SELECT count(*) FROM enrich.companies WHERE domain LIKE 'stall-%'"),
	'1000', 'every company answer is cached');
is($node->safe_psql('postgres', "SELECT count(*) FROM enrich.leads WHERE linkedin_url LIKE '%/stall-lead-%'"),
	'500', 'every lead answer is cached');

$node->stop;
done_testing();
