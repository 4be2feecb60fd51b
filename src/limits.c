/*-------------------------------------------------------------------------
 *
 * limits.c
 *	  Rate limits, credit budgets and statistics as SQL sees them.
 *
 * enrich.set_rate_limit() and enrich.set_credit_limit() write the tables
 * enrich.rate_limits and enrich.credit_limits (which survive restarts) and
 * the shared state (which every session and the worker obey at once).
 * enrich.credits and enrich.stats are views over the shared state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "enrich.h"

PG_FUNCTION_INFO_V1(set_rate_limit);
PG_FUNCTION_INFO_V1(set_credit_limit);
PG_FUNCTION_INFO_V1(credit_status);
PG_FUNCTION_INFO_V1(provider_stats);
PG_FUNCTION_INFO_V1(resume);

static const char *const provider_keys[ENRICH_NUM_KINDS] = {"leadlex", "slintel"};

/* Parses a provider name argument, raising 22023 for anything else. */
static EnrichKind
provider_arg(text *arg)
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
static int64
interval_us(Interval *iv)
{
	return iv->time + (int64) iv->day * USECS_PER_DAY +
		(int64) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;
}

/* Only superusers and members of the extension owner may change limits. */
static void
require_limit_privilege(const char *fname)
{
	if (!superuser() && !has_privs_of_role(GetUserId(), enrich_owner()))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", fname),
				 errdetail("Only superusers and the owner of extension enrich may change limits.")));
}

/* Runs one statement as the extension owner, with parameters. */
static void
exec_as_owner(const char *sql, int nargs, Oid *types, Datum *values,
			  const char *nulls, int expect)
{
	Oid			save_userid;
	int			save_sec;
	int			rc;

	enrich_as_owner_begin(&save_userid, &save_sec);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);
	if (rc != expect)
		elog(ERROR, "statement failed: %s", SPI_result_code_string(rc));
	SPI_finish();
	enrich_as_owner_end(save_userid, save_sec);
}

/*
 * Loads the limits of both providers from their tables into shared memory,
 * once per server start (set_* keep both in step afterwards).  Needs a
 * transaction; does nothing outside one or without shared memory.
 */
void
enrich_limits_load(void)
{
	Oid			save_userid;
	int			save_sec;

	if (enrich_shared == NULL || enrich_shared->limits_loaded ||
		!IsTransactionState() || !OidIsValid(get_namespace_oid("enrich", true)))
		return;

	enrich_as_owner_begin(&save_userid, &save_sec);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT r.provider, r.requests, "
					"  (extract(epoch FROM r.per) * 1000000)::int8, r.max_concurrency, "
					"  c.credits, (extract(epoch FROM c.per) * 1000000)::int8, "
					"  c.period_start, c.used "
					"FROM enrich.rate_limits r JOIN enrich.credit_limits c USING (provider)",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read enrich.rate_limits and enrich.credit_limits");

	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	for (uint64 i = 0; i < SPI_processed && !enrich_shared->limits_loaded; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *prov = SPI_getvalue(tup, desc, 1);
		EnrichKind	k = strcmp(prov, "leadlex") == 0 ? ENRICH_COMPANY : ENRICH_LEAD;
		EnrichProviderShared *p = &enrich_shared->prov[k];
		bool		n1,
					n2,
					n3,
					n4,
					n5,
					n6,
					n7;
		Datum		req = SPI_getbinval(tup, desc, 2, &n1);
		Datum		per = SPI_getbinval(tup, desc, 3, &n2);
		Datum		conc = SPI_getbinval(tup, desc, 4, &n3);
		Datum		credits = SPI_getbinval(tup, desc, 5, &n4);
		Datum		cper = SPI_getbinval(tup, desc, 6, &n5);
		Datum		start = SPI_getbinval(tup, desc, 7, &n6);
		Datum		used = SPI_getbinval(tup, desc, 8, &n7);

		p->rate_requests = (n1 || n2) ? 0 : DatumGetInt32(req);
		p->rate_per_us = n2 ? 0 : DatumGetInt64(per);
		p->rate_max_concurrency = n3 ? 0 : DatumGetInt32(conc);
		p->credit_limit = n4 ? -1 : DatumGetInt64(credits);
		p->credit_period_us = n5 ? 0 : DatumGetInt64(cper);
		p->period_start = n6 ? GetCurrentTimestamp() : DatumGetTimestampTz(start);
		p->credits_used = n7 ? 0 : DatumGetInt64(used);
	}
	enrich_shared->limits_loaded = true;
	enrich_shared->limits_db = MyDatabaseId;
	LWLockRelease(enrich_shared->lock);
	SPI_finish();
	enrich_as_owner_end(save_userid, save_sec);
}

/*
 * Without shared memory no budget can be kept across sessions, so a call
 * that would spend under a set credit limit is refused (55000) before any
 * request.  Checked once per transaction and provider.
 */
void
enrich_limits_check_unshared(EnrichKind kind)
{
	static LocalTransactionId checked_in[ENRICH_NUM_KINDS];
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	Oid			save_userid;
	int			save_sec;
	bool		limited;

	if (checked_in[kind] == MyProc->lxid ||
		!OidIsValid(get_namespace_oid("enrich", true)))
		return;
	values[0] = CStringGetTextDatum(provider_keys[kind]);
	enrich_as_owner_begin(&save_userid, &save_sec);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT 1 FROM enrich.credit_limits "
							  "WHERE provider OPERATOR(pg_catalog.=) $1 AND credits IS NOT NULL",
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read enrich.credit_limits");
	limited = SPI_processed > 0;
	SPI_finish();
	enrich_as_owner_end(save_userid, save_sec);
	if (limited)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the credit budget for %s needs enrich in shared_preload_libraries",
						enrich_provider_name(kind)),
				 errdetail("A credit limit is set for %s, and without shared memory it cannot be kept; no request was sent.",
						   provider_keys[kind]),
				 errhint("Add enrich to shared_preload_libraries in postgresql.conf and restart the server, or remove the limit with enrich.set_credit_limit('%s', NULL).",
						 provider_keys[kind])));
	checked_in[kind] = MyProc->lxid;
}

/*
 * Writes the credits used in the current period back to
 * enrich.credit_limits.  The worker calls it inside its transactions.
 */
void
enrich_limits_save_usage(void)
{
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
	{
		EnrichProviderShared *p = &enrich_shared->prov[k];
		Oid			types[3] = {TEXTOID, INT8OID, TIMESTAMPTZOID};
		Datum		values[3];
		bool		dirty;

		LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
		/* without a budget there is nothing to count against */
		dirty = p->usage_dirty && p->credit_limit >= 0;
		p->usage_dirty = false;
		values[1] = Int64GetDatum(p->credits_used);
		values[2] = TimestampTzGetDatum(p->period_start);
		LWLockRelease(enrich_shared->lock);
		if (!dirty)
			continue;
		values[0] = CStringGetTextDatum(provider_keys[k]);
		exec_as_owner("UPDATE enrich.credit_limits SET used = $2, period_start = $3 "
					  "WHERE provider OPERATOR(pg_catalog.=) $1",
					  3, types, values, NULL, SPI_OK_UPDATE);
	}
}

/* Counts a finished try in the statistics. */
void
enrich_stats_outcome(EnrichKind kind, const EnrichOutcome *out, double elapsed)
{
	static const EnrichStat err_stat[] = {
		[OUTCOME_TRANSIENT] = STAT_ERR_TRANSIENT,
		[OUTCOME_RATE_LIMITED] = STAT_ERR_RATE,
		[OUTCOME_NO_CREDITS] = STAT_ERR_CREDITS,
		[OUTCOME_AUTH] = STAT_ERR_AUTH,
		[OUTCOME_REJECTED] = STAT_ERR_REJECTED,
		[OUTCOME_BAD_RESPONSE] = STAT_ERR_RESPONSE,
		[OUTCOME_CONNECT] = STAT_ERR_CONNECT,
		[OUTCOME_TLS] = STAT_ERR_CONNECT,
	};

	enrich_stat_add(kind, STAT_REQUESTS, 1);
	enrich_stat_add(kind, STAT_LATENCY_US, (uint64) (elapsed * 1000000.0));
	enrich_stat_add(kind, STAT_LATENCY_N, 1);
	if (out->kind == OUTCOME_MATCH)
		enrich_stat_add(kind, STAT_SUCCESSES, 1);
	else if (out->kind == OUTCOME_NO_MATCH)
		enrich_stat_add(kind, STAT_NO_MATCHES, 1);
	else if (out->kind > OUTCOME_NO_MATCH && out->kind <= OUTCOME_TLS)
		enrich_stat_add(kind, err_stat[out->kind], 1);
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
	int64		per_us = PG_ARGISNULL(2) ? 0 : interval_us(PG_GETARG_INTERVAL_P(2));
	int32		conc = PG_ARGISNULL(3) ? 0 : PG_GETARG_INT32(3);

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("provider must not be null")));
	kind = provider_arg(PG_GETARG_TEXT_PP(0));
	enrich_require_primary("change limits");
	require_limit_privilege("set_rate_limit");
	if (PG_ARGISNULL(1) != PG_ARGISNULL(2) || (!PG_ARGISNULL(1) && (requests <= 0 || per_us <= 0)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid rate limit"),
				 errdetail("requests and per must both be positive, or both null for no limit.")));
	if (!PG_ARGISNULL(3) && conc <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_concurrency must be positive or null")));

	values[0] = CStringGetTextDatum(provider_keys[kind]);
	for (int i = 1; i < 4; i++)
	{
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	exec_as_owner("UPDATE enrich.rate_limits SET requests = $2, per = $3, max_concurrency = $4 "
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
	EnrichKind	kind;
	int64		credits = PG_ARGISNULL(1) ? -1 : PG_GETARG_INT64(1);
	int64		per_us = PG_ARGISNULL(2) ? 0 : interval_us(PG_GETARG_INTERVAL_P(2));
	Oid			types[5] = {TEXTOID, INT8OID, INTERVALOID, TIMESTAMPTZOID, INT8OID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz start = now;
	int64		used = 0;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("provider must not be null")));
	kind = provider_arg(PG_GETARG_TEXT_PP(0));
	enrich_require_primary("change limits");
	/* without shared memory a limit can only be removed (see above) */
	if (!PG_ARGISNULL(1))
		enrich_require_shared("enrich.set_credit_limit");
	require_limit_privilege("set_credit_limit");
	if (!PG_ARGISNULL(1) && credits < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("credits must not be negative")));
	if (!PG_ARGISNULL(2) && per_us <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("per must be a positive interval or null")));

	enrich_limits_load();
	if (enrich_shared)
	{
		EnrichProviderShared *p = &enrich_shared->prov[kind];

		LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
		if (per_us > 0 && per_us == p->credit_period_us)
		{
			start = p->period_start;
			used = p->credits_used;
		}
		p->credit_limit = credits;
		p->credit_period_us = per_us;
		p->period_start = start;
		p->credits_used = used;
		p->usage_dirty = false;
		LWLockRelease(enrich_shared->lock);
	}

	values[0] = CStringGetTextDatum(provider_keys[kind]);
	values[1] = Int64GetDatum(credits);
	nulls[1] = PG_ARGISNULL(1) ? 'n' : ' ';
	values[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[2] = PG_ARGISNULL(2) ? 'n' : ' ';
	values[3] = TimestampTzGetDatum(start);
	values[4] = Int64GetDatum(used);
	exec_as_owner("UPDATE enrich.credit_limits SET credits = $2, per = $3, period_start = $4, used = $5 "
				  "WHERE provider OPERATOR(pg_catalog.=) $1",
				  5, types, values, nulls, SPI_OK_UPDATE);
	enrich_wake_worker();
	PG_RETURN_VOID();
}

/* Builds an interval from microseconds. */
static Datum
us_interval(int64 us)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->day = us / USECS_PER_DAY;
	iv->time = us % USECS_PER_DAY;
	return IntervalPGetDatum(iv);
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

		v[0] = CStringGetTextDatum(provider_keys[k]);
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

		v[1] = Int64GetDatum(snap.credit_limit);
		n[1] = snap.credit_limit < 0;
		v[2] = us_interval(snap.credit_period_us);
		n[2] = snap.credit_period_us <= 0;
		v[3] = Int64GetDatum(snap.credits_used);
		v[4] = Int64GetDatum(Max(snap.credit_limit - snap.credits_used - snap.credits_reserved, 0));
		n[4] = snap.credit_limit < 0;
		v[5] = Int64GetDatum(snap.credits_reserved);
		v[6] = Int64GetDatum(snap.provider_balance);
		n[6] = snap.provider_balance < 0;
		v[7] = TimestampTzGetDatum(snap.period_start + snap.credit_period_us);
		n[7] = snap.credit_limit < 0 || snap.credit_period_us <= 0;
		if (!n[7] && snap.period_start + snap.credit_period_us <= GetCurrentTimestamp())
		{
			/* the period has turned but nobody has asked since */
			v[3] = Int64GetDatum(0);
			v[4] = Int64GetDatum(Max(snap.credit_limit - snap.credits_reserved, 0));
			v[7] = TimestampTzGetDatum(snap.period_start +
									   ((GetCurrentTimestamp() - snap.period_start) / snap.credit_period_us + 1) *
									   snap.credit_period_us);
		}
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
		Datum		v[21];
		bool		n[21] = {false};
		EnrichProviderShared *p;
		uint64		lat_n;

		v[0] = CStringGetTextDatum(provider_keys[k]);
		if (enrich_shared == NULL)
		{
			for (int i = 1; i < 21; i++)
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
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
	}
	return (Datum) 0;
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
	EnrichKind	kind = provider_arg(PG_GETARG_TEXT_PP(0));
	Oid			types[1] = {TEXTOID};
	Datum		values[1];

	enrich_require_primary("resume a provider");
	enrich_require_shared("enrich.resume");
	require_limit_privilege("resume");
	enrich_unpause(kind, PAUSE_NONE);
	values[0] = CStringGetTextDatum(enrich_kind_name(kind));
	exec_as_owner("UPDATE enrich.queue SET next_attempt_at = now(), updated_at = now() "
				  "WHERE status = 'queued' AND kind OPERATOR(pg_catalog.=) $1 AND next_attempt_at > now()",
				  1, types, values, NULL, SPI_OK_UPDATE);
	enrich_wake_worker();
	PG_RETURN_VOID();
}
