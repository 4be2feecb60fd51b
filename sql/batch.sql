-- Batch functions, estimate_credits and credit budgets in the session.
\! "$EMU_CTL" reset
SELECT pg_backend_pid() AS pid \gset

-- one row per input, in input order; one request per distinct key
SELECT enrich_company('batch-cached.com') IS NOT NULL AS warmed;
SELECT enrich.estimate_credits('company', ARRAY['batch-1.com', 'https://www.batch-1.com/x', 'batch-2.com',
       'batch-cached.com', 'nomatch-b.com', 'not a domain', NULL]) AS estimate;
SELECT ordinality, input, status, result->>'domain' AS domain
  FROM enrich_companies(ARRAY['batch-1.com', 'https://www.batch-1.com/x', 'batch-2.com',
       'batch-cached.com', 'nomatch-b.com', 'not a domain', NULL]) WITH ORDINALITY;
\set ledger `"$EMU_CTL" ledger`
SELECT ledger(:'ledger', 'requests', 'leadlex') AS requests,
       ledger(:'ledger', 'charged', 'leadlex', 'wbk_test_key') AS charged;
-- now everything is cached (the no match too)
SELECT enrich.estimate_credits('company', ARRAY['batch-1.com', 'batch-2.com', 'nomatch-b.com']) AS estimate_after;
SELECT status, count(*) FROM enrich_companies(ARRAY['batch-1.com', 'batch-2.com', 'nomatch-b.com']) GROUP BY 1 ORDER BY 1;
SELECT count(*) AS empty_batch FROM enrich_companies('{}');

-- leads
SELECT ordinality, status, result->>'name' AS name
  FROM enrich_leads(ARRAY['linkedin.com/in/deepak-anchala-0043707', 'https://www.linkedin.com/in/nomatch-x',
       'https://www.linkedin.com/company/acme']) WITH ORDINALITY;

-- failures are a status (with one WARNING), not an ERROR
\! "$EMU_CTL" control '{"faults": [{"provider": "leadlex", "kind": "status", "status": 400, "code": "validation_error", "match": "batch-bad"}]}'
SELECT input, status FROM enrich_companies(ARRAY['batch-bad-1.com', 'batch-ok-1.com']) ORDER BY 1;
\! "$EMU_CTL" control '{"faults": []}'

-- a credit budget: nothing is sent that it cannot pay for
SELECT enrich.set_credit_limit('leadlex', 3);
SELECT provider, credit_limit, period, used, remaining FROM enrich.credits WHERE provider = 'leadlex';
SELECT input, status FROM enrich_companies(ARRAY['budget-1.com', 'budget-2.com', 'budget-3.com',
       'budget-4.com', 'budget-5.com', 'nomatch-budget.com']) ORDER BY 1;
\set before `"$EMU_CTL" ledger`
SELECT try('SELECT enrich_company(''budget-6.com'')') AS over_budget;
SELECT enrich_company('budget-1.com')->>'domain' AS cached_costs_nothing;
\set after `"$EMU_CTL" ledger`
SELECT ledger(:'after', 'requests', 'leadlex')::int - ledger(:'before', 'requests', 'leadlex')::int AS sent_over_budget;
SELECT provider, credit_limit, used, remaining FROM enrich.credits WHERE provider = 'leadlex';
SELECT enrich.set_credit_limit('leadlex', NULL);
SELECT enrich_company('budget-6.com')->>'domain' AS after_lifting;
SELECT provider, credit_limit, remaining FROM enrich.credits WHERE provider = 'leadlex';

-- bad arguments
SELECT enrich.set_credit_limit('nobody', 3);
SELECT enrich.set_credit_limit('leadlex', -1);
SELECT enrich.set_rate_limit('leadlex', 0, '1 second');
SELECT enrich.set_rate_limit('leadlex', 5, NULL);
SELECT enrich.estimate_credits('planet', ARRAY['x']);

SELECT pg_backend_pid() = :pid AS same_backend;
