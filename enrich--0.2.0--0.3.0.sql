/* enrich--0.2.0--0.3.0.sql: operations (dump and restore, standby, retention) */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION enrich UPDATE TO '0.3.0'" to load this file. \quit

------------------------------------------------------------------------
-- enrich.stats shows the rate learned from a provider's 429s
------------------------------------------------------------------------
DROP VIEW enrich.stats;
DROP FUNCTION enrich.provider_stats();
CREATE FUNCTION enrich.provider_stats(
    OUT provider text, OUT requests bigint, OUT cache_hits bigint, OUT successes bigint,
    OUT no_matches bigint, OUT errors_transient bigint, OUT errors_connect bigint,
    OUT errors_auth bigint, OUT errors_credits bigint, OUT errors_rate_limited bigint,
    OUT errors_rejected bigint, OUT errors_response bigint, OUT credits_spent bigint,
    OUT rate_limit_waits bigint, OUT invalid_keys bigint, OUT avg_latency_ms double precision, OUT in_flight integer,
    OUT paused_until timestamptz, OUT pause_reason text, OUT rate_limit_remaining bigint,
    OUT learned_rate double precision)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'provider_stats'
    LANGUAGE C VOLATILE;
CREATE VIEW enrich.stats AS SELECT * FROM enrich.provider_stats();
COMMENT ON VIEW enrich.stats IS 'per provider counters since the server started; learned_rate: requests per second while pacing after 429s';
GRANT SELECT ON enrich.stats TO PUBLIC;
