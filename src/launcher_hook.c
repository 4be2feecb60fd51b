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
 *	- The other commands PostgreSQL refuses while anyone is connected to
 *	  a database: CREATE DATABASE with it as TEMPLATE, ALTER DATABASE
 *	  RENAME and SET TABLESPACE.  Its worker leaves for the command and
 *	  comes back after it, whether it succeeded or not.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"

#include "entry.h"

/* How long a DROP DATABASE waits for the database's worker to leave. */
#define LEAVE_TIMEOUT_MS 10000

static ProcessUtility_hook_type prev_utility_hook = NULL;
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

/*
 * The database a command needs to itself (no one else connected), or
 * NULL: DROP DATABASE (*gone set), CREATE DATABASE ... TEMPLATE, ALTER
 * DATABASE ... RENAME and ALTER DATABASE ... SET TABLESPACE.
 */
static const char *
database_needed_alone(Node *stmt, bool *gone)
{
	ListCell   *lc;

	*gone = false;
	if (IsA(stmt, DropdbStmt))
	{
		*gone = true;
		return ((DropdbStmt *) stmt)->dbname;
	}
	if (IsA(stmt, RenameStmt) && ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
		return ((RenameStmt *) stmt)->subname;
	if (IsA(stmt, CreatedbStmt))
		foreach(lc, ((CreatedbStmt *) stmt)->options)
		{
			DefElem    *d = lfirst_node(DefElem, lc);

			if (strcmp(d->defname, "template") == 0 && d->arg != NULL)
				return defGetString(d);
		}
	if (IsA(stmt, AlterDatabaseStmt))
		foreach(lc, ((AlterDatabaseStmt *) stmt)->options)
		{
			if (strcmp(lfirst_node(DefElem, lc)->defname, "tablespace") == 0)
				return ((AlterDatabaseStmt *) stmt)->dbname;
		}
	return NULL;
}

/*
 * Runs a command that needs database `name` to itself: its worker leaves
 * first, and comes back afterwards unless the database was dropped.
 */
static void
run_alone(const char *name, bool gone, PlannedStmt *pstmt, const char *queryString,
		  bool readOnlyTree, ProcessUtilityContext context, ParamListInfo params,
		  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Oid			db = get_database_oid(name, true);

	if (!OidIsValid(db))
	{
		run_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
		return;
	}
	if (!enrich_dbw_leave(db, LEAVE_TIMEOUT_MS))
		ereport(WARNING,
				(errmsg("the enrich worker of database \"%s\" did not leave in time", name)));
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
	enrich_dbw_left(db, gone);
}

static void
enrich_utility_hook(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					ProcessUtilityContext context, ParamListInfo params,
					QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;
	bool		gone;
	const char *alone = database_needed_alone(stmt, &gone);

	if (alone != NULL)
		run_alone(alone, gone, pstmt, queryString, readOnlyTree, context, params,
				  queryEnv, dest, qc);
	else
		run_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	if (names_enrich(stmt))
		enrich_queue_wake_at_commit();	/* the worker is wanted at commit */
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
