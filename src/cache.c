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

#include "enrich.h"

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

static SPIPlanPtr store_plan[ENRICH_NUM_KINDS];

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
		ct->relid = relid;
	}
	return ct;
}

/* Looks a key up in one cache table under the given snapshot. */
static EnrichCacheState
cache_probe(CacheTable *ct, const char *key, Snapshot snap, Jsonb **result)
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

		if (enrich_cache_fresh(matched, fetched))
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
	CacheTable *ct = cache_table(kind);
	EnrichCacheState state = CACHE_MISS;
	Snapshot	snap;

	*result = NULL;
	if (ActiveSnapshotSet())
		state = cache_probe(ct, key, GetActiveSnapshot(), result);
	if (state != CACHE_MISS)
		return state;
	CommandCounterIncrement();
	snap = RegisterSnapshot(GetTransactionSnapshot());
	state = cache_probe(ct, key, snap, result);
	UnregisterSnapshot(snap);
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
	Oid			types[7] = {TEXTARRAYOID, JSONBARRAYOID, BOOLARRAYOID, TEXTARRAYOID,
	FLOAT8ARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID};
	Oid			elem[7] = {TEXTOID, JSONBOID, BOOLOID, TEXTOID, FLOAT8OID, TEXTOID, TIMESTAMPTZOID};
	Datum	   *cols[7];
	bool	   *nulls[7];
	Datum		args[7];
	Oid			save_userid;
	int			save_sec;
	int			rc;

	if (n == 0)
		return;
	for (int c = 0; c < 7; c++)
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
		cols[6][i] = TimestampTzGetDatum(fetched_at);
	}
	for (int c = 0; c < 7; c++)
		args[c] = enrich_make_array(cols[c], nulls[c], n, elem[c]);

	enrich_as_owner_begin(&save_userid, &save_sec);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		rc = SPI_execute_plan(enrich_keep_plan(&store_plan[kind], cache_store_sql[kind], 7, types),
							  args, NULL, false, 0);
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "cache store failed: %s", SPI_result_code_string(rc));
		SPI_finish();
	}
	PG_FINALLY();
	{
		enrich_as_owner_end(save_userid, save_sec);
	}
	PG_END_TRY();
}
