# LeadLex as documented (issue 17), against the emulator's workspace
# records: a refresh (and a re-fetch of a stale key) asks LeadLex to
# overwrite, so new data reaches the cache, enrich_company() and the
# auto_enrich targets; enrich.leadlex_overwrite = never stays fill-only;
# enrich.enrich_company_by_id; enrich.leadlex_fields on the wire and in
# the cache.  What was sent is read from the emulator's request capture,
# what was paid from its ledger.
use strict;
use warnings;
use HTTP::Tiny;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EnrichTest;

my $emu = start_emulator();
my $node = enrich_node('leadlex_full');
emu_control({ reset => JSON::PP::true, capture => 1000 });

sub sql { return $node->safe_psql('postgres', $_[0]); }

# The LeadLex requests captured since the last call (bodies decoded), and
# the capture emptied.
sub captured
{
	my $r = HTTP::Tiny->new->get("$emu->{url}/_captured");
	die "capture failed: $r->{status}" unless $r->{success};
	my @reqs = grep { $_->{provider} eq 'leadlex' } @{ decode_json($r->{content})->{requests} };
	emu_control({ capture => 1000 });
	for my $q (@reqs)
	{
		$q->{json} = decode_json($q->{body});
		($q->{idem}) = map { $_->[1] } grep { lc($_->[0]) eq 'idempotency-key' } @{ $q->{headers} };
	}
	return @reqs;
}

# The captured requests for one domain (or company id).
sub sent_for
{
	my ($what, @reqs) = @_;
	return grep { ($_->{json}{domain} // $_->{json}{company_id} // '') eq $what } @reqs;
}

sub charged { return emu_ledger()->{charged_total}{leadlex}; }

sub wait_idle
{
	is(sql(q{SELECT enrich.wait('60 s')}), 't', "enrich.wait: $_[0]");
}

# ---- a refresh that really refreshes --------------------------------------

sql(q{
CREATE TABLE accounts (id int PRIMARY KEY, domain text, info jsonb);
SELECT enrich.auto_enrich('accounts', 'company', 'domain', 'info');
INSERT INTO accounts VALUES (1, 'refresh-a.com'), (2, 'www.refresh-b.com');
});
wait_idle('first fill');
my @first = captured();
is(scalar(@first), 2, 'two requests for the first fill');
ok(!grep({ exists $_->{json}{overwrite} } @first), 'a first fetch does not send overwrite');
my $v0 = sql(q{SELECT result->>'industry' FROM enrich.companies WHERE domain = 'refresh-a.com'});
is(sql(q{SELECT array_to_string(fields_updated, ',') FROM enrich.companies WHERE domain = 'refresh-a.com'}),
	'industry,size,founded_year,hq_location', 'the cache keeps fields_updated');

# The provider's data changes; a refresh asks for it with overwrite.
emu_control({ data_version => 1 });
my $before = charged();
is(sql(q{SELECT enrich.refresh('company', '0 s')}), '2', 'refresh queues both companies');
wait_idle('refresh');
my @refresh = captured();
is(scalar(@refresh), 2, 'two requests for the refresh');
is(scalar(grep { ($_->{json}{overwrite} // 0) == 1 } @refresh), 2, 'each sends "overwrite": true');
is(charged() - $before, 2, 'one credit per key');
my $v1 = sql(q{SELECT result->>'industry' FROM enrich.companies WHERE domain = 'refresh-a.com'});
isnt($v1, $v0, "the cache has the new industry ($v0 -> $v1)");
like(sql(q{SELECT array_to_string(fields_updated, ',') FROM enrich.companies WHERE domain = 'refresh-a.com'}),
	qr/industry/, 'and fields_updated says so');
is(sql(q{SELECT enrich_company('refresh-a.com')->>'industry'}), $v1, 'enrich_company() returns the new value');
is(sql(q{SELECT info->>'industry' FROM accounts WHERE id = 1}), $v1, 'so does the auto_enrich target');
is(sql(q{SELECT refreshes_unchanged FROM enrich.stats WHERE provider = 'leadlex'}), '0',
	'no refresh was unchanged so far');

# A refresh of data that has not changed is counted as such.
sql(q{SELECT enrich.refresh('company', '0 s')});
wait_idle('second refresh');
captured();
is(sql(q{SELECT bool_and(fields_updated = '{}') FROM enrich.companies WHERE domain LIKE 'refresh-%'}),
	't', 'the second refresh changed no field');
is(sql(q{SELECT refreshes_unchanged FROM enrich.stats WHERE provider = 'leadlex'}), '2',
	'enrich.stats counts the unchanged refreshes');

# ---- a stale answer, re-fetched synchronously -----------------------------

is(sql(q{SELECT enrich_company('sync-a.com')->>'domain'}), 'sync-a.com', 'a synchronous first fetch');
my ($s1) = sent_for('sync-a.com', captured());
ok(!exists $s1->{json}{overwrite}, 'without overwrite');
emu_control({ data_version => 2 });
my $old = sql(q{SELECT result->>'industry' FROM enrich.companies WHERE domain = 'sync-a.com'});
my $new = sql(q{SET enrich.cache_ttl = 0; SELECT enrich_company('sync-a.com')->>'industry'});
my ($s2) = sent_for('sync-a.com', captured());
is($s2->{json}{overwrite}, 1, 'the re-fetch of a stale answer sends "overwrite": true');
isnt($s2->{idem}, $s1->{idem}, 'under an Idempotency-Key of its own, the same day');
isnt($new, $old, 'and returns the new value');

# enrich.leadlex_overwrite = never: fill-only, even when re-fetching.
emu_control({ data_version => 3 });
my $kept = sql(q{SET enrich.cache_ttl = 0; SET enrich.leadlex_overwrite = never;
  SELECT enrich_company('sync-a.com')->>'industry'});
my ($s3) = sent_for('sync-a.com', captured());
ok($s3 && !exists $s3->{json}{overwrite}, 'leadlex_overwrite = never sends no overwrite');
is($kept, $new, 'and the workspace keeps its values');
is(sql(q{SET enrich.leadlex_overwrite = always; SELECT enrich_company('always-co.com')->>'domain'}),
	'always-co.com', 'leadlex_overwrite = always');
my ($s4) = sent_for('always-co.com', captured());
is($s4->{json}{overwrite}, 1, 'always overwrites on a first fetch too');

# ---- by company id --------------------------------------------------------

my $id = sql(q{SELECT enrich_company('byid-co.com')->>'id'});
sql(q{DELETE FROM enrich.companies WHERE domain = 'byid-co.com'});
captured();
$before = charged();
is(sql(qq{SELECT enrich.enrich_company_by_id('$id')->>'domain'}), 'byid-co.com', 'enrich_company_by_id answers');
my @byid = captured();
is_deeply([ map { $_->{json} } @byid ], [ { company_id => $id } ], 'sending {"company_id": ...}');
is(charged() - $before, 1, 'one credit');
is(sql(q{SELECT count(*) FROM enrich.companies WHERE domain = 'byid-co.com' AND result->>'id' IS NOT NULL}), '1',
	'cached under the domain of the answer');
my $requests = emu_ledger()->{requests}{leadlex};
is(sql(q{SELECT enrich_company('BYID-CO.com')->>'id'}), $id, 'enrich_company(that domain) is then a hit');
is(sql(qq{SELECT enrich.enrich_company_by_id('$id')->>'id'}), $id, 'so is the same id again');
is(emu_ledger()->{requests}{leadlex}, $requests, 'with no request');

$before = charged();
my $rows = sql(q{SELECT count(*) FROM enrich.companies});
is(sqlstate_of($node, 'postgres', q{SELECT enrich.enrich_company_by_id('0b0e1c7a-5d2f-4e3a-9b8c-7d6e5f4a3b2c')}),
	'38R08', 'an unknown id raises 38R08');
is(charged(), $before, 'and costs nothing');
is(sql(q{SELECT count(*) FROM enrich.companies}), $rows, 'and caches nothing');
is(sqlstate_of($node, 'postgres', q{SELECT enrich.enrich_company_by_id('not an id')}), '22023',
	'an id with blanks is refused before any request');
is(sql(q{SELECT has_function_privilege('public', 'enrich.enrich_company_by_id(text)', 'EXECUTE')}), 'f',
	'EXECUTE is not granted to PUBLIC');

# ---- field selection ------------------------------------------------------

is(sql(q{SET enrich.leadlex_fields = 'Industry, name'; SHOW enrich.leadlex_fields}), 'name,industry',
	'leadlex_fields is kept in the document\'s order');
is(sql(q{SET enrich.leadlex_fields = 'industry,name';
  SELECT string_agg(k, ',') FROM jsonb_object_keys(enrich_company('fields-co.com')) k}),
	'id,name,domain,industry', 'the answer has the fields asked for');
my ($f1) = sent_for('fields-co.com', captured());
is_deeply($f1->{json}{fields}, [ 'name', 'industry' ], 'sent as "fields"');
is(sql(q{SELECT fields::text FROM enrich.companies WHERE domain = 'fields-co.com'}), '{name,industry}',
	'the cache records the fields asked for');
$requests = emu_ledger()->{requests}{leadlex};
sql(q{SET enrich.leadlex_fields = 'industry'; SELECT enrich_company('fields-co.com')});
sql(q{SET enrich.leadlex_fields = 'name,industry'; SELECT enrich_company('fields-co.com')});
is(emu_ledger()->{requests}{leadlex}, $requests, 'the same or a narrower setting is a hit');
is(sql(q{SET enrich.leadlex_fields = 'name,industry,size'; SELECT enrich.estimate_credits('company', ARRAY['fields-co.com'])}),
	'1', 'a wider setting counts as a miss');
is(sql(q{SET enrich.leadlex_fields = 'name,industry,size'; SELECT enrich_company('fields-co.com') ? 'size'}), 't',
	'a wider setting refetches');
is(emu_ledger()->{requests}{leadlex}, $requests + 1, 'with one request');
sql(q{SELECT enrich_company('fields-co.com')});
is(emu_ledger()->{requests}{leadlex}, $requests + 2, 'all fields (empty) is wider than any list');
is(sql(q{SELECT fields IS NULL FROM enrich.companies WHERE domain = 'fields-co.com'}), 't',
	'an answer with all fields records NULL');
is(sqlstate_of($node, 'postgres', q{SET enrich.leadlex_fields = 'revenue'}), '22023', 'an unknown field is refused');
sql(q{CREATE ROLE analyst LOGIN});
is(sqlstate_of($node, 'postgres', q{SET ROLE analyst; SET enrich.leadlex_fields = 'name'}), '42501',
	'only a superuser sets leadlex_fields');
is(sqlstate_of($node, 'postgres', q{SET ROLE analyst; SET enrich.leadlex_overwrite = never}), '42501',
	'and leadlex_overwrite');

is(emu_ledger()->{internal_errors}, 0, 'the emulator had no internal error');
done_testing();
