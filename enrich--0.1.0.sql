/* enrich--0.1.0.sql: install script of the enrich extension */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION enrich" to load this file. \quit

-- Everything is schema-qualified: the script never depends on search_path.

-- CREATE EXTENSION uses a schema "enrich" that already exists.  Its owner
-- could drop and replace our tables (which the worker writes as a
-- superuser), and a role with CREATE on it could plant look-alike
-- functions next to ours: refuse such a schema.
DO $$
DECLARE
    owner oid;
    acl aclitem[];
BEGIN
    SELECT n.nspowner, n.nspacl INTO owner, acl
      FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) 'enrich';
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) owner) THEN
        RAISE EXCEPTION 'schema "enrich" is owned by role %, which is not a superuser', owner::pg_catalog.regrole
            USING ERRCODE = '42501',
                  HINT = 'Drop the schema, or give it to a superuser with ALTER SCHEMA enrich OWNER TO, before CREATE EXTENSION enrich.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.aclexplode(acl) a
                WHERE a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
                  AND a.grantee OPERATOR(pg_catalog.<>) owner) THEN
        RAISE EXCEPTION 'roles other than its owner may create objects in schema "enrich"'
            USING ERRCODE = '42501',
                  HINT = 'REVOKE CREATE ON SCHEMA enrich FROM them before CREATE EXTENSION enrich.';
    END IF;
END
$$;

GRANT USAGE ON SCHEMA enrich TO PUBLIC;

------------------------------------------------------------------------
-- Cache tables: one row per normalised key.  result is the provider's
-- answer (NULL for "no match"); the rest is provider metadata.  They hold
-- personal data: only the owner and roles granted SELECT may read them.
------------------------------------------------------------------------
CREATE TABLE enrich.companies (
    domain      text PRIMARY KEY,
    result      jsonb,
    matched     boolean NOT NULL,
    source      text,
    confidence  double precision,
    request_id  text,
    fetched_at  timestamptz NOT NULL,
    CHECK (matched = (result IS NOT NULL))
);
COMMENT ON TABLE enrich.companies IS 'LeadLex answers by normalised domain (NULL result = no match)';
CREATE INDEX companies_fetched_at_idx ON enrich.companies (fetched_at);

CREATE TABLE enrich.leads (
    linkedin_url text PRIMARY KEY,
    result       jsonb,
    matched      boolean NOT NULL,
    source       text,
    confidence   double precision,
    request_id   text,
    fetched_at   timestamptz NOT NULL,
    CHECK (matched = (result IS NOT NULL))
);
COMMENT ON TABLE enrich.leads IS 'Slintel answers by normalised LinkedIn URL (NULL result = no match)';
CREATE INDEX leads_fetched_at_idx ON enrich.leads (fetched_at);

REVOKE ALL ON TABLE enrich.companies, enrich.leads FROM PUBLIC;

------------------------------------------------------------------------
-- Normalisers
------------------------------------------------------------------------
CREATE FUNCTION enrich.normalize_domain(text) RETURNS text
    AS 'MODULE_PATHNAME', 'normalize_domain'
    LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION enrich.normalize_domain(text) IS 'registrable domain of a domain, URL or e-mail address';

CREATE FUNCTION enrich.normalize_linkedin_url(text) RETURNS text
    AS 'MODULE_PATHNAME', 'normalize_linkedin_url'
    LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION enrich.normalize_linkedin_url(text) IS 'canonical https://www.linkedin.com/in/<slug> form of a profile URL';

------------------------------------------------------------------------
-- Synchronous enrichment (in public, so a default search_path finds it)
------------------------------------------------------------------------
CREATE FUNCTION public.enrich_company(domain text) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'enrich_company'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION public.enrich_company(text) IS 'LeadLex company data for a domain (cached; spends a credit on a miss)';

CREATE FUNCTION public.enrich_lead(linkedin_url text) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'enrich_lead'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION public.enrich_lead(text) IS 'Slintel lead data for a LinkedIn profile URL (cached; spends a credit on a miss)';

-- Functions that spend credits: a DBA grants EXECUTE.
REVOKE EXECUTE ON FUNCTION public.enrich_company(text), public.enrich_lead(text) FROM PUBLIC;

------------------------------------------------------------------------
-- Queue: one row per request.  A key waits at most once (queued,
-- in_flight or waiting_credits); finished rows stay as history.
------------------------------------------------------------------------
CREATE TABLE enrich.queue (
    id               bigserial PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('company', 'lead')),
    key              text NOT NULL,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'in_flight', 'done', 'no_match', 'failed', 'waiting_credits')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    idempotency_key  uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
COMMENT ON TABLE enrich.queue IS 'enrichment requests for the background worker';
CREATE UNIQUE INDEX queue_waiting_key_idx ON enrich.queue (kind, key)
    WHERE status IN ('queued', 'in_flight', 'waiting_credits');
CREATE INDEX queue_due_idx ON enrich.queue (kind, next_attempt_at, id) WHERE status = 'queued';
CREATE INDEX queue_pending_idx ON enrich.queue (status) WHERE status IN ('queued', 'in_flight', 'waiting_credits');
REVOKE ALL ON TABLE enrich.queue FROM PUBLIC;
REVOKE ALL ON SEQUENCE enrich.queue_id_seq FROM PUBLIC;

CREATE FUNCTION enrich.enqueue_company(domain text) RETURNS bigint
    AS 'MODULE_PATHNAME', 'enqueue_company'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION enrich.enqueue_company(text) IS 'queue a company for the background worker; returns the queue id';

CREATE FUNCTION enrich.enqueue_lead(linkedin_url text) RETURNS bigint
    AS 'MODULE_PATHNAME', 'enqueue_lead'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION enrich.enqueue_lead(text) IS 'queue a lead for the background worker; returns the queue id';

CREATE FUNCTION enrich.wait(timeout interval DEFAULT '5 min') RETURNS boolean
    AS 'MODULE_PATHNAME', 'enrich_wait'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION enrich.wait(interval) IS 'wait until nothing is queued or in flight (true) or the timeout passes (false)';

------------------------------------------------------------------------
-- Batch enrichment in the calling session
------------------------------------------------------------------------
CREATE FUNCTION public.enrich_companies(domains text[])
    RETURNS TABLE (input text, result jsonb, status text)
    AS 'MODULE_PATHNAME', 'enrich_companies'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION public.enrich_companies(text[]) IS 'enrich many domains at once, concurrently; one row per input';

CREATE FUNCTION public.enrich_leads(linkedin_urls text[])
    RETURNS TABLE (input text, result jsonb, status text)
    AS 'MODULE_PATHNAME', 'enrich_leads'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION public.enrich_leads(text[]) IS 'enrich many LinkedIn profile URLs at once, concurrently; one row per input';

------------------------------------------------------------------------
-- Rate limits and credit budgets, per provider
------------------------------------------------------------------------
CREATE TABLE enrich.rate_limits (
    provider         text PRIMARY KEY CHECK (provider IN ('leadlex', 'slintel')),
    requests         integer CHECK (requests > 0),
    per              interval CHECK (per > interval '0'),
    max_concurrency  integer CHECK (max_concurrency > 0),
    CHECK ((requests IS NULL) = (per IS NULL))
);
-- Slintel allows 10 calls a second and 10 at once; LeadLex says what it
-- allows in its X-RateLimit-* headers.
INSERT INTO enrich.rate_limits VALUES ('leadlex', NULL, NULL, NULL), ('slintel', 10, '1 second', 10);
REVOKE ALL ON TABLE enrich.rate_limits FROM PUBLIC;

CREATE TABLE enrich.credit_limits (
    provider      text PRIMARY KEY CHECK (provider IN ('leadlex', 'slintel')),
    credits       bigint CHECK (credits >= 0),
    per           interval CHECK (per > interval '0'),
    period_start  timestamptz NOT NULL DEFAULT now(),
    used          bigint NOT NULL DEFAULT 0
);
INSERT INTO enrich.credit_limits (provider) VALUES ('leadlex'), ('slintel');
REVOKE ALL ON TABLE enrich.credit_limits FROM PUBLIC;

CREATE FUNCTION enrich.set_rate_limit(provider text, requests int, per interval, max_concurrency int DEFAULT NULL)
    RETURNS void
    AS 'MODULE_PATHNAME', 'set_rate_limit'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION enrich.set_rate_limit(text, int, interval, int) IS 'a local rate limit for a provider, shared by all sessions and the worker';

CREATE FUNCTION enrich.set_credit_limit(provider text, credits bigint, per interval DEFAULT NULL)
    RETURNS void
    AS 'MODULE_PATHNAME', 'set_credit_limit'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION enrich.set_credit_limit(text, bigint, interval) IS 'at most credits per period (NULL credits: no limit; NULL per: a total from now on)';

CREATE FUNCTION enrich.resume(provider text) RETURNS void
    AS 'MODULE_PATHNAME', 'resume'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION enrich.resume(text) IS 'lift a pause of a provider (after a 429, a 402 or a rejected key) now';

CREATE FUNCTION enrich.credit_status(
    OUT provider text, OUT credit_limit bigint, OUT period interval, OUT used bigint,
    OUT remaining bigint, OUT reserved bigint, OUT provider_balance bigint, OUT resets_at timestamptz)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'credit_status'
    LANGUAGE C VOLATILE;

CREATE VIEW enrich.credits AS
    SELECT provider, credit_limit, period, used, remaining, reserved, provider_balance, resets_at
      FROM enrich.credit_status();
COMMENT ON VIEW enrich.credits IS 'credit budgets: limit, period, used, remaining, the provider''s last reported balance';

CREATE FUNCTION enrich.provider_stats(
    OUT provider text, OUT requests bigint, OUT cache_hits bigint, OUT successes bigint,
    OUT no_matches bigint, OUT errors_transient bigint, OUT errors_connect bigint,
    OUT errors_auth bigint, OUT errors_credits bigint, OUT errors_rate_limited bigint,
    OUT errors_rejected bigint, OUT errors_response bigint, OUT credits_spent bigint,
    OUT rate_limit_waits bigint, OUT invalid_keys bigint, OUT avg_latency_ms double precision, OUT in_flight integer,
    OUT paused_until timestamptz, OUT pause_reason text, OUT rate_limit_remaining bigint)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'provider_stats'
    LANGUAGE C VOLATILE;

CREATE VIEW enrich.stats AS SELECT * FROM enrich.provider_stats();
COMMENT ON VIEW enrich.stats IS 'per provider counters since the server started';

CREATE FUNCTION enrich.estimate_credits(kind text, keys text[]) RETURNS bigint
    AS 'MODULE_PATHNAME', 'estimate_credits'
    LANGUAGE C STRICT STABLE;
COMMENT ON FUNCTION enrich.estimate_credits(text, text[]) IS 'credits enriching these inputs would cost now (distinct keys without a fresh cached answer)';

-- Spending credits and changing limits need a grant; watching does not.
REVOKE EXECUTE ON FUNCTION
    public.enrich_companies(text[]), public.enrich_leads(text[]),
    enrich.enqueue_company(text), enrich.enqueue_lead(text),
    enrich.set_rate_limit(text, int, interval, int), enrich.set_credit_limit(text, bigint, interval),
    enrich.resume(text)
    FROM PUBLIC;
GRANT SELECT ON enrich.credits, enrich.stats TO PUBLIC;
