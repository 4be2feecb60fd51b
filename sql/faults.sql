-- Every provider fault on the synchronous path ends in a clean ERROR with
-- a stable SQLSTATE, the backend survives, nothing wrong is cached and no
-- credit is charged where none should be.
\! "$EMU_CTL" reset
SELECT pg_backend_pid() AS pid \gset
\getenv emu_https EMU_HTTPS
\getenv emu_wrong EMU_WRONG
\getenv emu_http EMU_HTTP
\getenv emu_ca EMU_CA
SET enrich.request_timeout = '3s';

-- transient failures are retried, and the retry succeeds
\! "$EMU_CTL" control '{"faults": [{"provider": "leadlex", "kind": "status", "status": 500, "count": 2, "match": "retry-500"}, {"provider": "leadlex", "kind": "reset", "count": 1, "match": "retry-reset"}, {"provider": "leadlex", "kind": "reset_mid_body", "count": 1, "match": "retry-midbody"}, {"provider": "slintel", "kind": "status", "status": 503, "count": 1, "match": "retry-503"}]}'
SELECT enrich_company('retry-500.com')->>'domain' AS after_500;
SELECT enrich_company('retry-reset.com')->>'domain' AS after_reset;
SELECT enrich_company('retry-midbody.com')->>'domain' AS after_mid_body_reset;
SELECT enrich_lead('linkedin.com/in/retry-503')->>'linkedin_url' AS after_503;
\set ledger `"$EMU_CTL" ledger`
SELECT ledger(:'ledger', 'requests_by_input', 'leadlex', 'retry-500.com') AS tries_500,
       ledger(:'ledger', 'requests_by_input', 'leadlex', 'retry-reset.com') AS tries_reset,
       ledger(:'ledger', 'charged', 'leadlex', 'wbk_test_key') AS leadlex_charged,
       ledger(:'ledger', 'charged', 'slintel', 'sl_test_key') AS slintel_charged;

-- each fault that persists: the error, then proof nothing was cached
CREATE TEMP TABLE fault_cases (provider text, fault jsonb, key text, settings text);
INSERT INTO fault_cases VALUES
  ('leadlex', '{"kind": "status", "status": 503}', 'down-503.com', 'SET enrich.max_attempts = 3'),
  ('leadlex', '{"kind": "reset"}', 'down-reset.com', 'SET enrich.max_attempts = 2'),
  ('leadlex', '{"kind": "hang"}', 'hang.com', 'SET enrich.request_timeout = ''500ms''; SET enrich.max_attempts = 1'),
  ('leadlex', '{"kind": "slow_drip", "bytes": 1, "interval_ms": 100}', 'drip-slow.com', 'SET enrich.request_timeout = ''700ms''; SET enrich.max_attempts = 1'),
  ('leadlex', '{"kind": "status", "status": 401, "code": "invalid_key"}', 'auth-401.com', ''),
  ('leadlex', '{"kind": "status", "status": 403, "code": "insufficient_permissions"}', 'auth-403.com', ''),
  ('leadlex', '{"kind": "status", "status": 402, "code": "insufficient_credits"}', 'credits-402.com', ''),
  ('leadlex', '{"kind": "status", "status": 400, "code": "validation_error"}', 'bad-400.com', ''),
  ('leadlex', '{"kind": "malformed_json"}', 'malformed.com', ''),
  ('leadlex', '{"kind": "truncated_json"}', 'truncated.com', ''),
  ('leadlex', '{"kind": "huge_body", "bytes": 20000000}', 'huge.com', ''),
  ('leadlex', '{"kind": "huge_body", "bytes": 20000000, "content_length": true}', 'huge-cl.com', ''),
  ('leadlex', '{"kind": "invalid_utf8"}', 'badutf8.com', ''),
  ('leadlex', '{"kind": "nul_escape"}', 'nul.com', ''),
  ('leadlex', '{"kind": "deep_nesting", "depth": 10000}', 'deep.com', ''),
  ('leadlex', '{"kind": "wrong_shape", "shape": "no_data"}', 'nodata.com', ''),
  ('leadlex', '{"kind": "wrong_shape", "shape": "company_not_object"}', 'notobject.com', ''),
  ('leadlex', '{"kind": "wrong_shape", "shape": "data_not_object"}', 'dataarray.com', ''),
  ('leadlex', '{"kind": "html", "status": 502}', 'html-502.com', 'SET enrich.max_attempts = 1'),
  ('slintel', '{"kind": "status", "status": 503}', 'down-503', 'SET enrich.max_attempts = 2'),
  ('slintel', '{"kind": "status", "status": 401, "code": "unauthorized"}', 'auth-401', ''),
  ('slintel', '{"kind": "status", "status": 402, "code": "insufficient_credits"}', 'credits-402', ''),
  ('slintel', '{"kind": "malformed_json"}', 'malformed', ''),
  ('slintel', '{"kind": "huge_body", "bytes": 20000000}', 'huge', ''),
  ('slintel', '{"kind": "invalid_utf8"}', 'badutf8', ''),
  ('slintel', '{"kind": "nul_escape"}', 'nul', ''),
  ('slintel', '{"kind": "deep_nesting", "depth": 10000}', 'deep', ''),
  ('slintel', '{"kind": "wrong_shape", "shape": "no_data"}', 'nodata', ''),
  ('slintel', '{"kind": "wrong_shape", "shape": "data_not_object"}', 'dataarray', '');
SELECT jsonb_build_object('faults', jsonb_agg(fault || jsonb_build_object('provider', provider, 'match', key)))
  FROM fault_cases \g (tuples_only=on format=unaligned) |"$EMU_CTL" control -
SELECT provider, key, try(format('%s; SELECT %s(%L)', nullif(settings, ''),
                                 CASE provider WHEN 'leadlex' THEN 'enrich_company' ELSE 'enrich_lead' END,
                                 CASE provider WHEN 'leadlex' THEN key ELSE 'https://www.linkedin.com/in/' || key END)) AS outcome
  FROM fault_cases ORDER BY provider, key;
RESET enrich.max_attempts;
SET enrich.request_timeout = '3s';
SELECT count(*) AS cached_after_faults FROM enrich.companies WHERE domain IN (SELECT key FROM fault_cases);
SELECT count(*) AS cached_after_faults FROM enrich.leads WHERE linkedin_url LIKE ANY (SELECT '%/' || key FROM fault_cases);
\set ledger `"$EMU_CTL" ledger`
SELECT ledger(:'ledger', 'charged', 'leadlex', 'wbk_test_key') AS leadlex_charged,
       ledger(:'ledger', 'charged', 'slintel', 'sl_test_key') AS slintel_charged,
       ledger(:'ledger', 'requests_by_input', 'leadlex', 'down-503.com') AS tries_503,
       ledger(:'ledger', 'requests_by_input', 'leadlex', 'auth-401.com') AS tries_401;

-- a 429 asking for a wait past the request timeout fails at once, and
-- pauses the provider for everyone until then (enrich.resume lifts it)
\! "$EMU_CTL" control '{"faults": [{"provider": "leadlex", "kind": "status", "status": 429, "code": "rate_limited", "retry_after": 60, "match": "limited-429"}, {"provider": "slintel", "kind": "status", "status": 429, "retry_after": 60, "match": "limited-429"}]}'
SELECT try('SELECT enrich_company(''limited-429.com'')') AS leadlex_429;
SELECT try('SELECT enrich_lead(''linkedin.com/in/limited-429'')') AS slintel_429;
SELECT provider, pause_reason, paused_until > now() + interval '50 s' AS paused_for_a_minute FROM enrich.stats ORDER BY 1;
SELECT try('SELECT enrich_company(''other-while-paused.com'')') AS while_paused;
SELECT enrich.resume('leadlex'), enrich.resume('slintel');
SELECT provider, pause_reason FROM enrich.stats ORDER BY 1;
\set ledger `"$EMU_CTL" ledger`
SELECT ledger(:'ledger', 'requests_by_input', 'leadlex', 'other-while-paused.com') AS sent_while_paused;

-- a 429 that asks for a short wait is waited out
\! "$EMU_CTL" control '{"faults": [{"provider": "leadlex", "kind": "status", "status": 429, "retry_after": 1, "count": 1, "match": "wait-429"}]}'
SELECT enrich_company('wait-429.com')->>'domain' AS after_429;

-- a slow drip within the time limit is fine
\! "$EMU_CTL" control '{"faults": [{"provider": "leadlex", "kind": "slow_drip", "bytes": 64, "interval_ms": 5, "match": "drip-ok"}]}'
SELECT enrich_company('drip-ok.com')->>'domain' AS after_drip;

-- statement_timeout stops a hanging request promptly
\! "$EMU_CTL" control '{"faults": [{"provider": "leadlex", "kind": "hang", "match": "hang-cancel"}]}'
SET enrich.request_timeout = '30s';
SELECT clock_timestamp() AS t0 \gset
SET statement_timeout = '300ms';
SELECT enrich_company('hang-cancel.com');
RESET statement_timeout;
SELECT clock_timestamp() - :'t0'::timestamptz < interval '2s' AS stopped_promptly;
SET enrich.request_timeout = '3s';

-- TLS: an unknown CA and a certificate for another host are refused
\! "$EMU_CTL" reset
SET enrich.ca_file = :'emu_ca';
SELECT replace(:'emu_ca', 'ca.pem', 'other-ca.pem') AS other_ca \gset
SET enrich.ca_file = :'other_ca';
SELECT try('SELECT enrich_company(''tls-unknown-ca.com'')') AS unknown_ca;
SET enrich.ca_file = :'emu_ca';
SELECT format('https://127.0.0.1:%s/functions/v1/api-gateway', :'emu_wrong') AS wrong_url \gset
SET enrich.leadlex_url = :'wrong_url';
SELECT try('SELECT enrich_company(''tls-wrong-host.com'')') AS wrong_host;
-- plain http works, and a closed port is "could not connect"
SELECT format('http://127.0.0.1:%s/functions/v1/api-gateway', :'emu_http') AS http_url \gset
SET enrich.leadlex_url = :'http_url';
SELECT enrich_company('plain-http.com')->>'domain' AS over_http;
SET enrich.leadlex_url = 'http://127.0.0.1:9/functions/v1/api-gateway';
SET enrich.max_attempts = 1;
SELECT try('SELECT enrich_company(''refused.com'')') AS refused;
RESET enrich.max_attempts;
RESET enrich.leadlex_url;
\set ledger `"$EMU_CTL" ledger`
SELECT ledger(:'ledger', 'requests_by_input', 'leadlex', 'tls-unknown-ca.com') AS reached_with_unknown_ca,
       ledger(:'ledger', 'requests_by_input', 'leadlex', 'tls-wrong-host.com') AS reached_wrong_host;
SELECT count(*) AS cached FROM enrich.companies WHERE domain IN ('tls-unknown-ca.com', 'tls-wrong-host.com', 'refused.com');

-- URLs that are not http(s) are refused by the setting itself
SET enrich.leadlex_url = 'ftp://127.0.0.1/x';
SET enrich.leadlex_url = 'https://user:pw@127.0.0.1/x';

-- no key: 55000 and no request
SET enrich.slintel_api_key = '';
SELECT try('SELECT enrich_lead(''linkedin.com/in/no-key-person'')') AS no_key;
RESET enrich.slintel_api_key;

SELECT pg_backend_pid() = :pid AS same_backend;
