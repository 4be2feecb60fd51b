# Budgets per role: enrich.set_role_credit_limit gives a role a budget of
# its own on top of the provider's.  Two roles with limits of 5 and 8 race
# in eight sessions of synchronous misses: each role's ledger rows are
# exactly its limit, the provider charged their sum, and every other call
# failed with 38R02 naming the role.  A member of a limited role counts
# under it (the lowest OID when several apply; a superuser under none).  A
# role's queued items wait as waiting_credits while another role's are
# done, and go on when its limit is raised or its period turns.
# enrich.credits_by_role shows limit, used and remaining; an immediate
# shutdown keeps a role's use (also of an answer bought in a transaction
# open at the shutdown) and the budget still cannot be overspent; a
# terminated session gives back what it reserved of its role's budget.
# Only superusers and the extension owner may set role limits.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EnrichTest;

start_emulator();
my $node = enrich_node('roles', extra_conf => "restart_after_crash = on\n");
emu_control({ reset => JSON::PP::true, latency_ms => 200 });
$node->safe_psql('postgres', q{
CREATE ROLE alice LOGIN;
CREATE ROLE bob LOGIN;
CREATE ROLE carol LOGIN IN ROLE alice;
CREATE ROLE dave LOGIN;
CREATE ROLE eve LOGIN IN ROLE alice, bob;
GRANT EXECUTE ON FUNCTION enrich_company(text), enrich.enqueue_company(text)
  TO alice, bob, carol, dave, eve;
CREATE TABLE race_results (who text, s int, ok int, no_credits int, other int, messages text, errors text);
GRANT INSERT ON race_results TO PUBLIC;
});

# The SQLSTATE and message of $sql run as $role ('' when it succeeds).
sub as_role
{
	my ($role, $sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', "SET ROLE $role; $sql",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return $err =~ /ERROR:\s+([0-9A-Z]{5}):\s+(.*)/ ? "$1 $2" : '';
}

sub charged
{
	return emu_ledger()->{charged}{leadlex}{wbk_test_key} // 0;
}

# role=count of the ledger's leadlex rows
sub ledger_by_role
{
	return $node->safe_psql('postgres', q{
SELECT string_agg(role::text || '=' || n, ',' ORDER BY role::text)
  FROM (SELECT role, count(*) n FROM enrich.ledger WHERE provider = 'leadlex' GROUP BY role) s});
}

sub budget
{
	my ($role) = @_;
	return $node->safe_psql('postgres', qq{
SELECT credit_limit || '/' || used || '/' || remaining FROM enrich.credits_by_role
 WHERE role = '$role'::regrole AND provider = 'leadlex'});
}

# 1. Who may set a role's limit, and its arguments.
like(as_role('alice', q{SELECT enrich.set_role_credit_limit('alice', 'leadlex', 100)}), qr/^42501 /,
	'a role without EXECUTE may not set a role limit');
$node->safe_psql('postgres',
	q{GRANT EXECUTE ON FUNCTION enrich.set_role_credit_limit(regrole, text, bigint, interval) TO alice});
like(as_role('alice', q{SELECT enrich.set_role_credit_limit('alice', 'leadlex', 100)}),
	qr/^42501 permission denied for function set_role_credit_limit/,
	'nor with EXECUTE, unless superuser or the extension owner (42501)');
$node->safe_psql('postgres',
	q{REVOKE EXECUTE ON FUNCTION enrich.set_role_credit_limit(regrole, text, bigint, interval) FROM alice});
for my $case (
	[ q{SELECT enrich.set_role_credit_limit('alice', 'nope', 5)}, '22023', 'an unknown provider' ],
	[ q{SELECT enrich.set_role_credit_limit('alice', 'leadlex', -1)}, '22023', 'negative credits' ],
	[ q{SELECT enrich.set_role_credit_limit('alice', 'leadlex', 5, '0 s')}, '22023', 'a period that is not positive' ],
	[ q{SELECT enrich.set_role_credit_limit(NULL, 'leadlex', 5)}, '22004', 'a null role' ],
	[ q{SELECT enrich.set_role_credit_limit('alice', NULL, 5)}, '22004', 'a null provider' ])
{
	is(sqlstate_of($node, 'postgres', $case->[0]), $case->[1], "$case->[2]: $case->[1]");
}
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.role_credit_limits}), '0', 'and nothing was set');

# 2. Two roles with limits of their own race in eight sessions.
$node->safe_psql('postgres', q{
SELECT enrich.set_role_credit_limit('alice', 'leadlex', 5);
SELECT enrich.set_role_credit_limit('bob', 'leadlex', 8);
});
is(budget('alice'), '5/0/5', 'enrich.credits_by_role: alice 5, none used');
is(budget('bob'), '8/0/8', 'enrich.credits_by_role: bob 8, none used');
is($node->safe_psql('postgres', q{SELECT string_agg(role::text || ' ' || provider || ' ' || credits, ',' ORDER BY role::text)
  FROM enrich.role_credit_limits}), 'alice leadlex 5,bob leadlex 8', 'kept in enrich.role_credit_limits');
is($node->safe_psql('postgres', q{SELECT credit_limit IS NULL FROM enrich.credits WHERE provider = 'leadlex'}), 't',
	'the provider has no budget of its own');

my @sessions;
for my $s (1 .. 8)
{
	my $who = $s % 2 ? 'alice' : 'bob';
	my $b = $node->background_psql('postgres');
	$b->query_until(qr/started/, qq(\\echo started
SET ROLE $who;
DO \$\$
DECLARE
  ok int := 0; nc int := 0; other int := 0; msgs text[] := '{}'; errs text := '';
BEGIN
  FOR g IN 1 .. 10 LOOP
    BEGIN
      PERFORM enrich_company(format('race-$s-%s.com', g));
      ok := ok + 1;
    EXCEPTION
      WHEN SQLSTATE '38R02' THEN nc := nc + 1; msgs := msgs || SQLERRM;
      WHEN OTHERS THEN other := other + 1; errs := errs || SQLSTATE || ' ' || SQLERRM || '; ';
    END;
  END LOOP;
  INSERT INTO race_results
    SELECT '$who', $s, ok, nc, other, string_agg(DISTINCT m, ' | '), errs FROM unnest(msgs) m;
END \$\$;
\\echo done
));
	push @sessions, $b;
}
$_->query_until(qr/done/, '') for @sessions;
$_->quit for @sessions;

my %r = map { my @f = split /\|/; ($f[0] => [ @f[ 1 .. 4 ] ]) } split /\n/, $node->safe_psql('postgres', q{
SELECT who, sum(ok), sum(no_credits), sum(other), string_agg(DISTINCT messages, ' | ') || ' ' || string_agg(errors, '')
  FROM race_results GROUP BY who ORDER BY who});
note "alice: $r{alice}[0] ok, $r{alice}[1] refused; bob: $r{bob}[0] ok, $r{bob}[1] refused";
is($r{alice}[0], 5, 'alice\'s sessions bought exactly her 5');
is($r{bob}[0], 8, 'bob\'s sessions bought exactly his 8');
is($r{alice}[1] + $r{bob}[1], 80 - 13, 'every other call got 38R02');
is($r{alice}[2] + $r{bob}[2], 0, 'and no other error') or diag "$r{alice}[3] $r{bob}[3]";
is($r{alice}[3], 'the credit budget of role "alice" for LeadLex is spent ',
	'alice\'s refusals name her budget');
is($r{bob}[3], 'the credit budget of role "bob" for LeadLex is spent ', 'bob\'s name his');
is(ledger_by_role(), 'alice=5,bob=8', 'the ledger: alice 5 charges, bob 8');
is(charged(), 13, 'the provider charged 13: the sum');
is(emu_ledger()->{requests}{leadlex}, 13, 'and no request was sent that a budget could not pay for');
is(budget('alice'), '5/5/0', 'enrich.credits_by_role: alice used 5, none left');
is(budget('bob'), '8/8/0', 'enrich.credits_by_role: bob used 8, none left');

my ($rc, $o, $e) = $node->psql('postgres', q{SET ROLE alice; SELECT enrich_company('one-more.com')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($e, qr/ERROR:\s+38R02: the credit budget of role "alice" for LeadLex is spent/, 'over her budget: 38R02');
like($e, qr/DETAIL:\s+No request was sent\./, 'with a detail');
like($e, qr/HINT:\s+See enrich\.credits_by_role; enrich\.set_role_credit_limit\('alice', 'leadlex', \.\.\.\) raises the limit\./,
	'and a hint');
is(emu_ledger()->{requests}{leadlex}, 13, 'and nothing was sent');

# 3. Membership: carol is a member of alice and counts under her budget;
# eve is a member of alice and bob and counts under the older (lower OID)
# of the two; a superuser counts under none.
emu_control({ latency_ms => 0 });
$node->safe_psql('postgres', q{
SELECT enrich.set_role_credit_limit('alice', 'leadlex', 2);
SELECT enrich.set_role_credit_limit('bob', 'leadlex', 100);
});
is(budget('alice'), '2/0/2', 'a total is counted from the call that sets it');
is(as_role('carol', q{SELECT enrich_company('carol-1.com'); SELECT enrich_company('carol-2.com')}), '',
	'carol buys two under alice\'s budget');
like(as_role('carol', q{SELECT enrich_company('carol-3.com')}),
	qr/^38R02 the credit budget of role "alice" for LeadLex is spent/, 'and the third is refused, naming alice');
is(budget('alice'), '2/2/0', 'alice\'s budget counts carol\'s charges');
like(as_role('eve', q{SELECT enrich_company('eve-1.com')}),
	qr/^38R02 the credit budget of role "alice" for LeadLex is spent/,
	'eve, a member of alice and bob, counts under alice (the lower OID), though bob has credits');
is(as_role('postgres', q{SELECT enrich_company('super-1.com')}), '', 'a superuser counts under no role\'s budget');
is(ledger_by_role(), 'alice=5,bob=8,carol=2,postgres=1', 'the ledger has each charge on behalf of its role');
is(charged(), 16, 'the provider charged 16');

# 4. Queued work: alice's items wait for credits while dave's are done.
$node->safe_psql('postgres', q{
SET ROLE alice;
SELECT count(enrich.enqueue_company(format('q-alice-%s.com', g))) FROM generate_series(1, 10) g;
SET ROLE dave;
SELECT count(enrich.enqueue_company(format('q-dave-%s.com', g))) FROM generate_series(1, 10) g;
});
ok(poll_until($node, q{
SELECT count(*) FILTER (WHERE key LIKE 'q-dave-%' AND status = 'done') = 10
   AND count(*) FILTER (WHERE key LIKE 'q-alice-%' AND status = 'waiting_credits') = 10
  FROM enrich.queue}, 't', 60),
	'dave\'s items are done while alice\'s wait as waiting_credits');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.queue WHERE status = 'failed'}), '0', 'none failed');
my $l = emu_ledger();
is(scalar(grep { /^q-alice-/ } keys %{ $l->{requests_by_input}{leadlex} }), 0, 'no request was sent for alice\'s items');
is($node->safe_psql('postgres', q{SELECT last_error FROM enrich.queue WHERE key = 'q-alice-1.com'}),
	'the credit budget of role "alice" for LeadLex is spent', 'their last_error names her budget');
# (and they stay parked over two housekeeping turns)
select(undef, undef, undef, 2.5);
is(emu_ledger()->{requests}{leadlex}, $l->{requests}{leadlex}, 'nothing more is sent while her budget is spent');

$node->safe_psql('postgres', q{SELECT enrich.set_role_credit_limit('alice', 'leadlex', 12)});
ok(poll_until($node, q{SELECT count(*) FROM enrich.queue WHERE key LIKE 'q-alice-%' AND status = 'done'}, '10', 60),
	'raising her limit resumes them by themselves');
is(budget('alice'), '12/10/2', 'enrich.credits_by_role: alice 12, used 10, 2 left');
is(ledger_by_role(), 'alice=15,bob=8,carol=2,dave=10,postgres=1', 'the worker\'s charges are on behalf of who queued them');

# 5. A period: bob may spend 3 every 2 seconds; his items go on by
# themselves as the periods turn, and no period spends more than 3.
$node->safe_psql('postgres', q{SELECT enrich.set_role_credit_limit('bob', 'leadlex', 3, '2 seconds')});
my $start = $node->safe_psql('postgres',
	q{SELECT resets_at - period FROM enrich.credits_by_role WHERE role = 'bob'::regrole});
$node->safe_psql('postgres', q{
SET ROLE bob;
SELECT count(enrich.enqueue_company(format('q-bob-%s.com', g))) FROM generate_series(1, 7) g;
});
ok(poll_until($node, q{SELECT count(*) FROM enrich.queue WHERE key LIKE 'q-bob-%' AND status = 'done'}, '7', 60),
	'bob\'s items complete as his periods turn');
my $per = $node->safe_psql('postgres', qq{
SELECT string_agg(c::text, ',' ORDER BY p)
  FROM (SELECT floor(extract(epoch FROM at - '$start'::timestamptz) / 2) p, count(*) c
          FROM enrich.ledger WHERE key LIKE 'q-bob-%' GROUP BY 1) s});
note "bob's charges per 2 s period: $per";
is(scalar(grep { $_ > 3 } split /,/, $per), 0, 'no period of his spent more than 3');
cmp_ok(scalar(split /,/, $per), '>=', 3, 'his work spread over at least three periods');

# 6. An immediate shutdown keeps alice's use; an answer she bought in a
# transaction still open at the shutdown comes in from the spool and
# counts; her budget still cannot be overspent.
$node->stop('immediate');
$node->start;
is(budget('alice'), '12/10/2', 'after an immediate shutdown alice has used 10');
my $open = $node->background_psql('postgres', on_error_stop => 0);
$open->query_safe(q{SET ROLE alice; BEGIN; SELECT enrich_company('open-alice.com') IS NOT NULL;});
is(budget('alice'), '12/11/1', 'a transaction of hers, still open, bought one');
$node->stop('immediate');
eval { $open->quit };
$node->start;
ok(poll_until($node, q{SELECT count(*) FROM enrich.ledger WHERE key = 'open-alice.com' AND role = 'alice'::regrole}, '1', 30),
	'its charge reaches the ledger from the spool, on her behalf');
ok(poll_until($node, q{SELECT used FROM enrich.credits_by_role WHERE role = 'alice'::regrole}, '11', 30),
	'and counts in her budget once');
my ($bought, $refused) = (0, 0);
for my $g (1 .. 4)
{
	my $s = as_role('alice', "SELECT enrich_company('after-$g.com')");
	if ($s eq '') { $bought++ }
	elsif ($s =~ /^38R02 the credit budget of role "alice"/) { $refused++ }
}
is("$bought/$refused", '1/3', 'after the restarts she buys her last one and is refused after');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM enrich.ledger
 WHERE role IN ('alice'::regrole, 'carol'::regrole)
   AND at >= (SELECT period_start FROM enrich.role_credit_limits WHERE role = 'alice'::regrole)}), '12',
	'the charges of her budget in the ledger since it was set: exactly 12');
is(budget('alice'), '12/12/0', 'enrich.credits_by_role: all 12 used');
is(charged(), $node->safe_psql('postgres', q{SELECT count(*) FROM enrich.ledger}),
	'the provider charged what the ledger has');

# 7. A session terminated with a request in flight gives back the credit
# it reserved of its role's budget.  (The provider charged the request it
# sent: from here on it has charged one more than the ledger has.)
$node->safe_psql('postgres', q{SELECT enrich.set_role_credit_limit('dave', 'leadlex', 1)});
emu_control({ latency_ms => 5000 });
my $slow = $node->background_psql('postgres', on_error_stop => 0);
$slow->query_until(qr/sent/, q(\echo sent
SET ROLE dave;
SELECT enrich_company('slow-dave.com');
));
ok(poll_until($node, q{SELECT remaining FROM enrich.credits_by_role WHERE role = 'dave'::regrole}, '0', 30),
	'dave\'s only credit is reserved by his request in flight');
$node->safe_psql('postgres', q{
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%slow-dave.com%' AND pid <> pg_backend_pid()});
eval { $slow->quit };
ok(poll_until($node, q{SELECT used || '/' || remaining FROM enrich.credits_by_role WHERE role = 'dave'::regrole}, '0/1', 30),
	'terminated, it is given back');
emu_control({ latency_ms => 0 });
is(as_role('dave', q{SELECT enrich_company('after-slow-dave.com')}), '', 'and dave buys with it');
like(as_role('dave', q{SELECT enrich_company('after-slow-dave-2.com')}), qr/^38R02 the credit budget of role "dave"/,
	'and no more');
$node->safe_psql('postgres', q{SELECT enrich.set_role_credit_limit('dave', 'leadlex', NULL)});

# 8. Removing a limit: alice spends again, and the view no longer shows it.
$node->safe_psql('postgres', q{SELECT enrich.set_role_credit_limit('alice', 'leadlex', NULL)});
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.credits_by_role WHERE role = 'alice'::regrole}), '0',
	'her budget is gone from enrich.credits_by_role');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.role_credit_limits WHERE role = 'alice'::regrole}), '0',
	'and from enrich.role_credit_limits');
is(as_role('alice', q{SELECT enrich_company('free-again.com')}), '', 'and she may spend again');

$node->stop;
done_testing();
