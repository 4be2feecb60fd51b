/*-------------------------------------------------------------------------
 *
 * owner.c
 *	  Running as the extension owner: its role, a safe search path, kept
 *	  plans.
 *
 * The extension's tables belong to its owner and ordinary roles cannot
 * write them; enrich's own statements run as the owner with pg_catalog
 * alone on the search path (our own objects are named with their
 * schema), so that nothing a caller creates can take part in them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "base.h"

/* The role that owns the extension's tables (the owner of enrich.companies). */
Oid
enrich_owner(void)
{
	Oid			nsp = get_namespace_oid("enrich", true);
	Oid			rel = OidIsValid(nsp) ? get_relname_relid("companies", nsp) : InvalidOid;
	HeapTuple	tup;
	Oid			owner;

	if (!OidIsValid(rel))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"enrich\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION enrich.")));
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(rel));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", rel);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Switches to the extension owner for our own SPI statements, with the
 * search path pinned to pg_catalog (no temporary schema either): the
 * statements are parsed and planned under it, and a kept plan is replanned
 * under it too, since the plan cache compares search paths.  The override
 * is popped by enrich_as_owner_end, or by the (sub)transaction abort when
 * an error leaves the block.  Calls nest.
 */
void
enrich_as_owner_begin(Oid *save_userid, int *save_sec)
{
	Oid			owner = enrich_owner();
	OverrideSearchPath path;

	path.schemas = NIL;
	path.addCatalog = true;
	path.addTemp = false;
	path.generation = 0;
	GetUserIdAndSecContext(save_userid, save_sec);
	PushOverrideSearchPath(&path);
	SetUserIdAndSecContext(owner, *save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

/* Switches back to the caller's user id and search path. */
void
enrich_as_owner_end(Oid save_userid, int save_sec)
{
	SetUserIdAndSecContext(save_userid, save_sec);
	PopOverrideSearchPath();
}

/* The slots of the kept plans, so that they can be forgotten. */
#define MAX_KEPT_PLANS 64
static SPIPlanPtr *kept_slots[MAX_KEPT_PLANS];
static int	nkept = 0;

/* Prepares and keeps a plan on first use (connected to SPI). */
SPIPlanPtr
enrich_keep_plan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *types)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, nargs, types);
		bool		known = false;

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*slot = p;
		for (int i = 0; i < nkept && !known; i++)
			known = kept_slots[i] == slot;
		if (!known && nkept < MAX_KEPT_PLANS)
			kept_slots[nkept++] = slot;
	}
	return *slot;
}

/*
 * Forgets every kept plan: each is prepared again on its next use.  A
 * plan is kept with the estimates of when it was made, and PostgreSQL
 * makes it anew only when a table's definition or statistics change: a
 * plan made while the queue was empty (a new install, a TRUNCATE) scans
 * and sorts the whole queue for each claim once it holds 100,000 items,
 * until autovacuum's next ANALYZE.  The worker calls this when a turn
 * was slow.  Not while a kept plan runs.
 */
void
enrich_forget_plans(void)
{
	for (int i = 0; i < nkept; i++)
		if (*kept_slots[i] != NULL)
		{
			SPI_freeplan(*kept_slots[i]);
			*kept_slots[i] = NULL;
		}
}

/* Runs one statement as the extension owner, with parameters. */
void
enrich_exec_as_owner(const char *sql, int nargs, Oid *types, Datum *values,
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
