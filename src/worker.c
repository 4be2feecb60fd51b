/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The background worker that drains enrich.queue.
 *
 * One worker, registered from shared_preload_libraries, serves the
 * database named by enrich.database_name.  Its loop:
 *
 *	1. claims due items (FOR UPDATE SKIP LOCKED) in a short transaction,
 *	   no more than the free slots, the provider's rate allowance and the
 *	   credit budget allow; items whose answer is already cached are
 *	   finished on the spot, with no request;
 *	2. runs their requests with libcurl's multi interface, up to
 *	   enrich.max_concurrency at once over kept-alive connections;
 *	3. writes the answers that arrived, with their queue rows and the
 *	   credits used, in one short transaction per turn of the loop;
 *	4. sleeps on its latch when there is nothing to do.  Enqueueing
 *	   transactions set the latch when they commit.
 *
 * HTTP never happens inside a transaction.  A provider failure is data:
 * it goes on the queue row (retry with backoff, waiting_credits, failed),
 * it never restarts the process.  An error in a transaction of ours is
 * logged, the transaction rolled back, and the loop goes on.
 *
 * Crash safety: an item is in_flight only between claim and write-back.
 * When the worker starts, in_flight items are queued again; a LeadLex
 * retry reuses the item's Idempotency-Key, so it is not charged twice.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "enrich.h"

/* How often the worker does its housekeeping when nothing wakes it. */
#define HOUSEKEEPING_MS 1000
/* How long curl may wait for sockets before we look at the latch. */
#define CURL_POLL_MS 20
/* A credit pause (402) is probed this often. */
#define CREDIT_PROBE_MS 60000

/* One request slot: a claimed queue item and its job. */
typedef struct Slot
{
	bool		used;
	bool		done;			/* finished, waiting for write-back */
	MemoryContext cxt;			/* the job's strings and answer */
	EnrichJob	job;
} Slot;

static Slot **slots = NULL;	/* each slot stays put: curl points into it */
static int	nslots = 0;
static int	nused = 0;
static bool ready = false;		/* the extension exists and we recovered */
static bool more_due = true;	/* the last claim filled up: there may be more */
static MemoryContext worker_cxt = NULL;

/* Registers the worker with the postmaster; called from _PG_init. */
void
enrich_worker_register(void)
{
	BackgroundWorker w;

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = 1;
	snprintf(w.bgw_library_name, BGW_MAXLEN, "enrich");
	snprintf(w.bgw_function_name, BGW_MAXLEN, "enrich_worker_main");
	snprintf(w.bgw_name, BGW_MAXLEN, "enrich worker");
	snprintf(w.bgw_type, BGW_MAXLEN, "enrich worker");
	RegisterBackgroundWorker(&w);
}

/* Forgets our PGPROC in shared memory when the worker exits. */
static void
worker_detach(int code, Datum arg)
{
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	if (enrich_shared->worker_proc == MyProc)
	{
		enrich_shared->worker_proc = NULL;
		enrich_shared->worker_pid = 0;
	}
	LWLockRelease(enrich_shared->lock);
}

/* Concurrency allowed now (see enrich_http_concurrency). */
static int
worker_concurrency(void)
{
	return enrich_http_concurrency();
}

/* Makes room for the current concurrency (slots only ever grow). */
static void
ensure_slots(int n)
{
	if (n <= nslots)
		return;
	if (slots == NULL)
		slots = MemoryContextAllocZero(worker_cxt, sizeof(Slot *) * n);
	else
		slots = repalloc(slots, sizeof(Slot *) * n);
	for (int i = nslots; i < n; i++)
		slots[i] = MemoryContextAllocZero(worker_cxt, sizeof(Slot));
	nslots = n;
}

/* Runs one statement with SPI (inside our transaction); checks the result. */
static void
worker_exec(const char *sql, int nargs, Oid *types, Datum *values, int expect)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0);

	if (rc != expect)
		elog(ERROR, "enrich worker statement failed: %s", SPI_result_code_string(rc));
}

/* Starts a transaction of ours with SPI and a snapshot. */
static void
tx_begin(bool durable)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SetConfigOption("synchronous_commit", durable ? "on" : "off",
					PGC_SUSET, PGC_S_SESSION);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
}

/* Commits a transaction started by tx_begin. */
static void
tx_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
}

/* Logs the error in flight and rolls back; the loop goes on. */
static void
tx_recover(MemoryContext cxt)
{
	MemoryContextSwitchTo(cxt);
	EmitErrorReport();
	FlushErrorState();
	AbortCurrentTransaction();
	SPI_finish();
	ready = false;
}

/*
 * Whether the extension is installed in our database at the library's
 * version (inside a transaction).  Says once in the log why not.
 */
static bool
extension_installed(void)
{
	static char said[64] = "";
	const char *why;
	char	   *version = NULL;

	if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'enrich'",
					true, 1) == SPI_OK_SELECT && SPI_processed == 1)
		version = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (version != NULL && strcmp(version, ENRICH_VERSION) == 0)
	{
		said[0] = '\0';
		return true;
	}
	why = version ? version : "none";
	if (strcmp(said, why) != 0)
	{
		if (version == NULL)
			ereport(LOG,
					(errmsg("enrich worker waits for CREATE EXTENSION enrich in database \"%s\"",
							enrich_database_name)));
		else
			ereport(WARNING,
					(errmsg("enrich worker waits: extension enrich is at version %s, the library at %s",
							version, ENRICH_VERSION),
					 errhint("Run ALTER EXTENSION enrich UPDATE in database \"%s\".",
							 enrich_database_name)));
		strlcpy(said, why, sizeof(said));
	}
	return false;
}

/* After a start or crash: items left in flight run again. */
static void
recover_in_flight(void)
{
	worker_exec("UPDATE enrich.queue SET status = 'queued', updated_at = now() "
				"WHERE status = 'in_flight'", 0, NULL, NULL, SPI_OK_UPDATE);
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("enrich worker queued %llu interrupted request(s) again",
						(unsigned long long) SPI_processed)));
}

/*
 * Parks queued work of a provider whose budget is spent (or that answered
 * 402) as waiting_credits, and resumes parked work when credits are there.
 */
static void
balance_credits(EnrichKind kind)
{
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		values[2];
	TimestampTz until;
	EnrichPause pause = enrich_paused(kind, &until);
	int64		avail = enrich_credit_available(kind);

	values[0] = CStringGetTextDatum(enrich_kind_name(kind));
	if (avail == 0 || (pause == PAUSE_CREDITS && until > GetCurrentTimestamp()))
	{
		worker_exec("UPDATE enrich.queue SET status = 'waiting_credits', updated_at = now() "
					"WHERE status = 'queued' AND kind OPERATOR(pg_catalog.=) $1",
					1, types, values, SPI_OK_UPDATE);
		return;
	}
	/* a credit pause that has run out lets one probe through */
	values[1] = Int64GetDatum(pause == PAUSE_CREDITS ? 1 : Min(avail, PG_INT64_MAX / 2));
	worker_exec("UPDATE enrich.queue SET status = 'queued', next_attempt_at = now(), updated_at = now() "
				"WHERE id IN (SELECT id FROM enrich.queue WHERE status = 'waiting_credits' "
				"  AND kind OPERATOR(pg_catalog.=) $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)",
				2, types, values, SPI_OK_UPDATE);
}

/* Once a second, or when woken: spool, budgets, usage. */
static void
housekeeping(void)
{
	int			n;

	if (!extension_installed())
	{
		ready = false;
		return;
	}
	if (!ready)
	{
		recover_in_flight();
		ready = true;
	}
	n = enrich_spool_ingest_all();
	if (n > 0)
		ereport(DEBUG1, (errmsg("enrich worker took in %d spooled answer(s)", n)));
	enrich_limits_load();
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		balance_credits((EnrichKind) k);
	enrich_limits_save_usage();
}

/* Marks a queue item finished (or waiting) right away. */
static void
set_item(int64 id, const char *status, const char *error, TimestampTz next,
		 int attempts_delta)
{
	Oid			types[5] = {INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID, INT4OID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int			rc;

	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(status);
	values[2] = error ? CStringGetTextDatum(error) : (Datum) 0;
	nulls[2] = error ? ' ' : 'n';
	values[3] = TimestampTzGetDatum(next);
	nulls[3] = next ? ' ' : 'n';
	values[4] = Int32GetDatum(attempts_delta);
	rc = SPI_execute_with_args(
		"UPDATE enrich.queue SET status = $2, last_error = $3, updated_at = now(), "
		" next_attempt_at = coalesce($4, next_attempt_at), attempts = attempts + $5, "
		" finished_at = CASE WHEN $2 IN ('done', 'no_match', 'failed') THEN now() END "
		"WHERE id OPERATOR(pg_catalog.=) $1",
		5, types, values, nulls, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "could not update queue item " INT64_FORMAT, id);
}

/* Finds a free slot (there is one: claims never exceed the free slots). */
static Slot *
free_slot(void)
{
	for (int i = 0; i < nslots; i++)
		if (!slots[i]->used)
			return slots[i];
	elog(ERROR, "enrich worker has no free request slot");
	pg_unreachable();
}

/*
 * Claims up to `limit` due items of one kind.  Items already answered in
 * the cache are finished here without a request; the rest take a slot.
 */
static int
claim(EnrichKind kind, int limit)
{
	Oid			types[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	int			started = 0;
	uint64		n;
	int			claimed;
	SPITupleTable *tt;

	values[0] = CStringGetTextDatum(enrich_kind_name(kind));
	values[1] = Int32GetDatum(limit);
	worker_exec("UPDATE enrich.queue q SET status = 'in_flight', attempts = q.attempts + 1, "
				" updated_at = now() "
				"WHERE q.id IN (SELECT id FROM enrich.queue "
				"  WHERE status = 'queued' AND kind OPERATOR(pg_catalog.=) $1 AND next_attempt_at <= now() "
				"  ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) "
				"RETURNING q.id, q.key, q.idempotency_key::text, q.attempts, q.refresh",
				2, types, values, SPI_OK_UPDATE_RETURNING);
	n = SPI_processed;
	tt = SPI_tuptable;
	claimed = (int) n;
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		char	   *key = SPI_getvalue(tt->vals[i], tt->tupdesc, 2);
		char	   *idem = SPI_getvalue(tt->vals[i], tt->tupdesc, 3);
		int			attempts = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 4, &isnull));
		bool		refresh = DatumGetBool(SPI_getbinval(tt->vals[i], tt->tupdesc, 5, &isnull));
		Jsonb	   *cached = NULL;
		EnrichCacheState st = refresh ? CACHE_MISS : enrich_cache_lookup(kind, key, &cached);
		EnrichSpooled sp;
		Slot	   *s;
		MemoryContext old;

		/* a session may have just paid for it: never buy it twice */
		if (st == CACHE_MISS && !refresh && enrich_spool_find(kind, key, &sp) &&
			enrich_cache_fresh(sp.out.kind == OUTCOME_MATCH, sp.fetched_at))
		{
			if (!sp.owner_running)
			{
				enrich_cache_store_at(kind, key, &sp.out, sp.fetched_at);
				/* the spool file goes at commit: make the commit durable */
				SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_SESSION);
			}
			st = sp.out.kind == OUTCOME_MATCH ? CACHE_HIT : CACHE_NO_MATCH;
			cached = sp.out.result;
		}
		if (st != CACHE_MISS)
		{
			char	   *err = enrich_auto_deliver(kind, key, st == CACHE_HIT ? cached : NULL);

			enrich_stat_add(kind, STAT_CACHE_HITS, 1);
			set_item(id, err ? "failed" : st == CACHE_HIT ? "done" : "no_match", err, 0, 0);
			continue;
		}
		s = free_slot();
		if (s->cxt == NULL)
			s->cxt = AllocSetContextCreate(worker_cxt, "enrich request", ALLOCSET_SMALL_SIZES);
		old = MemoryContextSwitchTo(s->cxt);
		enrich_job_init(&s->job, kind, key);
		strlcpy(s->job.idempotency_key, idem, sizeof(s->job.idempotency_key));
		s->job.queue_id = id;
		s->job.attempts = attempts - 1;
		s->job.honour_pauses = true;
		s->job.deadline = 0;
		MemoryContextSwitchTo(old);
		s->used = true;
		s->done = false;
		nused++;
		started++;
	}
	(void) started;
	return claimed;
}

/* Claims work for every provider, within slots, rate allowance and budget. */
static void
claim_all(void)
{
	int			conc = worker_concurrency();

	ensure_slots(conc);
	for (int k = 0; k < ENRICH_NUM_KINDS && nused < conc; k++)
	{
		int			want = enrich_rate_allowance((EnrichKind) k, conc - nused);
		int64		credits = enrich_credit_available((EnrichKind) k);

		want = (int) Min((int64) want, credits);
		if (want > 0 && claim((EnrichKind) k, want) >= want)
			more_due = true;
	}
}

/* Starts the requests of slots that are due. */
static void
start_due(void)
{
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < nslots; i++)
	{
		Slot	   *s = slots[i];
		MemoryContext old;

		if (!s->used || s->done || s->job.active || s->job.not_before > now)
			continue;
		old = MemoryContextSwitchTo(s->cxt);
		(void) enrich_job_try_start(&s->job);
		MemoryContextSwitchTo(old);
		if (s->job.finished)
			s->done = true;
	}
}

/* Collects finished transfers; returns how many slots await write-back. */
static int
collect(void)
{
	EnrichTransfer *t;
	int			ndone = 0;

	while ((t = enrich_http_next_done()) != NULL)
	{
		EnrichJob  *j = (EnrichJob *) ((char *) t - offsetof(EnrichJob, xfer));
		Slot	   *s = (Slot *) ((char *) j - offsetof(Slot, job));
		MemoryContext old = MemoryContextSwitchTo(s->cxt);

		enrich_job_finish_try(j);
		MemoryContextSwitchTo(old);
		/* a try to be retried goes back to the queue with its backoff */
		s->done = true;
	}
	for (int i = 0; i < nslots; i++)
		if (slots[i]->used && slots[i]->done)
			ndone++;
	return ndone;
}

/* Writes one finished slot: cache row and queue row. */
static void
write_slot(Slot *s)
{
	EnrichJob  *j = &s->job;
	EnrichOutcome *o = &j->out;
	TimestampTz now = GetCurrentTimestamp();

	if (j->finished && (o->kind == OUTCOME_MATCH || o->kind == OUTCOME_NO_MATCH))
	{
		char	   *err;

		enrich_cache_store_at(j->kind, j->key, o, now);
		err = enrich_auto_deliver(j->kind, j->key, o->kind == OUTCOME_MATCH ? o->result : NULL);
		set_item(j->queue_id, err ? "failed" : o->kind == OUTCOME_MATCH ? "done" : "no_match",
				 err, 0, 0);
		if (o->kind == OUTCOME_MATCH && o->charged)
			enrich_unpause(j->kind, PAUSE_CREDITS);
		return;
	}
	switch (o->kind)
	{
		case OUTCOME_RATE_LIMITED:
			{
				TimestampTz until;

				/* waiting out a rate limit is not a failed attempt */
				(void) enrich_paused(j->kind, &until);
				set_item(j->queue_id, "queued", o->message, Max(until, j->not_before), -1);
				return;
			}
		case OUTCOME_NO_CREDITS:
			if (o->http_status == 402)
				enrich_pause(j->kind, PAUSE_CREDITS,
							 TimestampTzPlusMilliseconds(now, CREDIT_PROBE_MS));
			set_item(j->queue_id, "waiting_credits", o->message, 0, -1);
			return;
		case OUTCOME_AUTH:
			/* stop burning through the queue until the key is fixed */
			enrich_pause(j->kind, PAUSE_AUTH, TimestampTzPlusMilliseconds(now, 300000));
			break;
		default:
			break;
	}
	if (!j->finished)
		set_item(j->queue_id, "queued", o->message, j->not_before, 0);
	else
		set_item(j->queue_id, "failed", o->message, 0, 0);
}

/* Frees a slot after its write-back. */
static void
release_slot(Slot *s)
{
	enrich_http_release(&s->job.xfer);
	enrich_job_settle(&s->job);
	MemoryContextReset(s->cxt);
	s->used = false;
	s->done = false;
	nused--;
}

/* Writes every finished slot in one transaction. */
static void
write_back(void)
{
	for (int i = 0; i < nslots; i++)
		if (slots[i]->used && slots[i]->done)
			write_slot(slots[i]);
	enrich_limits_save_usage();
}

/* Drops all slots (after an error in write-back: they run again). */
static void
drop_slots(void)
{
	for (int i = 0; i < nslots; i++)
		if (slots[i]->used)
			release_slot(slots[i]);
}

/* Reloads settings; a reload lifts an authentication pause. */
static void
reload_settings(void)
{
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		enrich_unpause((EnrichKind) k, PAUSE_AUTH);
}

/* How long to sleep when no request is in flight. */
static long
idle_timeout(TimestampTz next_housekeeping)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz due = next_housekeeping;

	for (int i = 0; i < nslots; i++)
		if (slots[i]->used && !slots[i]->job.active && !slots[i]->done)
			due = Min(due, slots[i]->job.not_before);
	return Max((due - now) / 1000, 1);
}

/*
 * One short transaction: housekeeping (when due) and claims.  Returns
 * false if it failed (logged and rolled back).
 */
static bool
claim_turn(bool house)
{
	PG_TRY();
	{
		/* a lost claim is claimed again; housekeeping must stick */
		tx_begin(house);
		if (house)
			housekeeping();
		more_due = false;
		if (ready && enrich_auto_take_inbox() > 0)
			more_due = true;
		if (ready && nused < worker_concurrency())
			claim_all();
		tx_commit();
	}
	PG_CATCH();
	{
		tx_recover(worker_cxt);
		drop_slots();
		return false;
	}
	PG_END_TRY();
	return true;
}

/*
 * Writes finished slots (all of them, or only `only`) in one transaction.
 * Returns false, with the error message in *err, if it failed.
 */
static bool
write_tx(Slot *only, char **err)
{
	PG_TRY();
	{
		tx_begin(true);
		if (only)
			write_slot(only);
		else
			write_back();
		tx_commit();
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(worker_cxt);
		ed = CopyErrorData();
		*err = pstrdup(ed->message);
		FreeErrorData(ed);
		tx_recover(worker_cxt);
		ready = true;			/* our own rows are fine: no recovery needed */
		return false;
	}
	PG_END_TRY();
	return true;
}

/* Marks one item failed in a transaction of its own. */
static void
fail_tx(Slot *s, const char *err)
{
	PG_TRY();
	{
		tx_begin(true);
		set_item(s->job.queue_id, "failed", err, 0, 0);
		tx_commit();
	}
	PG_CATCH();
	{
		/* left in flight: recovery queues it again */
		tx_recover(worker_cxt);
	}
	PG_END_TRY();
}

/*
 * Writes every finished slot, then frees them.  If the transaction fails,
 * each slot is written alone, and one that still fails is marked failed
 * with the error, so that one bad answer can never make the worker ask
 * for (and pay for) the same items again and again.
 */
static void
write_turn(void)
{
	char	   *err = NULL;

	if (!write_tx(NULL, &err))
	{
		for (int i = 0; i < nslots; i++)
		{
			Slot	   *s = slots[i];

			if (s->used && s->done && !write_tx(s, &err))
				fail_tx(s, err);
		}
	}
	for (int i = 0; i < nslots; i++)
		if (slots[i]->used && slots[i]->done)
			release_slot(slots[i]);
}

/* Entry point of the background worker. */
void
enrich_worker_main(Datum arg)
{
	TimestampTz next_housekeeping = 0;
	bool		woken = true;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(enrich_database_name, NULL, 0);
	pgstat_report_appname("enrich worker");

	worker_cxt = AllocSetContextCreate(TopMemoryContext, "enrich worker",
									   ALLOCSET_DEFAULT_SIZES);

	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	enrich_shared->worker_proc = MyProc;
	enrich_shared->worker_pid = MyProcPid;
	enrich_shared->worker_db = MyDatabaseId;
	LWLockRelease(enrich_shared->lock);
	before_shmem_exit(worker_detach, (Datum) 0);
	ereport(LOG, (errmsg("enrich worker started for database \"%s\"", enrich_database_name)));

	for (;;)
	{
		TimestampTz now;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			reload_settings();
			woken = true;
		}
		now = GetCurrentTimestamp();

		if (woken || now >= next_housekeeping ||
			(ready && more_due && nused < worker_concurrency()))
		{
			bool		house = woken || now >= next_housekeeping;

			if (house)
				next_housekeeping = TimestampTzPlusMilliseconds(now, HOUSEKEEPING_MS);
			(void) claim_turn(house);
			woken = false;
		}

		start_due();
		if (collect() > 0)
		{
			write_turn();
			continue;
		}

		/* wait for sockets, the latch, or the next thing that falls due */
		if (enrich_http_active() > 0)
		{
			enrich_http_wait(CURL_POLL_MS);
			if (MyLatch->is_set)
			{
				ResetLatch(MyLatch);
				woken = true;
			}
		}
		else
		{
			int			rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
									   ready ? idle_timeout(next_housekeeping) : 5000,
									   PG_WAIT_EXTENSION);

			ResetLatch(MyLatch);
			if (rc & WL_LATCH_SET)
				woken = true;
		}
	}
}
