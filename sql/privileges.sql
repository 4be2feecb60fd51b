-- Privileges: keys hidden, URLs superuser-only, credit-spending functions
-- granted by a DBA, cache tables closed to ordinary roles.
\! "$EMU_CTL" reset
CREATE ROLE enrich_analyst LOGIN;
CREATE ROLE enrich_nobody LOGIN;
GRANT EXECUTE ON FUNCTION enrich_company(text), enrich_lead(text) TO enrich_analyst;

-- Shows SQLSTATE, and whether the secret appears anywhere in the error.
CREATE FUNCTION public.try_secret(stmt text, secret text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE m text; d text; h text;
BEGIN
  EXECUTE stmt;
  RETURN 'ok';
EXCEPTION WHEN others THEN
  GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  RETURN SQLSTATE || ': ' || m || CASE WHEN concat(m, d, h) LIKE '%' || secret || '%'
                                       THEN ' (SECRET LEAKED)' ELSE ' (no secret in error)' END;
END $$;

SET ROLE enrich_nobody;
-- keys are invisible
SHOW enrich.leadlex_api_key;
SHOW enrich.slintel_api_key;
SELECT count(*) AS visible_keys FROM pg_settings WHERE name LIKE 'enrich.%api_key';
SELECT current_setting('enrich.leadlex_api_key', true) IS NULL AS hidden;
SELECT name FROM pg_settings WHERE name LIKE 'enrich.%' ORDER BY name;
-- URLs, CA file, keys and size limit cannot be changed
SET enrich.leadlex_url = 'https://evil.example/';
SET enrich.slintel_url = 'https://evil.example/';
SET enrich.ca_file = '/tmp/evil.pem';
SET enrich.leadlex_api_key = 'mine';
SET enrich.max_response_size = '1GB';
-- user settings can be
SET enrich.cache_ttl = '1d';
RESET enrich.cache_ttl;
-- no EXECUTE on credit-spending functions without a grant
SELECT enrich_company('acme.com');
SELECT enrich_lead('linkedin.com/in/jane');
-- normalisers are for everyone
SELECT enrich.normalize_domain('WWW.Acme.COM');
-- the cache tables are closed
SELECT * FROM enrich.companies;
INSERT INTO enrich.companies (domain, matched, fetched_at) VALUES ('evil.com', false, now());
RESET ROLE;

SET ROLE enrich_analyst;
SELECT enrich_company('acme.com')->>'name' AS name;
SELECT enrich_company('acme.com')->>'name' AS cached_name;
SELECT enrich_lead('linkedin.com/in/deepak-anchala-0043707')->>'name' AS lead;
SELECT enrich_company('ledger-analyst.com') IS NOT NULL AS paid;
SELECT * FROM enrich.companies;
UPDATE enrich.companies SET result = '{}';
RESET ROLE;
SELECT count(*) AS rows_written_for_analyst FROM enrich.companies WHERE domain = 'acme.com';
\set ledger `"$EMU_CTL" ledger`
SELECT ledger(:'ledger', 'charged', 'leadlex', 'wbk_test_key') AS charged;
-- each of those charges is in enrich.ledger once, as the analyst's
SELECT provider, key, role, path, database = current_database() AS here,
       (request_id IS NOT NULL) = (provider = 'leadlex') AS request_id_when_sent
  FROM enrich.ledger WHERE role = 'enrich_analyst'::regrole ORDER BY provider, key;
SELECT provider, role, credits FROM enrich.spend
 WHERE day = current_date AND role = 'enrich_analyst'::regrole ORDER BY provider;
-- which ordinary roles can neither read nor write
SET ROLE enrich_analyst;
SELECT count(*) FROM enrich.ledger;
SELECT * FROM enrich.spend;
INSERT INTO enrich.ledger (charge, at, provider, key, path) VALUES (gen_random_uuid(), now(), 'leadlex', 'x.com', 'sync');
DELETE FROM enrich.ledger;
RESET ROLE;

-- a rejected key never shows in the error (as superuser, even with detail)
SET enrich.leadlex_api_key = 'wbk_secret_NOT_VALID_123';
SELECT try_secret('SELECT enrich_company(''secret-test.com'')', 'wbk_secret_NOT_VALID_123') AS bad_key;
RESET enrich.leadlex_api_key;
-- header injection through a key is refused before any request
SET enrich.leadlex_api_key = E'wbk_test_key\r\nX-Evil: 1';
SELECT try_secret('SELECT enrich_company(''inject-test.com'')', 'X-Evil') AS injected;
RESET enrich.leadlex_api_key;

DROP FUNCTION try_secret(text, text);
REVOKE ALL ON FUNCTION enrich_company(text), enrich_lead(text) FROM enrich_analyst;
DROP ROLE enrich_analyst;
DROP ROLE enrich_nobody;
