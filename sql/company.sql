-- enrich_company(): LeadLex over kept-alive HTTPS, cached.
\! "$EMU_CTL" reset
SELECT pg_backend_pid() AS pid \gset

-- the seed example from the provider's document
SELECT enrich_company('acme.com')->>'name' AS name;
SELECT jsonb_pretty(enrich_company('acme.com'));
\set ledger `"$EMU_CTL" ledger`
SELECT ledger(:'ledger', 'requests', 'leadlex') AS requests,
       ledger(:'ledger', 'charged', 'leadlex', 'wbk_test_key') AS charged;

-- variants of the same company cost nothing more
SELECT input, enrich_company(input)->>'name' AS name
  FROM (VALUES ('ACME.COM'), ('https://www.acme.com/about?x=1'), ('jane@acme.com'),
               ('http://blog.acme.com:8080/'), ('acme.com.')) v(input);
\set ledger `"$EMU_CTL" ledger`
SELECT ledger(:'ledger', 'requests', 'leadlex') AS requests,
       ledger(:'ledger', 'charged', 'leadlex', 'wbk_test_key') AS charged;

-- provider metadata is kept in the cache table
SELECT domain, matched, result->>'name' AS name, source, confidence,
       request_id LIKE 'req_%' AS has_request_id, fetched_at <= now() + interval '1 min' AS fetched
  FROM enrich.companies ORDER BY domain;

-- no match: NULL, remembered, never charged
SELECT enrich_company('nomatch-1.com') IS NULL AS no_match;
SELECT enrich_company('www.nomatch-1.com') IS NULL AS no_match_again;
SELECT domain, matched, result FROM enrich.companies WHERE domain = 'nomatch-1.com';
\set ledger `"$EMU_CTL" ledger`
SELECT ledger(:'ledger', 'requests', 'leadlex') AS requests,
       ledger(:'ledger', 'by_status', 'leadlex', '409') AS no_matches,
       ledger(:'ledger', 'charged', 'leadlex', 'wbk_test_key') AS charged;

-- synthetic answers are deterministic
SELECT enrich_company('example.org')->>'domain' AS domain,
       (enrich_company('example.org')->>'name') IS NOT NULL AS has_name;

-- a stale answer is asked for again, a fresh one is not; the re-fetch
-- asks LeadLex to overwrite its record, under an Idempotency-Key of its
-- own (the first fetch's would replay that answer): charged, no replay
SET enrich.cache_ttl = 0;
SELECT enrich_company('acme.com')->>'name' AS refetched;
RESET enrich.cache_ttl;
SELECT enrich_company('acme.com')->>'name' AS cached;
SET enrich.no_match_ttl = 0;
SELECT enrich_company('nomatch-1.com') IS NULL AS no_match_refetched;
RESET enrich.no_match_ttl;
\set ledger `"$EMU_CTL" ledger`
SELECT ledger(:'ledger', 'requests', 'leadlex') AS requests,
       ledger(:'ledger', 'charged', 'leadlex', 'wbk_test_key') AS charged,
       ledger(:'ledger', 'idempotent_replays') AS replays;

-- one kept-alive connection serves every call of the session
\! "$EMU_CTL" control '{"latency_ms": 0}'
\set before `"$EMU_CTL" ledger`
SELECT count(enrich_company(format('keepalive-%s.com', i))) FROM generate_series(1, 20) i;
\set after `"$EMU_CTL" ledger`
SELECT ledger(:'after', 'connections', 'https')::int - ledger(:'before', 'connections', 'https')::int AS new_connections,
       ledger(:'after', 'requests', 'leadlex')::int - ledger(:'before', 'requests', 'leadlex')::int AS requests;

-- NULL in, NULL out (STRICT), no request
SELECT enrich_company(NULL) IS NULL AS null_in;

-- invalid input: 22023 quoting the input, no request
\set VERBOSITY default
SELECT enrich_company('not a domain');
SELECT enrich_company('localhost');
\set ledger `"$EMU_CTL" ledger`
SELECT ledger(:'ledger', 'requests', 'leadlex') AS requests;

SELECT pg_backend_pid() = :pid AS same_backend;
