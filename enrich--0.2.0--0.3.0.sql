/* enrich--0.2.0--0.3.0.sql: operations (dump and restore, standby, retention) */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION enrich UPDATE TO '0.3.0'" to load this file. \quit
