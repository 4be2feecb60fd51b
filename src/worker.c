/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The background worker that drains enrich.queue.
 *
 * One worker per database with the extension, started by the launcher
 * (launcher.c) with the database's OID as its argument.  It holds claimed
 * queue items in request slots: up to its share of enrich.max_concurrency
 * requests in flight (dbworkers.c: the workers of all databases together
 * stay within it), and as many again claimed and ready, so that a
 * finished request is replaced at once, without waiting for a
 * transaction.  A worker that finds no extension in its database leaves
 * (and is started again when a CREATE EXTENSION there commits).  Its loop:
 *
 *	1. collects finished transfers (their slots await write-back) and
 *	   starts the requests that are due, from the ready slots, up to the
 *	   concurrency, the providers' rate limits and the credit budget;
 *	2. runs one short transaction when there is something to write or to
 *	   claim: the answers that arrived (cache rows, queue rows, auto_enrich
 *	   targets and the credits used, all in one commit), the housekeeping
 *	   when it is due, and claims (FOR UPDATE SKIP LOCKED) for the free
 *	   slots, no more than each provider's pause, cap, rate and budget
 *	   allow; items whose answer is cached are finished there, with no
 *	   request;
 *	3. waits on the request sockets, curl's timer and its latch together
 *	   (enrich_http_wait): an answer, a commit that queued work, a reload
 *	   or a terminate wakes it at once, and it sleeps when idle.
 *
 * HTTP never happens inside a transaction: requests run across them.  A
 * provider failure is data: it goes on the queue row (retry with backoff,
 * waiting_credits, failed), it never restarts the process.  An error in a
 * transaction of ours is logged, rolled back, and the loop goes on; answers
 * whose joint write failed are written one by one, and one that still
 * fails marks its item failed, so no answer is paid for twice in a loop.
 *
 * Crash safety: an item is in_flight only between claim and write-back.
 * When the worker starts, in_flight items are queued again; a LeadLex
 * retry reuses the item's Idempotency-Key, so it is not charged twice.
 * Every 10 seconds a queue pass (enrich_worker_queue_pass) queues again the items in
 * flight that no slot holds (a restored dump brings them back so) and
 * deletes finished items older than enrich.queue_retention, in short
 * transactions of its own.
 *
 * This file owns the worker's registration, its set-up and signals, its
 * transactions, the turn and the loop.  worker_turn.c holds the request
 * slots (claims, starting requests, collecting transfers), worker_write.c
 * the write-back of answers, worker_house.c the housekeeping and the queue
 * pass; the state they share is declared in worker.h.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "entry.h"
#include "worker.h"

/* How often the worker does its housekeeping when nothing wakes it. */
#define HOUSEKEEPING_MS 1000
/* ... and at most how often when woken (by commits that queued work). */
#define HOUSEKEEPING_MIN_MS 100


static TimestampTz next_housekeeping = 0;
static TimestampTz last_housekeeping = 0;

/* What the launcher is to do once we are gone: start us again, or not. */
static EnrichDbState exit_then = DBW_STARTED;

/* Leaves our database's entry when the worker exits, however it ends. */
static void
worker_detach(int code, Datum arg)
{
	enrich_dbw_worker_exits(exit_then);
}

/* ---- the turn and the loop ---- */

/*
 * One transaction: write-back of the finished slots, housekeeping (when
 * due), keys from auto_enrich triggers, and claims.  On an error the
 * claims are dropped and the finished slots written one by one.
 */
static void
run_turn(bool house, bool writes)
{
	volatile bool ok = true;
	TimestampTz began = GetCurrentTimestamp();

	/* the answers about to be written are durable first */
	if (writes)
		enrich_spool_worker_sync(&enrich_worker.spool);
	PG_TRY();
	{
		enrich_worker_tx_begin(writes || house);
		if (house)
			enrich_worker_housekeeping();
		if (enrich_worker.ready)
		{
			if (writes)
				enrich_worker_write_back(NULL);
			if (enrich_worker.inbox_busy)
				enrich_worker.inbox_busy = enrich_auto_take_inbox() > 0;
			enrich_worker_claim_all();
		}
		enrich_worker_tx_commit();
	}
	PG_CATCH();
	{
		(void) enrich_worker_tx_recover();
		ok = false;
	}
	PG_END_TRY();

	/* a slow turn may run on statistics of a queue far smaller */
	if (TimestampDifferenceExceeds(began, GetCurrentTimestamp(), SLOW_TURN_MS))
		enrich_worker_after_slow_turn();
	if (ok)
	{
		for (int i = 0; i < enrich_worker.nslots; i++)
			enrich_worker.slots[i]->fresh = false;
		if (writes && enrich_worker.ready)
		{
			enrich_worker_release_written(NULL);
			enrich_spool_worker_remove(&enrich_worker.spool);
			enrich_worker.first_done_at = 0;
		}
		return;
	}
	enrich_worker_drop_slots(false);
	if (enrich_worker.ready && writes)
		enrich_worker_write_each();
}

/* Reloads settings; a reload lifts an authentication pause. */
static void
reload_settings(void)
{
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		enrich_unpause((EnrichKind) k, PAUSE_AUTH);
	/* a DBA (and a test) can see when the new settings are in force */
	ereport(LOG,
			(errmsg("enrich worker reloaded its settings")));
}

/*
 * How long to wait: until housekeeping, a provider's quota grows, or the
 * first held slot falls due.
 */
static long
wait_timeout(void)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz due = next_housekeeping;
	int			share = enrich_dbw_share(enrich_http_concurrency());

	if (enrich_worker.claim_at != 0)
		due = Min(due, enrich_worker.claim_at);
	if (enrich_worker.ready)
		due = Min(due, enrich_worker.next_queue_pass);
	if (enrich_worker.first_done_at != 0)
		due = Min(due, TimestampTzPlusMilliseconds(enrich_worker.first_done_at, WRITE_DELAY_MS));
	/* held slots matter only when there is room to start them (our share) */
	for (int i = 0; i < enrich_worker.nslots && enrich_http_active() < share; i++)
	{
		Slot	   *s = enrich_worker.slots[i];

		if (s->used && !s->done && !s->job.active)
			due = Min(due, s->job.not_before);
	}
	return Max((due - now + 999) / 1000, 0);
}

/*
 * Sets the worker up: signals, the connection to our database, a search
 * path of pg_catalog alone, its memory, and its place in shared memory.
 */
static void
worker_start(Datum arg)
{
	char	   *dbname;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(arg), InvalidOid, 0);
	pgstat_report_appname("enrich worker");
	/*
	 * Our statements run as a superuser: nothing in them may resolve to an
	 * object a database's search_path setting offers (the writes into
	 * auto_enrich tables get their role's usual path, in auto_deliver.c).
	 */
	SetConfigOption("search_path", "pg_catalog", PGC_SUSET, PGC_S_OVERRIDE);

	enrich_worker.cxt = AllocSetContextCreate(TopMemoryContext, "enrich worker",
											  ALLOCSET_DEFAULT_SIZES);
	enrich_worker_turn_cxt = AllocSetContextCreate(enrich_worker.cxt, "enrich worker turn",
									 ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(enrich_worker.cxt);

	enrich_dbw_attach_worker();
	before_shmem_exit(worker_detach, (Datum) 0);
	StartTransactionCommand();
	dbname = get_database_name(MyDatabaseId);
	enrich_worker.dbname = MemoryContextStrdup(enrich_worker.cxt, dbname ? dbname : "?");
	CommitTransactionCommand();
	MemoryContextSwitchTo(enrich_worker.cxt);
	ereport(LOG, (errmsg("enrich worker started for database \"%s\"", enrich_worker.dbname)));
}

/*
 * After a wake-up (a commit that queued work, a reload): there is new work
 * to claim, budgets and pauses may have changed too, and housekeeping
 * comes soon, but no sooner than HOUSEKEEPING_MIN_MS after the last.
 */
static void
after_wake(void)
{
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		enrich_worker.more_due[k] = true;
	enrich_worker.inbox_busy = true;
	next_housekeeping = Min(next_housekeeping,
							TimestampTzPlusMilliseconds(last_housekeeping, HOUSEKEEPING_MIN_MS));
}

/* Whether housekeeping is due now; if so, it is next due in HOUSEKEEPING_MS. */
static bool
housekeeping_due(TimestampTz now)
{
	if (now < next_housekeeping)
		return false;
	last_housekeeping = now;
	next_housekeeping = TimestampTzPlusMilliseconds(now, HOUSEKEEPING_MS);
	return true;
}

/*
 * Collects finished requests and starts held ones in their place, before
 * any writing; returns how many slots await write-back.  Sets *woken if
 * the latch was set meanwhile.
 */
static int
take_answers(bool *woken)
{
	int			ndone;

	ndone = enrich_worker_collect();
	enrich_worker_start_due();
	if (ndone > 0 && enrich_http_active() > 0)
	{
		/* answers already in the sockets are safer spooled now */
		if (enrich_http_wait(0))
			*woken = true;
		ndone = enrich_worker_collect();
		enrich_worker_start_due();
	}
	return ndone;
}

/* Entry point of the background worker. */
void
enrich_worker_main(Datum arg)
{
	bool		woken = false;

	worker_start(arg);
	for (;;)
	{
		TimestampTz now;
		bool		house;
		bool		writes;
		int			ndone;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			reload_settings();
			woken = true;
		}
		now = GetCurrentTimestamp();
		if (woken)
		{
			after_wake();
			woken = false;
		}
		house = housekeeping_due(now);

		ndone = take_answers(&woken);
		enrich_dbw_set_busy(enrich_worker_has_work());
		writes = enrich_worker_write_due(ndone, now);
		if (house || writes || enrich_worker_claim_urgent())
		{
			run_turn(house, ndone > 0);
			if (!enrich_worker.ready)
			{
				/* dropped, or at another version: hold nothing */
				enrich_worker_drop_slots(true);
				enrich_worker.recovered = false;
			}
			if (enrich_worker.no_extension)
			{
				ereport(LOG,
						(errmsg("enrich worker leaves database \"%s\": the extension is not installed there",
								enrich_worker.dbname)));
				exit_then = DBW_NOEXT;
				proc_exit(0);
			}
			enrich_worker_start_due();
		}
		if (enrich_worker.ready && enrich_worker.recovered &&
			GetCurrentTimestamp() >= enrich_worker.next_queue_pass)
			enrich_worker_queue_pass();

		if (enrich_http_wait(enrich_worker_claim_urgent() ? 0 : wait_timeout()))
			woken = true;
	}
}
