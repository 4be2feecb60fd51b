/*-------------------------------------------------------------------------
 *
 * worker_turn.c
 *	  The worker's request slots: claiming queue items into them, starting
 *	  their requests, and collecting the finished transfers.
 *
 * A claim takes, per provider, no more items than its pause, concurrency
 * cap, rate and credit budget let the worker hold; an item whose answer is
 * cached (or spooled by a session that paid for it) is finished at once,
 * with no request.  The others wait in their slots until they are due and
 * there is room in the concurrency; a slot that would wait long for its
 * provider goes back to the queue.  A finished transfer's paid answer is
 * spooled at once, and its slot awaits write-back (worker_write.c).
 * Also here, as the lowest of the worker's files: the state they share
 * (worker.h) and the worker's transactions (enrich_worker_tx_*).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "entry.h"
#include "worker.h"

/* What the worker's files share (worker.h); defined here, the lowest of them. */
EnrichWorkerState enrich_worker = {.inbox_busy = true, .spool = {.fd = -1}};

/* Reset after every transaction of the worker's (enrich_worker_tx_*). */
MemoryContext enrich_worker_turn_cxt = NULL;

/* A ready item that would wait longer than this goes back to the queue. */
#define HOLD_MAX_MS 2000

static bool freed = false;		/* slots were freed since the last claim */

/* ---- slots ---- */

/* Makes room for twice the concurrency (slots only ever grow). */
static void
ensure_slots(int conc)
{
	int			n = conc * 2;

	if (n <= enrich_worker.nslots)
		return;
	if (enrich_worker.slots == NULL)
		enrich_worker.slots = MemoryContextAllocZero(enrich_worker.cxt, sizeof(Slot *) * n);
	else
		enrich_worker.slots = repalloc(enrich_worker.slots, sizeof(Slot *) * n);
	for (int i = enrich_worker.nslots; i < n; i++)
		enrich_worker.slots[i] = MemoryContextAllocZero(enrich_worker.cxt, sizeof(Slot));
	enrich_worker.nslots = n;
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
	for (int i = 0; i < enrich_worker.nslots; i++)
	{
		Slot	   *s = enrich_worker.slots[i];

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

	for (int i = 0; i < enrich_worker.nslots && s == NULL; i++)
		if (!enrich_worker.slots[i]->used)
			s = enrich_worker.slots[i];
	if (s == NULL)
		elog(ERROR, "enrich worker has no free request slot");
	if (s->cxt == NULL)
		s->cxt = AllocSetContextCreate(enrich_worker.cxt, "enrich request", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(s->cxt);
	enrich_job_init(&s->job, kind, c->key);
	strlcpy(s->job.idempotency_key, c->idempotency_key, sizeof(s->job.idempotency_key));
	s->job.queue_id = c->id;
	s->job.role = c->role;
	enrich_role_resolve(kind, c->role, &s->job.credit);
	s->job.path = 'w';
	s->job.attempts = c->attempts - 1;
	s->job.honour_pauses = true;
	s->job.refetch = c->refresh || c->cached;	/* LeadLex then overwrites */
	MemoryContextSwitchTo(old);
	s->used = true;
	s->done = false;
	s->fresh = true;
}

/* Frees a slot: its transfer, its share of the budget, its memory. */
void
enrich_worker_release_slot(Slot *s)
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
void
enrich_worker_drop_slots(bool all)
{
	for (int i = 0; i < enrich_worker.nslots; i++)
	{
		Slot	   *s = enrich_worker.slots[i];

		if (s->used && (all || s->fresh))
			enrich_worker_release_slot(s);
	}
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
 * Resolves again which role budget the held items not started yet count
 * under: a role budget set or removed since their claim changes it, and
 * their requests are started outside a transaction.
 */
static void
resolve_held(void)
{
	for (int i = 0; i < enrich_worker.nslots; i++)
	{
		Slot	   *s = enrich_worker.slots[i];

		if (s->used && !s->done && !s->job.active && !s->job.reserved)
			enrich_role_resolve(s->job.kind, s->job.role, &s->job.credit);
	}
}

/*
 * Claims work for the free slots: per provider no more than its pause,
 * concurrency cap, rate and credit budget let the worker hold.
 */
void
enrich_worker_claim_all(void)
{
	int			conc = enrich_http_concurrency();
	int			used,
				active,
				held[ENRICH_NUM_KINDS],
				waiting[ENRICH_NUM_KINDS];
	EnrichQueueUpdates u = {0};

	ensure_slots(conc);
	resolve_held();
	count_slots(&used, &active, held, waiting);
	freed = false;
	enrich_worker.claim_at = 0;
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
	{
		EnrichKind	kind = (EnrichKind) k;
		TimestampTz more_at;
		int64		want = Min(enrich_worker.nslots - used,
							   (int64) enrich_rate_quota(kind, &more_at) - waiting[k]);
		EnrichClaimed *items;
		int			n;
		EnrichDeliveries deliveries = {0};
		bool		deliver;

		if (more_at != 0)
			enrich_worker.claim_at = enrich_worker.claim_at == 0 ? more_at :
				Min(enrich_worker.claim_at, more_at);
		want = Min(want, enrich_credit_available(kind) - waiting[k]);
		enrich_worker.more_due[k] = false;
		if (want <= 0)
			continue;
		n = enrich_queue_claim(kind, (int) want, &items);
		enrich_worker.more_due[k] = (n == want);
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

	if (!enrich_worker.ready)
		return false;
	count_slots(&used, &active, held, waiting);
	if (used >= enrich_http_concurrency() * 2)
		return false;
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		if (enrich_worker.more_due[k])
			return true;
	return freed || enrich_worker.inbox_busy ||
		(enrich_worker.claim_at != 0 && enrich_worker.claim_at <= GetCurrentTimestamp());
}

/*
 * Whether a claim cannot wait for the next write: fewer ready items than
 * half the concurrency are held.  Otherwise claims ride along with writes,
 * so that a busy worker runs one transaction per batch of answers, not one
 * per answer.
 */
bool
enrich_worker_claim_urgent(void)
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

/* ---- requests ---- */

/*
 * Whether the worker has work in hand: a slot used, or more queued work
 * due (it then counts in the sharing out of enrich.max_concurrency).
 */
bool
enrich_worker_has_work(void)
{
	for (int i = 0; i < enrich_worker.nslots; i++)
		if (enrich_worker.slots[i]->used)
			return true;
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		if (enrich_worker.more_due[k])
			return true;
	return false;
}

/*
 * Starts the requests of held slots that are due, up to the worker's share
 * of the concurrency (the workers of other databases with work in hand
 * have theirs).
 * A slot that could not start and would wait long (a provider pause) is
 * handed back to the queue instead of holding its place.
 */
void
enrich_worker_start_due(void)
{
	TimestampTz now = GetCurrentTimestamp();
	int			conc = enrich_dbw_share(enrich_http_concurrency());
	int			active = enrich_http_active();

	for (int i = 0; i < enrich_worker.nslots && active < conc; i++)
	{
		Slot	   *s = enrich_worker.slots[i];
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
		if (s->done && enrich_worker.first_done_at == 0)
			enrich_worker.first_done_at = now;
	}
}

/* Collects finished transfers; returns how many slots await write-back. */
int
enrich_worker_collect(void)
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
			enrich_spool_worker_append(&enrich_worker.spool, j->kind, j->key, &j->out, j->fetched_at);
		MemoryContextSwitchTo(old);
		/* a try to be retried goes back to the queue with its backoff */
		s->done = true;
		if (enrich_worker.first_done_at == 0)
			enrich_worker.first_done_at = GetCurrentTimestamp();
	}
	for (int i = 0; i < enrich_worker.nslots; i++)
		if (enrich_worker.slots[i]->used && enrich_worker.slots[i]->done)
			ndone++;
	return ndone;
}

/* Starts a transaction of ours with SPI and a snapshot. */
void
enrich_worker_tx_begin(bool durable)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SetConfigOption("synchronous_commit", durable ? "on" : "off",
					PGC_SUSET, PGC_S_SESSION);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	MemoryContextSwitchTo(enrich_worker_turn_cxt);
}

/* Commits a transaction started by enrich_worker_tx_begin. */
void
enrich_worker_tx_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(enrich_worker.cxt);
	MemoryContextReset(enrich_worker_turn_cxt);
	pgstat_report_stat(false);
}

/* Logs the error in flight and rolls back; returns its message. */
char *
enrich_worker_tx_recover(void)
{
	ErrorData  *ed;
	char	   *msg;

	MemoryContextSwitchTo(enrich_worker.cxt);
	ed = CopyErrorData();
	msg = pstrdup(ed->message);
	FreeErrorData(ed);
	EmitErrorReport();
	FlushErrorState();
	AbortCurrentTransaction();
	SPI_finish();
	MemoryContextReset(enrich_worker_turn_cxt);
	return msg;
}
