/* enrich--0.1.0--0.2.0.sql: enrich on insert (auto_enrich) and refresh */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION enrich UPDATE TO '0.2.0'" to load this file. \quit

-- A queued refresh asks the provider again even with a fresh cached answer.
ALTER TABLE enrich.queue ADD COLUMN refresh boolean NOT NULL DEFAULT false;

------------------------------------------------------------------------
-- Enrich on insert
------------------------------------------------------------------------
CREATE TABLE enrich.auto_targets (
    target         regclass NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('company', 'lead')),
    key_column     name NOT NULL,
    result_column  name NOT NULL,
    run_as         regrole NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, result_column)
);
COMMENT ON TABLE enrich.auto_targets IS 'tables filled in by the worker; answers are written as run_as';

-- Raw keys from the triggers, taken in by the worker.  No index: the
-- triggers only append to it, so that an INSERT stays cheap.
CREATE TABLE enrich.auto_inbox (
    target   oid NOT NULL,
    kind     text NOT NULL,
    raw_key  text NOT NULL
);

-- Which raw key of which target normalises to which key.
CREATE TABLE enrich.auto_keys (
    target   oid NOT NULL,
    raw_key  text NOT NULL,
    key      text NOT NULL,
    PRIMARY KEY (target, raw_key)
);
CREATE INDEX auto_keys_key_idx ON enrich.auto_keys (key);

REVOKE ALL ON TABLE enrich.auto_targets, enrich.auto_inbox, enrich.auto_keys FROM PUBLIC;

CREATE FUNCTION enrich.auto_enrich_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'auto_enrich_trigger'
    LANGUAGE C;

CREATE FUNCTION enrich.auto_enrich(target regclass, kind text, key_column name, result_column name)
    RETURNS void
    AS 'MODULE_PATHNAME', 'auto_enrich'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION enrich.auto_enrich(regclass, text, name, name) IS 'fill result_column of target with the answer for key_column after every INSERT or key UPDATE';

CREATE FUNCTION enrich.stop_auto_enrich(target regclass) RETURNS void
    AS 'MODULE_PATHNAME', 'stop_auto_enrich'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION enrich.stop_auto_enrich(regclass) IS 'stop enriching a table automatically';

------------------------------------------------------------------------
-- Refresh
------------------------------------------------------------------------
CREATE FUNCTION enrich.refresh(kind text DEFAULT NULL, older_than interval DEFAULT '30 days',
                               max_items bigint DEFAULT NULL)
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'refresh'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION enrich.refresh(text, interval, bigint) IS 'queue the stalest cached answers, oldest first; returns how many';

-- The trigger function too: a trigger of one's own with it would queue
-- keys (and spend credits) without any grant.  Triggers made by
-- enrich.auto_enrich fire whoever inserts (EXECUTE is checked only when a
-- trigger is created).
REVOKE EXECUTE ON FUNCTION
    enrich.auto_enrich(regclass, text, name, name), enrich.stop_auto_enrich(regclass),
    enrich.refresh(text, interval, bigint), enrich.auto_enrich_trigger()
    FROM PUBLIC;
