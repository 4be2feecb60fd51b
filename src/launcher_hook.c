/*-------------------------------------------------------------------------
 *
 * launcher_hook.c
 *	  What a session's utility commands tell the launcher: a database that
 *	  now has the extension, and one about to be dropped.
 *
 * A ProcessUtility hook, installed in every process when the library is
 * preloaded:
 *
 *	- CREATE EXTENSION enrich and ALTER EXTENSION enrich: once the
 *	  transaction commits, this database wants a worker (the launcher
 *	  starts one within moments) and a running worker is woken to look at
 *	  the new version.  Not before the commit: a worker started earlier
 *	  would not see the extension.
 *	- CREATE DATABASE: the launcher reads pg_database now (a database made
 *	  from a template that has the extension is served at once).
 *	- DROP DATABASE: its worker leaves first (it would otherwise hold the
 *	  database open and the DROP would fail), and is not started again;
 *	  if the DROP fails, the database wants its worker back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"

#include "entry.h"

/* How long a DROP DATABASE waits for the database's worker to leave. */
#define LEAVE_TIMEOUT_MS 10000

static ProcessUtility_hook_type prev_utility_hook = NULL;
static bool want_at_commit = false;
static bool callback_registered = false;

/* At commit: this database wants its worker. */
static void
launcher_xact_callback(XactEvent event, void *arg)
{
	if (!want_at_commit)
		return;
	if (event == XACT_EVENT_COMMIT)
	{
		want_at_commit = false;
		enrich_dbw_want(MyDatabaseId);
		enrich_wake_worker();
	}
	else if (event == XACT_EVENT_ABORT)
		want_at_commit = false;
}

/* Whether a CREATE or ALTER EXTENSION names enrich. */
static bool
names_enrich(Node *stmt)
{
	if (IsA(stmt, CreateExtensionStmt))
		return strcmp(((CreateExtensionStmt *) stmt)->extname, "enrich") == 0;
	if (IsA(stmt, AlterExtensionStmt))
		return strcmp(((AlterExtensionStmt *) stmt)->extname, "enrich") == 0;
	return false;
}

/* Runs the command through the previous hook or the standard one. */
static void
run_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
			ProcessUtilityContext context, ParamListInfo params,
			QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	if (prev_utility_hook)
		prev_utility_hook(pstmt, queryString, readOnlyTree, context, params,
						  queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

/* DROP DATABASE: the worker there leaves first; back if the DROP fails. */
static void
drop_database(DropdbStmt *stmt, PlannedStmt *pstmt, const char *queryString,
			  bool readOnlyTree, ProcessUtilityContext context, ParamListInfo params,
			  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Oid			db = get_database_oid(stmt->dbname, true);

	if (!OidIsValid(db))
	{
		run_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
		return;
	}
	if (!enrich_dbw_leave(db, LEAVE_TIMEOUT_MS))
		ereport(WARNING,
				(errmsg("the enrich worker of database \"%s\" did not leave in time", stmt->dbname)));
	PG_TRY();
	{
		run_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	}
	PG_CATCH();
	{
		enrich_dbw_left(db, false);
		PG_RE_THROW();
	}
	PG_END_TRY();
	enrich_dbw_left(db, true);
}

static void
enrich_utility_hook(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					ProcessUtilityContext context, ParamListInfo params,
					QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	if (IsA(stmt, DropdbStmt))
	{
		drop_database((DropdbStmt *) stmt, pstmt, queryString, readOnlyTree, context,
					  params, queryEnv, dest, qc);
		return;
	}
	run_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	if (names_enrich(stmt))
	{
		if (!callback_registered)
		{
			RegisterXactCallback(launcher_xact_callback, NULL);
			callback_registered = true;
		}
		want_at_commit = true;
	}
	else if (IsA(stmt, CreatedbStmt))
		enrich_dbw_wake_launcher();
}

/* Installs the hook; called from _PG_init when preloaded. */
void
enrich_launcher_hook_init(void)
{
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = enrich_utility_hook;
}
