-- LeadLex as documented: overwrite on a re-fetch, enrich_company_by_id,
-- enrich.leadlex_fields (what reaches the wire is checked in
-- test/t/030_leadlex_full.pl, against the emulator's request capture).
\! "$EMU_CTL" reset
\set VERBOSITY sqlstate

-- the settings: superuser-only, validated, kept in a canonical form
SELECT name, setting, context, vartype, enumvals
  FROM pg_settings WHERE name IN ('enrich.leadlex_overwrite', 'enrich.leadlex_fields') ORDER BY name;
SET enrich.leadlex_overwrite = sometimes;
SET enrich.leadlex_fields = 'name, revenue';
SET enrich.leadlex_fields = ' Tech_Stack ,name,name, INDUSTRY';
SHOW enrich.leadlex_fields;
RESET enrich.leadlex_fields;

-- a first fetch keeps what LeadLex changed and that all fields were asked for
SELECT refreshes_unchanged AS unchanged_before FROM enrich.stats WHERE provider = 'leadlex' \gset
SELECT enrich_company('regress-ll.com')->>'domain' AS domain;
SELECT domain, fields_updated, fields FROM enrich.companies WHERE domain = 'regress-ll.com';

-- the data changes; a re-fetch of the stale answer overwrites the record
\! "$EMU_CTL" control '{"data_version": 1}'
SET enrich.cache_ttl = 0;
SELECT (SELECT result->>'industry' FROM enrich.companies WHERE domain = 'regress-ll.com')
       IS DISTINCT FROM (enrich_company('regress-ll.com')->>'industry') AS industry_changed;
RESET enrich.cache_ttl;
SELECT domain, fields_updated FROM enrich.companies WHERE domain = 'regress-ll.com';
SELECT refreshes_unchanged - :unchanged_before AS refreshes_unchanged FROM enrich.stats WHERE provider = 'leadlex';
-- again with the same data: charged, nothing changed, counted
SET enrich.cache_ttl = 0;
SET enrich.leadlex_overwrite = never;
SELECT enrich_company('regress-ll.com') IS NOT NULL AS answered;
RESET enrich.leadlex_overwrite;
RESET enrich.cache_ttl;
SELECT domain, fields_updated FROM enrich.companies WHERE domain = 'regress-ll.com';
SELECT refreshes_unchanged - :unchanged_before AS refreshes_unchanged FROM enrich.stats WHERE provider = 'leadlex';
\set ledger `"$EMU_CTL" ledger`
SELECT ledger(:'ledger', 'charged_inputs', 'leadlex', 'regress-ll.com') AS charged;

-- by company id: a hit under the domain; an unknown id costs nothing
SELECT enrich.enrich_company_by_id(enrich_company('regress-ll.com')->>'id')->>'domain' AS domain;
SELECT enrich.enrich_company_by_id('0b0e1c7a-5d2f-4e3a-9b8c-7d6e5f4a3b2c');
SELECT enrich.enrich_company_by_id('');
SELECT enrich.enrich_company_by_id(NULL) IS NULL AS null_in;
\set ledger `"$EMU_CTL" ledger`
SELECT ledger(:'ledger', 'by_status', 'leadlex', '404') AS not_found,
       ledger(:'ledger', 'charged_total', 'leadlex') AS charged;

-- fields: asked for, recorded; a wider setting is a miss
SET enrich.leadlex_fields = 'industry';
SELECT enrich_company('regress-fields.com') AS answer;
SELECT fields FROM enrich.companies WHERE domain = 'regress-fields.com';
SELECT enrich.estimate_credits('company', ARRAY['regress-fields.com']) AS same_setting;
SET enrich.leadlex_fields = 'industry,size';
SELECT enrich.estimate_credits('company', ARRAY['regress-fields.com']) AS wider_setting;
RESET enrich.leadlex_fields;
SELECT enrich.estimate_credits('company', ARRAY['regress-fields.com']) AS all_fields;
