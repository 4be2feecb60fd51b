/*-------------------------------------------------------------------------
 *
 * credits.c
 *	  Credit budgets in shared memory, and the limit tables they are kept
 *	  in.
 *
 * No request is sent that the budget cannot pay for, under any
 * concurrency: a request reserves a credit here before it is sent and
 * settles it when the answer is in (a charged answer uses it, anything
 * else gives it back).  The reservation is counted in the reserving
 * process's holder slot (shmem.c), so that it is given back however that
 * process ends.
 *
 * The limits (enrich.credit_limits, and enrich.rate_limits for rate.c)
 * are loaded from their tables into shared memory on first use.  Without
 * shared memory no budget can be kept across sessions, so a set limit
 * refuses spending (55000).
 *
 * The credits used in the current period survive restarts, crashes and
 * failovers: every charge is a row of its database's enrich.ledger
 * (ledger.c), as durable as the answer, and streamed to standbys with it.
 * A server life (a start, a crash restart, a promotion) begins to spend
 * the first time a budget is touched outside recovery (born); a period's
 * use is then what this life charged plus what came before: the most of
 * the use the workers last saved in enrich.credit_limits and the ledgers'
 * rows of the period from before born.  Each database's ledger is counted
 * once, by its first process that touches a budget (its worker, as it
 * starts); a charge an earlier life left in the spool is added as it is
 * taken in.  So a budget never buys more than its limit, whatever
 * restarts: at worst a charge in the middle of being taken in at a crash
 * counts twice.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/lsyscache.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "state.h"

static void limits_read(void);
static void life_begins(void);
static void ledger_count_mine(void);

/* Moves the credit period forward if it has ended.  Caller holds the lock. */
static void
roll_period(EnrichProviderShared *p, TimestampTz now)
{
	if (p->credit_limit < 0 || p->credit_period_us <= 0)
		return;
	if (now >= p->period_start + p->credit_period_us)
	{
		int64		n = (now - p->period_start) / p->credit_period_us;

		p->period_start += n * p->credit_period_us;
		p->credits_used = 0;
		p->used_saved = 0;
		p->used_ledgers = 0;
		p->usage_version++;
	}
}

/* Credits that may still be reserved now; -1 means no limit. */
static int64
credits_left(EnrichProviderShared *p)
{
	if (p->credit_limit < 0)
		return -1;
	return Max(p->credit_limit - p->credits_used - p->credits_reserved, 0);
}

/*
 * Reserves one credit for a request about to be sent.  RESERVE_WAIT means
 * the budget is fully reserved by requests in flight of live processes,
 * some of which may give their credit back (a no match, a failure);
 * RESERVE_NONE that it is spent.  Always RESERVE_OK without a budget.
 * Without shared memory a budget cannot be kept, so a set one refuses.
 */
EnrichReserve
enrich_credit_reserve(EnrichKind kind)
{
	EnrichProviderShared *p;
	EnrichReserve r;
	TimestampTz now = GetCurrentTimestamp();

	if (enrich_shared == NULL)
	{
		enrich_limits_check_unshared(kind);
		return RESERVE_OK;
	}
	enrich_limits_load();
	enrich_holder_attach();
	p = &enrich_shared->prov[kind];
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	roll_period(p, now);
	if (credits_left(p) == 0 && p->credits_reserved > 0)
		(void) enrich_holders_sweep(now);
	if (credits_left(p) != 0)
	{
		p->credits_reserved++;
		enrich_holder_mine(kind)->reserved++;
		r = RESERVE_OK;
	}
	else
		r = p->credits_reserved > 0 ? RESERVE_WAIT : RESERVE_NONE;
	LWLockRelease(enrich_shared->lock);
	return r;
}

/* Credits that may be reserved now (INT64_MAX without a limit). */
int64
enrich_credit_available(EnrichKind kind)
{
	EnrichProviderShared *p;
	int64		left;

	if (enrich_shared == NULL)
		return PG_INT64_MAX;
	enrich_limits_load();
	p = &enrich_shared->prov[kind];
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	roll_period(p, GetCurrentTimestamp());
	left = credits_left(p);
	LWLockRelease(enrich_shared->lock);
	return left < 0 ? PG_INT64_MAX : left;
}

/*
 * Settles a reservation: a charged answer uses the credit, anything else
 * gives it back.  Records the provider's reported balance when known.
 */
void
enrich_credit_settle(EnrichKind kind, bool reserved, bool charged, int64 balance)
{
	EnrichProviderShared *p;
	EnrichHold *hold;

	if (charged)
		enrich_stat_add(kind, STAT_CREDITS, 1);
	if (enrich_shared == NULL)
		return;
	p = &enrich_shared->prov[kind];
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	hold = enrich_holder_mine(kind);
	if (reserved && hold != NULL && hold->reserved > 0)
	{
		hold->reserved--;
		p->credits_reserved -= Min(1, p->credits_reserved);
	}
	if (charged)
	{
		p->credits_used++;
		p->credits_total++;
		p->usage_version++;
	}
	if (balance >= 0)
		p->provider_balance = balance;
	LWLockRelease(enrich_shared->lock);
}

/*
 * Loads the limits of both providers from their tables into shared memory,
 * once per server start (set_* keep both in step afterwards).  Needs a
 * transaction; does nothing outside one or without shared memory.
 */
void
enrich_limits_load(void)
{
	if (enrich_shared == NULL || !IsTransactionState() ||
		!OidIsValid(get_namespace_oid("enrich", true)))
		return;
	if (!enrich_shared->limits_loaded)
		limits_read();
	life_begins();
	ledger_count_mine();
}

/*
 * Marks when this server life may begin to spend: the first time a budget
 * is touched outside recovery, after a start, a crash restart or a
 * promotion.  Every charge of this life comes after (a request reserves
 * first), and every charge before it -- of an earlier life, or streamed
 * from the old primary to a standby now promoted -- is in a ledger.
 */
static void
life_begins(void)
{
	if (enrich_shared->born != 0 || RecoveryInProgress())
		return;
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	if (enrich_shared->born == 0)
		enrich_shared->born = GetCurrentTimestamp();
	LWLockRelease(enrich_shared->lock);
}

/* Reads both providers' limits into shared memory (enrich_limits_load). */
static void
limits_read(void)
{
	Oid			save_userid;
	int			save_sec;

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
		p->used_saved = p->credits_used;
		p->used_ledgers = 0;
	}
	enrich_shared->limits_loaded = true;
	enrich_shared->limits_db = MyDatabaseId;
	LWLockRelease(enrich_shared->lock);
	SPI_finish();
	enrich_as_owner_end(save_userid, save_sec);
}

/*
 * Adds n charges of earlier server lives, found in a ledger, to a
 * provider's use: the use of earlier lives is the most of what was saved
 * and what the ledgers counted so far.  Caller holds the lock.
 */
static void
add_earlier(EnrichProviderShared *p, int64 n)
{
	int64		before = Max(p->used_saved, p->used_ledgers);

	p->used_ledgers += n;
	p->credits_used += Max(p->used_saved, p->used_ledgers) - before;
	p->usage_version++;
}

/*
 * n charges of an earlier server life, at the given time, have just been
 * recorded in this database's ledger (taken in from the spool): they
 * count in the budget if they fall in the current period.
 */
void
enrich_credit_add_earlier(EnrichKind kind, TimestampTz at, int64 n)
{
	EnrichProviderShared *p;

	if (enrich_shared == NULL)
		return;
	enrich_limits_load();
	if (at >= enrich_shared->born)
		return;
	p = &enrich_shared->prov[kind];
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	roll_period(p, GetCurrentTimestamp());
	if (p->credit_limit >= 0 && at >= p->period_start)
		add_earlier(p, n);
	LWLockRelease(enrich_shared->lock);
}

/*
 * Takes this database's place in the list of counted ledgers.  Returns
 * true if we are to count it; false if it is counted.  While another
 * process counts it, waits for that (a budget must not be spent before).
 */
static bool
ledger_claim(void)
{
	for (;;)
	{
		int			i;
		pid_t		by = 0;

		LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
		for (i = 0; i < enrich_shared->nledgers; i++)
			if (enrich_shared->ledger_db[i] == MyDatabaseId)
				break;
		if (i == enrich_shared->nledgers)
		{
			/* a full list counts again (at worst too much, never too little) */
			if (i < ENRICH_MAX_LEDGERS)
			{
				enrich_shared->ledger_db[i] = MyDatabaseId;
				enrich_shared->nledgers++;
			}
			else
				i = -1;
		}
		else if ((by = enrich_shared->ledger_by[i]) != 0 &&
				 BackendPidGetProc(by) == NULL)
			by = 0;				/* its counter died: ours now */
		else if (by == 0)
		{
			LWLockRelease(enrich_shared->lock);
			return false;
		}
		if (by == 0 && i >= 0)
			enrich_shared->ledger_by[i] = MyProcPid;
		LWLockRelease(enrich_shared->lock);
		if (by == 0)
			return true;
		CHECK_FOR_INTERRUPTS();
		pg_usleep(10000L);
	}
}

/* Marks this database's ledger counted (or, with done false, not). */
static void
ledger_claimed(bool done)
{
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < enrich_shared->nledgers; i++)
		if (enrich_shared->ledger_db[i] == MyDatabaseId &&
			enrich_shared->ledger_by[i] == MyProcPid)
		{
			if (done)
				enrich_shared->ledger_by[i] = 0;
			else
			{
				/* forget it: the next process counts it */
				enrich_shared->nledgers--;
				enrich_shared->ledger_db[i] = enrich_shared->ledger_db[enrich_shared->nledgers];
				enrich_shared->ledger_by[i] = enrich_shared->ledger_by[enrich_shared->nledgers];
			}
		}
	LWLockRelease(enrich_shared->lock);
}

/*
 * Counts, once per server start, the charges of this database's ledger in
 * the current period that were made before the start (the server's own
 * are counted as they are settled), and adds them to the budgets.  Needs a
 * transaction; nothing to count without the ledger (SQL before 0.3.0).
 */
static void
ledger_count_mine(void)
{
	static bool counted = false;
	Oid			save_userid;
	int			save_sec;
	TimestampTz start[ENRICH_NUM_KINDS];
	int64		n[ENRICH_NUM_KINDS] = {0};
	Oid			nsp;

	if (counted || enrich_shared->born == 0)
		return;					/* counted once this life spends */
	nsp = get_namespace_oid("enrich", true);
	if (!OidIsValid(get_relname_relid("ledger", nsp)))
		return;					/* counted once the ledger is there */
	if (!ledger_claim())
	{
		counted = true;
		return;
	}
	PG_TRY();
	{
		LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
		for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		{
			EnrichProviderShared *p = &enrich_shared->prov[k];

			roll_period(p, GetCurrentTimestamp());
			start[k] = p->credit_limit >= 0 ? p->period_start : DT_NOEND;
		}
		LWLockRelease(enrich_shared->lock);

		enrich_as_owner_begin(&save_userid, &save_sec);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		{
			Oid			types[3] = {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
			Datum		values[3];
			bool		isnull;

			if (start[k] >= enrich_shared->born)
				continue;
			values[0] = CStringGetTextDatum(enrich_provider_key(k));
			values[1] = TimestampTzGetDatum(start[k]);
			values[2] = TimestampTzGetDatum(enrich_shared->born);
			if (SPI_execute_with_args("SELECT pg_catalog.count(*) FROM enrich.ledger "
									  "WHERE provider OPERATOR(pg_catalog.=) $1 "
									  "  AND at OPERATOR(pg_catalog.>=) $2 AND at OPERATOR(pg_catalog.<) $3",
									  3, types, values, NULL, true, 1) != SPI_OK_SELECT)
				elog(ERROR, "could not count enrich.ledger");
			n[k] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		}
		SPI_finish();
		enrich_as_owner_end(save_userid, save_sec);
	}
	PG_CATCH();
	{
		ledger_claimed(false);
		PG_RE_THROW();
	}
	PG_END_TRY();

	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
	{
		EnrichProviderShared *p = &enrich_shared->prov[k];

		/* a limit set meanwhile starts a period of its own */
		if (n[k] > 0 && p->credit_limit >= 0 && p->period_start == start[k])
			add_earlier(p, n[k]);
	}
	LWLockRelease(enrich_shared->lock);
	ledger_claimed(true);
	counted = true;
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
	values[0] = CStringGetTextDatum(enrich_provider_key(kind));
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
						   enrich_provider_key(kind)),
				 errhint("Add enrich to shared_preload_libraries in postgresql.conf and restart the server, or remove the limit with enrich.set_credit_limit('%s', NULL).",
						 enrich_provider_key(kind))));
	checked_in[kind] = MyProc->lxid;
}

/*
 * Writes the credits used in the current period back to
 * enrich.credit_limits of our database, when they changed since we last
 * did.  Every database's worker calls it inside its transactions, so that
 * each database's table shows the cluster's use (the budget is one per
 * cluster).
 */
void
enrich_limits_save_usage(void)
{
	static uint64 saved_version[ENRICH_NUM_KINDS];

	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
	{
		EnrichProviderShared *p = &enrich_shared->prov[k];
		Oid			types[3] = {TEXTOID, INT8OID, TIMESTAMPTZOID};
		Datum		values[3];
		bool		dirty;

		LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
		/* without a budget there is nothing to count against */
		dirty = p->usage_version != saved_version[k] && p->credit_limit >= 0;
		saved_version[k] = p->usage_version;
		values[1] = Int64GetDatum(p->credits_used);
		values[2] = TimestampTzGetDatum(p->period_start);
		LWLockRelease(enrich_shared->lock);
		if (!dirty)
			continue;
		values[0] = CStringGetTextDatum(enrich_provider_key(k));
		enrich_exec_as_owner("UPDATE enrich.credit_limits SET used = $2, period_start = $3 "
					  "WHERE provider OPERATOR(pg_catalog.=) $1",
					  3, types, values, NULL, SPI_OK_UPDATE);
	}
}
