# The cache rows of synchronous answers are written at the end of the
# statement that bought them, with their ledger rows, in one statement per
# kind (cache_pending.c, issue 16); until then the session's lookups find
# them in memory, and the spool keeps them safe.  Checked here: a key asked
# twice in one statement is bought once; the rows are in the tables when
# the statement ends, inside an open transaction; a statement that fails
# leaves no row but loses no answer; a subtransaction that rolls back
# keeps its paid answer; a lookup by company id, a batch call and
# estimate_credits in the same statement see the answers; a long loop that never ends its
# statement writes every 256 answers; a procedure that commits in its loop
# leaves no spool file; a miss in a read-only transaction buys nothing.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EnrichTest;

my $emu = start_emulator();
my $node = enrich_node('pending');
emu_control({ reset => JSON::PP::true, latency_ms => 0, latency_jitter_ms => 0 });

sub requests { return emu_ledger()->{requests}{leadlex} // 0 }
sub sql { return $node->safe_psql('postgres', $_[0]) }

# the spool files of synchronous calls left in pg_enrich
sub spool_files
{
	return sql(q{SELECT count(*) FROM pg_ls_dir('pg_enrich') f WHERE f LIKE 'sync-%' OR f LIKE 'key-%'});
}

# 1. One key three times in one statement (two spellings): one request
my $r0 = requests();
is(sql(q{SELECT count(DISTINCT enrich_company(d)::text) FROM (VALUES ('rep.com'), ('rep.com'), ('https://www.REP.com/')) v(d)}),
	'1', 'the same answer three times');
is(requests() - $r0, 1, 'a key asked three times in one statement was bought once');
is(sql(q{SELECT count(*) FROM enrich.companies WHERE domain = 'rep.com'}), '1', 'its row is in the cache');
is(sql(q{SELECT count(*) FROM enrich.ledger WHERE key = 'rep.com'}), '1', 'and its charge in the ledger, once');
is(spool_files(), '0', 'the commit left no spool file');

# 1b. A procedure that commits in its loop
sql(q{CREATE PROCEDURE each_commits(n int) LANGUAGE plpgsql AS $$
BEGIN
	FOR g IN 1 .. n LOOP
		PERFORM enrich_company(format('proc-%s.com', g));
		COMMIT;
	END LOOP;
END $$});
sql(q{CALL each_commits(5)});
is(sql(q{SELECT count(*) FROM enrich.companies WHERE domain LIKE 'proc-%'}), '5', 'each commit wrote its row');
is(spool_files(), '0', 'and left no spool file');

# 2. The rows are written when the statement ends, inside the transaction
is($node->safe_psql('postgres', q{
BEGIN;
SELECT count(enrich_company(format('vis-%s.com', g))) FROM generate_series(1, 30) g;
SELECT count(*) FROM enrich.companies WHERE domain LIKE 'vis-%';
SELECT count(*) FROM enrich.ledger WHERE key LIKE 'vis-%';
COMMIT;}), "30\n30\n30", 'the next statement of the transaction sees the 30 rows and their 30 charges');

# 3. A statement that fails after five answers: no row, no answer lost
$r0 = requests();
my ($rc, $out, $err) = $node->psql('postgres',
	q{SELECT enrich_company(format('err-%s.com', g)) IS NOT NULL, CASE WHEN g = 5 THEN 1 / (random() * 0)::int END FROM generate_series(1, 10) g});
like($err, qr/division by zero/, 'the statement failed after its fifth answer');
is(requests() - $r0, 5, 'five answers were bought');
# (their rows went with the statement; the worker, woken by the abort,
# may take the answers in from the spool before the next call does)
is(sql(q{SELECT count(enrich_company(format('err-%s.com', g))) FROM generate_series(1, 5) g}), '5',
	'asked again, the five are answered');
is(requests() - $r0, 5, 'from the spool, without a request');
is(sql(q{SELECT count(*) FROM enrich.ledger WHERE key LIKE 'err-%'}), '5', 'and each charge is in the ledger once');

# 4. A subtransaction that rolls back after a call keeps the paid answer
$r0 = requests();
sql(q{DO $$BEGIN
	BEGIN
		PERFORM enrich_company('sub-1.com');
		RAISE EXCEPTION 'undo';
	EXCEPTION WHEN raise_exception THEN NULL;
	END;
END$$});
is(sql(q{SELECT count(*) FROM enrich.companies WHERE domain = 'sub-1.com'}), '1',
	'the answer of a rolled-back subtransaction is cached');
is(sql(q{SELECT enrich_company('sub-1.com')->>'domain'}), 'sub-1.com', 'and returned');
is(requests() - $r0, 1, 'bought once');
is(sql(q{SELECT count(*) FROM enrich.ledger WHERE key = 'sub-1.com'}), '1', 'charged once in the ledger');

# 5. By company id, and a batch call, in the statement that bought the answer
$r0 = requests();
is(sql(q{SELECT enrich.enrich_company_by_id(enrich_company('byid.com')->>'id')->>'domain'}), 'byid.com',
	'by id, in the same statement');
is(requests() - $r0, 1, 'the lookup by id found the answer bought just before');
is(sql(q{SELECT enrich_company('mix.com')->>'domain' = (SELECT result->>'domain' FROM enrich_companies(ARRAY['mix.com']))}),
	't', 'a batch call in the same statement');
is(requests() - $r0, 2, 'found it too');
is(sql(q{SELECT enrich_company('est.com') IS NOT NULL, enrich.estimate_credits('company', ARRAY['est.com', 'est-2.com'])}),
	't|1', 'estimate_credits in the same statement counts only the key not yet bought');

# 6. A loop that never ends its statement: written every 256 answers
$r0 = requests();
sql(q{CREATE FUNCTION many(n int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE c int := 0;
BEGIN
	FOR g IN 1 .. n LOOP
		IF enrich_company(format('many-%s.com', g)) IS NOT NULL THEN c := c + 1; END IF;
	END LOOP;
	FOR g IN 1 .. n LOOP
		IF enrich_company(format('many-%s.com', g)) IS NOT NULL THEN c := c + 1; END IF;
	END LOOP;
	RETURN c;
END $$});
is(sql(q{SELECT many(600)}), '1200', '600 misses, then the same 600 again, in one statement');
is(requests() - $r0, 600, 'each bought once');
is(sql(q{SELECT count(*) FROM enrich.companies WHERE domain LIKE 'many-%'}), '600', '600 rows');
is(sql(q{SELECT count(*), count(DISTINCT key) FROM enrich.ledger WHERE key LIKE 'many-%'}), '600|600', '600 charges');

# 8. A read-only transaction is served what is cached, and buys nothing
$r0 = requests();
is(sql(q{BEGIN READ ONLY; SELECT enrich_company('rep.com')->>'domain'; COMMIT;}), 'rep.com',
	'a read-only transaction gets a cached answer');
($rc, $out, $err) = $node->psql('postgres',
	q{BEGIN READ ONLY; SELECT enrich_company('ro-miss.com'); COMMIT;}, extra_params => ['-v', 'VERBOSITY=verbose']);
like($err, qr/25006.*cannot enrich an uncached company in a read-only transaction/,
	'a miss in it fails with 25006');
is(requests() - $r0, 0, 'before any request');

$node->stop;
done_testing();
