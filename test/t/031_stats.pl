# enrich.stats across restarts: its counters are kept across a clean
# restart (saved to pg_stat/enrich.stat at shutdown, read back and the file
# removed at start), an immediate shutdown too; after a crash restart
# they start again from zero, with a new stats_reset; enrich.stats_reset() sets
# them to zero and is the owner's; a damaged file is ignored with a LOG
# line, never a failed start.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EnrichTest;

start_emulator();
my $node = enrich_node('stats', extra_conf => "restart_after_crash = on\n");
emu_control({ reset => JSON::PP::true });
my $file = $node->data_dir . '/pg_stat/enrich.stat';

sub stat_of
{
	my ($col) = @_;
	return $node->safe_psql('postgres', "SELECT $col FROM enrich.stats WHERE provider = 'leadlex'");
}

sub misses
{
	my ($tag, $n) = @_;
	$node->safe_psql('postgres',
		"SELECT count(enrich_company(format('stats-$tag-%s.com', g))) FROM generate_series(1, $n) g");
}

misses('a', 3);
is(stat_of('requests'), '3', 'three misses are three requests');
is(stat_of('credits_spent'), '3', 'and three credits');
my $since = stat_of('stats_reset');
isnt($since, '', 'stats_reset says since when it counts');

# 1. A clean restart keeps them.  (Stop and start, not pg_ctl restart: the
# sanitizer run wraps the postmaster.)
$node->stop;
$node->start;
is(stat_of('requests'), '3', 'a clean restart keeps the requests');
is(stat_of('credits_spent'), '3', 'and the credits spent');
is(stat_of('stats_reset'), $since, 'and when they began');
ok(!-e $file, 'the file is removed once read');
misses('b', 2);
$node->stop('fast');
ok(-e $file, 'a clean shutdown writes pg_stat/enrich.stat');
$node->start;
is(stat_of('requests'), '5', 'counting goes on from what was kept');

# 2. An immediate shutdown ends the backends at once, but the postmaster
# itself still exits normally and writes the counters it holds.
$node->stop('immediate');
ok(-e $file, 'an immediate shutdown writes the file too');
$node->start;
is(stat_of('requests'), '5', 'and the counters are kept');

# 3. A crash restart (a backend killed: the postmaster makes a new shared
# segment, and no file was written) starts the counters from zero, from a
# later stats_reset.
misses('c', 2);
is(stat_of('requests'), '7', 'two more requests counted');
my $victim = $node->background_psql('postgres');
my $pid = $victim->query_safe('SELECT pg_backend_pid()');
chomp $pid;
kill 'KILL', $pid;
eval { $victim->quit };
ok(poll_until($node, q{SELECT requests FROM enrich.stats WHERE provider = 'leadlex'}, '0', 60),
	'after a crash restart the counters start from zero');
is($node->safe_psql('postgres', "SELECT stats_reset > '$since' FROM enrich.stats WHERE provider = 'leadlex'"),
	't', 'from a new stats_reset');

# 4. enrich.stats_reset(): the owner's, sets every counter to zero.
misses('d', 2);
$node->safe_psql('postgres', q{CREATE ROLE analyst LOGIN});
is(sqlstate_of($node, 'postgres', 'SET ROLE analyst; SELECT enrich.stats_reset()'), '42501',
	'an ordinary role may not reset the statistics');
is(stat_of('requests'), '2', 'and they are still there');
my $before = stat_of('stats_reset');
$node->safe_psql('postgres', q{SELECT enrich.stats_reset()});
is($node->safe_psql('postgres', q{SELECT sum(requests + cache_hits + credits_spent) FROM enrich.stats}),
	'0', 'enrich.stats_reset() sets every counter to zero');
is($node->safe_psql('postgres', "SELECT stats_reset > '$before' FROM enrich.stats WHERE provider = 'leadlex'"),
	't', 'and stats_reset to now');
misses('d', 2);
is(stat_of('cache_hits'), '2', 'counting goes on after a reset');

# 5. A damaged file is ignored, with a LOG line, and the server starts.
$node->stop('fast');
ok(-e $file, 'the file is there');
open(my $fh, '>', $file) or die "$file: $!";
print $fh "not a statistics file";
close $fh;
my $log_at = -s $node->logfile;
$node->start;
is(stat_of('requests'), '0', 'a damaged file is not read');
like(slurp_file($node->logfile, $log_at), qr/ignoring enrich statistics file/, 'and the log says so');
ok(!-e $file, 'and it is removed');

done_testing();
