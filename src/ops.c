/*-------------------------------------------------------------------------
 *
 * ops.c
 *	  What a DBA's ordinary tools need: restoring a dump over the rows
 *	  CREATE EXTENSION makes, and refusing to buy on a hot standby.
 *
 * pg_dump dumps the extension's tables (pg_extension_config_dump, in the
 * install script), and a restore loads them right after CREATE EXTENSION,
 * which has already made one row per provider in enrich.rate_limits and
 * enrich.credit_limits.  A BEFORE INSERT trigger on those two tables,
 * restore_limit_row, turns the insert of a row for a provider that is
 * already there into an update of that row, so that the dumped limits
 * (and the credits used in the period) replace the installed defaults
 * instead of failing on the primary key.
 *
 * On a hot standby nothing can be written: an answer bought there could
 * not be cached, so every path that would send a request or queue one
 * asks enrich_require_primary() first and fails with 25006 before any
 * request is sent.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "enrich.h"

PG_FUNCTION_INFO_V1(restore_limit_row);

/*
 * Raises 25006 on a hot standby, before anything is sent or written:
 * `what` completes "cannot ... during recovery".
 */
void
enrich_require_primary(const char *what)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot %s during recovery", what),
				 errdetail("This server is a hot standby: it serves cached answers only, and nothing bought here could be kept."),
				 errhint("Run it on the primary server.")));
}

/*
 * Makes the shared state read the limits from their tables again (at the
 * next enrich_limits_load) when a restore has replaced the rows of the
 * database that holds them for the cluster: the one they were read from,
 * or the one the worker serves (which keeps the credits used).
 */
static void
limits_changed(void)
{
	if (enrich_shared == NULL)
		return;
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	if (enrich_shared->limits_db == MyDatabaseId ||
		(enrich_shared->worker_proc != NULL && enrich_shared->worker_db == MyDatabaseId))
		enrich_shared->limits_loaded = false;
	LWLockRelease(enrich_shared->lock);
}

/*
 * enrich.restore_limit_row(): BEFORE INSERT FOR EACH ROW on
 * enrich.rate_limits and enrich.credit_limits.  When the provider's row
 * exists, it gets the new row's values and the insert is skipped;
 * otherwise the row goes in as it is.
 */
Datum
restore_limit_row(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	tup;
	StringInfoData sql;
	AttrNumber	provider;
	Oid		   *types;
	Datum	   *values;
	char	   *nulls;
	int			nargs = 1;
	int			rc;
	bool		isnull;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) || !TRIGGER_FIRED_BY_INSERT(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("restore_limit_row must be fired BEFORE INSERT FOR EACH ROW")));
	desc = RelationGetDescr(td->tg_relation);
	tup = td->tg_trigtuple;
	provider = SPI_fnumber(desc, "provider");
	if (provider <= 0)
		elog(ERROR, "table \"%s\" has no column \"provider\"",
			 RelationGetRelationName(td->tg_relation));

	types = palloc(sizeof(Oid) * (desc->natts + 1));
	values = palloc(sizeof(Datum) * (desc->natts + 1));
	nulls = palloc(sizeof(char) * (desc->natts + 1));
	types[0] = TEXTOID;
	values[0] = heap_getattr(tup, provider, desc, &isnull);
	nulls[0] = isnull ? 'n' : ' ';

	initStringInfo(&sql);
	appendStringInfo(&sql, "UPDATE %s SET ",
					 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(td->tg_relation)),
												RelationGetRelationName(td->tg_relation)));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || att->attnum == provider)
			continue;
		types[nargs] = att->atttypid;
		values[nargs] = heap_getattr(tup, att->attnum, desc, &isnull);
		nulls[nargs] = isnull ? 'n' : ' ';
		nargs++;
		appendStringInfo(&sql, "%s%s = $%d", nargs > 2 ? ", " : "",
						 quote_identifier(NameStr(att->attname)), nargs);
	}
	appendStringInfoString(&sql, " WHERE provider OPERATOR(pg_catalog.=) $1");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_with_args(sql.data, nargs, types, values, nulls, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "could not update the limits of a provider: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
	{
		SPI_finish();
		return PointerGetDatum(tup);
	}
	SPI_finish();
	limits_changed();
	return PointerGetDatum(NULL);
}
