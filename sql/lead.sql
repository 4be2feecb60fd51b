-- enrich_lead(): Slintel over kept-alive HTTPS, cached.
\! "$EMU_CTL" reset
SELECT pg_backend_pid() AS pid \gset

-- the seed example from the provider's document
SELECT enrich_lead('http://www.linkedin.com/in/deepak-anchala-0043707')->>'name' AS name;
SELECT enrich_lead('linkedin.com/in/deepak-anchala-0043707') = enrich_lead('https://www.linkedin.com/in/deepak-anchala-0043707') AS same;
SELECT jsonb_pretty(enrich_lead('https://uk.linkedin.com/in/Deepak-Anchala-0043707/?trk=x#top')) AS lead;
\set ledger `"$EMU_CTL" ledger`
SELECT ledger(:'ledger', 'requests', 'slintel') AS requests,
       ledger(:'ledger', 'charged', 'slintel', 'sl_test_key') AS charged;
SELECT linkedin_url, matched, result->>'company_name' AS company FROM enrich.leads ORDER BY 1;

-- no match (404) is NULL, remembered and free; empty data is NULL too,
-- but Slintel charges it (every successful response is charged)
SELECT enrich_lead('https://www.linkedin.com/in/nomatch-person') IS NULL AS no_match_404;
SELECT enrich_lead('https://www.linkedin.com/in/empty-person') IS NULL AS no_match_empty;
SELECT enrich_lead('https://www.linkedin.com/in/nomatch-person') IS NULL AS remembered;
SELECT enrich_lead('https://www.linkedin.com/in/empty-person') IS NULL AS remembered;
SELECT linkedin_url, matched, result FROM enrich.leads WHERE NOT matched ORDER BY 1;
\set ledger `"$EMU_CTL" ledger`
SELECT ledger(:'ledger', 'requests', 'slintel') AS requests,
       ledger(:'ledger', 'by_status', 'slintel', '404') AS not_found,
       ledger(:'ledger', 'charged', 'slintel', 'sl_test_key') AS charged;

-- synthetic leads are deterministic, percent-encoded slugs are one key
SELECT enrich_lead('https://www.linkedin.com/in/j%c3%bcrgen-m') = enrich_lead('linkedin.com/in/jürgen-m') AS same_person;
SELECT linkedin_url FROM enrich.leads WHERE linkedin_url LIKE '%rgen%';
\set ledger `"$EMU_CTL" ledger`
SELECT ledger(:'ledger', 'requests', 'slintel') AS requests;

-- invalid inputs are refused before any request
\set VERBOSITY default
SELECT enrich_lead('https://www.linkedin.com/company/acme');
SELECT enrich_lead('https://www.linkedin.com/sales/lead/ACwAA123');
SELECT enrich_lead('https://example.com/in/jane');
\set ledger `"$EMU_CTL" ledger`
SELECT ledger(:'ledger', 'requests', 'slintel') AS requests;

SELECT pg_backend_pid() = :pid AS same_backend;
