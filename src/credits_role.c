/*-------------------------------------------------------------------------
 *
 * credits_role.c
 *	  Budgets of roles: a role's own credit budget for a provider, on top of
 *	  the provider's (enrich.set_role_credit_limit).
 *
 * They are kept in shared memory, a fixed array of ENRICH_MAX_ROLE_BUDGETS
 * entries, loaded from enrich.role_credit_limits with the other limits
 * (credits.c), and reserved and settled together with the provider's.  A
 * charge on behalf of role R counts under at most one of them, that of the
 * limited role L that applies to R for the provider:
 *
 *	- R itself, if R has a budget for the provider;
 *	- otherwise, of the roles with a budget for the provider whose
 *	  privileges R has (has_privs_of_role: R is a member, directly or
 *	  through roles it inherits from), the one with the lowest OID: an
 *	  arbitrary choice, but the same every time;
 *	- a superuser has the privileges of every role: it counts only under a
 *	  budget of its own.
 *
 * Which L applies is resolved in a transaction (the catalogs say who is a
 * member of whom) into an EnrichRoleRef: the entry and its generation.
 * role_version moves whenever an entry is taken or freed, and a reference
 * resolved before is resolved again before it reserves (credits.c).  An
 * entry's generation moves each time it is taken, so that a reservation
 * made under a budget that has been removed since is never given back to
 * another one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "state.h"

/*
 * The index in limited[] of the role whose budget the charges of `role`
 * count under, or -1 (see the head comment).  In a transaction.
 */
int
enrich_role_pick(Oid role, const Oid *limited, int n)
{
	int			best = -1;

	if (!OidIsValid(role))
		return -1;
	for (int i = 0; i < n; i++)
		if (limited[i] == role)
			return i;
	if (superuser_arg(role))
		return -1;
	for (int i = 0; i < n; i++)
		if ((best < 0 || limited[i] < limited[best]) && has_privs_of_role(role, limited[i]))
			best = i;
	return best;
}

/*
 * Resolves which role budget, if any, a charge of `role` for the provider
 * counts under, into ref (which holds no reservation).  In a transaction.
 */
void
enrich_role_resolve(EnrichKind kind, Oid role, EnrichRoleRef *ref)
{
	Oid			limited[ENRICH_MAX_ROLE_BUDGETS];
	int			index[ENRICH_MAX_ROLE_BUDGETS];
	uint32		gen[ENRICH_MAX_ROLE_BUDGETS];
	int			n = 0;
	int			j;

	Assert(!ref->held);
	ref->entry = -1;
	ref->gen = 0;
	ref->version = 0;
	if (enrich_shared == NULL)
		return;
	LWLockAcquire(enrich_shared->lock, LW_SHARED);
	ref->version = enrich_shared->role_version;
	for (int i = 0; i < ENRICH_MAX_ROLE_BUDGETS && OidIsValid(role); i++)
	{
		EnrichRoleBudget *e = &enrich_shared->roles[i];

		if (!OidIsValid(e->role) || e->kind != kind)
			continue;
		limited[n] = e->role;
		index[n] = i;
		gen[n++] = e->gen;
	}
	LWLockRelease(enrich_shared->lock);
	j = enrich_role_pick(role, limited, n);
	if (j < 0)
		return;
	ref->entry = index[j];
	ref->gen = gen[j];
	{
		char	   *name = GetUserNameFromId(limited[j], true);

		namestrcpy(&ref->name, name ? name : psprintf("%u", limited[j]));
	}
}

/*
 * The budget a reference points to, or NULL: none, or removed since (its
 * entry free or taken again).  Caller holds the lock.
 */
EnrichBudget *
enrich_role_budget_of(const EnrichRoleRef *ref)
{
	EnrichRoleBudget *e;

	if (ref == NULL || ref->version == 0 || ref->entry < 0 ||
		ref->entry >= ENRICH_MAX_ROLE_BUDGETS)
		return NULL;
	e = &enrich_shared->roles[ref->entry];
	if (!OidIsValid(e->role) || e->gen != ref->gen)
		return NULL;
	return &e->budget;
}

/*
 * Credits that may be reserved now under the budget that charges of
 * `role` count under (INT64_MAX without one); *entry says which budget
 * (-1: none), *limited the name of its role.  The provider's budget is not looked at.  In a transaction.
 */
int64
enrich_credit_role_available(EnrichKind kind, Oid role, int *entry, NameData *limited)
{
	EnrichRoleRef ref = {0};
	EnrichBudget *b;
	int64		left = -1;

	*entry = -1;
	NameStr(*limited)[0] = '\0';
	if (enrich_shared == NULL)
		return PG_INT64_MAX;
	enrich_role_resolve(kind, role, &ref);
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	b = enrich_role_budget_of(&ref);
	if (b != NULL)
	{
		enrich_budget_roll(b, GetCurrentTimestamp());
		left = enrich_budget_left(b);
		*entry = ref.entry;
		*limited = ref.name;
	}
	LWLockRelease(enrich_shared->lock);
	return left < 0 ? PG_INT64_MAX : left;
}

/*
 * How many roles have a budget for the provider; *spent says how many of
 * those have nothing left to reserve now.
 */
int
enrich_role_budgets_count(EnrichKind kind, int *spent)
{
	int			n = 0;
	TimestampTz now = GetCurrentTimestamp();

	*spent = 0;
	if (enrich_shared == NULL)
		return 0;
	LWLockAcquire(enrich_shared->lock, LW_SHARED);
	for (int i = 0; i < ENRICH_MAX_ROLE_BUDGETS; i++)
		if (OidIsValid(enrich_shared->roles[i].role) && enrich_shared->roles[i].kind == kind)
		{
			EnrichBudgetView v;

			enrich_budget_view(&enrich_shared->roles[i].budget, now, &v);
			n++;
			if (v.remaining == 0)
				(*spent)++;
		}
	LWLockRelease(enrich_shared->lock);
	return n;
}

/* The entry of a role's budget for a provider, or NULL.  Caller holds the lock. */
static EnrichRoleBudget *
find_entry(Oid role, EnrichKind kind)
{
	for (int i = 0; i < ENRICH_MAX_ROLE_BUDGETS; i++)
	{
		EnrichRoleBudget *e = &enrich_shared->roles[i];

		if (e->role == role && e->kind == kind)
			return e;
	}
	return NULL;
}

/*
 * Takes a free entry for a role's budget (no limit yet), or returns NULL
 * when all are taken.  Caller holds the lock exclusively.
 */
static EnrichRoleBudget *
take_entry(Oid role, EnrichKind kind)
{
	for (int i = 0; i < ENRICH_MAX_ROLE_BUDGETS; i++)
	{
		EnrichRoleBudget *e = &enrich_shared->roles[i];

		if (OidIsValid(e->role))
			continue;
		e->role = role;
		e->kind = kind;
		e->gen++;
		memset(&e->budget, 0, sizeof(EnrichBudget));
		e->budget.credit_limit = -1;
		enrich_shared->role_version++;
		return e;
	}
	return NULL;
}

/*
 * Reads enrich.role_credit_limits (connected to SPI, as the owner) into
 * rows allocated in the SPI connection's memory; returns how many.  None
 * before version 0.3.0 of the SQL objects.  `latest`: with what the
 * current command wrote (a new snapshot; an AFTER trigger's own rows).
 */
int
enrich_role_limits_fetch(EnrichRoleLimitRow **rows, bool latest)
{
	Oid			nsp = get_namespace_oid("enrich", true);

	*rows = NULL;
	if (!OidIsValid(get_relname_relid("role_credit_limits", nsp)))
		return 0;
	if (SPI_execute("SELECT role::pg_catalog.oid, provider, credits, "
					"  (extract(epoch FROM per) * 1000000)::int8, period_start "
					"FROM enrich.role_credit_limits WHERE credits IS NOT NULL ORDER BY role, provider",
					!latest, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read enrich.role_credit_limits");
	*rows = palloc(sizeof(EnrichRoleLimitRow) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		EnrichRoleLimitRow *r = &(*rows)[i];
		bool		isnull;
		Datum		per;

		r->role = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
		r->kind = strcmp(SPI_getvalue(tup, desc, 2), "leadlex") == 0 ? ENRICH_COMPANY : ENRICH_LEAD;
		r->credits = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		per = SPI_getbinval(tup, desc, 4, &isnull);
		r->per_us = isnull ? 0 : DatumGetInt64(per);
		r->period_start = DatumGetTimestampTz(SPI_getbinval(tup, desc, 5, &isnull));
	}
	return (int) SPI_processed;
}

/*
 * Puts the rows of enrich.role_credit_limits in force: a budget that is
 * there already keeps what was used and reserved in its period if its
 * period is the row's (rolled forward to now), and the limit is the
 * row's.  Budgets not in the rows stay (set_role_credit_limit removes
 * them).  Returns how many rows found no free entry.  Caller holds the
 * lock exclusively.
 */
int
enrich_role_budgets_apply(const EnrichRoleLimitRow *rows, int n)
{
	TimestampTz now = GetCurrentTimestamp();
	int			left_out = 0;

	for (int i = 0; i < n; i++)
	{
		EnrichRoleBudget *e = find_entry(rows[i].role, rows[i].kind);
		EnrichBudget from = {0};

		from.credit_limit = rows[i].credits;
		from.credit_period_us = rows[i].per_us;
		from.period_start = rows[i].period_start;
		enrich_budget_roll(&from, now);
		if (e == NULL && (e = take_entry(rows[i].role, rows[i].kind)) == NULL)
		{
			left_out++;
			continue;
		}
		enrich_budget_roll(&e->budget, now);
		if (e->budget.credit_limit < 0 || e->budget.credit_period_us != from.credit_period_us ||
			e->budget.period_start != from.period_start)
		{
			from.credits_reserved = e->budget.credits_reserved;
			e->budget = from;
		}
		e->budget.credit_limit = rows[i].credits;
		e->budget.usage_version++;
	}
	return left_out;
}

/*
 * Sets a role's budget for a provider in shared memory (credits -1:
 * removes it), as enrich_budget_set does; *start is the start of its
 * period.  Returns false when a new budget finds no free entry.
 */
bool
enrich_role_budget_set(Oid role, EnrichKind kind, int64 credits, int64 per_us,
					   TimestampTz now, TimestampTz *start)
{
	EnrichRoleBudget *e;

	*start = now;
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	e = find_entry(role, kind);
	if (credits < 0)
	{
		if (e != NULL)
		{
			/* what it holds reserved is let be (its generation is gone) */
			e->role = InvalidOid;
			enrich_shared->role_version++;
		}
		LWLockRelease(enrich_shared->lock);
		return true;
	}
	if (e == NULL && (e = take_entry(role, kind)) == NULL)
	{
		LWLockRelease(enrich_shared->lock);
		return false;
	}
	enrich_budget_set(&e->budget, credits, per_us, now);
	*start = e->budget.period_start;
	LWLockRelease(enrich_shared->lock);
	return true;
}

/*
 * Copies the roles' budgets, their periods rolled forward to now, into
 * out[] and their entries' numbers into index[]; returns how many.
 */
int
enrich_role_budgets_snapshot(EnrichRoleBudget *out, int *index)
{
	TimestampTz now = GetCurrentTimestamp();
	int			n = 0;

	if (enrich_shared == NULL)
		return 0;
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ENRICH_MAX_ROLE_BUDGETS; i++)
	{
		EnrichRoleBudget *e = &enrich_shared->roles[i];

		if (!OidIsValid(e->role))
			continue;
		enrich_budget_roll(&e->budget, now);
		out[n] = *e;
		index[n++] = i;
	}
	LWLockRelease(enrich_shared->lock);
	return n;
}

/*
 * Writes the start of the current period of the roles' budgets with a
 * period back to enrich.role_credit_limits of our database when it has
 * moved on since we last did (the worker, in its transactions): the
 * ledger's retention keeps the rows from there on.
 */
void
enrich_role_limits_save(void)
{
	static uint32 saved_gen[ENRICH_MAX_ROLE_BUDGETS];
	static TimestampTz saved_start[ENRICH_MAX_ROLE_BUDGETS];
	EnrichRoleBudget snap[ENRICH_MAX_ROLE_BUDGETS];
	int			index[ENRICH_MAX_ROLE_BUDGETS];
	Datum		roles[ENRICH_MAX_ROLE_BUDGETS];
	Datum		provs[ENRICH_MAX_ROLE_BUDGETS];
	Datum		starts[ENRICH_MAX_ROLE_BUDGETS];
	Oid			types[3] = {OIDARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID};
	Datum		values[3];
	int			n = enrich_role_budgets_snapshot(snap, index);
	int			m = 0;

	for (int i = 0; i < n; i++)
	{
		int			j = index[i];

		if (snap[i].budget.credit_period_us <= 0 ||
			(saved_gen[j] == snap[i].gen && saved_start[j] == snap[i].budget.period_start))
			continue;
		saved_gen[j] = snap[i].gen;
		saved_start[j] = snap[i].budget.period_start;
		roles[m] = ObjectIdGetDatum(snap[i].role);
		provs[m] = CStringGetTextDatum(enrich_provider_key(snap[i].kind));
		starts[m++] = TimestampTzGetDatum(snap[i].budget.period_start);
	}
	if (m == 0)
		return;
	values[0] = enrich_make_array(roles, NULL, m, OIDOID);
	values[1] = enrich_make_array(provs, NULL, m, TEXTOID);
	values[2] = enrich_make_array(starts, NULL, m, TIMESTAMPTZOID);
	enrich_exec_as_owner("UPDATE enrich.role_credit_limits r SET period_start = v.s "
						 "FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3)) "
						 "  AS v(o, p, s) "
						 "WHERE r.role::pg_catalog.oid OPERATOR(pg_catalog.=) v.o "
						 "  AND r.provider OPERATOR(pg_catalog.=) v.p AND r.period_start OPERATOR(pg_catalog.<) v.s",
						 3, types, values, NULL, SPI_OK_UPDATE);
}
