# pg_cron runs enrich.refresh on a schedule: the README's recipe, on a
# one-minute schedule, reaches the provider and is logged as succeeded.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EnrichTest;

# pg_cron (Debian's postgresql-15-cron) must be installed.
my $sharedir = `pg_config --sharedir`;
chomp $sharedir;
plan skip_all => 'pg_cron is not installed' unless -e "$sharedir/extension/pg_cron.control";

start_emulator();
my $node = enrich_node('cron', extra_conf => <<'CONF');
shared_preload_libraries = 'enrich,pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 16
CONF
emu_control({ reset => JSON::PP::true });

sub sql { return $node->safe_psql('postgres', $_[0]); }

isnt(worker_pid($node), '', 'the enrich worker runs next to pg_cron');
sql('CREATE EXTENSION pg_cron');
is(sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher'}), '1', 'the pg_cron launcher runs');

# Fill the cache with 8 answers and age 5 of them (distinct ages).
sql(q{SELECT count(enrich_company(format('cron-%s.com', g))) FROM generate_series(1, 8) g});
sql(q{UPDATE enrich.companies SET fetched_at = now() - make_interval(days => 10 + substr(domain, 6, 1)::int)
       WHERE domain IN ('cron-1.com', 'cron-2.com', 'cron-3.com', 'cron-4.com', 'cron-5.com')});
is(emu_ledger()->{requests}{leadlex}, 8, '8 answers cached');
emu_control({ reset => JSON::PP::true });

my $jobid = sql(q{SELECT cron.schedule('enrich-refresh', '* * * * *',
  $$SELECT enrich.refresh(older_than => '0 seconds', max_items => 5)$$)});
like($jobid, qr/^\d+$/, "cron.schedule gave job $jobid");

# pg_cron runs at the next minute boundary: wait for the refreshed requests.
my $t0 = time();
my $seen = 0;
while (time() - $t0 < 90)
{
	my $l = emu_ledger();
	my $n = grep { ($l->{requests_by_input}{leadlex}{"cron-$_.com"} // 0) >= 1 } 1 .. 5;
	if ($n == 5) { $seen = 1; last; }
	sleep 1;
}
ok($seen, sprintf('the scheduled refresh reached the emulator (%.0f s after scheduling)', time() - $t0));
my $l = emu_ledger();
is(join(',', map { $l->{requests_by_input}{leadlex}{"cron-$_.com"} // 0 } 1 .. 8), '1,1,1,1,1,0,0,0',
	'the 5 stalest answers were asked again, the 3 fresh ones not (first run)');

sql(q{SELECT cron.unschedule('enrich-refresh')});
ok(poll_until($node, qq{SELECT count(*) > 0 FROM cron.job_run_details WHERE jobid = $jobid AND status = 'succeeded'}, 't', 30),
	'cron.job_run_details shows a succeeded run');
is(sql(qq{SELECT count(*) FROM cron.job_run_details WHERE jobid = $jobid AND status = 'failed'}), '0', 'and no failed run');
is(sql(q{SELECT enrich.wait('30 s')}), 't', 'the refresh items are done');
is(sql(q{SELECT string_agg(key, ',' ORDER BY key) FROM (SELECT DISTINCT key FROM enrich.queue WHERE refresh) s}),
	'cron-1.com,cron-2.com,cron-3.com,cron-4.com,cron-5.com', 'the queue holds refresh items for those 5');
is(sql(q{SELECT count(*) FROM enrich.companies WHERE fetched_at > now() - interval '5 minutes'}), '8',
	'every answer is fresh now');

$node->stop;
done_testing();
