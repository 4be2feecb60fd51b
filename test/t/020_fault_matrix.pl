# The fault matrix: every provider fault, for both providers, on the three
# paths -- synchronous (enrich_company / enrich_lead), batch
# (enrich_companies / enrich_leads) and the worker (enqueue + wait) --
# ends in its documented outcome (README "Errors": a SQLSTATE, a batch
# status, a queue status and last_error); the backend and the worker
# survive; no queued item is lost; the emulator charges nothing the
# contract does not allow.
#
# Table-driven.  sql/faults.sql already runs many of these faults on the
# synchronous path (mostly LeadLex); those cells are skipped here, listed
# in %sync_elsewhere.  The rows:
#   A. faults of one response or transfer, matched by key (all run at once
#      in a batch and in the worker);
#   B. faults that pause a provider (401, 403, 402, 429 with and without
#      Retry-After), one at a time, with the recovery where the contract
#      promises one (waiting_credits and a 429 wait end in done);
#   C. faults of the host: DNS failure, connection refused, TLS with an
#      unknown CA or a certificate for another name.
use strict;
use warnings;
use IO::Socket::INET;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EnrichTest;

my $emu = start_emulator();
my $node = enrich_node('faultmatrix');
emu_control({ reset => JSON::PP::true });
# two tries for transient faults, a short request timeout: for everyone,
# the worker included
set_conf($node, 'enrich.max_attempts' => 2, 'enrich.request_timeout' => '1500ms');
# Slintel's default local limit (10 at once) would make batch rows wait for
# the hanging ones past the request timeout: not what is tested here
$node->safe_psql('postgres', q{SELECT enrich.set_rate_limit('slintel', 1000, '1 second', 100)});
my $worker0 = worker_pid($node);
my $log0 = -s $node->logfile;
my %enqueued;		# normalised key => 1, for the "nothing lost" check
my %may_charge;		# provider => { ledger input => 1 } the contract lets be charged

my %prov_name = (leadlex => 'LeadLex', slintel => 'Slintel');

# The input, normalised key and ledger input of a row's key on one path.
sub input_of { my ($p, $name, $path) = @_; return $p eq 'leadlex' ? "fm-$name-$path.com" : "linkedin.com/in/fm-$name-$path"; }
sub key_of { my ($p, $name, $path) = @_; return $p eq 'leadlex' ? "fm-$name-$path.com" : "https://www.linkedin.com/in/fm-$name-$path"; }
sub ledger_input_of { my ($p, $name, $path) = @_; return $p eq 'leadlex' ? "fm-$name-$path.com" : "fm-$name-$path"; }

# A fault for one row of one provider.
sub fault_of
{
	my ($row, $p) = @_;
	my $f = ref $row->{fault} eq 'CODE' ? $row->{fault}->($p) : { %{ $row->{fault} } };
	return { %$f, provider => $p, match => "fm-$row->{name}-" };
}

# Runs one synchronous call in its own session; returns the SQLSTATE
# ('' for success), the result and whether the backend was the same after.
sub sync_call
{
	my ($p, $input, $settings) = @_;
	my $fn = $p eq 'leadlex' ? 'enrich_company' : 'enrich_lead';
	my ($rc, $out, $err) = $node->psql('postgres', qq{
SELECT 'pid=' || pg_backend_pid();
$settings
SELECT 'result=' || coalesce($fn('$input')::text, 'NULL');
SELECT 'pid=' || pg_backend_pid();}, on_error_stop => 0, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	my @pids = $out =~ /pid=(\d+)/g;
	my ($result) = $out =~ /result=(.*)/;
	my ($state) = $err =~ /ERROR:\s+([0-9A-Z]{5}):/;
	return ($state // '', $result, @pids == 2 && $pids[0] == $pids[1]);
}

# Runs one batch call; returns { normalised key => status } and whether the
# backend was the same after.
sub batch_call
{
	my ($p, $inputs, $settings) = @_;
	my $fn = $p eq 'leadlex' ? 'enrich_companies' : 'enrich_leads';
	my $arr = 'ARRAY[' . join(',', map { "'$_'" } @$inputs) . ']';
	my ($rc, $out, $err) = $node->psql('postgres', qq{
SELECT 'pid=' || pg_backend_pid();
$settings
SELECT 'row=' || input || '=' || status FROM $fn($arr);
SELECT 'pid=' || pg_backend_pid();}, on_error_stop => 0);
	my @pids = $out =~ /pid=(\d+)/g;
	my %st = $out =~ /row=(.*?)=(\w+)$/mg;
	return (\%st, @pids == 2 && $pids[0] == $pids[1], $err);
}

# Queues the inputs for the worker.
sub enqueue
{
	my ($p, @inputs) = @_;
	my $fn = $p eq 'leadlex' ? 'enrich.enqueue_company' : 'enrich.enqueue_lead';
	$node->safe_psql('postgres', join('', map { "SELECT $fn('$_');\n" } @inputs));
	$enqueued{ key_of($p, $_->[0], $_->[1]) } = 1 for map { [ /fm-(\w+)-(\w+)/ ] } @inputs;
	return;
}

# A queue row as "status attempts last_error".
sub queue_row
{
	my ($key) = @_;
	return $node->safe_psql('postgres',
		"SELECT status || ' ' || attempts || ' ' || coalesce(last_error, '') FROM enrich.queue WHERE key = '$key'");
}

# Checks one worker cell: status, attempts and last_error.
sub check_worker
{
	my ($row, $p, $path) = @_;
	my $w = $row->{worker};
	my $prov = $prov_name{$p};
	my $got = queue_row(key_of($p, $row->{name}, $path));
	my $err = defined $w->[2] ? sprintf($w->[2], $prov) : '';
	like($got, qr/^\Q$w->[0] $w->[1]\E \Q$err\E/, "worker, $p, $row->{name}: $w->[0] after $w->[1] attempt(s)" .
		($err ? ", \"$err\"" : ''));
	return;
}

# ---------------------------------------------------------------------------
# A. Faults of one response or transfer.
#    name => fault, sync SQLSTATE (or NULL / ok), batch status, worker [status, attempts, last_error]

my $transient = sub { my ($st, $msg) = @_; return (sync => $st, batch => 'error', worker => [ 'failed', 2, $msg ]); };
my $bad = sub { my ($st, $msg) = @_; return (sync => $st, batch => 'error', worker => [ 'failed', 1, $msg ]); };
my @rows_a = (
	{ name => 'reset', fault => { kind => 'reset' }, $transient->('08006', 'connection to %s failed') },
	{ name => 'midbody', fault => { kind => 'reset_mid_body' }, $transient->('08006', 'connection to %s failed') },
	{ name => 'hang', fault => { kind => 'hang' }, $transient->('08006', 'request to %s timed out') },
	{ name => 'dripok', fault => { kind => 'slow_drip', bytes => 64, interval_ms => 20 },
	  sync => 'ok', batch => 'fetched', worker => [ 'done', 1 ] },
	{ name => 'dripslow', fault => { kind => 'slow_drip', bytes => 1, interval_ms => 100 },
	  $transient->('08006', 'request to %s timed out') },
	{ name => 's500', fault => { kind => 'status', status => 500 }, $transient->('38R04', '%s is unavailable') },
	{ name => 'html502', fault => { kind => 'html', status => 502 }, $transient->('38R04', '%s is unavailable') },
	{ name => 's400', fault => { kind => 'status', status => 400 }, $bad->('38R07', '%s refused the request') },
	{ name => 'nomatch',
	  fault => sub { $_[0] eq 'leadlex' ? { kind => 'status', status => 409, code => 'no_match' } : { kind => 'status', status => 404 } },
	  sync => 'NULL', batch => 'no_match', worker => [ 'no_match', 1 ] },
	{ name => 'other4xx',
	  fault => sub { { kind => 'status', status => $_[0] eq 'leadlex' ? 404 : 409 } },
	  $bad->('38R07', '%s refused the request') },
	{ name => 'malformed', fault => { kind => 'malformed_json' }, $bad->('38R05', '%s sent a response that cannot be used') },
	{ name => 'truncated', fault => { kind => 'truncated_json' }, $bad->('38R05', '%s sent a response that cannot be used') },
	{ name => 'huge', fault => { kind => 'huge_body', bytes => 10_000_000 },
	  $bad->('38R06', '%s response is larger than enrich.max_response_size') },
	{ name => 'hugecl', fault => { kind => 'huge_body', bytes => 10_000_000, content_length => JSON::PP::true },
	  $bad->('38R06', '%s response is larger than enrich.max_response_size') },
	{ name => 'badutf8', fault => { kind => 'invalid_utf8' }, $bad->('38R05', '%s sent a response that cannot be used') },
	{ name => 'nul', fault => { kind => 'nul_escape' }, $bad->('38R05', '%s sent a response that cannot be used') },
	{ name => 'deep', fault => { kind => 'deep_nesting', depth => 10000 }, $bad->('38R05', '%s sent a response that cannot be used') },
	{ name => 'nodata', fault => { kind => 'wrong_shape', shape => 'no_data' }, $bad->('38R05', '%s sent a response that cannot be used') },
	{ name => 'notobject', only => 'leadlex', fault => { kind => 'wrong_shape', shape => 'company_not_object' },
	  $bad->('38R05', '%s sent a response that cannot be used') },
	{ name => 'dataarray', fault => { kind => 'wrong_shape', shape => 'data_not_object' },
	  $bad->('38R05', '%s sent a response that cannot be used') },
	{ name => 'html200', fault => { kind => 'html' }, $bad->('38R05', '%s sent a response that cannot be used') },
);
# cells sql/faults.sql already covers on the synchronous path
my %sync_elsewhere = (
	leadlex => { map { $_ => 1 } qw(reset hang dripok dripslow s400 malformed truncated huge hugecl badutf8 nul deep
		  nodata notobject dataarray a401 a403 c402 r429 refused tlsca tlshost) },
	slintel => { map { $_ => 1 } qw(malformed huge badutf8 nul deep nodata dataarray a401 c402 r429) });

for my $p ('leadlex', 'slintel')
{
	my @rows = grep { !$_->{only} || $_->{only} eq $p } @rows_a;
	emu_control({ faults => [ map { fault_of($_, $p) } @rows ] });

	for my $row (@rows)
	{
		next if $sync_elsewhere{$p}{ $row->{name} };
		my ($state, $result, $same) = sync_call($p, input_of($p, $row->{name}, 'sync'), '');
		my $got = $state ne '' ? $state : $result eq 'NULL' ? 'NULL' : 'ok';
		is($got, $row->{sync}, "sync, $p, $row->{name}: $row->{sync}");
		ok($same, "sync, $p, $row->{name}: the backend survives");
	}

	my ($st, $same, $warn) = batch_call($p, [ map { input_of($p, $_->{name}, 'batch') } @rows ], '');
	for my $row (@rows)
	{
		is($st->{ input_of($p, $row->{name}, 'batch') }, $row->{batch}, "batch, $p, $row->{name}: $row->{batch}");
	}
	ok($same, "batch, $p: the backend survives");
	like($warn, qr/WARNING:  \d+ of \d+ $prov_name{$p} request\(s\) failed/, "batch, $p: one WARNING says how many failed");

	enqueue($p, map { input_of($p, $_->{name}, 'worker') } @rows);
	is($node->safe_psql('postgres', q{SELECT enrich.wait('90 s')}), 't', "worker, $p: the queue settles");
	check_worker($_, $p, 'worker') for @rows;
}
is($node->safe_psql('postgres', q{SELECT string_agg(domain, ' ' ORDER BY domain) FROM enrich.companies WHERE domain LIKE 'fm-%' AND matched}),
	'fm-dripok-batch.com fm-dripok-worker.com', 'only the slow drip within the timeout is cached as an answer');
is($node->safe_psql('postgres', q{SELECT string_agg(domain, ' ' ORDER BY domain) FROM enrich.companies WHERE domain LIKE 'fm-%' AND NOT matched}),
	'fm-nomatch-batch.com fm-nomatch-sync.com fm-nomatch-worker.com', 'and the no-match answers as no match');

# ---------------------------------------------------------------------------
# B. Faults that pause a provider, one at a time.  After each: the pause is
#    lifted; queued work that waits (402, 429) is done once the fault is gone.

my @rows_b = (
	{ name => 'a401', fault => { kind => 'status', status => 401 }, sync => '38R01', batch => 'error',
	  worker => [ 'failed', 1, '%s refused the API key' ] },
	{ name => 'a403', fault => { kind => 'status', status => 403 }, sync => '38R01', batch => 'error',
	  worker => [ 'failed', 1, '%s refused the API key' ] },
	{ name => 'c402', fault => { kind => 'status', status => 402 }, sync => '38R02', batch => 'no_credits',
	  worker => [ 'waiting_credits', 0, '%s has no credits left' ], recovers => 1 },
	{ name => 'r429', fault => { kind => 'status', status => 429, retry_after => 60 }, sync => '38R03', batch => 'error',
	  worker => [ 'queued', 0, '%s rate limit exceeded' ], recovers => 1 },
	{ name => 'r429n', fault => { kind => 'status', status => 429 }, sync => '38R03', batch => 'error',
	  worker => [ 'queued', 0, '%s rate limit exceeded' ], recovers => 1 },
);
for my $p ('leadlex', 'slintel')
{
	for my $row (@rows_b)
	{
		my $n = $row->{name};
		emu_control({ faults => [ fault_of($row, $p) ] });
		unless ($sync_elsewhere{$p}{$n})
		{
			my ($state, undef, $same) = sync_call($p, input_of($p, $n, 'sync'), '');
			is($state, $row->{sync}, "sync, $p, $n: $row->{sync}");
			ok($same, "sync, $p, $n: the backend survives");
			$node->safe_psql('postgres', "SELECT enrich.resume('$p')");
		}
		my ($st, $same) = batch_call($p, [ input_of($p, $n, 'batch') ], '');
		is($st->{ input_of($p, $n, 'batch') }, $row->{batch}, "batch, $p, $n: $row->{batch}");
		ok($same, "batch, $p, $n: the backend survives");
		$node->safe_psql('postgres', "SELECT enrich.resume('$p')");

		my $key = key_of($p, $n, 'worker');
		enqueue($p, input_of($p, $n, 'worker'));
		my $w = $row->{worker};
		my $err = sprintf($w->[2], $prov_name{$p});
		ok(poll_until($node, "SELECT status = '$w->[0]' AND last_error = '$err' FROM enrich.queue WHERE key = '$key'", 't', 30),
			"worker, $p, $n: $w->[0] with \"$err\"") or diag queue_row($key);
		# a wait is not an attempt; a failure is
		is($node->safe_psql('postgres', "SELECT attempts FROM enrich.queue WHERE key = '$key'"),
			$w->[1], "worker, $p, $n: $w->[1] attempt(s) counted");
		emu_control({ faults => [] });
		$node->safe_psql('postgres', "SELECT enrich.resume('$p')");
		if ($row->{recovers})
		{
			ok(poll_until($node, "SELECT status = 'done' FROM enrich.queue WHERE key = '$key'", 't', 30),
				"worker, $p, $n: done once the provider takes requests again") or diag queue_row($key);
			$may_charge{$p}{ ledger_input_of($p, $n, 'worker') } = 1;
		}
	}
}

# ---------------------------------------------------------------------------
# C. Faults of the host.  The worker's settings change by ALTER SYSTEM and a
#    reload; the sessions' by SET.

my $closed = do { my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0); my $port = $s->sockport; close $s; $port };
# a label longer than 63 bytes: the resolver refuses it without asking a server
my $unresolvable = ('x' x 64) . '.invalid';
my %base = (leadlex => '/functions/v1/api-gateway', slintel => '');
my @rows_c = (
	{ name => 'dns', url => "http://$unresolvable", sync => '08001', worker => [ 'failed', 2, 'could not connect to %s' ] },
	{ name => 'refused', url => "http://127.0.0.1:$closed", sync => '08001', worker => [ 'failed', 2, 'could not connect to %s' ] },
	{ name => 'tlsca', ca => "$emu->{dir}/other-ca.pem", sync => '08006', worker => [ 'failed', 1, 'TLS connection to %s failed' ] },
	{ name => 'tlshost', url => "https://127.0.0.1:$emu->{wrong_host}", sync => '08006',
	  worker => [ 'failed', 1, 'TLS connection to %s failed' ] },
);
emu_control({ faults => [] });
for my $p ('leadlex', 'slintel')
{
	for my $row (@rows_c)
	{
		my $n = $row->{name};
		my ($setting, $value) = $row->{ca} ? ('enrich.ca_file', $row->{ca}) : ("enrich.${p}_url", $row->{url} . $base{$p});
		my $set = "SET $setting = '$value';";
		unless ($sync_elsewhere{$p}{$n})
		{
			my ($state, undef, $same) = sync_call($p, input_of($p, $n, 'sync'), $set);
			is($state, $row->{sync}, "sync, $p, $n: $row->{sync}");
			ok($same, "sync, $p, $n: the backend survives");
		}
		my ($st, $same) = batch_call($p, [ input_of($p, $n, 'batch') ], $set);
		is($st->{ input_of($p, $n, 'batch') }, 'error', "batch, $p, $n: error");
		ok($same, "batch, $p, $n: the backend survives");

		set_conf($node, $setting => $value);
		enqueue($p, input_of($p, $n, 'worker'));
		is($node->safe_psql('postgres', q{SELECT enrich.wait('30 s')}), 't', "worker, $p, $n: the queue settles");
		check_worker($row, $p, 'worker');
		set_conf($node, $setting => undef);
		$node->safe_psql('postgres', "SELECT enrich.resume('$p')");
	}
}
my $l = emu_ledger();
is(($l->{requests_by_input}{leadlex}{'fm-tlsca-worker.com'} // 0) + ($l->{requests_by_input}{leadlex}{'fm-tlshost-worker.com'} // 0)
	  + ($l->{requests_by_input}{slintel}{'fm-tlsca-worker'} // 0) + ($l->{requests_by_input}{slintel}{'fm-tlshost-worker'} // 0),
	0, 'no request got through a failed TLS handshake');

# ---------------------------------------------------------------------------
# Everything survives, nothing is lost, nothing is charged that should not be.

is(worker_pid($node), $worker0, 'the worker is the same process throughout');
ok(!$node->log_contains(qr/terminated by signal|was terminated|server process .* exited with exit code [^0]/, $log0),
	'no process crashed');
is($node->safe_psql('postgres', q{SELECT count(*) || ' ' || count(DISTINCT key) FROM enrich.queue WHERE key LIKE '%fm-%'}),
	scalar(keys %enqueued) . ' ' . scalar(keys %enqueued), 'every queued item is there, once');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.queue WHERE key LIKE '%fm-%' AND status IN ('queued', 'in_flight')}),
	'0', 'and none is left unfinished');
my @bad_charges;
for my $p ('leadlex', 'slintel')
{
	for my $in (keys %{ $l->{charged_inputs}{$p} })
	{
		push @bad_charges, "$p:$in" if $in =~ /fm-/ && !$may_charge{$p}{$in};
	}
}
is(join(' ', @bad_charges), '', 'no charge for a fault');

$node->stop;
done_testing();
