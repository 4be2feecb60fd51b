/*-------------------------------------------------------------------------
 *
 * ledger.c
 *	  enrich.ledger: one row per credit a provider charged, written with the
 *	  answer, and deleted after enrich.ledger_retention.
 *
 * A charge is recorded by the statement that writes its answer into the
 * cache (cache.c calls enrich_ledger_record), so it commits or rolls back
 * with that row: when the caller's transaction does not commit, the answer
 * stays in the spool (spool.c) with what the ledger needs (the charge's
 * id, role and path), and whoever takes the answer in records the charge.
 * So the ledger is exactly as durable as the answers.  A charge has an id
 * (the LeadLex request's Idempotency-Key, one made for a Slintel answer),
 * the primary key: an answer taken in twice -- a crash between the commit
 * of its row and the removal of its spool file -- is recorded once.
 *
 * A charge of an earlier server life (from before this one began to spend:
 * a start, a crash restart, a promotion) recorded now, taken in from the
 * spool after a crash, is added to the budgets' use (credits_ledger.c);
 * those of this life were counted as they were settled.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "storage.h"

static SPIPlanPtr record_plan = NULL;
static SPIPlanPtr record_earlier_plan = NULL;
static SPIPlanPtr delete_plan = NULL;

/*
 * The insert of a batch of charges: $1 ids, $2 times, $3 the provider,
 * $4 keys, $5 roles, $6 paths, $7 request ids.
 */
#define LEDGER_INSERT \
	"INSERT INTO enrich.ledger (charge, at, provider, key, role, path, request_id) " \
	"SELECT r.c::pg_catalog.uuid, r.a, $3, r.k, r.o::pg_catalog.regrole, r.p, r.q " \
	"FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($4), " \
	" pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7)) " \
	" AS r(c, a, k, o, p, q) " \
	"ON CONFLICT (charge) DO NOTHING"

/* Whether this database's SQL objects have the ledger (version 0.3.0 on). */
static bool
ledger_exists(void)
{
	Oid			nsp = get_namespace_oid("enrich", true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("ledger", nsp));
}

/* The path's name in the ledger. */
static const char *
path_name(char path)
{
	switch (path)
	{
		case 'b':
			return "batch";
		case 'w':
			return "worker";
		default:
			return "sync";
	}
}

/*
 * Adds the charges just recorded (the rows SPI_tuptable returned: their
 * roles and times) that are of an earlier server life to the budgets: the
 * provider's, and those of the roles they count under.  Such charges come
 * only from the spool after a crash, a few at a time.
 */
static void
add_earlier(EnrichKind kind, TimestampTz born)
{
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		HeapTuple	tup = SPI_tuptable->vals[i];
		Datum		role = SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull);
		TimestampTz at;

		if (isnull)
			role = ObjectIdGetDatum(InvalidOid);
		at = DatumGetTimestampTz(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
		if (at < born)
			enrich_credit_add_earlier(kind, DatumGetObjectId(role), at, 1);
	}
}

/*
 * Records the charges among n answers of one kind, each fetched at its
 * time in at[].  Runs inside the caller's SPI connection, as the owner of
 * the extension's tables (the cache store does).
 */
void
enrich_ledger_record(EnrichKind kind, int n, char **keys, EnrichOutcome **outs,
					 const TimestampTz *at)
{
	Oid			types[7] = {TEXTARRAYOID, TIMESTAMPTZARRAYOID, TEXTOID, TEXTARRAYOID,
	OIDARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
	Datum		args[7];
	Datum	   *charge = palloc(sizeof(Datum) * n);
	Datum	   *when = palloc(sizeof(Datum) * n);
	Datum	   *key = palloc(sizeof(Datum) * n);
	Datum	   *role = palloc(sizeof(Datum) * n);
	bool	   *role_null = palloc(sizeof(bool) * n);
	Datum	   *path = palloc(sizeof(Datum) * n);
	Datum	   *rid = palloc(sizeof(Datum) * n);
	bool	   *rid_null = palloc(sizeof(bool) * n);
	int			m = 0;
	int			rc;
	TimestampTz born;
	bool		earlier = false;
	SPIPlanPtr	plan;

	for (int i = 0; i < n; i++)
	{
		EnrichOutcome *o = outs[i];

		if (o->kind != OUTCOME_MATCH || !o->charged || o->charge[0] == '\0')
			continue;
		charge[m] = CStringGetTextDatum(o->charge);
		when[m] = TimestampTzGetDatum(at[i]);
		key[m] = CStringGetTextDatum(keys[i]);
		role[m] = ObjectIdGetDatum(o->charge_role);
		role_null[m] = !OidIsValid(o->charge_role);
		path[m] = CStringGetTextDatum(path_name(o->charge_path));
		rid[m] = o->request_id ? CStringGetTextDatum(o->request_id) : (Datum) 0;
		rid_null[m] = o->request_id == NULL;
		m++;
	}
	if (m == 0 || !ledger_exists())
		return;
	/* the budgets count this database's ledger before it gets older rows */
	enrich_limits_load();
	args[0] = enrich_make_array(charge, NULL, m, TEXTOID);
	args[1] = enrich_make_array(when, NULL, m, TIMESTAMPTZOID);
	args[2] = CStringGetTextDatum(enrich_provider_key(kind));
	args[3] = enrich_make_array(key, NULL, m, TEXTOID);
	args[4] = enrich_make_array(role, role_null, m, OIDOID);
	args[5] = enrich_make_array(path, NULL, m, TEXTOID);
	args[6] = enrich_make_array(rid, rid_null, m, TEXTOID);

	/*
	 * Which rows went in is read back only when some charge is of an
	 * earlier server life (taken in from the spool after a crash).
	 */
	born = enrich_shared != NULL ? enrich_shared->born : 0;
	for (int i = 0; i < n && !earlier; i++)
		earlier = at[i] < born;
	if (earlier)
		plan = enrich_keep_plan(&record_earlier_plan, LEDGER_INSERT " RETURNING role::pg_catalog.oid, at",
								7, types);
	else
		plan = enrich_keep_plan(&record_plan, LEDGER_INSERT, 7, types);
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	if (rc != (earlier ? SPI_OK_INSERT_RETURNING : SPI_OK_INSERT))
		elog(ERROR, "could not record charges in enrich.ledger: %s", SPI_result_code_string(rc));
	/* charges of an earlier server life count in the budgets now */
	if (earlier)
		add_earlier(kind, born);
}

/*
 * Deletes up to limit ledger rows charged before the given time, but none
 * of the current period of a budget (enrich.credit_limits,
 * enrich.role_credit_limits): a restart counts those again.  Runs
 * connected to SPI, as the owner; returns how many it deleted.
 */
int
enrich_ledger_delete_before(TimestampTz before, int limit)
{
	Oid			types[2] = {TIMESTAMPTZOID, INT4OID};
	Datum		args[2] = {TimestampTzGetDatum(before), Int32GetDatum(limit)};

	if (!ledger_exists())
		return 0;
	if (SPI_execute_plan(enrich_keep_plan(&delete_plan,
										  "DELETE FROM enrich.ledger"
										  " WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY("
										  "   SELECT ctid FROM enrich.ledger"
										  "    WHERE at OPERATOR(pg_catalog.<) LEAST($1,"
										  "      (SELECT pg_catalog.min(period_start) FROM enrich.credit_limits"
										  "        WHERE credits IS NOT NULL),"
										  "      (SELECT pg_catalog.min(period_start) FROM enrich.role_credit_limits))"
										  "    LIMIT $2))", 2, types),
						 args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete old rows of enrich.ledger");
	return (int) SPI_processed;
}
