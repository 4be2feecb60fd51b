# Budgets a new server life sees at once: two databases under one budget,
# the provider's and a role's, and no database worker at all (no free
# background worker slot), so that nobody has counted the other database's
# ledger when the first calls come after an immediate shutdown, a killed
# postmaster or a crash restart.  Before the budgets' use was mirrored in
# pg_enrich/budgets, the first database then saw only its own charges and
# bought the other's again.  The budget buys exactly its limit, checked on
# the emulator's ledger, and counting the other ledger later adds nothing
# twice.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EnrichTest;

start_emulator();
# the logical replication launcher and enrich's launcher: no slot for a
# database's worker, so nothing saves or counts behind the sessions' backs
my $node = enrich_node('mirror', no_worker => 1,
	extra_conf => "max_worker_processes = 2\nrestart_after_crash = on\n");
emu_control({ reset => JSON::PP::true });

$node->safe_psql('postgres', q{CREATE ROLE mirror_team; CREATE DATABASE mirror_a; CREATE DATABASE mirror_b;});
for my $db (qw(mirror_b mirror_a))
{
	$node->safe_psql($db, q{
CREATE EXTENSION enrich;
GRANT EXECUTE ON FUNCTION enrich_company(text) TO mirror_team;
SELECT enrich.set_credit_limit('leadlex', 10, '1 day');
SELECT enrich.set_role_credit_limit('mirror_team', 'leadlex', 5, '1 day');
});
}
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'enrich worker'}),
	'0', 'no database has a worker');

sub credits
{
	my ($db) = @_;
	return $node->safe_psql($db, q{
SELECT (SELECT used FROM enrich.credits WHERE provider = 'leadlex') || '/'
    || (SELECT used FROM enrich.credits_by_role WHERE role = 'mirror_team'::regrole AND provider = 'leadlex')});
}

sub charged
{
	return emu_ledger()->{charged}{leadlex}{wbk_test_key} // 0;
}

# Calls enrich_company for each domain in its own statement (as the role,
# if given); returns the SQLSTATEs, '-' for an answer.
sub buy
{
	my ($db, $role, @domains) = @_;
	my @out;
	for my $d (@domains)
	{
		my $set = $role ? "SET ROLE $role; " : '';
		my ($rc, $o, $e) = $node->psql($db, "$set SELECT enrich_company('$d') IS NOT NULL",
			extra_params => [ '-v', 'VERBOSITY=verbose' ]);
		push @out, $rc == 0 ? '-' : ($e =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : "?: $e");
	}
	return join(' ', @out);
}

# mirror_b spends 3 on behalf of mirror_team and 3 on nobody's.
is(buy('mirror_b', 'mirror_team', map { "mirror-b-team-$_.com" } 1 .. 3), '- - -', 'mirror_b: the team buys 3');
is(buy('mirror_b', undef, map { "mirror-b-$_.com" } 1 .. 3), '- - -', 'mirror_b: 3 more');
is(credits('mirror_a'), '6/3', 'mirror_a sees the cluster\'s use');

# An immediate shutdown: mirror_a's table and ledger know of none of it.
$node->stop('immediate');
$node->start;
is(credits('mirror_a'), '6/3', 'after an immediate shutdown, mirror_a still sees 6 used, 3 of them the team\'s');
is(buy('mirror_a', 'mirror_team', map { "mirror-a-team-$_.com" } 1 .. 3), '- - 38R02',
	'the team buys the 2 left of its 5');
is(buy('mirror_a', undef, map { "mirror-a-$_.com" } 1 .. 3), '- - 38R02',
	'and the cluster the 2 left of its 10');
is(charged(), 10, 'the provider charged 10 in all');

# A SIGKILL of the postmaster.
ok(kill_postmaster($node), 'the killed postmaster\'s processes are gone');
ok($node->start(fail_ok => 1), 'the server starts again');
is(credits('mirror_a'), '10/5', 'after a killed postmaster, the budgets are still spent');
is(buy('mirror_a', undef, 'mirror-a-after-kill.com'), '38R02', 'a call over them is refused');

# A crash restart (a backend killed): shared memory is made anew, the
# postmaster's start time stays.
ok(crash_restart($node), 'a backend killed: the postmaster restarts every process');
ok(poll_until($node, q{SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'enrich launcher'}, 't', 60),
	'the server is back after the crash restart');
is(credits('mirror_a'), '10/5', 'after a crash restart, the budgets are still spent');
is(buy('mirror_a', 'mirror_team', 'mirror-a-team-after-crash.com'), '38R02', 'the team is refused too');

# mirror_b's ledger, counted now, adds nothing twice.
is(credits('mirror_b'), '10/5', 'mirror_b, counting its own ledger, sees the same use');
is(credits('mirror_a'), '10/5', 'and so does mirror_a');
is(charged(), 10, 'nothing more was charged');
is($node->safe_psql('mirror_a', q{SELECT count(*) FROM enrich.ledger}) + $node->safe_psql('mirror_b', q{SELECT count(*) FROM enrich.ledger}),
	10, 'the two ledgers hold the 10 charges');

# A new period (a limit set anew) does not take the old period's use.
$node->safe_psql('mirror_a', q{SELECT enrich.set_credit_limit('leadlex', 10, '2 days')});
$node->stop('immediate');
$node->start;
is($node->safe_psql('mirror_a', q{SELECT used FROM enrich.credits WHERE provider = 'leadlex'}), '0',
	'a budget with another period starts from nothing');

$node->stop;
done_testing();
