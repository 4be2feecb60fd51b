# EnrichTest.pm: shared set-up for enrich's TAP tests.
#
# Each test file gets its own provider emulator (test/provider/start.sh in
# the test's temporary directory) and its own cluster with enrich preloaded
# and pointed at the emulator over HTTPS with the emulator's throwaway CA.
package EnrichTest;

use strict;
use warnings;
use Exporter 'import';
use File::Basename qw(dirname);
use File::Spec;
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(start_emulator emu_control emu_ledger enrich_node enrich_standby root_dir
  poll_until sqlstate_of worker_pid set_conf kill_postmaster crash_restart);

my $root = $ENV{ENRICH_ROOT} // dirname(dirname(dirname(__FILE__)));
my $http = HTTP::Tiny->new(timeout => 30);
my %emu;

sub root_dir { return $root; }

# Starts the emulator; returns a hash with http, https and ca.
sub start_emulator
{
	my $dir = File::Spec->rel2abs(PostgreSQL::Test::Utils::tempdir('emu'));
	system('bash', "$root/test/provider/start.sh", $dir) == 0
	  or die "could not start the provider emulator";
	open(my $fh, '<', "$dir/ports.json") or die "no ports.json: $!";
	my $ports = decode_json(do { local $/; <$fh> });
	close $fh;
	%emu = (
		dir => $dir,
		http => $ports->{http},
		https => $ports->{https},
		wrong_host => $ports->{wrong_host},
		ca => "$dir/ca.pem",
		url => "http://127.0.0.1:$ports->{http}");
	return \%emu;
}

END
{
	system('bash', "$root/test/provider/stop.sh", $emu{dir}) if $emu{dir};
}

# POSTs a control document (a hash ref) to the emulator.
sub emu_control
{
	my ($doc) = @_;
	my $r = $http->post("$emu{url}/_control",
		{ headers => { 'Content-Type' => 'application/json' }, content => encode_json($doc) });
	die "emulator control failed: $r->{status} $r->{content}" unless $r->{success};
	return;
}

# Returns the emulator's ledger as a hash ref.
sub emu_ledger
{
	my $r = $http->get("$emu{url}/_ledger");
	die "emulator ledger failed: $r->{status}" unless $r->{success};
	return decode_json($r->{content});
}

# A new cluster with enrich preloaded and configured for the emulator.
# Options: extra_conf (lines for postgresql.conf), init (a hash ref of
# options for init, e.g. { allows_streaming => 1 } for a primary).
sub enrich_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%{ $opts{init} // {} });
	my $conf = <<"CONF";
shared_preload_libraries = 'enrich'
enrich.database_name = 'postgres'
enrich.leadlex_url = 'https://127.0.0.1:$emu{https}/functions/v1/api-gateway'
enrich.slintel_url = 'https://127.0.0.1:$emu{https}'
enrich.ca_file = '$emu{ca}'
enrich.leadlex_api_key = 'wbk_test_key'
enrich.slintel_api_key = 'sl_test_key'
CONF
	$conf .= $opts{extra_conf} if $opts{extra_conf};
	$node->append_conf('postgresql.conf', $conf);
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION enrich');
	# the launcher starts the worker once CREATE EXTENSION has committed
	# (no_worker: a cluster with no background worker slot for it)
	if (!$opts{no_worker} && ($opts{extra_conf} // '') !~ /shared_preload_libraries\s*=\s*''/)
	{
		poll_until($node,
			q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'enrich worker' AND datname = 'postgres'},
			't', 60)
		  or die "enrich_node: no worker for database postgres";
	}
	return $node;
}

# A streaming hot standby of $primary (made with enrich_node and
# init => { allows_streaming => 1 }), from a base backup taken now: its
# configuration, enrich's included, is the primary's.  Started.
sub enrich_standby
{
	my ($primary, $name) = @_;
	$primary->backup("${name}_backup");
	my $standby = PostgreSQL::Test::Cluster->new($name);
	$standby->init_from_backup($primary, "${name}_backup", has_streaming => 1);
	$standby->start;
	return $standby;
}

# Polls $query in database postgres until it returns $expected (default
# 't'), for at most $secs seconds (default 60); true when it did.  Like
# the node's poll_query_until, but the query goes on psql's command line,
# not down a pipe: while the server restarts after a crash, psql exits
# before reading its input, and IPC::Run dies of the broken pipe.
sub poll_until
{
	my ($node, $query, $expected, $secs) = @_;
	$expected //= 't';
	my $cmd = [ $node->installed_command('psql'), '-XAt', '-d', $node->connstr('postgres'), '-c', $query ];
	my $deadline = time() + ($secs // 60);
	my ($stdout, $stderr) = ('', '');
	while (1)
	{
		($stdout, $stderr) = ('', '');
		IPC::Run::run($cmd, '<', '/dev/null', '>', \$stdout, '2>', \$stderr);
		chomp $stdout;
		chomp $stderr;
		return 1 if $stdout eq $expected && $stderr eq '';
		last if time() >= $deadline;
		select(undef, undef, undef, 0.1);
	}
	diag "poll_until timed out on: $query\nexpected: $expected\nlast output: $stdout\nstderr: $stderr";
	return 0;
}

# The SQLSTATE of the error $sql raises in $db, or '' when it succeeds.
sub sqlstate_of
{
	my ($node, $db, $sql) = @_;
	my ($rc, $out, $err) = $node->psql($db, $sql, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return $err =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : '';
}

# SIGKILLs the postmaster and waits (bounded) until its children, which
# leave when they see it gone, have all left; returns whether they did.
sub kill_postmaster
{
	my ($node) = @_;
	my @children = split /\n/, $node->safe_psql('postgres', 'SELECT pid FROM pg_stat_activity');
	$node->kill9;
	for (1 .. 600)
	{
		return 1 if !grep { kill(0, $_) } @children;
		select(undef, undef, undef, 0.05);
	}
	return 0;
}

# SIGKILLs a new session's backend and waits (bounded) until the
# postmaster says it is making every process and shared memory anew;
# returns whether it did.
sub crash_restart
{
	my ($node) = @_;
	my $victim = $node->background_psql('postgres', on_error_stop => 0);
	my $pid = $victim->query_safe('SELECT pg_backend_pid()');
	my $offset = -s $node->logfile;
	kill('KILL', $pid) or return 0;
	eval { $victim->quit };
	for (1 .. 600)
	{
		return 1 if $node->log_contains(qr/all server processes terminated; reinitializing/, $offset);
		select(undef, undef, undef, 0.1);
	}
	return 0;
}

# The pid of the enrich worker ('' when there is none).
sub worker_pid
{
	my ($node, $db) = @_;
	$db //= 'postgres';
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'enrich worker' AND datname = '$db'");
}

# ALTER SYSTEM SET each name => value (RESET for undef), then reload and, when a worker
# runs, wait until it says it has the new settings (new sessions read
# them at their start).
sub set_conf
{
	my ($node, %settings) = @_;
	my $sql = '';
	for my $name (sort keys %settings)
	{
		$sql .= defined $settings{$name}
		  ? "ALTER SYSTEM SET $name = '$settings{$name}';\n"
		  : "ALTER SYSTEM RESET $name;\n";
	}
	my $offset = -s $node->logfile;
	my $workers = $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'enrich worker'");
	$node->safe_psql('postgres', $sql . 'SELECT pg_reload_conf();');
	# every database's worker says so
	my $deadline = time() + 60;
	while ($workers > 0)
	{
		my @said = slurp_file($node->logfile, $offset) =~ /enrich worker reloaded its settings/g;
		last if @said >= $workers;
		die "set_conf: $workers worker(s) did not all reload within 60 s" if time() > $deadline;
		select(undef, undef, undef, 0.05);
	}
	return;
}

1;
