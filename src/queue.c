/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  The request queue enrich.queue: enqueueing, waiting, and the
 *	  statements the worker uses to claim and finish items.
 *
 * Enqueueing is one INSERT ... ON CONFLICT DO NOTHING against a partial
 * unique index over the keys still waiting, so a key already queued, in
 * flight or waiting for credits is not queued twice.  The worker is woken
 * when the enqueueing transaction commits, not before (it could not see
 * the rows yet) and not at all if it rolls back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "storage.h"

PG_FUNCTION_INFO_V1(enqueue_company);
PG_FUNCTION_INFO_V1(enqueue_lead);
PG_FUNCTION_INFO_V1(enrich_wait);
PG_FUNCTION_INFO_V1(refresh);

static SPIPlanPtr enqueue_plan = NULL;
static SPIPlanPtr pending_plan = NULL;
static SPIPlanPtr update_plan = NULL;
static SPIPlanPtr claim_plan[ENRICH_NUM_KINDS];
static SPIPlanPtr orphans_plan = NULL;
static SPIPlanPtr retention_plan = NULL;

/*
 * The worker's claim: due queued items of one kind, oldest due first, each
 * with its cache row unless it is a refresh.  SKIP LOCKED keeps a session
 * that is enqueueing or cancelling from blocking the worker.  The items
 * are picked in a MATERIALIZED CTE, run once: as "id IN (subquery)" a plan
 * may rescan the subquery, and each rescan with SKIP LOCKED finds other
 * rows, so that more than LIMIT items were claimed (seen after the
 * queue's statistics said it was empty).
 */
static const char *const claim_sql[ENRICH_NUM_KINDS] = {
	"WITH picked AS MATERIALIZED (SELECT id FROM enrich.queue"
	"  WHERE status OPERATOR(pg_catalog.=) 'queued' AND kind OPERATOR(pg_catalog.=) 'company'"
	"    AND next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now()"
	"  ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED),"
	" claimed AS ("
	" UPDATE enrich.queue q SET status = 'in_flight', attempts = q.attempts OPERATOR(pg_catalog.+) 1,"
	"  updated_at = pg_catalog.now()"
	" FROM picked p WHERE q.id OPERATOR(pg_catalog.=) p.id"
	" RETURNING q.id, q.key, q.idempotency_key, q.attempts, q.refresh, q.created_at, q.requested_by)"
	" SELECT cl.id, cl.key, cl.idempotency_key::text, cl.attempts, cl.refresh,"
	"  c.domain IS NOT NULL, c.matched, c.fetched_at, c.result,"
	"  pg_catalog.array_to_string(c.fields, ','), cl.requested_by::pg_catalog.oid"
	" FROM claimed cl LEFT JOIN enrich.companies c"
	"  ON c.domain OPERATOR(pg_catalog.=) cl.key"
	"  AND (NOT cl.refresh OR c.fetched_at OPERATOR(pg_catalog.>) cl.created_at)"
	" ORDER BY cl.id",
	"WITH picked AS MATERIALIZED (SELECT id FROM enrich.queue"
	"  WHERE status OPERATOR(pg_catalog.=) 'queued' AND kind OPERATOR(pg_catalog.=) 'lead'"
	"    AND next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now()"
	"  ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED),"
	" claimed AS ("
	" UPDATE enrich.queue q SET status = 'in_flight', attempts = q.attempts OPERATOR(pg_catalog.+) 1,"
	"  updated_at = pg_catalog.now()"
	" FROM picked p WHERE q.id OPERATOR(pg_catalog.=) p.id"
	" RETURNING q.id, q.key, q.idempotency_key, q.attempts, q.refresh, q.created_at, q.requested_by)"
	" SELECT cl.id, cl.key, cl.idempotency_key::text, cl.attempts, cl.refresh,"
	"  l.linkedin_url IS NOT NULL, l.matched, l.fetched_at, l.result, NULL::text,"
	"  cl.requested_by::pg_catalog.oid"
	" FROM claimed cl LEFT JOIN enrich.leads l"
	"  ON l.linkedin_url OPERATOR(pg_catalog.=) cl.key"
	"  AND (NOT cl.refresh OR l.fetched_at OPERATOR(pg_catalog.>) cl.created_at)"
	" ORDER BY cl.id",
};
static bool wake_at_commit = false;
static bool xact_callback_registered = false;

/*
 * Once the transaction has committed: sets the latch of this database's
 * worker, or, when none runs, asks the launcher for one (it starts it now
 * that what was queued, or the extension itself, is committed).
 */
static void
queue_xact_callback(XactEvent event, void *arg)
{
	if (!wake_at_commit)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		if (!enrich_dbw_served(MyDatabaseId))
			enrich_dbw_want(MyDatabaseId);
		enrich_wake_worker();
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		wake_at_commit = false;
}

/* Asks for this database's worker (woken, or started) at commit. */
void
enrich_queue_wake_at_commit(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(queue_xact_callback, NULL);
		xact_callback_registered = true;
	}
	wake_at_commit = true;
}

/*
 * Raises 55000 unless a worker serves this database or the launcher runs
 * to start one (the queueing transaction asks it at commit): queued work
 * would otherwise wait for ever.
 */
void
enrich_require_worker(void)
{
	pid_t		launcher;

	enrich_require_shared("the queue");
	if (enrich_dbw_served(MyDatabaseId))
		return;
	LWLockAcquire(enrich_shared->lock, LW_SHARED);
	launcher = enrich_shared->launcher_pid;
	LWLockRelease(enrich_shared->lock);
	if (launcher == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the enrich background worker is not running for this database"),
				 errdetail("The enrich launcher, which starts a worker in every database with the extension, is not running."),
				 errhint("Check the server log for why it stopped, and max_worker_processes.")));
}

/*
 * Queues a normalised key and returns the id of its waiting item: a new
 * one, or the one already queued, in flight or waiting for credits.
 * Runs as the extension owner; the caller is connected to SPI.
 */
int64
enrich_queue_add(EnrichKind kind, const char *key, Oid role)
{
	Oid			types[3] = {TEXTOID, TEXTOID, OIDOID};
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};
	bool		isnull;
	int			rc;

	(void) enrich_keep_plan(&enqueue_plan,
							"WITH ins AS ("
							" INSERT INTO enrich.queue (kind, key, requested_by)"
							" VALUES ($1, $2, $3::pg_catalog.regrole)"
							" ON CONFLICT (kind, key) WHERE status IN ('queued', 'in_flight', 'waiting_credits')"
							" DO NOTHING RETURNING id)"
							" SELECT id FROM ins"
							" UNION ALL"
							" SELECT id FROM enrich.queue"
							"  WHERE kind OPERATOR(pg_catalog.=) $1 AND key OPERATOR(pg_catalog.=) $2"
							"    AND status IN ('queued', 'in_flight', 'waiting_credits')"
							" LIMIT 1", 3, types);
	args[0] = CStringGetTextDatum(enrich_kind_name(kind));
	args[1] = CStringGetTextDatum(key);
	args[2] = ObjectIdGetDatum(role);
	nulls[2] = OidIsValid(role) ? ' ' : 'n';
	rc = SPI_execute_plan(enqueue_plan, args, nulls, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not queue key: %s", SPI_result_code_string(rc));
	enrich_queue_wake_at_commit();
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Adds a change of one item to a batch: its new status, last error (NULL
 * clears it), next attempt time (0 keeps it) and a correction of its
 * attempts (-1 when the claim's try was not really made).  Finished
 * statuses set finished_at.
 */
void
enrich_queue_update(EnrichQueueUpdates *u, int64 id, const char *status,
					const char *error, TimestampTz next, int attempts_delta)
{
	if (u->n == u->cap)
	{
		int			cap = Max(u->cap * 2, 16);

		if (u->cap == 0)
		{
			u->id = palloc(sizeof(Datum) * cap);
			u->status = palloc(sizeof(Datum) * cap);
			u->error = palloc(sizeof(Datum) * cap);
			u->error_null = palloc(sizeof(bool) * cap);
			u->next = palloc(sizeof(Datum) * cap);
			u->next_null = palloc(sizeof(bool) * cap);
			u->delta = palloc(sizeof(Datum) * cap);
		}
		else
		{
			u->id = repalloc(u->id, sizeof(Datum) * cap);
			u->status = repalloc(u->status, sizeof(Datum) * cap);
			u->error = repalloc(u->error, sizeof(Datum) * cap);
			u->error_null = repalloc(u->error_null, sizeof(bool) * cap);
			u->next = repalloc(u->next, sizeof(Datum) * cap);
			u->next_null = repalloc(u->next_null, sizeof(bool) * cap);
			u->delta = repalloc(u->delta, sizeof(Datum) * cap);
		}
		u->cap = cap;
	}
	u->id[u->n] = Int64GetDatum(id);
	u->status[u->n] = CStringGetTextDatum(status);
	u->error[u->n] = error ? CStringGetTextDatum(error) : (Datum) 0;
	u->error_null[u->n] = error == NULL;
	u->next[u->n] = TimestampTzGetDatum(next);
	u->next_null[u->n] = next == 0;
	u->delta[u->n] = Int32GetDatum(attempts_delta);
	u->n++;
}

/* Writes a batch of item changes in one statement and empties it. */
void
enrich_queue_flush(EnrichQueueUpdates *u)
{
	Oid			types[5] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	TIMESTAMPTZARRAYOID, INT4ARRAYOID};
	Datum		args[5];
	int			rc;

	if (u->n == 0)
		return;
	args[0] = enrich_make_array(u->id, NULL, u->n, INT8OID);
	args[1] = enrich_make_array(u->status, NULL, u->n, TEXTOID);
	args[2] = enrich_make_array(u->error, u->error_null, u->n, TEXTOID);
	args[3] = enrich_make_array(u->next, u->next_null, u->n, TIMESTAMPTZOID);
	args[4] = enrich_make_array(u->delta, NULL, u->n, INT4OID);
	rc = SPI_execute_plan(enrich_keep_plan(&update_plan,
									 "UPDATE enrich.queue q SET status = u.status, last_error = u.error,"
									 " updated_at = pg_catalog.now(),"
									 " next_attempt_at = coalesce(u.next, q.next_attempt_at),"
									 " attempts = q.attempts OPERATOR(pg_catalog.+) u.delta,"
									 " finished_at = CASE WHEN u.status IN ('done', 'no_match', 'failed')"
									 "   THEN pg_catalog.now() END"
									 " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),"
									 " pg_catalog.unnest($4), pg_catalog.unnest($5)) AS u(id, status, error, next, delta)"
									 " WHERE q.id OPERATOR(pg_catalog.=) u.id",
									 5, types),
						  args, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "could not update queue items: %s", SPI_result_code_string(rc));
	u->n = 0;
}

/*
 * Claims up to `limit` due items of one kind for the worker (in its
 * transaction, connected to SPI) and returns them, copied into the current
 * memory context, with their cache rows.
 */
int
enrich_queue_claim(EnrichKind kind, int limit, EnrichClaimed **items)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(limit)};
	SPITupleTable *tt;
	int			n;

	if (SPI_execute_plan(enrich_keep_plan(&claim_plan[kind], claim_sql[kind], 1, types),
						 args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not claim queue items");
	tt = SPI_tuptable;
	n = (int) SPI_processed;
	*items = palloc0(sizeof(EnrichClaimed) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = tt->vals[i];
		EnrichClaimed *c = &(*items)[i];
		bool		isnull;
		Datum		res;

		c->id = DatumGetInt64(SPI_getbinval(tup, tt->tupdesc, 1, &isnull));
		c->key = SPI_getvalue(tup, tt->tupdesc, 2);
		c->idempotency_key = SPI_getvalue(tup, tt->tupdesc, 3);
		c->attempts = DatumGetInt32(SPI_getbinval(tup, tt->tupdesc, 4, &isnull));
		c->refresh = DatumGetBool(SPI_getbinval(tup, tt->tupdesc, 5, &isnull));
		c->cached = DatumGetBool(SPI_getbinval(tup, tt->tupdesc, 6, &isnull));
		c->role = DatumGetObjectId(SPI_getbinval(tup, tt->tupdesc, 11, &isnull));
		if (isnull)
			c->role = InvalidOid;
		if (!c->cached)
			continue;
		c->matched = DatumGetBool(SPI_getbinval(tup, tt->tupdesc, 7, &isnull));
		c->fetched_at = DatumGetTimestampTz(SPI_getbinval(tup, tt->tupdesc, 8, &isnull));
		res = SPI_getbinval(tup, tt->tupdesc, 9, &isnull);
		c->result = isnull ? NULL : DatumGetJsonbPCopy(res);
		c->fields = SPI_getvalue(tup, tt->tupdesc, 10);
	}
	return n;
}

/* After a start or crash: items left in flight run again.  Returns how many. */
int
enrich_queue_recover(void)
{
	if (SPI_execute("UPDATE enrich.queue SET status = 'queued', updated_at = pg_catalog.now() "
					"WHERE status OPERATOR(pg_catalog.=) 'in_flight'", false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not queue interrupted items again");
	return (int) SPI_processed;
}

/*
 * Queues again the items in flight that the worker does not hold (held:
 * the ids of its slots, and of the items it had to leave in flight): a
 * restore of a dump taken while they were in flight brings them back so.
 * Runs in the worker's transaction, connected to SPI.  Returns how many.
 */
int
enrich_queue_requeue_orphans(int n, int64 *held)
{
	Oid			types[1] = {INT8ARRAYOID};
	Datum	   *ids = palloc(sizeof(Datum) * Max(n, 1));
	Datum		args[1];

	for (int i = 0; i < n; i++)
		ids[i] = Int64GetDatum(held[i]);
	args[0] = enrich_make_array(ids, NULL, n, INT8OID);
	if (SPI_execute_plan(enrich_keep_plan(&orphans_plan,
										  "UPDATE enrich.queue SET status = 'queued', updated_at = pg_catalog.now()"
										  " WHERE status OPERATOR(pg_catalog.=) 'in_flight'"
										  "   AND id OPERATOR(pg_catalog.<>) ALL ($1)", 1, types),
						 args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not queue orphaned items again");
	return (int) SPI_processed;
}

/*
 * Deletes up to `limit` finished items (done, no_match, failed) that
 * finished before `before`, oldest first; never an unfinished one.  Runs
 * in the worker's transaction, connected to SPI.  Returns how many.
 */
int
enrich_queue_delete_finished(TimestampTz before, int limit)
{
	Oid			types[2] = {TIMESTAMPTZOID, INT4OID};
	Datum		args[2] = {TimestampTzGetDatum(before), Int32GetDatum(limit)};

	if (SPI_execute_plan(enrich_keep_plan(&retention_plan,
										  "DELETE FROM enrich.queue"
										  " WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY("
										  "   SELECT ctid FROM enrich.queue"
										  "    WHERE status IN ('done', 'no_match', 'failed')"
										  "      AND finished_at OPERATOR(pg_catalog.<) $1"
										  "    ORDER BY finished_at LIMIT $2))"
										  "   AND status IN ('done', 'no_match', 'failed')", 2, types),
						 args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete finished queue items");
	return (int) SPI_processed;
}

/* The shared body of the two enqueue functions. */
static int64
enqueue_one(EnrichKind kind, text *arg)
{
	char	   *input;
	const char *reason;
	char	   *key = enrich_normalize_text(kind, arg, &input, &reason);
	Oid			save_userid;
	int			save_sec;
	int64		id;

	if (key == NULL)
		enrich_report_invalid(kind, input, reason);
	enrich_require_primary("queue work");
	enrich_require_worker();
	enrich_as_owner_begin(&save_userid, &save_sec);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	id = enrich_queue_add(kind, key, GetOuterUserId());
	SPI_finish();
	enrich_as_owner_end(save_userid, save_sec);
	return id;
}

/* enrich.enqueue_company(domain text) RETURNS bigint */
Datum
enqueue_company(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(enqueue_one(ENRICH_COMPANY, PG_GETARG_TEXT_PP(0)));
}

/* enrich.enqueue_lead(linkedin_url text) RETURNS bigint */
Datum
enqueue_lead(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(enqueue_one(ENRICH_LEAD, PG_GETARG_TEXT_PP(0)));
}

/* Whether anything is queued or in flight (a fresh snapshot each time). */
static bool
queue_busy(void)
{
	Oid			save_userid;
	int			save_sec;
	bool		busy;
	bool		isnull;

	enrich_as_owner_begin(&save_userid, &save_sec);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	(void) enrich_keep_plan(&pending_plan,
							"SELECT EXISTS (SELECT 1 FROM enrich.queue"
							" WHERE status IN ('queued', 'in_flight'))"
							" OR EXISTS (SELECT 1 FROM enrich.auto_inbox)", 0, NULL);
	if (SPI_execute_plan(pending_plan, NULL, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read enrich.queue");
	busy = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	enrich_as_owner_end(save_userid, save_sec);
	return busy;
}

/*
 * enrich.wait(timeout interval DEFAULT '5 min') RETURNS boolean
 *
 * Blocks until nothing is queued or in flight, and no key written by an
 * auto_enrich trigger is waiting to be queued (true), or the timeout
 * passes (false).  (The C name avoids libc's wait().)  Items waiting for credits do not count: they wait for a budget,
 * not for the worker.  Under REPEATABLE READ the queue would look frozen,
 * so that isolation level is refused.
 */
Datum
enrich_wait(PG_FUNCTION_ARGS)
{
	Interval   *iv = PG_GETARG_INTERVAL_P(0);
	int64		us = iv->time + (int64) iv->day * USECS_PER_DAY +
		(int64) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;
	TimestampTz end = GetCurrentTimestamp() + Max(us, 0);

	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("enrich.wait() cannot run in a REPEATABLE READ or SERIALIZABLE transaction"),
				 errhint("Call it in its own READ COMMITTED transaction.")));
	enrich_require_worker();
	for (;;)
	{
		TimestampTz now;

		CHECK_FOR_INTERRUPTS();
		if (!queue_busy())
			PG_RETURN_BOOL(true);
		now = GetCurrentTimestamp();
		if (now >= end)
			PG_RETURN_BOOL(false);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(50, (end - now) / 1000 + 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * enrich.refresh(kind text DEFAULT NULL, older_than interval DEFAULT
 *				  '30 days', max_items bigint DEFAULT NULL) RETURNS bigint
 *
 * Queues the stalest cached answers, oldest first: answers older than
 * older_than and "no match" answers older than enrich.no_match_ttl, at most
 * max_items, and no more per provider than its credit budget has left.
 * The worker fetches them again (ignoring the cache) and the new answers
 * reach every auto_enrich target.  Returns how many were queued.
 */
Datum
refresh(PG_FUNCTION_ARGS)
{
	const char *kname = PG_ARGISNULL(0) ? "all" : text_to_cstring(PG_GETARG_TEXT_PP(0));
	Interval   *iv = PG_ARGISNULL(1) ? NULL : PG_GETARG_INTERVAL_P(1);
	TimestampTz now = GetCurrentTimestamp();
	Oid			types[7] = {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID, INT8OID, INT8OID, OIDOID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	EnrichKind	kind;
	Oid			save_userid;
	int			save_sec;
	int64		n;

	if (strcmp(kname, "all") != 0 &&
		(!enrich_kind_from_name(kname, &kind) ||
		 (strcmp(kname, "company") != 0 && strcmp(kname, "lead") != 0)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown kind \"%s\"", kname),
				 errhint("The kinds are \"company\" and \"lead\", or NULL for both.")));
	if (iv == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("older_than must not be null")));
	if (!PG_ARGISNULL(2) && PG_GETARG_INT64(2) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_items must not be negative")));
	enrich_require_primary("queue work");
	enrich_require_worker();

	values[0] = CStringGetTextDatum(kname);
	values[1] = TimestampTzGetDatum(now - (iv->time + (int64) iv->day * USECS_PER_DAY +
										   (int64) iv->month * DAYS_PER_MONTH * USECS_PER_DAY));
	values[2] = TimestampTzGetDatum(now - (int64) enrich_no_match_ttl * USECS_PER_SEC);
	values[3] = Int64GetDatum(enrich_credit_available(ENRICH_COMPANY));
	values[4] = Int64GetDatum(enrich_credit_available(ENRICH_LEAD));
	values[5] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[5] = PG_ARGISNULL(2) ? 'n' : ' ';
	values[6] = ObjectIdGetDatum(GetOuterUserId());	/* the charges are the caller's */

	enrich_as_owner_begin(&save_userid, &save_sec);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(
			"WITH stale AS ("
			"  SELECT 'company'::text AS kind, domain AS key, fetched_at FROM enrich.companies"
			"   WHERE $1 IN ('all', 'company')"
			"     AND fetched_at < CASE WHEN matched THEN $2 ELSE $3 END"
			"  UNION ALL"
			"  SELECT 'lead'::text, linkedin_url, fetched_at FROM enrich.leads"
			"   WHERE $1 IN ('all', 'lead')"
			"     AND fetched_at < CASE WHEN matched THEN $2 ELSE $3 END),"
			" ranked AS ("
			"  SELECT kind, key, fetched_at,"
			"         row_number() OVER (PARTITION BY kind ORDER BY fetched_at) AS rn"
			"    FROM stale),"
			" picked AS ("
			"  SELECT kind, key FROM ranked"
			"   WHERE rn <= CASE kind WHEN 'company' THEN $4 ELSE $5 END"
			"   ORDER BY fetched_at LIMIT $6)"
			" INSERT INTO enrich.queue (kind, key, refresh, requested_by)"
			" SELECT kind, key, true, $7::pg_catalog.regrole FROM picked"
			" ON CONFLICT (kind, key) WHERE status IN ('queued', 'in_flight', 'waiting_credits')"
			" DO NOTHING",
			7, types, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not queue stale answers");
	n = (int64) SPI_processed;
	SPI_finish();
	enrich_as_owner_end(save_userid, save_sec);
	if (n > 0)
		enrich_queue_wake_at_commit();
	PG_RETURN_INT64(n);
}
