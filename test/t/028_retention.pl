# Queue retention: the worker deletes finished items (done, no_match,
# failed) that finished longer than enrich.queue_retention ago, and never
# an unfinished one (queued, waiting_credits), however old; the cached
# answers stay.  -1 keeps every finished item, 0 none.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EnrichTest;

start_emulator();
my $node = enrich_node('retention');
emu_control({ reset => JSON::PP::true,
	faults => [ { provider => 'leadlex', kind => 'status', status => 400, match => 'fail-r' } ] });
set_conf($node, 'enrich.queue_retention' => '1h');
is($node->safe_psql('postgres', q{SELECT setting || unit FROM pg_settings WHERE name = 'enrich.queue_retention'}), '3600s',
	'enrich.queue_retention is an interval in seconds');

# Finished items of every kind, some to be made old.
$node->safe_psql('postgres', q{
SELECT count(enrich.enqueue_company(k)) FROM (
  SELECT 'old-' || i || '.com' FROM generate_series(1, 20) i
  UNION ALL SELECT 'new-' || i || '.com' FROM generate_series(1, 20) i
  UNION ALL VALUES ('nomatch-r1.com'), ('fail-r1.com')) s(k);
});
is($node->safe_psql('postgres', q{SELECT enrich.wait('60 s')}), 't', 'the items are finished');
is($node->safe_psql('postgres', q{SELECT string_agg(status || '=' || n, ',' ORDER BY status)
	FROM (SELECT status, count(*) n FROM enrich.queue GROUP BY status) s}),
	'done=40,failed=1,no_match=1', 'done, no_match and failed items');

# Unfinished items, old by every timestamp: one not due for a day, one
# waiting for credits.
$node->safe_psql('postgres', q{
SELECT enrich.set_credit_limit('slintel', 0);
SELECT enrich.enqueue_lead('linkedin.com/in/wait-r');
INSERT INTO enrich.queue (kind, key, next_attempt_at) VALUES ('company', 'later-r.com', now() + interval '1 day');
});
ok(poll_until($node, q{SELECT status FROM enrich.queue WHERE kind = 'lead'}, 'waiting_credits'), 'a lead waits for credits');
$node->safe_psql('postgres', q{
UPDATE enrich.queue SET created_at = now() - interval '2 days', updated_at = now() - interval '2 days',
       finished_at = now() - interval '2 days'
 WHERE status IN ('queued', 'waiting_credits');
UPDATE enrich.queue SET finished_at = now() - interval '2 hours'
 WHERE key LIKE 'old-%' OR key IN ('nomatch-r1.com', 'fail-r1.com');
});
my $unfinished = q{SELECT string_agg(key || '=' || status, ',' ORDER BY key) FROM enrich.queue
	WHERE status NOT IN ('done', 'no_match', 'failed')};
my $cache = q{SELECT count(*) FROM enrich.companies};
my $cached = $node->safe_psql('postgres', $cache);

# 1 hour: the items finished 2 hours ago go, the others stay.
ok(poll_until($node, q{SELECT count(*) FROM enrich.queue WHERE finished_at < now() - interval '1 hour'
	AND status IN ('done', 'no_match', 'failed')}, '0', 60),
	'retention 1h: items finished 2 hours ago are deleted (done, no_match, failed)');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.queue WHERE key LIKE 'new-%' AND status = 'done'}), '20',
	'items finished just now stay');
is($node->safe_psql('postgres', $unfinished), 'https://www.linkedin.com/in/wait-r=waiting_credits,later-r.com=queued',
	'unfinished items stay, however old');
is($node->safe_psql('postgres', $cache), $cached, 'the cached answers stay');

# -1: nothing finished is deleted.  The pass that deletes also queues
# again an item left in flight: once that one is done, a pass has run.
set_conf($node, 'enrich.queue_retention' => '-1');
$node->safe_psql('postgres', q{
UPDATE enrich.queue SET finished_at = now() - interval '2 days' WHERE status = 'done';
INSERT INTO enrich.queue (kind, key, status, attempts) VALUES ('company', 'marker-r.com', 'in_flight', 1);
});
ok(poll_until($node, q{SELECT status FROM enrich.queue WHERE key = 'marker-r.com'}, 'done', 60),
	'a queue pass has run (an orphaned item in flight was queued again and done)');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrich.queue WHERE key LIKE 'new-%' AND status = 'done'}), '20',
	'retention -1: items finished 2 days ago stay');

# 0: no finished item stays.
set_conf($node, 'enrich.queue_retention' => '0');
ok(poll_until($node, q{SELECT count(*) FROM enrich.queue WHERE status IN ('done', 'no_match', 'failed')}, '0', 60),
	'retention 0: every finished item is deleted');
is($node->safe_psql('postgres', $unfinished), 'https://www.linkedin.com/in/wait-r=waiting_credits,later-r.com=queued',
	'unfinished items stay');
is($node->safe_psql('postgres', $cache), $cached + 1, 'the cached answers stay (and the marker\'s)');
is($node->safe_psql('postgres', q{SELECT enrich_company('new-7.com')->>'domain'}), 'new-7.com', 'and are served');
is(emu_ledger()->{requests_by_input}{leadlex}{'new-7.com'}, 1, 'with no second request');

$node->stop;
done_testing();
