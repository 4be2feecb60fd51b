-- Installation: the extension, its schema and objects, and a default
-- search_path that finds enrich_company.
CREATE EXTENSION enrich;
SELECT extname, extversion, extnamespace::regnamespace FROM pg_extension WHERE extname = 'enrich';
SELECT p.oid::regprocedure AS function, p.provolatile, p.proparallel, p.proisstrict
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'enrich') AND d.deptype = 'e'
 ORDER BY 1::text;
SHOW search_path;
SELECT 'enrich_company(text)'::regprocedure, 'enrich_lead(text)'::regprocedure;

-- A helper for the suites: runs a statement and shows its SQLSTATE and
-- message instead of failing (details carry random request ids).
CREATE FUNCTION public.try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE stmt;
  RETURN 'ok';
EXCEPTION WHEN others THEN
  RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- Reads the emulator's ledger at a JSON path.
CREATE FUNCTION public.ledger(doc text, VARIADIC path text[]) RETURNS text
LANGUAGE sql AS $$ SELECT coalesce(doc::jsonb #>> path, '0') $$;
