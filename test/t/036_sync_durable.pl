# When a synchronous answer becomes durable (issue 16).  An answer is
# written to the spool file before enrich_company() returns; its fdatasync
# runs while the next request is on the network, or when the statement the
# client sent ends, or when the transaction rolls back, and never later
# than that.  Each fdatasync says at DEBUG2 how many answers it made
# durable: sent to the client (client_min_messages), those lines come in
# order with the statements' own notices, so the test sees where each
# sync happened.
#
# Checked here: in a statement of 20 misses every answer is synced exactly
# once, and all of them before the statement returns, though the
# transaction is still open; the rows a FETCH computed are synced when the
# FETCH ends; an answer whose statement fails after it is synced at the
# rollback and is not bought again; a commit syncs nothing.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EnrichTest;

my $emu = start_emulator();
my $node = enrich_node('durable');
emu_control({ reset => JSON::PP::true, latency_ms => 0, latency_jitter_ms => 0 });

# Runs a script with DEBUG2 messages sent to the client; returns the lines
# of its stderr that are syncs ("S n") or the script's markers ("M name"),
# and errors ("E"), in order.
sub trace
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	$node->psql('postgres', "SET client_min_messages = debug2;\n$sql",
		stdout => \$out, stderr => \$err, on_error_stop => 0);
	my @ev;
	for my $line (split /\n/, $err)
	{
		if ($line =~ /enrich: (\d+) synchronous answer\(s\) made durable/) { push @ev, "S $1" }
		elsif ($line =~ /NOTICE:\s+mark (\S+)/) { push @ev, "M $1" }
		elsif ($line =~ /ERROR:/) { push @ev, 'E' }
	}
	return @ev;
}

sub mark { return "DO \$\$BEGIN RAISE NOTICE 'mark $_[0]'; END\$\$;\n" }

# The syncs between two markers (or from the start / to the end).
sub syncs_between
{
	my ($ev, $from, $to) = @_;
	my $on = !defined $from;
	my @n;
	for my $e (@$ev)
	{
		$on = 1, next if defined $from && $e eq "M $from";
		last if defined $to && $e eq "M $to";
		push @n, $1 if $on && $e =~ /^S (\d+)$/;
	}
	return @n;
}

sub sum { my $s = 0; $s += $_ for @_; return $s }

# 1. 20 misses in one statement, inside a transaction block
my @ev = trace("BEGIN;\n"
	  . "SELECT count(enrich_company(format('dur-%s.com', g))) FROM generate_series(1, 20) g;\n"
	  . mark('statement') . "COMMIT;\n" . mark('committed'));
my @in = syncs_between(\@ev, undef, 'statement');
is(sum(@in), 20, 'all 20 answers of the statement were synced before it returned (transaction still open)');
ok(@in >= 1 && @in <= 20, 'with at most one fdatasync per answer (' . scalar(@in) . ' for 20)');
is(scalar(syncs_between(\@ev, 'statement', 'committed')), 0, 'the commit synced nothing more');
is(emu_ledger()->{requests}{leadlex}, 20, 'one request per miss');

# 2. A cursor: what a FETCH computed is synced when the FETCH ends
@ev = trace("BEGIN;\n"
	  . "DECLARE c CURSOR FOR SELECT enrich_company(format('cur-%s.com', g)) FROM generate_series(1, 5) g;\n"
	  . mark('declared') . "FETCH 2 FROM c;\n" . mark('fetched')
	  . "FETCH ALL FROM c;\n" . mark('all') . "COMMIT;\n");
is(scalar(syncs_between(\@ev, undef, 'declared')), 0, 'DECLARE bought nothing');
is(sum(syncs_between(\@ev, 'declared', 'fetched')), 2, 'the two answers of FETCH 2 were synced when it ended');
is(sum(syncs_between(\@ev, 'fetched', 'all')), 3, 'the other three when FETCH ALL ended');

# 3. A statement that fails after its answer: synced at the rollback.
# (psql prints an error after the notices that followed it, so the order
# of the two is read from the server's log.)
my $before = emu_ledger()->{requests}{leadlex};
my $log_at = -s $node->logfile;
@ev = trace("SET log_min_messages = debug2;\nBEGIN;\n" . mark('begun')
	  . "SELECT enrich_company('fail-1.com') IS NOT NULL, 1 / (random() * 0)::int;\n"
	  . "ROLLBACK;\n" . mark('rolled'));
is(join(',', syncs_between(\@ev, 'begun', 'rolled')), '1', 'the failed statement\'s answer was synced once before its transaction ended');
my @logged = grep { /ERROR:  division by zero|made durable/ }
  split /\n/, slurp_file($node->logfile, $log_at);
is(join(',', map { /ERROR/ ? 'E' : 'S' } @logged), 'E,S', 'the sync came at the rollback, after the error (server log)');
is(emu_ledger()->{requests}{leadlex}, $before + 1, 'it was bought once');
is($node->safe_psql('postgres', "SELECT enrich_company('fail-1.com')->>'domain'"),
	'fail-1.com', 'a later call returns it');
is(emu_ledger()->{requests}{leadlex}, $before + 1, 'without buying it again');

# 3b. Where each sync runs: with the provider taking 20 ms, call k's
# answer is synced inside call k+1, while its request is out (after call k
# has returned, before call k+1 returns); the last one at the statement's
# end.
emu_control({ latency_ms => 20, latency_jitter_ms => 0 });
$node->safe_psql('postgres', q{
CREATE FUNCTION calls_with_marks(n int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	FOR g IN 1 .. n LOOP
		PERFORM enrich_company(format('ovl-%s.com', g));
		RAISE NOTICE 'mark call%', g;
	END LOOP;
END $$});
@ev = trace("BEGIN;\nSELECT calls_with_marks(4);\n" . mark('end') . "COMMIT;\n");
is(join(' ', grep { /^S|^M/ } @ev), 'M call1 S 1 M call2 S 1 M call3 S 1 M call4 S 1 M end',
	'each answer was synced while the next request was out, the last at the statement\'s end');
emu_control({ latency_ms => 0 });

# 4. A single call in autocommit: one sync, at the statement's end
@ev = trace("SELECT enrich_company('single-1.com') IS NOT NULL;\n" . mark('done'));
is(join(',', syncs_between(\@ev, undef, 'done')), '1', 'a single call: one fdatasync of one answer');

# 5. Hits buy nothing and sync nothing
@ev = trace("SELECT count(enrich_company(format('dur-%s.com', g))) FROM generate_series(1, 20) g;\n" . mark('hits'));
is(scalar(syncs_between(\@ev, undef, 'hits')), 0, 'cache hits sync nothing');

$node->stop;
done_testing();
