/*-------------------------------------------------------------------------
 *
 * worker_write.c
 *	  Writing the worker's answers back: cache rows, queue rows, deliveries
 *	  into auto_enrich targets and the credits used, in one transaction.
 *
 * Finished slots are written together, when nothing else is in flight,
 * when enough have finished, or when the oldest has waited WRITE_DELAY_MS.
 * If their joint write fails, they are written one by one; one that still
 * fails marks its item failed, so that no answer is paid for twice, and
 * one that cannot even be marked stays in flight (and spooled) for the
 * next start.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "entry.h"
#include "worker.h"

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
			/*
			 * a budget is spent, the provider's or the role's (housekeeping
			 * resumes it), or a 402 has paused the provider
			 * (enrich_rate_observe)
			 */
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
void
enrich_worker_write_back(Slot *only)
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
		keys[k] = palloc(sizeof(char *) * enrich_worker.nslots);
		outs[k] = palloc(sizeof(EnrichOutcome *) * enrich_worker.nslots);
		deliver[k] = enrich_auto_has_targets((EnrichKind) k);
	}
	for (int i = 0; i < enrich_worker.nslots; i++)
	{
		Slot	   *s = enrich_worker.slots[i];

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
void
enrich_worker_release_written(Slot *only)
{
	for (int i = 0; i < enrich_worker.nslots; i++)
	{
		Slot	   *s = enrich_worker.slots[i];

		if (s->used && s->done && (only == NULL || s == only))
			enrich_worker_release_slot(s);
	}
}

/*
 * Whether the finished slots should be written now: when nothing else is
 * in flight, when a quarter of the concurrency is waiting, or when the
 * oldest has waited WRITE_DELAY_MS.
 */
bool
enrich_worker_write_due(int ndone, TimestampTz now)
{
	if (ndone == 0)
		return false;
	return enrich_http_active() == 0 ||
		ndone >= Max(enrich_http_concurrency() / 4, 1) ||
		now >= TimestampTzPlusMilliseconds(enrich_worker.first_done_at, WRITE_DELAY_MS);
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
		enrich_worker_tx_begin(true);
		enrich_worker_write_back(s);
		enrich_worker_tx_commit();
	}
	PG_CATCH();
	{
		err = enrich_worker_tx_recover();
	}
	PG_END_TRY();
	if (err != NULL)
	{
		PG_TRY();
		{
			EnrichQueueUpdates u = {0};

			enrich_worker_tx_begin(true);
			enrich_queue_update(&u, s->job.queue_id, "failed", err, 0, 0);
			enrich_queue_flush(&u);
			enrich_worker_tx_commit();
		}
		PG_CATCH();
		{
			/* left in flight: the next start queues it again */
			(void) enrich_worker_tx_recover();
			left = true;
		}
		PG_END_TRY();
	}
	if (left)
	{
		/* not an orphan for the queue pass: it would be bought again */
		enrich_worker.left_ids = enrich_worker.left_ids ?
			repalloc(enrich_worker.left_ids, sizeof(int64) * (enrich_worker.nleft + 1)) :
			MemoryContextAlloc(enrich_worker.cxt, sizeof(int64));
		enrich_worker.left_ids[enrich_worker.nleft++] = s->job.queue_id;
	}
	enrich_worker_release_written(s);
	return !left;
}

/* Writes the finished slots one by one, after their joint write failed. */
void
enrich_worker_write_each(void)
{
	bool		unwritten = false;

	for (int i = 0; i < enrich_worker.nslots; i++)
	{
		Slot	   *s = enrich_worker.slots[i];

		if (s->used && s->done && !write_alone(s))
			unwritten = true;
	}
	/* an answer left unwritten stays spooled for the next start */
	if (!unwritten)
		enrich_spool_worker_remove(&enrich_worker.spool);
	enrich_worker.first_done_at = 0;
}
