/*-------------------------------------------------------------------------
 *
 * credits.c
 *	  Credit budgets in shared memory, and the limit tables they are kept
 *	  in.
 *
 * No request is sent that the budget cannot pay for, under any
 * concurrency: a request reserves a credit here before it is sent and
 * settles it when the answer is in (a charged answer uses it, anything
 * else gives it back).  A request on behalf of a role with a budget of its
 * own (credits_role.c) reserves a credit of both, under one lock, or of
 * neither.  The reservation is counted in the reserving process's holder
 * slot (shmem.c), so that it is given back however that process ends.
 *
 * The limits (enrich.credit_limits and enrich.role_credit_limits, and
 * enrich.rate_limits for rate.c) are loaded from their tables into shared
 * memory on first use.  Without shared memory no budget can be kept
 * across sessions, so a set limit refuses spending (55000).
 *
 * The credits used in the current period survive restarts, crashes and
 * failovers: credits_ledger.c adds what came before this server life
 * began to spend (life_begins), from the ledgers.
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

/* Whether a credit of a budget can be reserved now (or soon, or not). */
static EnrichReserve
budget_state(const EnrichBudget *b)
{
	if (enrich_budget_left(b) != 0)
		return RESERVE_OK;
	return b->credits_reserved > 0 ? RESERVE_WAIT : RESERVE_NONE;
}

/*
 * Reserves a credit of the provider's budget and of the role's (if any),
 * both or neither; ref->refused says whether the role's refused.  A role
 * budget needs a place in our holder slot too: without one the request
 * waits (for one of our requests to give its place back).  Caller holds
 * the lock.
 */
static EnrichReserve
reserve_locked(EnrichKind kind, EnrichRoleRef *ref, TimestampTz now)
{
	EnrichBudget *pb = &enrich_shared->prov[kind].budget;
	EnrichBudget *rb = enrich_role_budget_of(ref);
	EnrichReserve ps;
	EnrichReserve rs;

	enrich_budget_roll(pb, now);
	if (rb)
		enrich_budget_roll(rb, now);
	if ((enrich_budget_left(pb) == 0 && pb->credits_reserved > 0) ||
		(rb && enrich_budget_left(rb) == 0 && rb->credits_reserved > 0))
		(void) enrich_holders_sweep(now);
	ps = budget_state(pb);
	rs = rb ? budget_state(rb) : RESERVE_OK;
	/* a spent budget says so at once; the provider's first */
	ref->refused = ps == RESERVE_OK && rs != RESERVE_OK;
	if (ps == RESERVE_NONE || rs == RESERVE_NONE)
	{
		ref->refused = ps != RESERVE_NONE;
		return RESERVE_NONE;
	}
	if (ps != RESERVE_OK || rs != RESERVE_OK)
		return RESERVE_WAIT;
	if (rb && !enrich_holder_role_take(ref->entry, ref->gen))
	{
		ref->refused = true;
		return RESERVE_WAIT;
	}
	pb->credits_reserved++;
	enrich_holder_mine(kind)->reserved++;
	if (rb)
	{
		rb->credits_reserved++;
		ref->held = true;
	}
	return RESERVE_OK;
}

/*
 * Reserves one credit for a request about to be sent on behalf of `role`
 * (InvalidOid: nobody's).  RESERVE_WAIT means a budget is fully reserved
 * by requests in flight of live processes, some of which may give their
 * credit back (a no match, a failure); RESERVE_NONE that it is spent;
 * ref->refused says whether it was the role's budget.  Always RESERVE_OK
 * without a budget.  Without shared memory a budget cannot be kept, so a
 * set one refuses.
 *
 * Inside a transaction the role budget is resolved here; outside one (the
 * worker starting its requests) ref must have been resolved in one, and
 * RESERVE_STALE says that the role budgets have changed since.
 */
EnrichReserve
enrich_credit_reserve(EnrichKind kind, Oid role, EnrichRoleRef *ref)
{
	EnrichReserve r;
	TimestampTz now = GetCurrentTimestamp();

	if (enrich_shared == NULL)
	{
		enrich_limits_check_unshared(kind);
		return RESERVE_OK;
	}
	enrich_limits_load();
	enrich_holder_attach();
	for (;;)
	{
		bool		resolved = IsTransactionState();

		if (resolved)
			enrich_role_resolve(kind, role, ref);
		LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
		if (!OidIsValid(role) || ref->version == enrich_shared->role_version)
			break;
		LWLockRelease(enrich_shared->lock);
		if (!resolved)
			return RESERVE_STALE;
		/* a role budget was set or removed meanwhile: once more */
	}
	r = reserve_locked(kind, ref, now);
	LWLockRelease(enrich_shared->lock);
	return r;
}

/* Credits of the provider's budget that may be reserved now (INT64_MAX without a limit). */
int64
enrich_credit_available(EnrichKind kind)
{
	EnrichBudget *b;
	int64		left;

	if (enrich_shared == NULL)
		return PG_INT64_MAX;
	enrich_limits_load();
	b = &enrich_shared->prov[kind].budget;
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	enrich_budget_roll(b, GetCurrentTimestamp());
	left = enrich_budget_left(b);
	LWLockRelease(enrich_shared->lock);
	return left < 0 ? PG_INT64_MAX : left;
}

/*
 * Settles a reservation: a charged answer uses the credit (of the
 * provider's budget and of the role's it was reserved under), anything
 * else gives it back.  Records the provider's reported balance when known.
 */
void
enrich_credit_settle(EnrichKind kind, EnrichRoleRef *ref, bool reserved, bool charged,
					 int64 balance)
{
	EnrichProviderShared *p;
	EnrichBudget *rb;
	EnrichHold *hold;
	TimestampTz now = GetCurrentTimestamp();

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
		p->budget.credits_reserved -= Min(1, p->budget.credits_reserved);
	}
	/* a role budget removed since (or its entry taken again) is let be */
	rb = enrich_role_budget_of(ref);
	if (reserved && ref->held)
	{
		if (enrich_holder_role_give(ref->entry, ref->gen) && rb)
			rb->credits_reserved -= Min(1, rb->credits_reserved);
		ref->held = false;
	}
	if (charged)
	{
		/* a charge counts in the period it is made in */
		enrich_budget_roll(&p->budget, now);
		p->budget.credits_used++;
		p->budget.usage_version++;
		p->credits_total++;
		enrich_mirror_store(&p->budget);
		if (rb)
		{
			enrich_budget_roll(rb, now);
			rb->credits_used++;
			rb->usage_version++;
			enrich_mirror_store(rb);
		}
	}
	if (balance >= 0)
		p->provider_balance = balance;
	LWLockRelease(enrich_shared->lock);
}

/*
 * Loads the limits of both providers and of the roles from their tables
 * into shared memory, once per server start (the set_* functions keep
 * both in step afterwards), and counts this database's ledger once.
 * Needs a transaction; does nothing outside one or without shared memory.
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
	enrich_credits_count_ledger();
}

/*
 * Marks when this server life may begin to spend: the first time a budget
 * is touched outside recovery, after a start, a crash restart or a
 * promotion.  Every charge of this life comes after (a request reserves
 * first), and every charge before it -- of an earlier life, or streamed
 * from the old primary to a standby now promoted -- is in a ledger
 * (credits_ledger.c).
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

/* Says that n rows of enrich.role_credit_limits found no place in shared memory. */
static void
warn_left_out(int n)
{
	if (n > 0)
		ereport(WARNING,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%d role credit limit(s) of enrich.role_credit_limits are not in force", n),
				 errdetail("At most %d role credit limits can be kept.", ENRICH_MAX_ROLE_BUDGETS)));
}

/* Sets a provider's limits from a row of limits_read's query.  Caller holds the lock. */
static void
provider_row(HeapTuple tup, TupleDesc desc)
{
	char	   *prov = SPI_getvalue(tup, desc, 1);
	EnrichKind	k = strcmp(prov, "leadlex") == 0 ? ENRICH_COMPANY : ENRICH_LEAD;
	EnrichProviderShared *p = &enrich_shared->prov[k];
	EnrichBudget *b = &p->budget;
	bool		n[9];
	Datum		v[9];

	for (int i = 2; i <= 8; i++)
		v[i] = SPI_getbinval(tup, desc, i, &n[i]);
	p->rate_requests = (n[2] || n[3]) ? 0 : DatumGetInt32(v[2]);
	p->rate_per_us = n[3] ? 0 : DatumGetInt64(v[3]);
	p->rate_max_concurrency = n[4] ? 0 : DatumGetInt32(v[4]);
	b->credit_limit = n[5] ? -1 : DatumGetInt64(v[5]);
	b->credit_period_us = n[6] ? 0 : DatumGetInt64(v[6]);
	b->period_start = n[7] ? GetCurrentTimestamp() : DatumGetTimestampTz(v[7]);
	b->credits_used = n[8] ? 0 : DatumGetInt64(v[8]);
	b->used_saved = b->credits_used;
	b->used_ledgers = 0;
	/* what an earlier life used in this period, if it used more than was saved */
	enrich_budget_roll(b, GetCurrentTimestamp());
	enrich_mirror_apply(k, InvalidOid, b);
}

/*
 * Reads both providers' limits and the roles' into shared memory
 * (enrich_limits_load), under one hold of the lock: no process spends
 * before the roles' limits are there too.
 */
static void
limits_read(void)
{
	Oid			save_userid;
	int			save_sec;
	SPITupleTable *prov;
	uint64		nprov;
	EnrichRoleLimitRow *roles;
	int			nroles;
	int			left_out = 0;

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
	prov = SPI_tuptable;
	nprov = SPI_processed;
	nroles = enrich_role_limits_fetch(&roles, false);

	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	if (!enrich_shared->limits_loaded)
	{
		for (uint64 i = 0; i < nprov; i++)
			provider_row(prov->vals[i], prov->tupdesc);
		left_out = enrich_role_budgets_apply(roles, nroles);
		for (int i = 0; i < ENRICH_MAX_ROLE_BUDGETS; i++)
			if (OidIsValid(enrich_shared->roles[i].role))
				enrich_mirror_apply(enrich_shared->roles[i].kind, enrich_shared->roles[i].role,
									&enrich_shared->roles[i].budget);
		enrich_shared->limits_loaded = true;
		enrich_shared->limits_db = MyDatabaseId;
	}
	LWLockRelease(enrich_shared->lock);
	SPI_finish();
	enrich_as_owner_end(save_userid, save_sec);
	warn_left_out(left_out);
}

/*
 * Reads enrich.role_credit_limits of our database into shared memory
 * again, with the rows the current command has just loaded (a restore's).
 * In a transaction.
 */
void
enrich_role_budgets_reload(void)
{
	Oid			save_userid;
	int			save_sec;
	EnrichRoleLimitRow *rows;
	int			n;

	if (enrich_shared == NULL)
		return;
	enrich_limits_load();
	enrich_as_owner_begin(&save_userid, &save_sec);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	n = enrich_role_limits_fetch(&rows, true);
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	n = enrich_role_budgets_apply(rows, n);
	LWLockRelease(enrich_shared->lock);
	SPI_finish();
	enrich_as_owner_end(save_userid, save_sec);
	warn_left_out(n);
}

/*
 * Without shared memory no budget can be kept across sessions, so a call
 * that would spend under a set credit limit (the provider's, or any
 * role's for the provider) is refused (55000) before any request.
 * Checked once per transaction and provider.
 */
void
enrich_limits_check_unshared(EnrichKind kind)
{
	static LocalTransactionId checked_in[ENRICH_NUM_KINDS];
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	Oid			save_userid;
	int			save_sec;
	Oid			nsp;
	bool		limited;

	nsp = get_namespace_oid("enrich", true);
	if (checked_in[kind] == MyProc->lxid || !OidIsValid(nsp))
		return;
	values[0] = CStringGetTextDatum(enrich_provider_key(kind));
	enrich_as_owner_begin(&save_userid, &save_sec);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* the roles' limits from version 0.3.0 on */
	if (SPI_execute_with_args(OidIsValid(get_relname_relid("role_credit_limits", nsp)) ?
							  "SELECT 1 FROM enrich.credit_limits "
							  "WHERE provider OPERATOR(pg_catalog.=) $1 AND credits IS NOT NULL "
							  "UNION ALL SELECT 1 FROM enrich.role_credit_limits "
							  "WHERE provider OPERATOR(pg_catalog.=) $1" :
							  "SELECT 1 FROM enrich.credit_limits "
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
				 errhint("Add enrich to shared_preload_libraries in postgresql.conf and restart the server, or remove the limit with enrich.set_credit_limit('%s', NULL) (and the roles' with enrich.set_role_credit_limit).",
						 enrich_provider_key(kind))));
	checked_in[kind] = MyProc->lxid;
}

/*
 * Writes the credits used in the current period back to
 * enrich.credit_limits of our database, when they changed since we last
 * did (and the roles' periods to enrich.role_credit_limits).  Every database's worker calls it inside its transactions, so that
 * each database's table shows the cluster's use (the budget is one per
 * cluster).
 */
void
enrich_limits_save_usage(void)
{
	static uint64 saved_version[ENRICH_NUM_KINDS];

	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
	{
		EnrichBudget *b = &enrich_shared->prov[k].budget;
		Oid			types[3] = {TEXTOID, INT8OID, TIMESTAMPTZOID};
		Datum		values[3];
		bool		dirty;

		LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
		/* without a budget there is nothing to count against */
		dirty = b->usage_version != saved_version[k] && b->credit_limit >= 0;
		saved_version[k] = b->usage_version;
		values[1] = Int64GetDatum(b->credits_used);
		values[2] = TimestampTzGetDatum(b->period_start);
		LWLockRelease(enrich_shared->lock);
		if (!dirty)
			continue;
		values[0] = CStringGetTextDatum(enrich_provider_key(k));
		enrich_exec_as_owner("UPDATE enrich.credit_limits SET used = $2, period_start = $3 "
					  "WHERE provider OPERATOR(pg_catalog.=) $1",
					  3, types, values, NULL, SPI_OK_UPDATE);
	}
	enrich_role_limits_save();
}
