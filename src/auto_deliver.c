/*-------------------------------------------------------------------------
 *
 * auto_deliver.c
 *	  The worker's side of auto_enrich: taking in the inbox the triggers
 *	  fill, and delivering answers into the target tables.
 *
 * The worker takes the inbox in after commit: it normalises the keys (an
 * invalid key leaves its row alone and is counted), remembers which raw
 * keys of which table map to which normalised key (enrich.auto_keys), and
 * queues the keys without a fresh answer.  Whenever an answer arrives —
 * fetched, already cached, or refreshed — the worker writes it into every
 * target row whose key normalises to it.
 *
 * Those writes run as the role that called auto_enrich (never as the
 * extension owner), so its table privileges, column privileges and
 * row-level security apply; each target is written in a subtransaction so
 * that a dropped, altered or forbidden target fails its own items with a
 * clear error and nothing else.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/resowner.h"
#include "utils/syscache.h"

#include "entry.h"

/* How many inbox rows the worker takes in per turn. */
#define INBOX_BATCH 5000

/* ---- delivering ---- */

/*
 * The search path a role's write into its table runs with (and its
 * triggers): "$user", public, as a session of that role has by default.
 * The worker's own statements run with pg_catalog alone.
 */
static void
push_role_search_path(Oid role)
{
	OverrideSearchPath path;
	char	   *rolname = GetUserNameFromId(role, true);
	Oid			nsp;

	memset(&path, 0, sizeof(path));
	path.addCatalog = true;
	if (rolname != NULL && OidIsValid(nsp = get_namespace_oid(rolname, true)))
		path.schemas = lappend_oid(path.schemas, nsp);
	if (OidIsValid(nsp = get_namespace_oid("public", true)))
		path.schemas = lappend_oid(path.schemas, nsp);
	PushOverrideSearchPath(&path);
}

/*
 * Writes answers into one target as its configuring role, in a
 * subtransaction: rawkeys[i] gets results[i]; the rows of the nomatch raw
 * keys lose an answer they may hold from their key's previous value.
 * (Only the latter reads the result column, so that UPDATE on it is all a
 * role needs for answers.)  Returns NULL, or the error message when it
 * failed.
 */
static char *
deliver_one(Oid relid, Oid role, const char *keycol, const char *rescol,
			Datum rawkeys, Datum results, Datum nomatch)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	char	   *volatile err = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		Oid			save_userid;
		int			save_sec;
		Oid			types[2] = {TEXTARRAYOID, JSONBARRAYOID};
		Datum		values[2] = {rawkeys, results};
		int			rc2 = SPI_OK_UPDATE;
		char	   *qrel;
		int			rc;

		if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("table with OID %u no longer exists", relid),
					 errhint("Call enrich.stop_auto_enrich(%u).", relid)));
		if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(role)))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("role with OID %u no longer exists", role)));
		qrel = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
										  get_rel_name(relid));
		GetUserIdAndSecContext(&save_userid, &save_sec);
		SetUserIdAndSecContext(role, save_sec | SECURITY_LOCAL_USERID_CHANGE);
		push_role_search_path(role);
		rc = SPI_OK_UPDATE;
		if (rawkeys != (Datum) 0)
			rc = SPI_execute_with_args(psprintf("UPDATE %s AS t SET %s = u.r "
												"FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS u(k, r) "
												"WHERE t.%s OPERATOR(pg_catalog.=) u.k",
												qrel, quote_identifier(rescol), quote_identifier(keycol)),
									   2, types, values, NULL, false, 0);
		if (nomatch != (Datum) 0)
			rc2 = SPI_execute_with_args(psprintf("UPDATE %s SET %s = NULL "
												 "WHERE %s OPERATOR(pg_catalog.=) ANY ($1) AND %s IS NOT NULL",
												 qrel, quote_identifier(rescol), quote_identifier(keycol),
												 quote_identifier(rescol)),
										1, types, &nomatch, NULL, false, 0);
		PopOverrideSearchPath();
		SetUserIdAndSecContext(save_userid, save_sec);
		if (rc2 != SPI_OK_UPDATE)
			rc = rc2;
		if (rc != SPI_OK_UPDATE)
			elog(ERROR, "UPDATE of %s failed: %s", qrel, SPI_result_code_string(rc));
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(cxt);
		ed = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		err = psprintf("could not write the answer into table %s: %s",
					   get_rel_name(relid) ? get_rel_name(relid) : psprintf("with OID %u", relid),
					   ed->message);
		FreeErrorData(ed);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return err;
}

/*
 * Whether any table is enriched automatically with answers of this kind
 * (in the worker's transaction, connected to SPI): if none is, the worker
 * skips delivering answers altogether.
 */
bool
enrich_auto_has_targets(EnrichKind kind)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	bool		isnull;

	(void) enrich_keep_plan(&plan, "SELECT EXISTS (SELECT 1 FROM enrich.auto_targets"
							" WHERE kind OPERATOR(pg_catalog.=) $1)", 1, types);
	values[0] = CStringGetTextDatum(enrich_kind_name(kind));
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read enrich.auto_targets");
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Adds an answer (result NULL for "no match") to a batch of deliveries;
 * queue_id is the item it finishes (0: none) and status what that item
 * becomes once the answer is delivered.
 */
void
enrich_auto_add(EnrichDeliveries *d, const char *key, Jsonb *result,
				int64 queue_id, const char *status)
{
	if (d->n == d->cap)
	{
		int			cap = Max(d->cap * 2, 16);

		d->keys = d->cap ? repalloc(d->keys, sizeof(char *) * cap) : palloc(sizeof(char *) * cap);
		d->results = d->cap ? repalloc(d->results, sizeof(Jsonb *) * cap) : palloc(sizeof(Jsonb *) * cap);
		d->queue_ids = d->cap ? repalloc(d->queue_ids, sizeof(int64) * cap) : palloc(sizeof(int64) * cap);
		d->status = d->cap ? repalloc(d->status, sizeof(char *) * cap) : palloc(sizeof(char *) * cap);
		d->cap = cap;
	}
	d->keys[d->n] = pstrdup(key);
	d->results[d->n] = result;
	d->queue_ids[d->n] = queue_id;
	d->status[d->n] = status;
	d->n++;
}

/* One normalised key of a batch: its answer, and the error delivering it. */
typedef struct KeyEntry
{
	char	   *key;
	Jsonb	   *result;
	char	   *error;
} KeyEntry;

/*
 * Puts a batch's keys into a hash table (the answer of each, once) and
 * returns them as a text array.
 */
static HTAB *
key_table(EnrichDeliveries *d, Datum *keyarray)
{
	HTAB	   *table = enrich_string_table("enrich deliveries", d->n, sizeof(KeyEntry));
	Datum	   *keys = palloc(sizeof(Datum) * d->n);

	for (int i = 0; i < d->n; i++)
	{
		bool		found;
		KeyEntry   *e = hash_search(table, &d->keys[i], HASH_ENTER, &found);

		if (!found)
		{
			e->result = d->results[i];
			e->error = NULL;
		}
		keys[i] = CStringGetTextDatum(d->keys[i]);
	}
	*keyarray = enrich_make_array(keys, NULL, d->n, TEXTOID);
	return table;
}

/*
 * Delivers the rows of tt from start on that belong to one (target, result
 * column): one statement over all its raw keys.  If it fails, the error
 * goes to each of their keys that has none yet.  Returns where the next
 * target's rows start.
 */
static uint64
deliver_target(SPITupleTable *tt, uint64 start, uint64 n, HTAB *table)
{
	bool		isnull;
	Oid			relid = DatumGetObjectId(SPI_getbinval(tt->vals[start], tt->tupdesc, 1, &isnull));
	Oid			role = DatumGetObjectId(SPI_getbinval(tt->vals[start], tt->tupdesc, 2, &isnull));
	char	   *keycol = SPI_getvalue(tt->vals[start], tt->tupdesc, 3);
	char	   *rescol = SPI_getvalue(tt->vals[start], tt->tupdesc, 4);
	uint64		end = start;
	Datum	   *raws;
	Datum	   *results;
	Datum	   *nomatch;
	int			nraws;
	int			nnomatch;
	char	   *err;

	while (end < n &&
		   DatumGetObjectId(SPI_getbinval(tt->vals[end], tt->tupdesc, 1, &isnull)) == relid &&
		   strcmp(SPI_getvalue(tt->vals[end], tt->tupdesc, 4), rescol) == 0)
		end++;
	raws = palloc(sizeof(Datum) * (end - start));
	results = palloc(sizeof(Datum) * (end - start));
	nomatch = palloc(sizeof(Datum) * (end - start));
	nraws = nnomatch = 0;
	for (uint64 i = start; i < end; i++)
	{
		char	   *key = SPI_getvalue(tt->vals[i], tt->tupdesc, 5);
		KeyEntry   *e = hash_search(table, &key, HASH_FIND, NULL);
		Datum		raw = SPI_getbinval(tt->vals[i], tt->tupdesc, 6, &isnull);

		if (e->result == NULL)
			nomatch[nnomatch++] = raw;
		else
		{
			raws[nraws] = raw;
			results[nraws++] = JsonbPGetDatum(e->result);
		}
	}
	err = deliver_one(relid, role, keycol, rescol,
					  nraws ? enrich_make_array(raws, NULL, nraws, TEXTOID) : (Datum) 0,
					  nraws ? enrich_make_array(results, NULL, nraws, JSONBOID) : (Datum) 0,
					  nnomatch ? enrich_make_array(nomatch, NULL, nnomatch, TEXTOID) : (Datum) 0);
	for (uint64 i = start; i < end && err != NULL; i++)
	{
		char	   *key = SPI_getvalue(tt->vals[i], tt->tupdesc, 5);
		KeyEntry   *e = hash_search(table, &key, HASH_FIND, NULL);

		if (e->error == NULL)
			e->error = err;
	}
	return end;
}

/*
 * Finishes the queue items of a delivered batch in u: with their status,
 * or failed with the error; an answer without an item that could not be
 * written leaves a failed item as a trace.
 */
static void
finish_items(EnrichKind kind, EnrichDeliveries *d, HTAB *table, EnrichQueueUpdates *u)
{
	for (int i = 0; i < d->n; i++)
	{
		KeyEntry   *e = hash_search(table, &d->keys[i], HASH_FIND, NULL);

		if (d->queue_ids[i] != 0)
			enrich_queue_update(u, d->queue_ids[i], e->error ? "failed" : d->status[i], e->error, 0, 0);
		else if (e->error != NULL)
		{
			/* leave a trace, as a failed queue item, of what could not be written */
			Oid			ftypes[3] = {TEXTOID, TEXTOID, TEXTOID};
			Datum		fvalues[3] = {CStringGetTextDatum(enrich_kind_name(kind)),
			CStringGetTextDatum(d->keys[i]), CStringGetTextDatum(e->error)};

			enrich_auto_exec_owner("INSERT INTO enrich.queue (kind, key, status, last_error, finished_at) "
								   "VALUES ($1, $2, 'failed', $3, pg_catalog.now())", 3, ftypes, fvalues, NULL);
			e->error = NULL;	/* one trace per key */
		}
	}
}

/*
 * Writes a batch of answers of one kind into every auto target holding
 * their keys: one statement per target, as its configuring role, in a
 * subtransaction each, so that a dropped, altered or forbidden target
 * fails its own keys and nothing else.  Then finishes the batch's queue
 * items in u (finish_items).  Runs in the worker's transaction, connected
 * to SPI.
 */
void
enrich_auto_deliver(EnrichKind kind, EnrichDeliveries *d, EnrichQueueUpdates *u)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[2] = {TEXTOID, TEXTARRAYOID};
	Datum		values[2];
	HTAB	   *table;
	SPITupleTable *tt;
	uint64		n;
	uint64		start = 0;

	if (d->n == 0)
		return;
	table = key_table(d, &values[1]);

	/* every raw key of every target that maps to one of the keys */
	values[0] = CStringGetTextDatum(enrich_kind_name(kind));
	(void) enrich_keep_plan(&plan,
							"SELECT t.target, t.run_as, t.key_column::text, t.result_column::text, k.key, k.raw_key"
							"  FROM enrich.auto_targets t JOIN enrich.auto_keys k ON k.target OPERATOR(pg_catalog.=) t.target"
							" WHERE t.kind OPERATOR(pg_catalog.=) $1 AND k.key OPERATOR(pg_catalog.=) ANY ($2)"
							" ORDER BY t.target, t.result_column", 2, types);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read enrich.auto_targets");
	tt = SPI_tuptable;
	n = SPI_processed;

	/* one statement per (target, result column), over all its raw keys */
	while (start < n)
		start = deliver_target(tt, start, n, table);

	finish_items(kind, d, table, u);
	d->n = 0;
}

/* ---- the inbox ---- */

/* A raw key of a target and what it normalises to, for auto_keys. */
typedef struct RawKeyEntry
{
	char	   *hkey;			/* target OID and raw key: the hash key */
	Oid			target;
	char	   *raw;
	char	   *key;
} RawKeyEntry;

/* Writes the raw-to-normalised mappings of a batch in one statement. */
static void
store_raw_keys(HTAB *rawkeys)
{
	long		n = hash_get_num_entries(rawkeys);
	Oid			types[3] = {OIDARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
	Datum		values[3];
	Datum	   *targets;
	Datum	   *raws;
	Datum	   *keys;
	HASH_SEQ_STATUS seq;
	RawKeyEntry *e;
	int			i = 0;

	if (n == 0)
		return;
	targets = palloc(sizeof(Datum) * n);
	raws = palloc(sizeof(Datum) * n);
	keys = palloc(sizeof(Datum) * n);
	hash_seq_init(&seq, rawkeys);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		targets[i] = ObjectIdGetDatum(e->target);
		raws[i] = CStringGetTextDatum(e->raw);
		keys[i++] = CStringGetTextDatum(e->key);
	}
	values[0] = enrich_make_array(targets, NULL, n, OIDOID);
	values[1] = enrich_make_array(raws, NULL, n, TEXTOID);
	values[2] = enrich_make_array(keys, NULL, n, TEXTOID);
	enrich_auto_exec_owner("INSERT INTO enrich.auto_keys (target, raw_key, key) "
						   "SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3)) "
						   "ON CONFLICT (target, raw_key) DO UPDATE SET key = excluded.key",
						   3, types, values, NULL);
}

/*
 * Takes in one inbox row (row i of tt): normalises its raw key, maps it in
 * rawkeys (once per target and raw key), and queues the key, or adds the
 * answer the cache holds for it to the deliveries.  Rows of a table not
 * configured for the kind, and keys that do not normalise, are skipped.
 */
static void
take_row(SPITupleTable *tt, uint64 i, HTAB *rawkeys, EnrichDeliveries *deliveries)
{
	bool		isnull;
	bool		found;
	char	   *kname = SPI_getvalue(tt->vals[i], tt->tupdesc, 2);
	char	   *raw = SPI_getvalue(tt->vals[i], tt->tupdesc, 3);
	Oid			target = DatumGetObjectId(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
	const char *reason;
	EnrichKind	kind;
	char	   *key;
	char	   *hkey;
	RawKeyEntry *e;
	Jsonb	   *cached;
	EnrichCacheState st;

	if (!enrich_kind_from_name(kname, &kind) ||
		!DatumGetBool(SPI_getbinval(tt->vals[i], tt->tupdesc, 4, &isnull)))
		return;
	key = enrich_normalize_key(kind, raw, &reason);
	if (key == NULL)
	{
		enrich_stat_add(kind, STAT_INVALID_KEYS, 1);
		return;
	}
	/* the same raw key twice in a batch is mapped (and answered) once */
	hkey = psprintf("%u/%s", target, raw);
	e = hash_search(rawkeys, &hkey, HASH_ENTER, &found);
	if (found)
		return;
	e->target = target;
	e->raw = raw;
	e->key = key;
	st = enrich_cache_lookup(kind, key, &cached);
	if (st == CACHE_MISS)
	{
		/* its charge is the configuring role's */
		Datum		run_as = SPI_getbinval(tt->vals[i], tt->tupdesc, 5, &isnull);

		(void) enrich_queue_add(kind, key, isnull ? InvalidOid : DatumGetObjectId(run_as));
		return;
	}
	enrich_stat_add(kind, STAT_CACHE_HITS, 1);
	enrich_auto_add(&deliveries[kind], key, st == CACHE_HIT ? cached : NULL, 0, NULL);
}

/*
 * Takes in up to INBOX_BATCH raw keys from the triggers: normalises them,
 * maps raw to normalised keys per target, writes answers already cached
 * and queues the rest.  Runs in the worker's transaction, connected to
 * SPI.  Returns how many inbox rows it took.
 */
int
enrich_auto_take_inbox(void)
{
	Oid			qtypes[1] = {INT4OID};
	Datum		qvalues[1] = {Int32GetDatum(INBOX_BATCH)};
	EnrichDeliveries deliveries[ENRICH_NUM_KINDS];
	EnrichQueueUpdates u = {0};
	HTAB	   *rawkeys;
	SPITupleTable *tt;
	uint64		n;

	/*
	 * Rows only count for tables configured by enrich.auto_enrich: anyone
	 * else's trigger calling our trigger function must not queue (and so
	 * pay for) anything.  Rows of a table that exists but has no trigger
	 * on our function wait: that is a table a restore is loading (pg_dump
	 * creates triggers after all the data, so enrich.auto_targets and the
	 * cache may not be loaded yet either); rows of a dropped table go.
	 */
	enrich_auto_exec_owner("DELETE FROM enrich.auto_inbox i WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY("
						   "  SELECT w.ctid FROM enrich.auto_inbox w"
						   "   WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c"
						   "                      WHERE c.oid OPERATOR(pg_catalog.=) w.target::pg_catalog.oid)"
						   "      OR EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g"
						   "                  WHERE g.tgrelid OPERATOR(pg_catalog.=) w.target::pg_catalog.oid"
						   "                    AND g.tgfoid OPERATOR(pg_catalog.=) 'enrich.auto_enrich_trigger()'::pg_catalog.regprocedure::pg_catalog.oid)"
						   "   LIMIT $1)) "
						   "RETURNING target, kind, raw_key, EXISTS (SELECT 1 FROM enrich.auto_targets t"
						   "  WHERE t.target::oid OPERATOR(pg_catalog.=) i.target::oid"
						   "    AND t.kind OPERATOR(pg_catalog.=) i.kind), "
						   "(SELECT t.run_as::pg_catalog.oid FROM enrich.auto_targets t"
						   "  WHERE t.target::oid OPERATOR(pg_catalog.=) i.target::oid"
						   "    AND t.kind OPERATOR(pg_catalog.=) i.kind)", 1, qtypes, qvalues, NULL);
	tt = SPI_tuptable;
	n = SPI_processed;
	if (n == 0)
		return 0;

	memset(deliveries, 0, sizeof(deliveries));
	rawkeys = enrich_string_table("enrich raw keys", (long) n, sizeof(RawKeyEntry));
	for (uint64 i = 0; i < n; i++)
		take_row(tt, i, rawkeys, deliveries);
	store_raw_keys(rawkeys);
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		enrich_auto_deliver((EnrichKind) k, &deliveries[k], &u);
	enrich_queue_flush(&u);
	return (int) n;
}
