/* enrich--0.2.0--0.3.0.sql: operations (dump and restore, standby, retention), the learned rate, LeadLex as documented */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION enrich UPDATE TO '0.3.0'" to load this file. \quit

------------------------------------------------------------------------
-- enrich.stats shows the rate learned from a provider's 429s, the
-- refreshes whose answer changed nothing, and since when it counts: its
-- counters are kept across clean restarts and reset by
-- enrich.stats_reset()
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
    OUT learned_rate double precision, OUT refreshes_unchanged bigint,
    OUT stats_reset timestamptz)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'provider_stats'
    LANGUAGE C VOLATILE;
CREATE VIEW enrich.stats AS SELECT * FROM enrich.provider_stats();
COMMENT ON VIEW enrich.stats IS 'per provider counters of the whole cluster (every database shows the same) since stats_reset, kept across restarts; learned_rate: requests per second while pacing after 429s; refreshes_unchanged: re-fetches the provider said changed no field';
GRANT SELECT ON enrich.stats TO PUBLIC;

CREATE FUNCTION enrich.stats_reset() RETURNS void
    AS 'MODULE_PATHNAME', 'stats_reset'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION enrich.stats_reset() IS 'set the counters of enrich.stats to zero';
REVOKE EXECUTE ON FUNCTION enrich.stats_reset() FROM PUBLIC;

------------------------------------------------------------------------
-- Dump and restore: pg_dump keeps what was paid for and what was set up.
--
-- pg_dump dumps the rows of the tables marked here after CREATE
-- EXTENSION, and loads them before the user's triggers are created (those
-- come in its post-data section), so a restored auto_enrich table does not
-- queue its rows again.  Finished queue rows are history: only unfinished
-- items are dumped, with the sequence, so that ids go on where they were.
------------------------------------------------------------------------

-- Targets are kept by name in a dump: the table's OID changes in a restore.
ALTER TABLE enrich.auto_inbox ALTER COLUMN target TYPE regclass;
ALTER TABLE enrich.auto_keys ALTER COLUMN target TYPE regclass;

SELECT pg_catalog.pg_extension_config_dump('enrich.companies', '');
SELECT pg_catalog.pg_extension_config_dump('enrich.leads', '');
SELECT pg_catalog.pg_extension_config_dump('enrich.queue',
    $$WHERE status IN ('queued', 'in_flight', 'waiting_credits')$$);
SELECT pg_catalog.pg_extension_config_dump('enrich.queue_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('enrich.auto_targets', '');
SELECT pg_catalog.pg_extension_config_dump('enrich.auto_keys', '');
SELECT pg_catalog.pg_extension_config_dump('enrich.auto_inbox', '');
SELECT pg_catalog.pg_extension_config_dump('enrich.rate_limits', '');
SELECT pg_catalog.pg_extension_config_dump('enrich.credit_limits', '');

-- CREATE EXTENSION makes one row per provider in the limit tables, and a
-- restore then loads the dumped rows for the same providers: a dumped row
-- replaces the installed one (and the limits in shared memory are read
-- again) instead of colliding with it.
CREATE FUNCTION enrich.restore_limit_row() RETURNS trigger
    AS 'MODULE_PATHNAME', 'restore_limit_row'
    LANGUAGE C;
REVOKE EXECUTE ON FUNCTION enrich.restore_limit_row() FROM PUBLIC;

CREATE TRIGGER restore_limit_row BEFORE INSERT ON enrich.rate_limits
    FOR EACH ROW EXECUTE FUNCTION enrich.restore_limit_row();
CREATE TRIGGER restore_limit_row BEFORE INSERT ON enrich.credit_limits
    FOR EACH ROW EXECUTE FUNCTION enrich.restore_limit_row();

------------------------------------------------------------------------
-- Retention: the worker deletes finished items older than
-- enrich.queue_retention, oldest first, through this index.
------------------------------------------------------------------------
CREATE INDEX queue_finished_idx ON enrich.queue (finished_at)
    WHERE status IN ('done', 'no_match', 'failed');
-- Vacuumed early, so that the space of deleted items is used again before
-- the table and its indexes grow (the default waits for a fifth of the rows).
ALTER TABLE enrich.queue SET (autovacuum_vacuum_scale_factor = 0.02,
                              autovacuum_vacuum_insert_scale_factor = 0.02);

------------------------------------------------------------------------
-- LeadLex as documented: what a re-fetch changed, which fields were
-- asked for, enrichment by company id
------------------------------------------------------------------------
ALTER TABLE enrich.companies
    ADD COLUMN fields_updated text[],
    ADD COLUMN fields text[];
COMMENT ON COLUMN enrich.companies.fields_updated IS 'the fields LeadLex says this answer changed in its workspace record';
COMMENT ON COLUMN enrich.companies.fields IS 'the fields asked for (enrich.leadlex_fields); NULL: all';

-- enrich.enrich_company_by_id finds a cached answer by its company id.
CREATE INDEX companies_id_idx ON enrich.companies ((result ->> 'id'));

CREATE FUNCTION enrich.enrich_company_by_id(company_id text) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'enrich_company_by_id'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION enrich.enrich_company_by_id(text) IS 'LeadLex company data by the id of an earlier answer (cached under its domain; spends a credit on a miss)';
REVOKE EXECUTE ON FUNCTION enrich.enrich_company_by_id(text) FROM PUBLIC;

------------------------------------------------------------------------
-- The ledger: one row per credit a provider charged, written in the
-- transaction that writes the answer into the cache (and, like the
-- answer, taken back from the spool when that transaction did not
-- commit).  charge is the Idempotency-Key of the LeadLex request (one key
-- is charged once) or an id made for the Slintel answer: a charge taken
-- in twice is recorded once.  Budgets count it again after a restart or
-- a crash; the worker deletes rows older than enrich.ledger_retention.
------------------------------------------------------------------------
CREATE TABLE enrich.ledger (
    charge      uuid PRIMARY KEY,
    at          timestamptz NOT NULL,
    provider    text NOT NULL CHECK (provider IN ('leadlex', 'slintel')),
    key         text NOT NULL,
    role        regrole,
    path        text NOT NULL CHECK (path IN ('sync', 'batch', 'worker')),
    database    text NOT NULL DEFAULT pg_catalog.current_database(),
    request_id  text
);
COMMENT ON TABLE enrich.ledger IS 'one row per credit charged: when, by which provider, for which normalised key, on whose behalf, by which path, in which database, and the provider''s request id';
-- Charges come in time order: a block range index serves the period sums
-- and the retention at a few pages for millions of rows.
CREATE INDEX ledger_at_idx ON enrich.ledger USING brin (at);
REVOKE ALL ON TABLE enrich.ledger FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('enrich.ledger', '');

CREATE VIEW enrich.spend AS
    SELECT (at::date) AS day, provider, role, pg_catalog.count(*) AS credits
      FROM enrich.ledger
     GROUP BY 1, 2, 3;
COMMENT ON VIEW enrich.spend IS 'credits charged by day (in the session''s time zone), provider and role, from enrich.ledger';
REVOKE ALL ON enrich.spend FROM PUBLIC;

-- Who a queue item is for: the role that queued it, the role that
-- configured auto_enrich, or the caller of refresh.  Its charge is that
-- role's.  Items queued before version 0.3.0 have none.
ALTER TABLE enrich.queue ADD COLUMN requested_by regrole;
COMMENT ON COLUMN enrich.queue.requested_by IS 'the role on whose behalf the item was queued (its charge is recorded for it)';

------------------------------------------------------------------------
-- Budgets per role: a role's own credit budget for a provider, on top of
-- the provider's (which still applies to everyone).  The charges of a
-- role count under its own budget, or else under the budget of a role
-- whose privileges it has (the lowest OID if several); see README.md,
-- "Budgets per role".  Kept in shared memory like the providers' budgets:
-- the rows of this table are loaded at the first use after a start, and
-- what a role used in its period is counted from the ledger again.
------------------------------------------------------------------------
CREATE TABLE enrich.role_credit_limits (
    role          regrole,
    provider      text CHECK (provider IN ('leadlex', 'slintel')),
    credits       bigint NOT NULL CHECK (credits >= 0),
    per           interval CHECK (per > interval '0'),
    period_start  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role, provider)
);
COMMENT ON TABLE enrich.role_credit_limits IS 'credit budgets of roles, on top of the providers'' (enrich.set_role_credit_limit); period_start: the start of the current period, or of a total';
REVOKE ALL ON TABLE enrich.role_credit_limits FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('enrich.role_credit_limits', '');

-- Rows a restore loads are put in force at once (set_role_credit_limit
-- puts its own in force itself).
CREATE FUNCTION enrich.restore_role_limits() RETURNS trigger
    AS 'MODULE_PATHNAME', 'restore_role_limits'
    LANGUAGE C;
REVOKE EXECUTE ON FUNCTION enrich.restore_role_limits() FROM PUBLIC;
CREATE TRIGGER restore_role_limits AFTER INSERT ON enrich.role_credit_limits
    FOR EACH STATEMENT EXECUTE FUNCTION enrich.restore_role_limits();

CREATE FUNCTION enrich.set_role_credit_limit(role regrole, provider text, credits bigint, per interval DEFAULT NULL)
    RETURNS void
    AS 'MODULE_PATHNAME', 'set_role_credit_limit'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION enrich.set_role_credit_limit(regrole, text, bigint, interval) IS 'a credit budget of the role''s own for a provider, on top of the provider''s: at most credits per period (NULL credits: removes it; NULL per: a total from now on)';
REVOKE EXECUTE ON FUNCTION enrich.set_role_credit_limit(regrole, text, bigint, interval) FROM PUBLIC;

CREATE FUNCTION enrich.role_credit_status(
    OUT role regrole, OUT provider text, OUT credit_limit bigint, OUT period interval,
    OUT used bigint, OUT remaining bigint, OUT resets_at timestamptz)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'role_credit_status'
    LANGUAGE C VOLATILE;

CREATE VIEW enrich.credits_by_role AS
    SELECT role, provider, credit_limit, period, used, remaining, resets_at
      FROM enrich.role_credit_status();
COMMENT ON VIEW enrich.credits_by_role IS 'credit budgets of roles (of the whole cluster): limit, period, used, remaining, when the period resets';
GRANT SELECT ON enrich.credits_by_role TO PUBLIC;

------------------------------------------------------------------------
-- The worker's claim takes due queued items in order through
-- queue_due_idx.  An index on status that also held the queued items
-- offered the planner another way, which it took whenever the statistics
-- said few items were queued (after a day of finished items, a bulk
-- enqueue): every queued item fetched and sorted for each claim of a few
-- hundred.  The index keeps what only it serves: items in flight and
-- waiting for credits.
------------------------------------------------------------------------
DROP INDEX enrich.queue_pending_idx;
CREATE INDEX queue_pending_idx ON enrich.queue (status)
    WHERE status IN ('in_flight', 'waiting_credits');
