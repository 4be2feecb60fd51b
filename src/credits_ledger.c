/*-------------------------------------------------------------------------
 *
 * credits_ledger.c
 *	  The credits of earlier server lives: what the ledgers say was used in
 *	  the budgets' current periods before this server life began to spend.
 *
 * Every charge is a row of its database's enrich.ledger (ledger.c), as
 * durable as the answer and streamed to standbys with it, with the role it
 * was charged on behalf of.  A server life (a start, a crash restart, a
 * promotion) begins to spend the first time a budget is touched outside
 * recovery (enrich_shared->born, set by credits.c): every charge of this
 * life comes after, every earlier one is in a ledger.  A period's use is
 * what this life charged plus what came before: for a provider, the most
 * of the use the workers last saved in enrich.credit_limits and the
 * ledgers' rows of the period from before born; for a role's budget, the
 * ledgers' rows of the period
 * of the roles that count under it (credits_role.c says which).  Each
 * database's ledger is counted once, by its first process that touches a
 * budget (its worker, as it starts); a charge an earlier life left in the
 * spool is added as it is taken in.  So a budget never buys more than its
 * limit, whatever restarts: at worst a charge in the middle of being taken
 * in at a crash counts twice.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/procarray.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "state.h"

/*
 * n charges of an earlier server life on behalf of `role`, at the given
 * time, have just been recorded in this database's ledger (taken in from
 * the spool): they count in the provider's budget, and in the role's
 * (resolved now), if they fall in its current period.  In a transaction,
 * after enrich_limits_load.
 */
void
enrich_credit_add_earlier(EnrichKind kind, Oid role, TimestampTz at, int64 n)
{
	EnrichBudget *b;
	EnrichRoleRef ref = {0};

	if (enrich_shared == NULL || enrich_shared->born == 0 || at >= enrich_shared->born)
		return;
	enrich_role_resolve(kind, role, &ref);
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < 2; i++)
	{
		b = i == 0 ? &enrich_shared->prov[kind].budget :
			(ref.version == enrich_shared->role_version ? enrich_role_budget_of(&ref) : NULL);
		if (b == NULL)
			continue;
		enrich_budget_roll(b, GetCurrentTimestamp());
		if (b->credit_limit >= 0 && at >= b->period_start)
		{
			enrich_budget_add_earlier(b, n);
			enrich_mirror_store(b);
		}
	}
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
 * Counts the charges of this database's ledger in the current period of
 * each provider's budget made before the start, and adds them.  Connected
 * to SPI, as the owner.
 */
static void
count_providers(void)
{
	TimestampTz start[ENRICH_NUM_KINDS];
	int64		n[ENRICH_NUM_KINDS] = {0};

	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
	{
		EnrichBudget *b = &enrich_shared->prov[k].budget;

		enrich_budget_roll(b, GetCurrentTimestamp());
		start[k] = b->credit_limit >= 0 ? b->period_start : DT_NOEND;
	}
	LWLockRelease(enrich_shared->lock);

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

	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
	{
		EnrichBudget *b = &enrich_shared->prov[k].budget;

		/* a limit set meanwhile starts a period of its own */
		if (n[k] > 0 && b->credit_limit >= 0 && b->period_start == start[k])
		{
			enrich_budget_add_earlier(b, n[k]);
			enrich_mirror_store(b);
		}
	}
	LWLockRelease(enrich_shared->lock);
}

/* Orders timestamps, for qsort. */
static int
cmp_timestamp(const void *a, const void *b)
{
	TimestampTz x = *(const TimestampTz *) a;
	TimestampTz y = *(const TimestampTz *) b;

	return x < y ? -1 : x > y;
}

/*
 * Counts the charges of one provider in this database's ledger made before
 * the start, by role and by which of the role budgets' period starts they
 * follow (width_bucket over the sorted starts), and adds each role's to
 * add[] of the budget it counts under, when they fall in that budget's
 * period.  `budgets` are all the role budgets of the provider (a role
 * counts under one of them, whichever began when).  Connected to SPI, as
 * the owner.
 */
static void
count_roles_of(EnrichKind kind, const EnrichRoleBudget *budgets, int n, int64 *add)
{
	Oid			types[3] = {TEXTOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZOID};
	Datum		values[3];
	Datum	   *starts = palloc(sizeof(Datum) * n);
	TimestampTz *sorted = palloc(sizeof(TimestampTz) * n);
	Oid		   *limited = palloc(sizeof(Oid) * n);

	for (int i = 0; i < n; i++)
	{
		sorted[i] = budgets[i].budget.period_start;
		limited[i] = budgets[i].role;
	}
	qsort(sorted, n, sizeof(TimestampTz), cmp_timestamp);
	if (sorted[0] >= enrich_shared->born)
		return;					/* all began in this server life */
	for (int i = 0; i < n; i++)
		starts[i] = TimestampTzGetDatum(sorted[i]);
	values[0] = CStringGetTextDatum(enrich_provider_key(kind));
	values[1] = enrich_make_array(starts, NULL, n, TIMESTAMPTZOID);
	values[2] = TimestampTzGetDatum(enrich_shared->born);
	if (SPI_execute_with_args("SELECT role::pg_catalog.oid, pg_catalog.width_bucket(at, $2), pg_catalog.count(*) "
							  "FROM enrich.ledger WHERE provider OPERATOR(pg_catalog.=) $1 AND role IS NOT NULL "
							  "  AND at OPERATOR(pg_catalog.>=) ($2)[1] AND at OPERATOR(pg_catalog.<) $3 "
							  "GROUP BY 1, 2",
							  3, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not count enrich.ledger by role");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		bool		isnull;
		Oid			role = DatumGetObjectId(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
		int			bucket = DatumGetInt32(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
		int64		count = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull));
		int			j = enrich_role_pick(role, limited, n);

		/*
		 * The rows of bucket b are at or after sorted[b - 1] and before
		 * sorted[b]: in j's period if sorted[b - 1] is not before its start.
		 */
		if (j >= 0 && bucket >= 1 && sorted[bucket - 1] >= budgets[j].budget.period_start)
			add[j] += count;
	}
}

/*
 * Counts, for the budgets of roles, the charges of this database's ledger
 * in their current periods made before the start, and adds them.
 * Connected to SPI, as the owner.
 */
static void
count_roles(void)
{
	EnrichRoleBudget *snap = palloc(sizeof(EnrichRoleBudget) * ENRICH_MAX_ROLE_BUDGETS);
	int		   *index = palloc(sizeof(int) * ENRICH_MAX_ROLE_BUDGETS);
	int			n = enrich_role_budgets_snapshot(snap, index);

	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
	{
		EnrichRoleBudget *mine = palloc(sizeof(EnrichRoleBudget) * Max(n, 1));
		int		   *at = palloc(sizeof(int) * Max(n, 1));
		int64	   *add = palloc0(sizeof(int64) * Max(n, 1));
		int			m = 0;

		for (int i = 0; i < n; i++)
			if (snap[i].kind == k)
			{
				mine[m] = snap[i];
				at[m++] = index[i];
			}
		if (m == 0)
			continue;
		count_roles_of((EnrichKind) k, mine, m, add);
		LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
		for (int i = 0; i < m; i++)
		{
			EnrichRoleBudget *e = &enrich_shared->roles[at[i]];

			/* a limit set or removed meanwhile starts a period of its own */
			if (add[i] > 0 && e->role == mine[i].role && e->gen == mine[i].gen &&
				e->budget.period_start == mine[i].budget.period_start)
			{
				enrich_budget_add_earlier(&e->budget, add[i]);
				enrich_mirror_store(&e->budget);
			}
		}
		LWLockRelease(enrich_shared->lock);
	}
}

/*
 * Counts, once per server start, the charges of this database's ledger in
 * the current periods that were made before the start (the server's own
 * are counted as they are settled), and adds them to the budgets: the
 * providers' and the roles'.  Needs a transaction; nothing to count
 * without the ledger (SQL before 0.3.0).
 */
void
enrich_credits_count_ledger(void)
{
	static bool counted = false;
	Oid			save_userid;
	int			save_sec;
	Oid			nsp;

	if (counted || enrich_shared->born == 0)
		return;					/* counted once this server life spends */
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
		enrich_as_owner_begin(&save_userid, &save_sec);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		count_providers();
		count_roles();
		SPI_finish();
		enrich_as_owner_end(save_userid, save_sec);
	}
	PG_CATCH();
	{
		ledger_claimed(false);
		PG_RE_THROW();
	}
	PG_END_TRY();
	ledger_claimed(true);
	counted = true;
}
