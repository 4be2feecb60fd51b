/* enrich--0.1.0.sql: install script of the enrich extension */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION enrich" to load this file. \quit

-- Everything is schema-qualified: the script never depends on search_path.

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
