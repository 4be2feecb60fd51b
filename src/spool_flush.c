/*-------------------------------------------------------------------------
 *
 * spool_flush.c
 *	  The end of a top-level statement, where the synchronous answers it
 *	  bought are written into the cache (cache_pending.c) and made durable
 *	  if the next request's wait has not yet done so (spool.c).
 *
 * A synchronous answer is written to the spool file before its function
 * returns, and fdatasync'd while the next request is on the network.  The
 * last answer of a statement has no next request: it is synced when the
 * statement (or command) the client sent ends, before the session answers
 * the client or waits for it.  The cache rows of the statement's answers
 * are written there too, in one statement per kind.  The executor and
 * utility hooks count their nesting as pg_stat_statements does, so that
 * the queries run inside a statement (PL/pgSQL's, enrich's own SPI) do not
 * write or sync each answer; only the outermost end does.  The hooks are
 * installed when the library is loaded: in a session that loads it by a
 * first call, that first statement's own end is not seen, and its answers
 * are written and synced each time one of enrich's own queries inside it
 * ends instead (or before the commit, or at the abort).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/executor.h"
#include "tcop/utility.h"

#include "storage.h"

static ExecutorRun_hook_type prev_executor_run = NULL;
static ExecutorFinish_hook_type prev_executor_finish = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;

/* How many executor runs and utility commands we are inside of. */
static int	nesting = 0;

/*
 * At the end of the outermost one: the answers it bought go into the cache
 * (cache_pending.c), then their spool file is made durable.  The cache's
 * own statements, run from here, are inside it.
 */
static void
statement_end(void)
{
	if (nesting != 0)
		return;
	nesting++;
	PG_TRY();
	{
		enrich_cache_pending_write();
	}
	PG_FINALLY();
	{
		nesting--;
	}
	PG_END_TRY();
	enrich_spool_flush(ERROR);
}

static void
flush_executor_run(QueryDesc *queryDesc, ScanDirection direction, uint64 count,
				   bool execute_once)
{
	nesting++;
	PG_TRY();
	{
		if (prev_executor_run)
			prev_executor_run(queryDesc, direction, count, execute_once);
		else
			standard_ExecutorRun(queryDesc, direction, count, execute_once);
	}
	PG_FINALLY();
	{
		nesting--;
	}
	PG_END_TRY();
	statement_end();
}

static void
flush_executor_finish(QueryDesc *queryDesc)
{
	nesting++;
	PG_TRY();
	{
		if (prev_executor_finish)
			prev_executor_finish(queryDesc);
		else
			standard_ExecutorFinish(queryDesc);
	}
	PG_FINALLY();
	{
		nesting--;
	}
	PG_END_TRY();
	statement_end();
}

static void
flush_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					  ProcessUtilityContext context, ParamListInfo params,
					  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	nesting++;
	PG_TRY();
	{
		if (prev_process_utility)
			prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
								 queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
									queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		nesting--;
	}
	PG_END_TRY();
	statement_end();
}

/* Installs the hooks; called when the library is loaded. */
void
enrich_spool_flush_init(void)
{
	prev_executor_run = ExecutorRun_hook;
	ExecutorRun_hook = flush_executor_run;
	prev_executor_finish = ExecutorFinish_hook;
	ExecutorFinish_hook = flush_executor_finish;
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = flush_process_utility;
}
