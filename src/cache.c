/*-------------------------------------------------------------------------
 *
 * cache.c
 *	  The cache tables enrich.companies and enrich.leads.
 *
 * The tables hold personal data, so only the extension's owner (and roles
 * it grants SELECT) may read them.  The functions here run their SPI
 * statements as the owner of enrich.companies, switching the user id only
 * around those statements.  While they run as the owner, the search path
 * is pg_catalog alone (enrich_as_owner_begin), so that no operator,
 * function or type a caller's search_path offers -- say a hostile "="
 * in a schema the caller put before pg_catalog -- can run with the
 * owner's (usually a superuser's) rights; names of our own objects are
 * schema-qualified as well.  Lookups, the hot path, read the primary key
 * index directly instead (enrich_cache_lookup).
 *
 * A LeadLex answer also keeps the provider's fields_updated and the fields
 * it was asked for (enrich.leadlex_fields, NULL: all); an answer asked for
 * fewer fields than the setting wants now is a miss.  Those columns came
 * with version 0.3.0 of the SQL objects: until ALTER EXTENSION UPDATE the
 * answers are stored without them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "storage.h"

/*
 * The store: an upsert over arrays, one row per element, so that the
 * worker writes a whole turn's answers in one statement.  An answer is
 * only replaced by a later one.
 */
static const char *const cache_store_sql[ENRICH_NUM_KINDS] = {
	"INSERT INTO enrich.companies AS c "
	"(domain, result, matched, source, confidence, request_id, fetched_at) "
	"SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), "
	" pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7)) "
	"ON CONFLICT (domain) DO UPDATE SET result = excluded.result, "
	"matched = excluded.matched, source = excluded.source, "
	"confidence = excluded.confidence, request_id = excluded.request_id, "
	"fetched_at = excluded.fetched_at "
	"WHERE c.fetched_at OPERATOR(pg_catalog.<) excluded.fetched_at",
	"INSERT INTO enrich.leads AS l "
	"(linkedin_url, result, matched, source, confidence, request_id, fetched_at) "
	"SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), "
	" pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7)) "
	"ON CONFLICT (linkedin_url) DO UPDATE SET result = excluded.result, "
	"matched = excluded.matched, source = excluded.source, "
	"confidence = excluded.confidence, request_id = excluded.request_id, "
	"fetched_at = excluded.fetched_at "
	"WHERE l.fetched_at OPERATOR(pg_catalog.<) excluded.fetched_at",
};

/* enrich.companies from version 0.3.0 on: with what LeadLex changed and was asked */
static const char *const company_store_sql =
"INSERT INTO enrich.companies AS c "
"(domain, result, matched, source, confidence, request_id, fetched_at, fields_updated, fields) "
"SELECT r.d, r.res, r.m, r.src, r.conf, r.rid, r.at, "
" CASE WHEN r.fu IS NOT NULL THEN ARRAY(SELECT pg_catalog.jsonb_array_elements_text(r.fu)) END, "
" pg_catalog.string_to_array(r.f, ',') "
"FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), "
" pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7), "
" pg_catalog.unnest($8), pg_catalog.unnest($9)) AS r(d, res, m, src, conf, rid, at, fu, f) "
"ON CONFLICT (domain) DO UPDATE SET result = excluded.result, "
"matched = excluded.matched, source = excluded.source, "
"confidence = excluded.confidence, request_id = excluded.request_id, "
"fetched_at = excluded.fetched_at, fields_updated = excluded.fields_updated, "
"fields = excluded.fields "
"WHERE c.fetched_at OPERATOR(pg_catalog.<) excluded.fetched_at";

static SPIPlanPtr store_plan[ENRICH_NUM_KINDS];
static SPIPlanPtr company_store_plan = NULL;
static SPIPlanPtr by_id_plan = NULL;

/* Whether an answer fetched at the given time is still fresh. */
bool
enrich_cache_fresh(bool matched, TimestampTz fetched_at)
{
	int			ttl = matched ? enrich_cache_ttl : enrich_no_match_ttl;

	return fetched_at > GetCurrentTimestamp() - (TimestampTz) ttl * USECS_PER_SEC;
}

/* What the lookup needs to know of one cache table, kept per backend. */
typedef struct CacheTable
{
	Oid			relid;			/* InvalidOid until looked up */
	AttrNumber	att_result;
	AttrNumber	att_matched;
	AttrNumber	att_fetched;
	AttrNumber	att_fields;		/* InvalidAttrNumber: none (leads, before 0.3.0) */
} CacheTable;

static CacheTable cache_tables[ENRICH_NUM_KINDS];

/* The cache table of a kind, with its column numbers. */
static CacheTable *
cache_table(EnrichKind kind)
{
	static const char *const relnames[ENRICH_NUM_KINDS] = {"companies", "leads"};
	CacheTable *ct = &cache_tables[kind];
	Oid			nsp = get_namespace_oid("enrich", true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid(relnames[kind], nsp) : InvalidOid;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"enrich\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION enrich.")));
	if (ct->relid != relid)
	{
		ct->att_result = get_attnum(relid, "result");
		ct->att_matched = get_attnum(relid, "matched");
		ct->att_fetched = get_attnum(relid, "fetched_at");
		if (ct->att_result == InvalidAttrNumber || ct->att_matched == InvalidAttrNumber ||
			ct->att_fetched == InvalidAttrNumber)
			elog(ERROR, "cache table enrich.%s lacks its columns", relnames[kind]);
		ct->att_fields = InvalidAttrNumber;
		ct->relid = relid;
	}
	/* ALTER EXTENSION UPDATE adds it under a running session */
	if (kind == ENRICH_COMPANY && ct->att_fields == InvalidAttrNumber)
		ct->att_fields = get_attnum(relid, "fields");
	return ct;
}

/* A text[] of field names as a comma-separated list. */
static char *
fields_list(Datum arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	StringInfoData buf;

	deconstruct_array(DatumGetArrayTypeP(arr), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			appendStringInfo(&buf, "%s%s", buf.len > 0 ? "," : "",
							 TextDatumGetCString(elems[i]));
	return buf.data;
}

/*
 * Whether an answer (or "no match") may be served now: fresh, and for a
 * LeadLex answer, asked for every field enrich.leadlex_fields asks for.
 */
bool
enrich_answer_usable(EnrichKind kind, const EnrichOutcome *out, TimestampTz fetched_at)
{
	bool		matched = out->kind == OUTCOME_MATCH;

	if (!enrich_cache_fresh(matched, fetched_at))
		return false;
	return !matched || kind != ENRICH_COMPANY || enrich_leadlex_fields_cover(out->fields);
}

/* Looks a key up in one cache table under the given snapshot. */
static EnrichCacheState
cache_probe(CacheTable *ct, const char *key, Snapshot snap, Jsonb **result,
			bool *had_row)
{
	EnrichCacheState state = CACHE_MISS;
	Relation	rel;
	Relation	idx;
	ScanKeyData skey;
	IndexScanDesc scan;
	TupleTableSlot *slot;

	rel = table_open(ct->relid, AccessShareLock);
	idx = index_open(RelationGetPrimaryKeyIndex(rel), AccessShareLock);
	ScanKeyInit(&skey, 1, BTEqualStrategyNumber, F_TEXTEQ, CStringGetTextDatum(key));
	skey.sk_collation = idx->rd_indcollation[0];
	scan = index_beginscan(rel, idx, snap, 1, 0);
	index_rescan(scan, &skey, 1, NULL, 0);
	slot = table_slot_create(rel, NULL);
	if (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		bool		resnull;
		Datum		res = slot_getattr(slot, ct->att_result, &resnull);
		bool		matched = DatumGetBool(slot_getattr(slot, ct->att_matched, &isnull));
		TimestampTz fetched = DatumGetTimestampTz(slot_getattr(slot, ct->att_fetched, &isnull));
		char	   *fields = NULL;

		*had_row = true;
		if (ct->att_fields != InvalidAttrNumber)
		{
			Datum		f = slot_getattr(slot, ct->att_fields, &isnull);

			fields = isnull ? NULL : fields_list(f);
		}
		if (enrich_cache_fresh(matched, fetched) &&
			(!matched || ct->att_fields == InvalidAttrNumber ||
			 enrich_leadlex_fields_cover(fields)))
		{
			if (matched && !resnull)
			{
				*result = DatumGetJsonbPCopy(res);
				state = CACHE_HIT;
			}
			else if (!matched)
				state = CACHE_NO_MATCH;
		}
	}
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	index_close(idx, NoLock);
	table_close(rel, NoLock);
	return state;
}

/*
 * Looks a normalised key up.  A fresh answer is copied into the caller's
 * memory context; a fresh "no match" is reported as CACHE_NO_MATCH; a
 * missing or stale row is a miss.
 *
 * This is the hot path of every call, so it reads the primary key index and
 * the row directly, as C code reads its own tables, without the executor.
 * An answer the running query can see is good; before a miss is reported,
 * the key is looked up again as a new query would see it (a fresh snapshot
 * after a command counter increment, under READ COMMITTED): what other
 * sessions and this transaction have written since, a miss must not miss.
 */
EnrichCacheState
enrich_cache_lookup(EnrichKind kind, const char *key, Jsonb **result)
{
	bool		had_row;

	return enrich_cache_lookup_extended(kind, key, result, &had_row);
}

/*
 * enrich_cache_lookup, also telling whether a row for the key exists: a
 * miss with one (stale, or asked for fewer fields) is a re-fetch.
 */
EnrichCacheState
enrich_cache_lookup_extended(EnrichKind kind, const char *key, Jsonb **result,
							 bool *had_row)
{
	CacheTable *ct = cache_table(kind);
	EnrichCacheState state = CACHE_MISS;
	Snapshot	snap;

	*result = NULL;
	*had_row = false;
	if (ActiveSnapshotSet())
		state = cache_probe(ct, key, GetActiveSnapshot(), result, had_row);
	if (state != CACHE_MISS)
		return state;
	CommandCounterIncrement();
	snap = RegisterSnapshot(GetTransactionSnapshot());
	state = cache_probe(ct, key, snap, result, had_row);
	UnregisterSnapshot(snap);
	return state;
}

/*
 * Looks a LeadLex answer up by the company id in it (through the index on
 * result->>'id'): CACHE_HIT with the answer, copied into the caller's
 * memory context, when one is usable now, else CACHE_MISS (had_row: an
 * answer with that id is cached, but stale or asked for fewer fields).
 */
EnrichCacheState
enrich_cache_lookup_by_id(const char *company_id, Jsonb **result, bool *had_row)
{
	Oid			types[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(company_id)};
	MemoryContext caller = CurrentMemoryContext;
	EnrichCacheState state = CACHE_MISS;
	Oid			save_userid;
	int			save_sec;

	*result = NULL;
	*had_row = false;
	enrich_as_owner_begin(&save_userid, &save_sec);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute_plan(enrich_keep_plan(&by_id_plan,
											  "SELECT result, fetched_at, pg_catalog.array_to_string(fields, ',')"
											  " FROM enrich.companies"
											  " WHERE (result OPERATOR(pg_catalog.->>) 'id') OPERATOR(pg_catalog.=) $1"
											  "   AND matched"
											  " ORDER BY fetched_at DESC LIMIT 1", 1, types),
							 args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not look a company id up in enrich.companies");
		if (SPI_processed == 1)
		{
			EnrichOutcome out;
			bool		isnull;
			HeapTuple	tup = SPI_tuptable->vals[0];
			TupleDesc	td = SPI_tuptable->tupdesc;
			TimestampTz at = DatumGetTimestampTz(SPI_getbinval(tup, td, 2, &isnull));

			*had_row = true;
			memset(&out, 0, sizeof(out));
			out.kind = OUTCOME_MATCH;
			out.fields = SPI_getvalue(tup, td, 3);
			if (enrich_answer_usable(ENRICH_COMPANY, &out, at))
			{
				Datum		r = SPI_getbinval(tup, td, 1, &isnull);
				MemoryContext old = MemoryContextSwitchTo(caller);

				*result = DatumGetJsonbPCopy(r);
				MemoryContextSwitchTo(old);
				state = CACHE_HIT;
			}
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		enrich_as_owner_end(save_userid, save_sec);
	}
	PG_END_TRY();
	return state;
}

/*
 * Stores an answer (or a "no match") for a normalised key, fetched at the
 * given time; an answer already cached from a later fetch is kept.
 */
void
enrich_cache_store_at(EnrichKind kind, const char *key, const EnrichOutcome *out,
					  TimestampTz fetched_at)
{
	char	   *keys[1] = {(char *) key};
	EnrichOutcome *outs[1] = {(EnrichOutcome *) out};

	enrich_cache_store_many(kind, 1, keys, outs, fetched_at);
}

/*
 * Stores n answers (or "no match"es) of one kind, fetched at the given
 * time, in one statement: the worker's write-back of a whole turn.  The
 * keys must be distinct (the queue never has one key in flight twice).
 */
void
enrich_cache_store_many(EnrichKind kind, int n, char **keys,
						EnrichOutcome **outs, TimestampTz fetched_at)
{
	TimestampTz *ats = palloc(sizeof(TimestampTz) * Max(n, 1));

	for (int i = 0; i < n; i++)
		ats[i] = fetched_at;
	enrich_cache_store_rows(kind, n, keys, outs, ats);
	pfree(ats);
}

/*
 * Stores n answers (or "no match"es) of one kind, each fetched at its own
 * time, in one statement, with their charges (ledger.c).  The keys must be
 * distinct.
 */
void
enrich_cache_store_rows(EnrichKind kind, int n, char **keys,
						EnrichOutcome **outs, const TimestampTz *fetched_at)
{
	Oid			types[9] = {TEXTARRAYOID, JSONBARRAYOID, BOOLARRAYOID, TEXTARRAYOID,
	FLOAT8ARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID, JSONBARRAYOID, TEXTARRAYOID};
	Oid			elem[9] = {TEXTOID, JSONBOID, BOOLOID, TEXTOID, FLOAT8OID, TEXTOID,
	TIMESTAMPTZOID, JSONBOID, TEXTOID};
	Datum	   *cols[9];
	bool	   *nulls[9];
	Datum		args[9];
	bool		full = kind == ENRICH_COMPANY &&
		cache_table(kind)->att_fields != InvalidAttrNumber;
	int			ncols = full ? 9 : 7;
	SPIPlanPtr	plan;
	Oid			save_userid;
	int			save_sec;
	int			rc;

	if (n == 0)
		return;
	for (int c = 0; c < 9; c++)
	{
		cols[c] = palloc(sizeof(Datum) * n);
		nulls[c] = palloc0(sizeof(bool) * n);
	}
	for (int i = 0; i < n; i++)
	{
		EnrichOutcome *o = outs[i];
		bool		matched = (o->kind == OUTCOME_MATCH);

		cols[0][i] = CStringGetTextDatum(keys[i]);
		cols[1][i] = matched ? JsonbPGetDatum(o->result) : (Datum) 0;
		nulls[1][i] = !matched;
		cols[2][i] = BoolGetDatum(matched);
		cols[3][i] = o->source ? CStringGetTextDatum(o->source) : (Datum) 0;
		nulls[3][i] = o->source == NULL;
		cols[4][i] = Float8GetDatum(o->confidence);
		nulls[4][i] = isnan(o->confidence);
		cols[5][i] = o->request_id ? CStringGetTextDatum(o->request_id) : (Datum) 0;
		nulls[5][i] = o->request_id == NULL;
		cols[6][i] = TimestampTzGetDatum(fetched_at[i]);
		cols[7][i] = matched && o->fields_updated ? JsonbPGetDatum(o->fields_updated) : (Datum) 0;
		nulls[7][i] = !matched || o->fields_updated == NULL;
		cols[8][i] = matched && o->fields ? CStringGetTextDatum(o->fields) : (Datum) 0;
		nulls[8][i] = !matched || o->fields == NULL;
	}
	for (int c = 0; c < ncols; c++)
		args[c] = enrich_make_array(cols[c], nulls[c], n, elem[c]);

	enrich_as_owner_begin(&save_userid, &save_sec);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		plan = full ? enrich_keep_plan(&company_store_plan, company_store_sql, 9, types) :
			enrich_keep_plan(&store_plan[kind], cache_store_sql[kind], 7, types);
		rc = SPI_execute_plan(plan, args, NULL, false, 0);
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "cache store failed: %s", SPI_result_code_string(rc));
		/* their charges go with them */
		enrich_ledger_record(kind, n, keys, outs, fetched_at);
		SPI_finish();
	}
	PG_FINALLY();
	{
		enrich_as_owner_end(save_userid, save_sec);
	}
	PG_END_TRY();
}
