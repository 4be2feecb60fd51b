/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The background worker that drains enrich.queue.
 *
 * One worker, registered from shared_preload_libraries, serves the
 * database named by enrich.database_name.  It holds claimed queue items in
 * request slots: up to enrich.max_concurrency requests in flight, and as
 * many again claimed and ready, so that a finished request is replaced at
 * once, without waiting for a transaction.  Its loop:
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
 * Every 10 seconds a queue pass (queue_pass) queues again the items in
 * flight that no slot holds (a restored dump brings them back so) and
 * deletes finished items older than enrich.queue_retention, in short
 * transactions of its own.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "enrich.h"

/* How often the worker does its housekeeping when nothing wakes it. */
#define HOUSEKEEPING_MS 1000
/* ... and at most how often when woken (by commits that queued work). */
#define HOUSEKEEPING_MIN_MS 100
/* A ready item that would wait longer than this goes back to the queue. */
#define HOLD_MAX_MS 2000
/* Answers wait at most this long to be written together with others. */
#define WRITE_DELAY_MS 20
/* How often the queue pass requeues orphans and deletes old finished items ... */
#define QUEUE_PASS_MS 10000
/* ... how many per transaction, and for how long at most in one go. */
#define RETENTION_BATCH 1000
#define RETENTION_SLICE_MS 50
/* With more to delete, the next slice comes this much later. */
#define QUEUE_PASS_AGAIN_MS 100

/* One request slot: a claimed queue item and its job. */
typedef struct Slot
{
	bool		used;			/* holds a claimed item */
	bool		done;			/* finished or handed back: awaits write-back */
	bool		fresh;			/* claimed in the transaction now open */
	MemoryContext cxt;			/* the job's strings and answer */
	EnrichJob	job;
} Slot;

static Slot **slots = NULL;		/* each slot stays put: curl points into it */
static int	nslots = 0;
static bool ready = false;		/* the extension is there at our version */
static bool recovered = false;	/* in_flight items of a former run requeued */
static bool more_due[ENRICH_NUM_KINDS];	/* the last claim filled its quota */
static bool freed = false;		/* slots were freed since the last claim */
static TimestampTz claim_at = 0;	/* a provider's quota grows then by itself */
static TimestampTz first_done_at = 0;	/* the oldest answer not written yet */
static bool inbox_busy = true;	/* the last look at the inbox found keys */
static MemoryContext worker_cxt = NULL;
static MemoryContext turn_cxt = NULL;	/* reset after every transaction */
static EnrichSpoolBatch spool = {.fd = -1};	/* answers not yet committed */
static TimestampTz next_queue_pass = 0;	/* when queue_pass is due */
static int64 *left_ids = NULL;	/* items write_alone had to leave in flight */
static int	nleft = 0;

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

/* ---- slots ---- */

/* Makes room for twice the concurrency (slots only ever grow). */
static void
ensure_slots(int conc)
{
	int			n = conc * 2;

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

/*
 * Counts slots: used, in flight, and per kind held (used, not done) and
 * waiting (held, not in flight).
 */
static void
count_slots(int *used, int *active, int *held, int *waiting)
{
	*used = *active = 0;
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		held[k] = waiting[k] = 0;
	for (int i = 0; i < nslots; i++)
	{
		Slot	   *s = slots[i];

		if (!s->used)
			continue;
		(*used)++;
		if (s->job.active)
			(*active)++;
		if (!s->done)
		{
			held[s->job.kind]++;
			if (!s->job.active)
				waiting[s->job.kind]++;
		}
	}
}

/* Takes a free slot for a claimed item and sets its job up. */
static void
fill_slot(EnrichKind kind, const EnrichClaimed *c)
{
	Slot	   *s = NULL;
	MemoryContext old;

	for (int i = 0; i < nslots && s == NULL; i++)
		if (!slots[i]->used)
			s = slots[i];
	if (s == NULL)
		elog(ERROR, "enrich worker has no free request slot");
	if (s->cxt == NULL)
		s->cxt = AllocSetContextCreate(worker_cxt, "enrich request", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(s->cxt);
	enrich_job_init(&s->job, kind, c->key);
	strlcpy(s->job.idempotency_key, c->idempotency_key, sizeof(s->job.idempotency_key));
	s->job.queue_id = c->id;
	s->job.attempts = c->attempts - 1;
	s->job.honour_pauses = true;
	s->job.refetch = c->refresh || c->cached;	/* LeadLex then overwrites */
	MemoryContextSwitchTo(old);
	s->used = true;
	s->done = false;
	s->fresh = true;
}

/* Frees a slot: its transfer, its share of the budget, its memory. */
static void
release_slot(Slot *s)
{
	enrich_http_release(&s->job.xfer);
	enrich_job_settle(&s->job);
	MemoryContextReset(s->cxt);
	memset(&s->job, 0, sizeof(EnrichJob));
	s->used = false;
	s->done = false;
	s->fresh = false;
	freed = true;
}

/* Drops the slots claimed in a transaction that rolled back (or all). */
static void
drop_slots(bool all)
{
	for (int i = 0; i < nslots; i++)
		if (slots[i]->used && (all || slots[i]->fresh))
			release_slot(slots[i]);
}

/* ---- transactions ---- */

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
	MemoryContextSwitchTo(turn_cxt);
}

/* Commits a transaction started by tx_begin. */
static void
tx_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(worker_cxt);
	MemoryContextReset(turn_cxt);
	pgstat_report_stat(false);
}

/* Logs the error in flight and rolls back; returns its message. */
static char *
tx_recover(void)
{
	ErrorData  *ed;
	char	   *msg;

	MemoryContextSwitchTo(worker_cxt);
	ed = CopyErrorData();
	msg = pstrdup(ed->message);
	FreeErrorData(ed);
	EmitErrorReport();
	FlushErrorState();
	AbortCurrentTransaction();
	SPI_finish();
	MemoryContextReset(turn_cxt);
	return msg;
}

/* ---- housekeeping ---- */

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

	if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'enrich'",
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
		if (SPI_execute_with_args("UPDATE enrich.queue SET status = 'waiting_credits', updated_at = pg_catalog.now() "
								  "WHERE status OPERATOR(pg_catalog.=) 'queued' AND kind OPERATOR(pg_catalog.=) $1",
								  1, types, values, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not park queue items");
		return;
	}
	/* a credit pause that has run out lets one probe through */
	values[1] = Int64GetDatum(pause == PAUSE_CREDITS ? 1 : Min(avail, PG_INT64_MAX / 2));
	if (SPI_execute_with_args("UPDATE enrich.queue SET status = 'queued', next_attempt_at = pg_catalog.now(), "
							  "updated_at = pg_catalog.now() "
							  "WHERE id IN (SELECT id FROM enrich.queue "
							  "  WHERE status OPERATOR(pg_catalog.=) 'waiting_credits' AND kind OPERATOR(pg_catalog.=) $1 "
							  "  ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)",
							  2, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not resume queue items");
	if (SPI_processed > 0)
		more_due[kind] = true;
}

/* Once a second, or when woken: version check, recovery, spool, budgets. */
static void
housekeeping(void)
{
	int			n;

	ready = extension_installed();
	if (!ready)
		return;
	if (!recovered)
	{
		n = enrich_queue_recover();
		if (n > 0)
			ereport(LOG,
					(errmsg("enrich worker queued %d interrupted request(s) again", n)));
		recovered = true;
	}
	n = enrich_spool_ingest_all(true);
	if (n > 0)
		ereport(DEBUG1, (errmsg("enrich worker took in %d spooled answer(s)", n)));
	enrich_limits_load();
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		balance_credits((EnrichKind) k);
	inbox_busy = true;
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		more_due[k] = true;
}

/* ---- write-back ---- */

/*
 * Adds one finished slot to the turn's writes: answers to the cache lists
 * (delivered to auto_enrich targets at once), queue changes to the batch.
 */
static void
write_slot(Slot *s, EnrichQueueUpdates *u, int *ncache, char ***keys,
		   EnrichOutcome ***outs, const bool *deliver, EnrichDeliveries *deliveries)
{
	EnrichJob  *j = &s->job;
	EnrichOutcome *o = &j->out;

	if (j->finished && (o->kind == OUTCOME_MATCH || o->kind == OUTCOME_NO_MATCH))
	{
		const char *status = o->kind == OUTCOME_MATCH ? "done" : "no_match";

		keys[j->kind][ncache[j->kind]] = j->key;
		outs[j->kind][ncache[j->kind]++] = o;
		if (deliver[j->kind])
			enrich_auto_add(&deliveries[j->kind], j->key,
							o->kind == OUTCOME_MATCH ? o->result : NULL, j->queue_id, status);
		else
			enrich_queue_update(u, j->queue_id, status, NULL, 0, 0);
		if (o->kind == OUTCOME_MATCH && o->charged)
			enrich_unpause(j->kind, PAUSE_CREDITS);
		return;
	}
	switch (o->kind)
	{
		case OUTCOME_NONE:
			/* handed back unsent: it waits for its provider in the queue */
			enrich_queue_update(u, j->queue_id, "queued", NULL, j->not_before, -1);
			return;
		case OUTCOME_RATE_LIMITED:
			{
				TimestampTz until;

				/* waiting out a rate limit is not a failed attempt */
				(void) enrich_paused(j->kind, &until);
				enrich_queue_update(u, j->queue_id, "queued", o->message,
									Max(until, j->not_before), -1);
				return;
			}
		case OUTCOME_NO_CREDITS:
			/* a 402 has paused the provider (enrich_rate_observe) */
			enrich_queue_update(u, j->queue_id, "waiting_credits", o->message, 0, -1);
			return;
		default:
			break;
	}
	if (!j->finished)
		enrich_queue_update(u, j->queue_id, "queued", o->message, j->not_before, 0);
	else
		enrich_queue_update(u, j->queue_id, "failed", o->message, 0, 0);
}

/*
 * Writes finished slots (all of them, or only `only`): cache rows, queue
 * rows, deliveries and the credits used.  Inside the turn's transaction.
 */
static void
write_back(Slot *only)
{
	EnrichQueueUpdates u = {0};
	int			ncache[ENRICH_NUM_KINDS] = {0};
	char	  **keys[ENRICH_NUM_KINDS];
	EnrichOutcome **outs[ENRICH_NUM_KINDS];
	bool		deliver[ENRICH_NUM_KINDS];
	EnrichDeliveries deliveries[ENRICH_NUM_KINDS];

	memset(deliveries, 0, sizeof(deliveries));
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
	{
		keys[k] = palloc(sizeof(char *) * nslots);
		outs[k] = palloc(sizeof(EnrichOutcome *) * nslots);
		deliver[k] = enrich_auto_has_targets((EnrichKind) k);
	}
	for (int i = 0; i < nslots; i++)
	{
		Slot	   *s = slots[i];

		if (s->used && s->done && (only == NULL || s == only))
			write_slot(s, &u, ncache, keys, outs, deliver, deliveries);
	}
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
	{
		enrich_cache_store_many((EnrichKind) k, ncache[k], keys[k], outs[k],
								GetCurrentTimestamp());
		enrich_auto_deliver((EnrichKind) k, &deliveries[k], &u);
	}
	enrich_queue_flush(&u);
	enrich_limits_save_usage();
}

/* Frees the slots whose write-back committed. */
static void
release_written(Slot *only)
{
	for (int i = 0; i < nslots; i++)
		if (slots[i]->used && slots[i]->done && (only == NULL || slots[i] == only))
			release_slot(slots[i]);
}

/* ---- claims ---- */

/*
 * Finishes a claimed item from the cache or the spool, if an answer is
 * there: no request, no credit.  Returns whether it did.
 */
static bool
finish_from_cache(EnrichKind kind, EnrichClaimed *c, EnrichQueueUpdates *u,
				  EnrichDeliveries *deliveries)
{
	EnrichSpooled sp;
	bool		matched;
	Jsonb	   *result;

	/* a refresh item only takes an answer fetched since it was queued */
	if (c->cached && (c->refresh || enrich_cache_fresh(c->matched, c->fetched_at)) &&
		(!c->matched || kind != ENRICH_COMPANY || enrich_leadlex_fields_cover(c->fields)))
	{
		matched = c->matched;
		result = c->result;
	}
	else if (!c->refresh && enrich_spool_find(kind, c->key, &sp) &&
			 enrich_answer_usable(kind, &sp.out, sp.fetched_at))
	{
		/* a session has just paid for it: never buy it twice */
		if (!sp.owner_running)
		{
			enrich_cache_store_at(kind, c->key, &sp.out, sp.fetched_at);
			/* the spool file goes at commit: make the commit durable */
			SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_SESSION);
		}
		matched = sp.out.kind == OUTCOME_MATCH;
		result = sp.out.result;
	}
	else
		return false;
	enrich_stat_add(kind, STAT_CACHE_HITS, 1);
	if (deliveries != NULL)
		enrich_auto_add(deliveries, c->key, matched ? result : NULL, c->id,
						matched ? "done" : "no_match");
	else
		enrich_queue_update(u, c->id, matched ? "done" : "no_match", NULL, 0, 0);
	return true;
}

/*
 * Claims work for the free slots: per provider no more than its pause,
 * concurrency cap, rate and credit budget let the worker hold.
 */
static void
claim_all(void)
{
	int			conc = enrich_http_concurrency();
	int			used,
				active,
				held[ENRICH_NUM_KINDS],
				waiting[ENRICH_NUM_KINDS];
	EnrichQueueUpdates u = {0};

	ensure_slots(conc);
	count_slots(&used, &active, held, waiting);
	freed = false;
	claim_at = 0;
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
	{
		EnrichKind	kind = (EnrichKind) k;
		TimestampTz more_at;
		int64		want = Min(nslots - used, (int64) enrich_rate_quota(kind, &more_at) - waiting[k]);
		EnrichClaimed *items;
		int			n;
		EnrichDeliveries deliveries = {0};
		bool		deliver;

		if (more_at != 0)
			claim_at = claim_at == 0 ? more_at : Min(claim_at, more_at);
		want = Min(want, enrich_credit_available(kind) - waiting[k]);
		more_due[k] = false;
		if (want <= 0)
			continue;
		n = enrich_queue_claim(kind, (int) want, &items);
		more_due[k] = (n == want);
		deliver = n > 0 && enrich_auto_has_targets(kind);
		for (int i = 0; i < n; i++)
		{
			if (finish_from_cache(kind, &items[i], &u, deliver ? &deliveries : NULL))
				continue;
			fill_slot(kind, &items[i]);
			used++;
			held[k]++;
			waiting[k]++;
		}
		enrich_auto_deliver(kind, &deliveries, &u);
	}
	enrich_queue_flush(&u);
}

/* Whether a claim is worth a transaction (now or with the next write). */
static bool
claim_wanted(void)
{
	int			used,
				active,
				held[ENRICH_NUM_KINDS],
				waiting[ENRICH_NUM_KINDS];

	if (!ready)
		return false;
	count_slots(&used, &active, held, waiting);
	if (used >= enrich_http_concurrency() * 2)
		return false;
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		if (more_due[k])
			return true;
	return freed || inbox_busy ||
		(claim_at != 0 && claim_at <= GetCurrentTimestamp());
}

/*
 * Whether a claim cannot wait for the next write: fewer ready items than
 * half the concurrency are held.  Otherwise claims ride along with writes,
 * so that a busy worker runs one transaction per batch of answers, not one
 * per answer.
 */
static bool
claim_urgent(void)
{
	int			used,
				active,
				held[ENRICH_NUM_KINDS],
				waiting[ENRICH_NUM_KINDS];

	if (!claim_wanted())
		return false;
	count_slots(&used, &active, held, waiting);
	return waiting[ENRICH_COMPANY] + waiting[ENRICH_LEAD] < Max(enrich_http_concurrency() / 2, 1);
}

/*
 * Whether the finished slots should be written now: when nothing else is
 * in flight, when a quarter of the concurrency is waiting, or when the
 * oldest has waited WRITE_DELAY_MS.
 */
static bool
write_due(int ndone, TimestampTz now)
{
	if (ndone == 0)
		return false;
	return enrich_http_active() == 0 ||
		ndone >= Max(enrich_http_concurrency() / 4, 1) ||
		now >= TimestampTzPlusMilliseconds(first_done_at, WRITE_DELAY_MS);
}

/*
 * Writes one finished slot in a transaction of its own; if that fails too,
 * marks its item failed with the error (in another), so that one bad
 * answer can never make the worker ask for (and pay for) it again and
 * again.  Frees the slot.  Returns false if even that failed (the item is
 * left in flight, to run again at the next start).
 */
static bool
write_alone(Slot *s)
{
	char	   *volatile err = NULL;
	volatile bool left = false;

	PG_TRY();
	{
		tx_begin(true);
		write_back(s);
		tx_commit();
	}
	PG_CATCH();
	{
		err = tx_recover();
	}
	PG_END_TRY();
	if (err != NULL)
	{
		PG_TRY();
		{
			EnrichQueueUpdates u = {0};

			tx_begin(true);
			enrich_queue_update(&u, s->job.queue_id, "failed", err, 0, 0);
			enrich_queue_flush(&u);
			tx_commit();
		}
		PG_CATCH();
		{
			/* left in flight: the next start queues it again */
			(void) tx_recover();
			left = true;
		}
		PG_END_TRY();
	}
	if (left)
	{
		/* not an orphan for queue_pass: it would be bought again */
		left_ids = left_ids ? repalloc(left_ids, sizeof(int64) * (nleft + 1)) :
			MemoryContextAlloc(worker_cxt, sizeof(int64));
		left_ids[nleft++] = s->job.queue_id;
	}
	release_written(s);
	return !left;
}

/* Writes the finished slots one by one, after their joint write failed. */
static void
write_each(void)
{
	bool		unwritten = false;

	for (int i = 0; i < nslots; i++)
		if (slots[i]->used && slots[i]->done && !write_alone(slots[i]))
			unwritten = true;
	/* an answer left unwritten stays spooled for the next start */
	if (!unwritten)
		enrich_spool_worker_remove(&spool);
	first_done_at = 0;
}

/*
 * One transaction: write-back of the finished slots, housekeeping (when
 * due), keys from auto_enrich triggers, and claims.  On an error the
 * claims are dropped and the finished slots written one by one.
 */
static void
run_turn(bool house, bool writes)
{
	volatile bool ok = true;

	/* the answers about to be written are durable first */
	if (writes)
		enrich_spool_worker_sync(&spool);
	PG_TRY();
	{
		tx_begin(writes || house);
		if (house)
			housekeeping();
		if (ready)
		{
			if (writes)
				write_back(NULL);
			if (inbox_busy)
				inbox_busy = enrich_auto_take_inbox() > 0;
			claim_all();
		}
		tx_commit();
	}
	PG_CATCH();
	{
		(void) tx_recover();
		ok = false;
	}
	PG_END_TRY();

	if (ok)
	{
		for (int i = 0; i < nslots; i++)
			slots[i]->fresh = false;
		if (writes && ready)
		{
			release_written(NULL);
			enrich_spool_worker_remove(&spool);
			first_done_at = 0;
		}
		return;
	}
	drop_slots(false);
	if (ready && writes)
		write_each();
}

/* ---- the queue pass: orphans and retention ---- */

/*
 * Every QUEUE_PASS_MS: queues again the items in flight that this worker
 * does not hold (a restored dump brings them back in flight), and deletes
 * finished items older than enrich.queue_retention, RETENTION_BATCH in a
 * transaction, for at most RETENTION_SLICE_MS; with more to delete it
 * comes back after QUEUE_PASS_AGAIN_MS, between turns, so that requests go
 * on meanwhile and no lock is held long.  Unfinished items and the cache
 * are never touched.
 */
static void
queue_pass(void)
{
	TimestampTz start = GetCurrentTimestamp();
	int64	   *held = palloc(sizeof(int64) * (nslots + nleft + 1));
	int			nheld = 0;
	volatile bool more = false;
	volatile int deleted = 0;

	for (int i = 0; i < nslots; i++)
		if (slots[i]->used)
			held[nheld++] = slots[i]->job.queue_id;
	for (int i = 0; i < nleft; i++)
		held[nheld++] = left_ids[i];
	PG_TRY();
	{
		int			n;

		tx_begin(false);
		n = enrich_queue_requeue_orphans(nheld, held);
		tx_commit();
		if (n > 0)
			ereport(LOG,
					(errmsg("enrich worker queued %d item(s) found in flight again", n),
					 errdetail("No request of this worker was in flight for them (a restored dump brings items back so).")));
		while (enrich_queue_retention >= 0)
		{
			CHECK_FOR_INTERRUPTS();
			tx_begin(false);
			n = enrich_queue_delete_finished(start - (TimestampTz) enrich_queue_retention * USECS_PER_SEC,
											 RETENTION_BATCH);
			tx_commit();
			deleted += n;
			if (n < RETENTION_BATCH)
				break;
			if (GetCurrentTimestamp() >= TimestampTzPlusMilliseconds(start, RETENTION_SLICE_MS))
			{
				more = true;
				break;
			}
		}
	}
	PG_CATCH();
	{
		(void) tx_recover();
	}
	PG_END_TRY();
	pfree(held);
	if (deleted > 0)
		ereport(DEBUG1,
				(errmsg("enrich worker deleted %d finished queue item(s)", deleted)));
	next_queue_pass = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												 more ? QUEUE_PASS_AGAIN_MS : QUEUE_PASS_MS);
}

/* ---- requests ---- */

/*
 * Starts the requests of held slots that are due, up to the concurrency.
 * A slot that could not start and would wait long (a provider pause) is
 * handed back to the queue instead of holding its place.
 */
static void
start_due(void)
{
	TimestampTz now = GetCurrentTimestamp();
	int			conc = enrich_http_concurrency();
	int			active = enrich_http_active();

	for (int i = 0; i < nslots && active < conc; i++)
	{
		Slot	   *s = slots[i];
		MemoryContext old;

		if (!s->used || s->done || s->job.active || s->job.not_before > now)
			continue;
		old = MemoryContextSwitchTo(s->cxt);
		if (enrich_job_try_start(&s->job))
			active++;
		MemoryContextSwitchTo(old);
		if (s->job.finished)
			s->done = true;
		else if (!s->job.active &&
				 s->job.not_before > TimestampTzPlusMilliseconds(now, HOLD_MAX_MS))
			s->done = true;		/* OUTCOME_NONE: back to the queue */
		if (s->done && first_done_at == 0)
			first_done_at = now;
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
		/* paid for: on disk before anything can lose it */
		if (j->finished && (j->out.kind == OUTCOME_MATCH || j->out.kind == OUTCOME_NO_MATCH))
			enrich_spool_worker_append(&spool, j->kind, j->key, &j->out, j->fetched_at);
		MemoryContextSwitchTo(old);
		/* a try to be retried goes back to the queue with its backoff */
		s->done = true;
		if (first_done_at == 0)
			first_done_at = GetCurrentTimestamp();
	}
	for (int i = 0; i < nslots; i++)
		if (slots[i]->used && slots[i]->done)
			ndone++;
	return ndone;
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
wait_timeout(TimestampTz next_housekeeping)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz due = next_housekeeping;

	if (claim_at != 0)
		due = Min(due, claim_at);
	if (ready)
		due = Min(due, next_queue_pass);
	if (first_done_at != 0)
		due = Min(due, TimestampTzPlusMilliseconds(first_done_at, WRITE_DELAY_MS));
	/* held slots matter only when there is room to start them */
	for (int i = 0; i < nslots && enrich_http_active() < enrich_http_concurrency(); i++)
	{
		Slot	   *s = slots[i];

		if (s->used && !s->done && !s->job.active)
			due = Min(due, s->job.not_before);
	}
	return Max((due - now + 999) / 1000, 0);
}

/* Entry point of the background worker. */
void
enrich_worker_main(Datum arg)
{
	TimestampTz next_housekeeping = 0;
	TimestampTz last_housekeeping = 0;
	bool		woken = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(enrich_database_name, NULL, 0);
	pgstat_report_appname("enrich worker");
	/*
	 * Our statements run as a superuser: nothing in them may resolve to an
	 * object a database's search_path setting offers (the writes into
	 * auto_enrich tables get their role's usual path, in auto.c).
	 */
	SetConfigOption("search_path", "pg_catalog", PGC_SUSET, PGC_S_OVERRIDE);

	worker_cxt = AllocSetContextCreate(TopMemoryContext, "enrich worker",
									   ALLOCSET_DEFAULT_SIZES);
	turn_cxt = AllocSetContextCreate(worker_cxt, "enrich worker turn",
									 ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(worker_cxt);

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
			/* new work to claim; budgets and pauses may have changed too */
			for (int k = 0; k < ENRICH_NUM_KINDS; k++)
				more_due[k] = true;
			inbox_busy = true;
			next_housekeeping = Min(next_housekeeping,
									TimestampTzPlusMilliseconds(last_housekeeping, HOUSEKEEPING_MIN_MS));
			woken = false;
		}
		house = now >= next_housekeeping;
		if (house)
		{
			last_housekeeping = now;
			next_housekeeping = TimestampTzPlusMilliseconds(now, HOUSEKEEPING_MS);
		}

		/* finished requests make room for held ones before any writing */
		ndone = collect();
		start_due();
		if (ndone > 0 && enrich_http_active() > 0)
		{
			/* answers already in the sockets are safer spooled now */
			if (enrich_http_wait(0))
				woken = true;
			ndone = collect();
			start_due();
		}
		writes = write_due(ndone, now);
		if (house || writes || claim_urgent())
		{
			run_turn(house, ndone > 0);
			if (!ready)
			{
				/* dropped, or at another version: hold nothing */
				drop_slots(true);
				recovered = false;
			}
			start_due();
		}
		if (ready && recovered && GetCurrentTimestamp() >= next_queue_pass)
			queue_pass();

		if (enrich_http_wait(claim_urgent() ? 0 : wait_timeout(next_housekeeping)))
			woken = true;
	}
}
