# Security review, as tests:
#  1. what ordinary roles may execute, read and write (table-driven);
#  2. keys invisible to non-superusers: SHOW, pg_settings, pg_file_settings,
#     pg_stat_activity, pg_stat_statements, errors, results -- and absent
#     from the server log at log_min_messages = debug5 while requests
#     succeed and fail (PostgreSQL itself logs a reloaded setting's value);
#  3. base URLs, CA file and size limit superuser-only by every route
#     (SET, set_config, ALTER SYSTEM/ROLE, a function's SET clause,
#     PGOPTIONS); only absolute http/https URLs;
#  4. what reaches the provider: the key only in its header, no header
#     injection, hostile keys refused before a request, redirects not
#     followed;
#  5. search_path attacks: hostile operators, functions and a type in a
#     schema the caller puts first (or in a writable public) never run as
#     the extension owner, through any function, the trigger or the worker;
#  6. a pre-existing schema "enrich" that another role controls is refused.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use EnrichTest;

my $emu = start_emulator();
my $node = enrich_node('security',
	extra_conf => "shared_preload_libraries = 'enrich,pg_stat_statements'\n");
my $LL_KEY = 'wbk_SECRET_ll_7f3a9c';
my $SL_KEY = 'sl_SECRET_sl_7f3a9c';
emu_reset();

# Runs SQL as a role; returns (exit code, stdout, stderr).
sub as_role
{
	my ($role, $sql, $db) = @_;
	return $node->psql($db // 'postgres', $sql, on_error_stop => 0,
		extra_params => [ '-U', $role, '-v', 'VERBOSITY=verbose' ]);
}

# Resets the emulator, with our keys, capturing requests.
sub emu_reset
{
	emu_control({ reset => JSON::PP::true, capture => 200,
		keys => { leadlex => { $LL_KEY => {} }, slintel => { $SL_KEY => {} } }, @_ });
	return;
}

# The SQLSTATE of the error $sql raises as $role ('' when it succeeds).
sub state_as
{
	my ($role, $sql) = @_;
	my (undef, undef, $err) = as_role($role, $sql);
	return $err =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : '';
}

my $log_start = -s $node->logfile;
$node->safe_psql('postgres', q{
CREATE EXTENSION pg_stat_statements;
ALTER SYSTEM SET log_min_messages = debug5;
SELECT pg_reload_conf();
CREATE ROLE nobody LOGIN;
CREATE ROLE analyst LOGIN;
CREATE ROLE mallory LOGIN;
CREATE ROLE victim LOGIN;
GRANT EXECUTE ON FUNCTION enrich_company(text), enrich_lead(text), enrich_companies(text[]),
      enrich_leads(text[]), enrich.enqueue_company(text), enrich.enqueue_lead(text),
      enrich.refresh(text, interval, bigint), enrich.auto_enrich(regclass, text, name, name),
      enrich.stop_auto_enrich(regclass)
   TO analyst, mallory, victim;
});
# the new keys, as a DBA sets them: ALTER SYSTEM and a reload
my $s = $node->background_psql('postgres');
$s->query_safe("ALTER SYSTEM SET enrich.leadlex_api_key = '$LL_KEY'");
$s->query_safe("ALTER SYSTEM SET enrich.slintel_api_key = '$SL_KEY'");
my $reload_at = -s $node->logfile;
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok($node->poll_query_until('postgres', q{SELECT current_setting('enrich.leadlex_api_key') LIKE 'wbk_SECRET%'}),
	'the keys are set');
# and the worker has them
$node->wait_for_log(qr/enrich worker reloaded its settings/, $reload_at);

# ---------------------------------------------------------------------------
# 1. Privileges of a role with no grant, and of one with EXECUTE grants.

my $open = $node->safe_psql('postgres', q{
SELECT string_agg(p.oid::regprocedure::text, ' ' ORDER BY p.oid::regprocedure::text COLLATE "C")
  FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'enrich') AND d.deptype = 'e'
   AND d.classid = 'pg_proc'::regclass AND has_function_privilege('nobody', p.oid, 'EXECUTE')});
is($open,
	'enrich.credit_status() enrich.estimate_credits(text,text[]) enrich.normalize_domain(text) '
	  . 'enrich.normalize_linkedin_url(text) enrich.provider_stats() enrich.wait(interval)',
	'PUBLIC may execute only what spends nothing: normalisers, estimate, wait, credits and stats');
my $rels = $node->safe_psql('postgres', q{
SELECT string_agg(c.oid::regclass::text || ':' ||
         concat_ws(',', CASE WHEN has_table_privilege(r, c.oid, 'SELECT') THEN 'r' END,
                        CASE WHEN has_table_privilege(r, c.oid, 'INSERT') THEN 'a' END,
                        CASE WHEN has_table_privilege(r, c.oid, 'UPDATE') THEN 'w' END,
                        CASE WHEN has_table_privilege(r, c.oid, 'DELETE') THEN 'd' END,
                        CASE WHEN has_table_privilege(r, c.oid, 'TRUNCATE') THEN 'D' END),
         ' ' ORDER BY c.oid::regclass::text COLLATE "C")
  FROM pg_depend d JOIN pg_class c ON c.oid = d.objid, (VALUES ('nobody'), ('analyst')) v(r)
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'enrich') AND d.deptype = 'e'
   AND d.classid = 'pg_class'::regclass AND c.relkind IN ('r', 'v', 'S')
 GROUP BY r ORDER BY r COLLATE "C"});
is($rels, join("\n", map {
	join(' ', map { "enrich.$_" } 'auto_inbox:', 'auto_keys:', 'auto_targets:', 'companies:', 'credit_limits:',
		'credits:r', 'leads:', 'ledger:', 'queue:', 'queue_id_seq:', 'rate_limits:', 'spend:', 'stats:r')
} 1 .. 2),
	'no table of the extension is readable or writable by ordinary roles, with or without EXECUTE grants; the views are readable');
for my $case (
	[ 'SELECT * FROM enrich.companies', 'read the company cache' ],
	[ 'SELECT * FROM enrich.leads', 'read the lead cache' ],
	[ q{INSERT INTO enrich.companies VALUES ('evil.com', '{}', true, NULL, NULL, NULL, now())}, 'write the cache' ],
	[ q{UPDATE enrich.queue SET status = 'queued'}, 'write the queue' ],
	[ q{INSERT INTO enrich.queue (kind, key) VALUES ('company', 'free.com')}, 'queue directly' ],
	[ q{INSERT INTO enrich.auto_inbox VALUES (1, 'company', 'free.com')}, 'write the inbox' ],
	[ q{UPDATE enrich.credit_limits SET credits = NULL}, 'lift a budget directly' ],
	[ q{SELECT enrich.set_credit_limit('leadlex', NULL)}, 'lift a budget' ],
	[ q{SELECT enrich.resume('leadlex')}, 'resume a paused provider' ])
{
	is(state_as('analyst', $case->[0]), '42501', "analyst may not $case->[1]");
}
for my $f ('enrich_company(\'x.com\')', 'enrich_lead(\'linkedin.com/in/x\')',
	'enrich_companies(\'{x.com}\')', 'enrich_leads(\'{linkedin.com/in/x}\')', 'enrich.enqueue_company(\'x.com\')',
	'enrich.enqueue_lead(\'linkedin.com/in/x\')', 'enrich.refresh()')
{
	is(state_as('nobody', "SELECT $f"), '42501', "no grant: $f refused");
}

# The trigger function cannot be borrowed to queue keys without a grant
# (a temporary table is all it would take).
is(state_as('nobody', q{
CREATE TEMP TABLE t (d text);
CREATE TRIGGER x AFTER INSERT ON t REFERENCING NEW TABLE AS enrich_new
  FOR EACH STATEMENT EXECUTE FUNCTION enrich.auto_enrich_trigger('company', '1')}), '42501',
	'no grant: a trigger of ones own on enrich.auto_enrich_trigger is refused');
# Nor does a trigger that auto_enrich did not make queue anything.
$node->safe_psql('postgres', q{
CREATE TABLE public.rogue (d text);
CREATE TRIGGER x AFTER INSERT ON public.rogue REFERENCING NEW TABLE AS enrich_new
  FOR EACH STATEMENT EXECUTE FUNCTION enrich.auto_enrich_trigger('company', '1');
INSERT INTO public.rogue VALUES ('rogue-trigger.com');
});
ok(poll_until($node, q{SELECT NOT EXISTS (SELECT 1 FROM enrich.auto_inbox)}, 't', 20),
	'the worker took the rogue inbox row in');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.queue WHERE key = 'rogue-trigger.com'}), '0',
	'and queued nothing for a table auto_enrich did not configure');
is(emu_ledger()->{requests_by_input}{leadlex}{'rogue-trigger.com'}, undef, 'nothing was sent for it');

# ---------------------------------------------------------------------------
# 2. Keys invisible to non-superusers, while requests succeed and fail.

emu_control({ faults => [
	{ provider => 'leadlex', kind => 'status', status => 401, match => 'sec-401' },
	{ provider => 'leadlex', kind => 'status', status => 500, match => 'sec-500' },
	{ provider => 'slintel', kind => 'status', status => 403, match => 'sec-403' },
	{ provider => 'leadlex', kind => 'malformed_json', match => 'sec-bad' } ] });
my ($rc, $out, $err) = as_role('analyst', q{
SET enrich.max_attempts = 2;
SELECT enrich_company('acme.com')->>'name';
SELECT enrich_lead('linkedin.com/in/deepak-anchala-0043707')->>'name';
SELECT input, status FROM enrich_companies('{sec-batch-1.com,sec-500.com,sec-bad.com}') ORDER BY 1;
SELECT enrich_company('sec-401.com');
SELECT enrich_company('sec-500.com');
SELECT enrich_lead('linkedin.com/in/sec-403');
SELECT enrich_company('sec-bad.com');
SELECT enrich.enqueue_company('sec-401-w.com');
});
like($out, qr/Acme Corp.*Deepak Anchala/s, 'requests succeed for the analyst');
like($err, qr/WARNING:  38R04: 2 of 3 .*38R01.*38R04.*38R01.*38R05/s, 'and fail with their SQLSTATEs');
unlike($out . $err, qr/SECRET/, 'no key in any result, error, detail, hint or warning');
ok(poll_until($node, q{SELECT status = 'failed' FROM enrich.queue WHERE key = 'sec-401-w.com'}, 't', 30),
	'the worker met a 401 too');
$node->safe_psql('postgres', q{SELECT enrich.resume('leadlex'); SELECT enrich.enqueue_company('sec-ok-w.com')});
ok(poll_until($node, q{SELECT status = 'done' FROM enrich.queue WHERE key = 'sec-ok-w.com'}, 't', 30),
	'and answered another item');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.queue WHERE last_error LIKE '%SECRET%'}), '0',
	'no key in a queue error');
# TLS failure and a refused connection, with the keys in the requests
$node->safe_psql('postgres', qq{
ALTER SYSTEM SET enrich.ca_file = '$emu->{dir}/other-ca.pem'; SELECT pg_reload_conf()});
($rc, $out, $err) = as_role('analyst', q{SET enrich.max_attempts = 1; SELECT enrich_company('sec-tls.com')});
like($err, qr/08006/, 'a TLS failure');
unlike($err, qr/SECRET/, 'without the key');
$node->safe_psql('postgres', q{ALTER SYSTEM RESET enrich.ca_file; SELECT pg_reload_conf()});
# hostile keys: refused before any request, and not echoed
my $captured0 = scalar @{ captured() };
for my $bad ("wbk_SECRET_bad\r\nX-Evil: 1", "sl_SECRET_bad\nX-Evil: 1")
{
	my $setting = $bad =~ /^wbk/ ? 'enrich.leadlex_api_key' : 'enrich.slintel_api_key';
	my $call = $bad =~ /^wbk/ ? q{enrich_company('sec-inject.com')} : q{enrich_lead('linkedin.com/in/sec-inject')};
	(my $lit = $bad) =~ s/\r/\\r/g;
	$lit =~ s/\n/\\n/g;
	($rc, $out, $err) = $node->psql('postgres', "SET $setting = E'$lit'; SELECT $call",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/22023: invalid value for HTTP header/, "$setting with a line break is refused");
	unlike($err, qr/SECRET|X-Evil/, 'and not echoed');
}
is(scalar @{ captured() }, $captured0, 'nothing was sent with a hostile key');

# what a non-superuser sees of the keys
my %hidden = (
	'SHOW enrich.leadlex_api_key' => '42501',
	'SHOW enrich.slintel_api_key' => '42501',
	q{SELECT current_setting('enrich.leadlex_api_key')} => '42501',
	q{SELECT current_setting('enrich.slintel_api_key', true)} => '42501',
	'SELECT * FROM pg_file_settings' => '42501',
	q{SELECT pg_read_file('postgresql.auto.conf')} => '42501',
	q{SELECT set_config('enrich.leadlex_api_key', 'mine', false)} => '42501',
);
is(state_as('analyst', $_), $hidden{$_}, "analyst: $_ refused") for sort keys %hidden;
($rc, $out, $err) = as_role('analyst', q{
SELECT string_agg(name || '=' || coalesce(setting, ''), ' ') FROM pg_settings;
SELECT string_agg(coalesce(query, ''), ' ') FROM pg_stat_activity;
SELECT string_agg(query, ' ') FROM pg_stat_statements;
});
is($rc, 0, 'analyst reads pg_settings, pg_stat_activity and pg_stat_statements');
unlike($out, qr/SECRET/, 'and finds no key in them');
# (the patterns are built so that these queries do not match themselves)
my $counts = q{
SELECT (SELECT count(*) > 0 FROM pg_settings WHERE name LIKE '%api' || '_key')
    || ',' || (SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE '%ALTER' || ' SYSTEM%')
    || ',' || (SELECT count(*) > 0 FROM pg_stat_statements WHERE query LIKE '%ALTER' || ' SYSTEM%')};
is((as_role('analyst', $counts))[1], 'false,false,false', 'not even the DBA\'s ALTER SYSTEM statement with the key');
is($node->safe_psql('postgres', $counts), 'false,true,true',
	'(which a superuser does see in pg_stat_activity and pg_stat_statements; pg_settings shows no key to anyone)');
$s->quit;

# what reached the emulator: the key only in its header
my @reqs = @{ captured() };
cmp_ok(scalar(@reqs), '>', 5, 'requests were captured');
my ($in_header, $elsewhere, $evil) = (0, 0, 0);
for my $r (@reqs)
{
	for my $h (@{ $r->{headers} })
	{
		my $is_key_header = lc($h->[0]) eq 'authorization' || lc($h->[0]) eq 'x-api-key';
		$in_header++ if $is_key_header && $h->[1] =~ /SECRET/;
		$elsewhere++ if !$is_key_header && "$h->[0]: $h->[1]" =~ /SECRET/;
		$evil++ if $h->[0] =~ /evil/i || $h->[1] =~ /[\r\n]/;
	}
	$elsewhere++ if ($r->{url} // '') =~ /SECRET/ || ($r->{body} // '') =~ /SECRET/;
}
is($in_header, scalar(@reqs), 'every request carried its key in Authorization or x-api-key');
is($elsewhere, 0, 'and nowhere else (URL, body, other headers)');
is($evil, 0, 'no injected header, no line break in a header value');
is(emu_ledger()->{keys_in_url}, 0, 'the emulator saw no key in a URL');

# the server log, at debug5 throughout
$node->safe_psql('postgres', q{ALTER SYSTEM RESET log_min_messages; SELECT pg_reload_conf()});
my $log = slurp_file($node->logfile, $log_start);
like($log, qr/LOG:  parameter "enrich\.leadlex_api_key" \(value hidden\)/,
	'the reload that changed the key is logged without it');
like($log, qr/DEBUG:/, 'the log was at debug level');
my @leaks = grep { /\Q$LL_KEY\E|\Q$SL_KEY\E|SECRET_bad/ } split /\n/, $log;
is(scalar(@leaks), 0, 'no key anywhere in the server log') or diag join("\n", @leaks[ 0 .. ($#leaks < 5 ? $#leaks : 5) ]);

# ---------------------------------------------------------------------------
# 3. Where requests go: superuser-only settings, by every route.

for my $setting ('enrich.leadlex_url', 'enrich.slintel_url', 'enrich.ca_file', 'enrich.max_response_size',
	'enrich.keep_alive', 'enrich.leadlex_api_key')
{
	my $v = $setting =~ /url/ ? 'http://127.0.0.1:1/x' : $setting =~ /size/ ? '1GB' : $setting =~ /alive/ ? 'off' : '/tmp/x';
	is(state_as('analyst', "SET $setting = '$v'"), '42501', "analyst: SET $setting refused");
	is(state_as('analyst', "SELECT set_config('$setting', '$v', true)"), '42501', "analyst: set_config($setting) refused");
	is(state_as('analyst', "ALTER SYSTEM SET $setting = '$v'"), '42501', "analyst: ALTER SYSTEM SET $setting refused");
	is(state_as('analyst', "ALTER ROLE analyst SET $setting = '$v'"), '42501', "analyst: ALTER ROLE SET $setting refused");
}
is(state_as('analyst', q{
CREATE FUNCTION pg_temp.f() RETURNS jsonb LANGUAGE sql SET enrich.leadlex_url = 'http://127.0.0.1:1/x'
  AS 'SELECT enrich_company(''via-function.com'')';
SELECT pg_temp.f()}), '42501', 'analyst: a function SET clause cannot change the URL either');
{
	local $ENV{PGOPTIONS} = '-c enrich.leadlex_url=http://127.0.0.1:1/x';
	($rc, $out, $err) = as_role('analyst', 'SELECT 1');
	like($err, qr/permission denied to set parameter "enrich.leadlex_url"/, 'nor can PGOPTIONS at connection');
}
# only absolute http and https URLs, even for a superuser
for my $url ('file:///etc/passwd', 'gopher://127.0.0.1:70/x', 'dict://127.0.0.1:11211/stat', 'ftp://127.0.0.1/x',
	'ldap://127.0.0.1/x', 'telnet://127.0.0.1:23', 'scp://127.0.0.1/x', 'smb://127.0.0.1/x',
	'127.0.0.1/no-scheme', 'https://user:pw@127.0.0.1/x', 'https://127.0.0.1/x?api_key=1',
	"http://127.0.0.1/x\r\nX-Evil: 1", 'http://127.0.0.1/x y', '')
{
	(my $lit = $url) =~ s/\r/\\r/g;
	$lit =~ s/\n/\\n/g;
	(my $name = $lit) =~ s/\\r\\n.*/\\r\\n.../;
	is(sqlstate_of($node, 'postgres', "SET enrich.leadlex_url = E'$lit'"), '22023', "URL refused: '$name'");
	is(sqlstate_of($node, 'postgres', "ALTER SYSTEM SET enrich.slintel_url = E'$lit'"), '22023', "and by ALTER SYSTEM");
}

# ---------------------------------------------------------------------------
# 4. Redirects are not followed (to another host name of the emulator).

emu_reset(
	faults => [
		{ provider => 'leadlex', kind => 'redirect', status => 307, match => 'redir-307',
		  location => "https://localhost:$emu->{https}/functions/v1/api-gateway/v1/enrich/company" },
		{ provider => 'leadlex', kind => 'redirect', status => 302, match => 'redir',
		  location => "http://localhost:$emu->{http}/functions/v1/api-gateway/v1/enrich/company" },
		{ provider => 'slintel', kind => 'redirect', status => 301, match => 'redir',
		  location => "http://localhost:$emu->{http}/v2.0/lead/enrich?linkedin_url=https%3A%2F%2Fwww.linkedin.com%2Fin%2Fx" },
	]);
is(sqlstate_of($node, 'postgres', q{SELECT enrich_company('redir.com')}), '38R07', 'LeadLex 302: refused, not followed');
is(sqlstate_of($node, 'postgres', q{SELECT enrich_company('redir-307.com')}), '38R07', 'LeadLex 307: refused, not followed');
is(sqlstate_of($node, 'postgres', q{SELECT enrich_lead('linkedin.com/in/redir')}), '38R07', 'Slintel 301: refused, not followed');
is($node->safe_psql('postgres', q{SELECT string_agg(status, ',' ORDER BY input) FROM enrich_companies('{redir-b.com}')}),
	'error', 'batch: an error row');
my $qid = $node->safe_psql('postgres', q{SELECT enrich.enqueue_company('redir-w.com')});
ok(poll_until($node, "SELECT status = 'failed' FROM enrich.queue WHERE id = $qid", 't', 20), 'worker: the item fails');
my $l = emu_ledger();
is($l->{requests}{leadlex} . '/' . $l->{requests}{slintel}, '4/1', 'one request each, no second one to the Location');
is(join(',', sort map { $l->{by_status}{leadlex}{$_} . "x$_" } keys %{ $l->{by_status}{leadlex} }), '1x307,3x302',
	'each answered with its redirect');
is(scalar(grep { my $r = $_; grep { $_->[0] =~ /^(host|:authority)$/i && $_->[1] =~ /localhost/ } @{ $r->{headers} } }
		@{ captured() }), 0, 'nothing arrived for the other host name');

# ---------------------------------------------------------------------------
# 5. Hostile values in keys: SQL and HTTP stay intact.

emu_reset();
$node->safe_psql('postgres', q{CREATE TABLE public.hostile (id int, k text)});
for my $case (
	[ q{x'); DROP TABLE public.hostile; --.com}, '22023' ],
	[ "acme.com\r\nX-Evil: 1", '22023' ],
	[ 'a' x 1000000 . '.com', '22023' ],
	[ q{linkedin.com/in/o'brien%0d%0aX-Evil:%201}, '22023' ],
	[ 'linkedin.com/in/ab%00cd', '22023' ],
	[ 'linkedin.com/in/' . ('x' x 100000), '22023' ])
{
	my ($v, $want) = @$case;
	my $fn = $v =~ /linkedin/ ? 'enrich_lead' : 'enrich_company';
	(my $lit = $v) =~ s/'/''/g;
	$lit =~ s/\r/\\r/g;
	$lit =~ s/\n/\\n/g;
	is(sqlstate_of($node, 'postgres', "SELECT $fn(E'$lit')"), $want, "$fn: hostile input " . substr($lit, 0, 40) . ' refused');
}
# quotes survive as data, through the worker and a batch too
is($node->safe_psql('postgres', q{SELECT enrich_lead($$linkedin.com/in/o'brien-"x"$$)->>'linkedin_url'}),
	'http://www.linkedin.com/in/o%27brien-%22x%22', 'a slug with quotes is sent encoded and answered');
$node->safe_psql('postgres', q{SELECT enrich.enqueue_lead($$linkedin.com/in/o'neil;--$$)});
is($node->safe_psql('postgres', q{SELECT enrich.wait('30 s')}), 't', 'the worker takes a quoted slug');
is($node->safe_psql('postgres', q{SELECT status || ' ' || key FROM enrich.queue WHERE key LIKE '%neil%'}),
	'done https://www.linkedin.com/in/o%27neil%3B--', 'stored as a parameter, not as SQL');
is($node->safe_psql('postgres', q{SELECT count(*) FROM public.hostile}), '0', 'the table the input named is still there');
($rc, $out, $err) = $node->psql('postgres', q{SELECT E'acme\\000.com'});
like($err, qr/invalid|null/i, 'a NUL cannot even be a text value');
for my $r (@{ captured() })
{
	fail("header injected in $r->{url}") if grep { $_->[0] =~ /evil/i || $_->[1] =~ /[\r\n\0]/ } @{ $r->{headers} };
	fail("raw control character in $r->{url}") if $r->{url} =~ /[\x00-\x20']/;
}
is(scalar(grep { $_->{url} =~ /o%2527brien|o%27brien/ } @{ captured() }), 1, 'the quoted slug arrived percent-encoded');

# ---------------------------------------------------------------------------
# 6. search_path attacks.  Mallory owns a schema and puts it before
# pg_catalog; she also may create in public, which the victim searches
# first.  Every hostile object records who ran it and tries to make
# mallory a superuser.

emu_reset();
$node->safe_psql('postgres', q{
CREATE TABLE public.pwned (who text, what text);
GRANT SELECT, INSERT ON public.pwned TO PUBLIC;
CREATE SCHEMA evil AUTHORIZATION mallory;
CREATE SCHEMA sneaky AUTHORIZATION mallory;
GRANT CREATE ON SCHEMA public TO mallory;
});
# evil and public shadow everything; sneaky leaves the equality operators
# alone (a statement whose ON CONFLICT no longer finds its index because of
# a hostile "=" fails before anything runs, which would hide the rest)
my @equality = ([ '=', 'text', 'text' ], [ '<>', 'text', 'text' ], [ '=', 'int8', 'int8' ], [ '=', 'oid', 'oid' ],
	[ '=', 'regclass', 'oid' ], [ '=', 'name', 'name' ], [ '=', 'jsonb', 'jsonb' ]);
my @others = ([ '<', 'timestamptz', 'timestamptz' ], [ '<=', 'timestamptz', 'timestamptz' ],
	[ '>', 'timestamptz', 'timestamptz' ], [ '<=', 'int8', 'int8' ], [ '+', 'int4', 'int4' ], [ '*', 'numeric', 'int4' ]);
my $hostile = '';
for my $schema ('evil', 'sneaky', 'public')
{
	$hostile .= qq{
CREATE FUNCTION $schema.pwn(what text) RETURNS boolean LANGUAGE plpgsql AS \$\$
BEGIN
  INSERT INTO public.pwned VALUES (current_user, what);
  BEGIN EXECUTE 'ALTER ROLE mallory SUPERUSER'; EXCEPTION WHEN others THEN NULL; END;
  RETURN true;
END \$\$;
};
	for my $op (@others, $schema eq 'sneaky' ? () : @equality)
	{
		my ($o, $l, $r) = @$op;
		my $fname = 'op_' . join('_', map { sprintf('%x', ord) } split //, $o) . "_$l" . "_$r";
		$hostile .= qq{
CREATE FUNCTION $schema.$fname(a pg_catalog.$l, b pg_catalog.$r) RETURNS pg_catalog.$l LANGUAGE plpgsql AS \$\$
BEGIN PERFORM $schema.pwn('$o $l $r'); RETURN NULL; END \$\$;
CREATE OPERATOR $schema.$o (LEFTARG = pg_catalog.$l, RIGHTARG = pg_catalog.$r, FUNCTION = $schema.$fname);
};
	}
	$hostile .= qq{
CREATE FUNCTION $schema.now() RETURNS timestamptz LANGUAGE plpgsql AS \$\$
BEGIN PERFORM $schema.pwn('now()'); RETURN pg_catalog.now(); END \$\$;
CREATE FUNCTION $schema.gen_random_uuid() RETURNS uuid LANGUAGE plpgsql AS \$\$
BEGIN PERFORM $schema.pwn('gen_random_uuid()'); RETURN pg_catalog.gen_random_uuid(); END \$\$;
CREATE DOMAIN $schema.text AS pg_catalog.text CHECK ($schema.pwn('text domain'));
CREATE DOMAIN $schema.jsonb AS pg_catalog.jsonb CHECK ($schema.pwn('jsonb domain'));
CREATE TABLE $schema.accounts (id int, domain pg_catalog.text, company pg_catalog.jsonb);
};
}
($rc, $out, $err) = as_role('mallory', $hostile);
unlike($err, qr/ERROR/, 'mallory plants her operators, functions and types');

for my $schema ('evil', 'sneaky')
{
	(my $sql = q{
SET search_path = SCHEMA, pg_catalog;
SELECT public.enrich_company('SCHEMA-a.com') IS NOT NULL AS a1;
SELECT public.enrich_company('https://www.SCHEMA-a.com/') IS NOT NULL AS a2;
SELECT public.enrich_lead('linkedin.com/in/SCHEMA-a') IS NOT NULL AS a3;
SELECT pg_catalog.count(*) FROM public.enrich_companies('{SCHEMA-b.com,SCHEMA-a.com,nomatch-SCHEMA.com}');
SELECT pg_catalog.count(*) FROM public.enrich_leads('{linkedin.com/in/SCHEMA-b}');
SELECT enrich.enqueue_company('SCHEMA-c.com') IS NOT NULL;
SELECT enrich.enqueue_lead('linkedin.com/in/SCHEMA-c') IS NOT NULL;
SELECT enrich.estimate_credits('company', '{SCHEMA-d.com,SCHEMA-a.com}');
SELECT pg_catalog.count(*) FROM enrich.credits;
SELECT pg_catalog.count(*) FROM enrich.stats;
SELECT enrich.auto_enrich('SCHEMA.accounts', 'company', 'domain', 'company');
INSERT INTO SCHEMA.accounts VALUES (1, 'SCHEMA-e.com'), (2, 'SCHEMA-a.com');
UPDATE SCHEMA.accounts SET domain = 'SCHEMA-f.com' WHERE id OPERATOR(pg_catalog.=) 1;
SELECT enrich.wait('30 s');
SELECT enrich.refresh('company', '0 s') OPERATOR(pg_catalog.>) 0;
SELECT enrich.wait('30 s');
SELECT pg_catalog.string_agg(company->>'domain', ',' ORDER BY id) FROM SCHEMA.accounts;
SELECT enrich.stop_auto_enrich('SCHEMA.accounts');
}) =~ s/SCHEMA/$schema/g;
	($rc, $out, $err) = as_role('mallory', $sql);
	unlike($err, qr/ERROR/, "with $schema first in her search_path, mallory uses every function");
	like($out, qr/^t\nt\nt\n3\n1\nt\nt\n1\n2\n2\n\nt\nt\nt\n$schema-f\.com,$schema-a\.com\n$/, 'and they work as usual')
	  or diag $out;
}

($rc, $out, $err) = as_role('victim', q{
SET search_path = public, pg_catalog;
SELECT enrich_company('sp-v.com') IS NOT NULL;
SELECT pg_catalog.count(*) FROM enrich_companies('{sp-v2.com,sp-v.com}');
SELECT enrich.enqueue_company('sp-v3.com') IS NOT NULL;
SELECT enrich.wait('30 s');
SELECT enrich.refresh('company', '0 s') OPERATOR(pg_catalog.>) 0;
SELECT enrich.wait('30 s');
});
unlike($err, qr/ERROR/, 'a victim searching public (where mallory created) first uses them too');
is($out, "t\n2\nt\nt\nt\nt", 'and they work');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.queue WHERE key ~ '(evil|sneaky|sp)-' AND status NOT IN ('done', 'no_match')}), '0',
	'the worker finished everything, with the hostile objects in public');
is($node->safe_psql('postgres',
		q{SELECT coalesce(string_agg(DISTINCT who || ': ' || what, '; '), '') FROM public.pwned WHERE who NOT IN ('mallory', 'victim')}),
	'', 'no hostile operator, function or type ever ran as the extension owner (or the worker)');
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}), 'f', 'mallory is no superuser');

# ---------------------------------------------------------------------------
# 7. A schema "enrich" made beforehand by someone else is refused.

$node->safe_psql('postgres', q{
CREATE DATABASE hostile_db;
GRANT CREATE ON DATABASE hostile_db TO mallory;
});
($rc, $out, $err) = as_role('mallory', 'CREATE SCHEMA enrich', 'hostile_db');
is($rc, 0, 'mallory makes a schema enrich first');
($rc, $out, $err) = $node->psql('hostile_db', 'CREATE EXTENSION enrich', extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/42501: schema "enrich" is owned by role mallory, which is not a superuser/,
	'CREATE EXTENSION refuses a schema owned by another role');
$node->safe_psql('hostile_db', 'ALTER SCHEMA enrich OWNER TO postgres; GRANT CREATE ON SCHEMA enrich TO mallory');
($rc, $out, $err) = $node->psql('hostile_db', 'CREATE EXTENSION enrich', extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/42501: roles other than its owner may create objects in schema "enrich"/,
	'and one where others may create');
$node->safe_psql('hostile_db', 'REVOKE CREATE ON SCHEMA enrich FROM mallory');
($rc, $out, $err) = $node->psql('hostile_db', 'CREATE EXTENSION enrich');
is($rc, 0, 'a superuser-owned schema without such grants is fine');

$node->stop;
done_testing();

# The requests the emulator captured.
sub captured
{
	my $r = HTTP::Tiny->new(timeout => 30)->get("http://127.0.0.1:$emu->{http}/_captured");
	die "capture failed: $r->{status}" unless $r->{success};
	return JSON::PP::decode_json($r->{content})->{requests};
}
