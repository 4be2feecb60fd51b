/*-------------------------------------------------------------------------
 *
 * limits_role.c
 *	  Budgets of roles as SQL sees them.
 *
 * enrich.set_role_credit_limit() gives a role a credit budget of its own
 * for a provider, on top of the provider's: it writes the table
 * enrich.role_credit_limits (which survives restarts, and pg_dump keeps)
 * and the shared state (credits_role.c, which every session and the
 * worker obey at once).  enrich.credits_by_role is a view over the shared
 * state.  enrich.restore_role_limits() is the trigger that puts rows a
 * restore loads into the table in force.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "entry.h"

PG_FUNCTION_INFO_V1(set_role_credit_limit);
PG_FUNCTION_INFO_V1(role_credit_status);
PG_FUNCTION_INFO_V1(restore_role_limits);

/* set_role_credit_limit is writing the table: its trigger has nothing to do */
static bool setting = false;

/*
 * enrich.set_role_credit_limit(role regrole, provider text, credits bigint,
 *								per interval DEFAULT NULL) RETURNS void
 *
 * A budget of the role's own for the provider, on top of the provider's
 * (which still applies to everyone): the charges of the role, and of the
 * roles that count under it (credits_role.c), may use at most `credits`
 * per period.  NULL credits removes it.  NULL per: a total counted from
 * this call on.  With a period, the period starts now unless it is
 * unchanged, in which case what was used in it still counts.
 */
Datum
set_role_credit_limit(PG_FUNCTION_ARGS)
{
	int64		credits;
	int64		per_us;
	EnrichKind	kind;
	Oid			role;
	Oid			types[5] = {OIDOID, TEXTOID, INT8OID, INTERVALOID, TIMESTAMPTZOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	TimestampTz start = GetCurrentTimestamp();

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("role must not be null")));
	role = PG_GETARG_OID(0);
	kind = enrich_credit_limit_args(fcinfo, 1, "set_role_credit_limit", &credits, &per_us);
	enrich_limits_load();
	if (enrich_shared &&
		!enrich_role_budget_set(role, kind, credits, per_us, GetCurrentTimestamp(), &start))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many role credit limits"),
				 errdetail("At most %d role credit limits can be kept.", ENRICH_MAX_ROLE_BUDGETS),
				 errhint("Remove one with enrich.set_role_credit_limit(role, provider, NULL), or give several roles one budget through a role they are members of.")));

	values[0] = ObjectIdGetDatum(role);
	values[1] = CStringGetTextDatum(enrich_provider_key(kind));
	if (credits < 0)
	{
		enrich_exec_as_owner("DELETE FROM enrich.role_credit_limits "
							 "WHERE role::pg_catalog.oid OPERATOR(pg_catalog.=) $1 "
							 "  AND provider OPERATOR(pg_catalog.=) $2",
							 2, types, values, NULL, SPI_OK_DELETE);
		enrich_wake_worker();
		PG_RETURN_VOID();
	}
	values[2] = Int64GetDatum(credits);
	values[3] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nulls[3] = PG_ARGISNULL(3) ? 'n' : ' ';
	values[4] = TimestampTzGetDatum(start);
	setting = true;
	PG_TRY();
	{
		enrich_exec_as_owner("INSERT INTO enrich.role_credit_limits (role, provider, credits, per, period_start) "
							 "VALUES ($1::pg_catalog.regrole, $2, $3, $4, $5) "
							 "ON CONFLICT (role, provider) DO UPDATE "
							 "SET credits = EXCLUDED.credits, per = EXCLUDED.per, period_start = EXCLUDED.period_start",
							 5, types, values, nulls, SPI_OK_INSERT);
	}
	PG_FINALLY();
	{
		setting = false;
	}
	PG_END_TRY();
	enrich_wake_worker();
	PG_RETURN_VOID();
}

/*
 * enrich.role_credit_status(): one row per role budget, behind the
 * enrich.credits_by_role view: role, provider, credit_limit, period, used,
 * remaining, resets_at.  The budgets are the cluster's (every database
 * shows the same).
 */
Datum
role_credit_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	EnrichRoleBudget *snap = palloc(sizeof(EnrichRoleBudget) * ENRICH_MAX_ROLE_BUDGETS);
	int		   *index = palloc(sizeof(int) * ENRICH_MAX_ROLE_BUDGETS);
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	enrich_limits_load();
	n = enrich_role_budgets_snapshot(snap, index);
	for (int i = 0; i < n; i++)
	{
		Datum		v[7];
		bool		nl[7] = {false};

		v[0] = ObjectIdGetDatum(snap[i].role);
		v[1] = CStringGetTextDatum(enrich_provider_key(snap[i].kind));
		nl[6] = !enrich_budget_columns(&snap[i].budget, &v[2], &nl[2], &v[6]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, nl);
	}
	return (Datum) 0;
}

/*
 * enrich.restore_role_limits(): AFTER INSERT FOR EACH STATEMENT on
 * enrich.role_credit_limits.  Rows that come in other than through
 * set_role_credit_limit (a restore loads them) are put in force at once;
 * a budget already in force keeps what it used in its period.
 */
Datum
restore_role_limits(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("restore_role_limits must be fired AFTER ... FOR EACH STATEMENT")));
	if (!setting)
		enrich_role_budgets_reload();
	return PointerGetDatum(NULL);
}
