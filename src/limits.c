/*-------------------------------------------------------------------------
 *
 * limits.c
 *	  Rate limits, credit budgets and statistics as SQL sees them.
 *
 * enrich.set_rate_limit() and enrich.set_credit_limit() write the tables
 * enrich.rate_limits and enrich.credit_limits (which survive restarts) and
 * the shared state (which every session and the worker obey at once).
 * enrich.credits and enrich.stats are views over the shared state.
 * enrich.resume() lifts a provider's pause.  enrich.restore_limit_row()
 * is the trigger that lets a restored dump replace the limit rows
 * CREATE EXTENSION made (pg_dump marks the tables, in the install
 * script).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "entry.h"

PG_FUNCTION_INFO_V1(set_rate_limit);
PG_FUNCTION_INFO_V1(set_credit_limit);
PG_FUNCTION_INFO_V1(credit_status);
PG_FUNCTION_INFO_V1(provider_stats);
PG_FUNCTION_INFO_V1(stats_reset);
PG_FUNCTION_INFO_V1(resume);
PG_FUNCTION_INFO_V1(restore_limit_row);


/* Parses a provider name argument, raising 22023 for anything else. */
EnrichKind
enrich_provider_arg(text *arg)
{
	char	   *name = text_to_cstring(arg);

	if (strcmp(name, "leadlex") == 0)
		return ENRICH_COMPANY;
	if (strcmp(name, "slintel") == 0)
		return ENRICH_LEAD;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown provider \"%s\"", name),
			 errhint("The providers are \"leadlex\" and \"slintel\".")));
	pg_unreachable();
}

/* An interval as microseconds; months count as 30 days. */
int64
enrich_interval_us(Interval *iv)
{
	return iv->time + (int64) iv->day * USECS_PER_DAY +
		(int64) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;
}

/* Only superusers and members of the extension owner may change limits. */
void
enrich_require_limit_privilege(const char *fname)
{
	if (!superuser() && !has_privs_of_role(GetUserId(), enrich_owner()))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", fname),
				 errdetail("Only superusers and the owner of extension enrich may change limits.")));
}

/*
 * enrich.set_rate_limit(provider text, requests int, per interval,
 *						 max_concurrency int DEFAULT NULL) RETURNS void
 */
Datum
set_rate_limit(PG_FUNCTION_ARGS)
{
	EnrichKind	kind;
	Oid			types[4] = {TEXTOID, INT4OID, INTERVALOID, INT4OID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	int32		requests = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1);
	int64		per_us = PG_ARGISNULL(2) ? 0 : enrich_interval_us(PG_GETARG_INTERVAL_P(2));
	int32		conc = PG_ARGISNULL(3) ? 0 : PG_GETARG_INT32(3);

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("provider must not be null")));
	kind = enrich_provider_arg(PG_GETARG_TEXT_PP(0));
	enrich_require_primary("change limits");
	enrich_require_limit_privilege("set_rate_limit");
	if (PG_ARGISNULL(1) != PG_ARGISNULL(2) || (!PG_ARGISNULL(1) && (requests <= 0 || per_us <= 0)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid rate limit"),
				 errdetail("requests and per must both be positive, or both null for no limit.")));
	if (!PG_ARGISNULL(3) && conc <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_concurrency must be positive or null")));

	values[0] = CStringGetTextDatum(enrich_provider_key(kind));
	for (int i = 1; i < 4; i++)
	{
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	enrich_exec_as_owner("UPDATE enrich.rate_limits SET requests = $2, per = $3, max_concurrency = $4 "
				  "WHERE provider OPERATOR(pg_catalog.=) $1",
				  4, types, values, nulls, SPI_OK_UPDATE);

	if (enrich_shared)
	{
		EnrichProviderShared *p = &enrich_shared->prov[kind];

		enrich_limits_load();
		LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
		p->rate_requests = requests;
		p->rate_per_us = per_us;
		p->rate_max_concurrency = conc;
		LWLockRelease(enrich_shared->lock);
		enrich_wake_worker();
	}
	PG_RETURN_VOID();
}

/*
 * Checks the arguments (provider, credits, per) of set_credit_limit and
 * set_role_credit_limit, the `first` of them and the two after it, and the
 * caller's right to change limits.  Returns the provider; *credits is -1
 * for NULL, *per_us 0 for NULL.
 */
EnrichKind
enrich_credit_limit_args(FunctionCallInfo fcinfo, int first, const char *fname,
						 int64 *credits, int64 *per_us)
{
	EnrichKind	kind;

	if (PG_ARGISNULL(first))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("provider must not be null")));
	kind = enrich_provider_arg(PG_GETARG_TEXT_PP(first));
	*credits = PG_ARGISNULL(first + 1) ? -1 : PG_GETARG_INT64(first + 1);
	*per_us = PG_ARGISNULL(first + 2) ? 0 : enrich_interval_us(PG_GETARG_INTERVAL_P(first + 2));
	enrich_require_primary("change limits");
	/* without shared memory a limit can only be removed (see above) */
	if (!PG_ARGISNULL(first + 1))
		enrich_require_shared(psprintf("enrich.%s", fname));
	enrich_require_limit_privilege(fname);
	if (!PG_ARGISNULL(first + 1) && *credits < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("credits must not be negative")));
	if (!PG_ARGISNULL(first + 2) && *per_us <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("per must be a positive interval or null")));
	return kind;
}

/*
 * enrich.set_credit_limit(provider text, credits bigint,
 *						   per interval DEFAULT NULL) RETURNS void
 *
 * NULL credits: no limit.  NULL per: a total counted from this call on.
 * With a period, the period starts now unless it is unchanged, in which
 * case what was used in it still counts.
 */
Datum
set_credit_limit(PG_FUNCTION_ARGS)
{
	int64		credits;
	int64		per_us;
	EnrichKind	kind = enrich_credit_limit_args(fcinfo, 0, "set_credit_limit", &credits, &per_us);
	Oid			types[5] = {TEXTOID, INT8OID, INTERVALOID, TIMESTAMPTZOID, INT8OID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz start = now;
	int64		used = 0;

	enrich_limits_load();
	if (enrich_shared)
	{
		EnrichBudget *b = &enrich_shared->prov[kind].budget;

		LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
		enrich_budget_set(b, credits, per_us, now);
		start = b->period_start;
		used = b->credits_used;
		LWLockRelease(enrich_shared->lock);
	}

	values[0] = CStringGetTextDatum(enrich_provider_key(kind));
	values[1] = Int64GetDatum(credits);
	nulls[1] = PG_ARGISNULL(1) ? 'n' : ' ';
	values[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[2] = PG_ARGISNULL(2) ? 'n' : ' ';
	values[3] = TimestampTzGetDatum(start);
	values[4] = Int64GetDatum(used);
	enrich_exec_as_owner("UPDATE enrich.credit_limits SET credits = $2, per = $3, period_start = $4, used = $5 "
				  "WHERE provider OPERATOR(pg_catalog.=) $1",
				  5, types, values, nulls, SPI_OK_UPDATE);
	enrich_wake_worker();
	PG_RETURN_VOID();
}

/* Builds an interval from microseconds. */
Datum
enrich_us_interval(int64 us)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->day = us / USECS_PER_DAY;
	iv->time = us % USECS_PER_DAY;
	return IntervalPGetDatum(iv);
}

/*
 * Fills the columns limit, period, used and remaining of a view row from
 * a budget as it is now; *resets_at is its next reset (false: none).
 */
bool
enrich_budget_columns(const EnrichBudget *b, Datum *v, bool *n, Datum *resets_at)
{
	EnrichBudgetView bv;

	enrich_budget_view(b, GetCurrentTimestamp(), &bv);
	v[0] = Int64GetDatum(bv.limit);
	n[0] = !bv.limited;
	v[1] = enrich_us_interval(bv.period_us);
	n[1] = bv.period_us <= 0;
	v[2] = Int64GetDatum(bv.used);
	n[2] = false;
	v[3] = Int64GetDatum(bv.remaining);
	n[3] = !bv.limited;
	*resets_at = TimestampTzGetDatum(bv.resets_at);
	return bv.resets;
}

/*
 * enrich.credit_status(): one row per provider, behind the enrich.credits
 * view.
 */
Datum
credit_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	enrich_limits_load();
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
	{
		Datum		v[8];
		bool		n[8] = {false};
		EnrichProviderShared snap;

		v[0] = CStringGetTextDatum(enrich_provider_key(k));
		if (enrich_shared == NULL)
		{
			for (int i = 1; i < 8; i++)
				n[i] = true;
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
			continue;
		}
		LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
		memcpy(&snap, &enrich_shared->prov[k], offsetof(EnrichProviderShared, stats));
		LWLockRelease(enrich_shared->lock);

		n[7] = !enrich_budget_columns(&snap.budget, &v[1], &n[1], &v[7]);
		v[5] = Int64GetDatum(snap.budget.credits_reserved);
		v[6] = Int64GetDatum(snap.provider_balance);
		n[6] = snap.provider_balance < 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
	}
	return (Datum) 0;
}

/* enrich.provider_stats(): one row per provider, behind enrich.stats. */
Datum
provider_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	static const char *const pause_names[] = {NULL, "rate_limited", "no_credits", "auth", NULL};

	InitMaterializedSRF(fcinfo, 0);
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
	{
		/* the columns of 0.3.0; an older definition takes the first ones */
		Datum		v[23];
		bool		n[23] = {false};
		EnrichProviderShared *p;
		uint64		lat_n;

		v[0] = CStringGetTextDatum(enrich_provider_key(k));
		if (enrich_shared == NULL)
		{
			for (int i = 1; i < 23; i++)
				n[i] = true;
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
			continue;
		}
		p = &enrich_shared->prov[k];
		for (int s = STAT_REQUESTS; s <= STAT_INVALID_KEYS; s++)
			v[1 + s] = Int64GetDatum((int64) pg_atomic_read_u64(&p->stats[s]));
		lat_n = pg_atomic_read_u64(&p->stats[STAT_LATENCY_N]);
		v[15] = Float8GetDatum(lat_n ? pg_atomic_read_u64(&p->stats[STAT_LATENCY_US]) / 1000.0 / lat_n : 0);
		n[15] = lat_n == 0;
		LWLockAcquire(enrich_shared->lock, LW_SHARED);
		v[16] = Int32GetDatum(p->in_flight);
		v[17] = TimestampTzGetDatum(p->paused_until);
		n[17] = p->paused_until <= GetCurrentTimestamp();
		v[18] = n[17] || pause_names[p->pause_reason] == NULL ? (Datum) 0 :
			CStringGetTextDatum(pause_names[p->pause_reason]);
		n[18] = n[17] || pause_names[p->pause_reason] == NULL;
		v[19] = Int64GetDatum(p->rl_remaining);
		n[19] = p->rl_remaining < 0;
		/* NULL while the provider has not throttled: no pacing */
		v[20] = Float8GetDatum(enrich_learner_rate(&p->learner));
		n[20] = !p->learner.enabled;
		LWLockRelease(enrich_shared->lock);
		v[21] = Int64GetDatum((int64) pg_atomic_read_u64(&p->stats[STAT_REFRESHES_UNCHANGED]));
		v[22] = TimestampTzGetDatum(enrich_stats_reset_at());
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
	}
	return (Datum) 0;
}

/*
 * enrich.stats_reset() RETURNS void
 *
 * Sets the counters of enrich.stats to zero for every provider (EXECUTE is
 * the extension owner's; budgets and what they used are not counters and
 * stay).
 */
Datum
stats_reset(PG_FUNCTION_ARGS)
{
	enrich_require_shared("enrich.stats_reset()");
	enrich_stats_reset_all();
	PG_RETURN_VOID();
}

/*
 * enrich.resume(provider text) RETURNS void
 *
 * Lifts a pause of the provider (after a 429, a 402 or a rejected key)
 * at once, for a DBA who knows the cause is gone, and wakes the worker.
 * Queued items of the provider that were told to wait (until the end of a
 * 429's Retry-After, or a backoff) are due at once too: otherwise they
 * would still wait out the pause that was just lifted.
 */
Datum
resume(PG_FUNCTION_ARGS)
{
	EnrichKind	kind = enrich_provider_arg(PG_GETARG_TEXT_PP(0));
	Oid			types[1] = {TEXTOID};
	Datum		values[1];

	enrich_require_primary("resume a provider");
	enrich_require_shared("enrich.resume");
	enrich_require_limit_privilege("resume");
	enrich_unpause(kind, PAUSE_NONE);
	enrich_rate_forget(kind);
	values[0] = CStringGetTextDatum(enrich_kind_name(kind));
	enrich_exec_as_owner("UPDATE enrich.queue SET next_attempt_at = now(), updated_at = now() "
				  "WHERE status = 'queued' AND kind OPERATOR(pg_catalog.=) $1 AND next_attempt_at > now()",
				  1, types, values, NULL, SPI_OK_UPDATE);
	enrich_wake_worker();
	PG_RETURN_VOID();
}

/*
 * Makes the shared state read the limits from their tables again (at the
 * next enrich_limits_load) when a restore has replaced the rows of the
 * database that holds them for the cluster: the one they were read from,
 * or one a worker serves (which keeps the credits used).
 */
static void
limits_changed(void)
{
	bool		served;

	if (enrich_shared == NULL)
		return;
	served = enrich_dbw_served(MyDatabaseId);
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	if (enrich_shared->limits_db == MyDatabaseId || served)
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
