/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared state: rate limits, credit budgets, pauses and statistics.
 *
 * Every session and the background worker draw on one rate limit and one
 * credit budget per provider, so that no request is sent that the budget
 * cannot pay for, under any concurrency: a request reserves a credit here
 * before it is sent and settles it when the answer is in.  The state lives
 * in shared memory requested at postmaster start, which needs
 * shared_preload_libraries = 'enrich'; without it enrich_shared is NULL,
 * the synchronous functions run without budgets or shared limits, and the
 * functions that need them raise 55000.
 *
 * Limits are kept in the tables enrich.rate_limits and
 * enrich.credit_limits and loaded into shared memory on first use; the
 * credits used in the current period are written back by the worker.
 *
 * Whatever a process counts in the shared totals (a reserved credit, a
 * request in flight) it also counts in a holder slot of its own, indexed
 * by its PGPROC number.  A before_shmem_exit callback gives the slot back
 * however the process ends (ERROR that ends it, FATAL, pg_terminate_backend,
 * a lost client); a session's transaction abort does the same for what an
 * ERROR left; and a process that finds the budget held by others sweeps
 * the slots of processes that are gone.  A release only ever gives back
 * what the releasing process holds, so releasing twice is harmless.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "enrich.h"

EnrichShared *enrich_shared = NULL;

/* What one process holds of one provider's shared counts. */
typedef struct EnrichHold
{
	int32		reserved;		/* credits reserved for its requests */
	int32		in_flight;		/* its requests counted in flight */
} EnrichHold;

/* A process's holder slot; slot i belongs to the process with pgprocno i. */
typedef struct EnrichHolder
{
	pid_t		pid;			/* the process that last used it, 0: none */
	EnrichHold	hold[ENRICH_NUM_KINDS];
} EnrichHolder;

/* The slots, one per PGPROC a backend or background worker can have. */
static EnrichHolder *holders = NULL;
static int	nholders = 0;

/* This process's slot, once attached. */
static EnrichHolder *my_holder = NULL;

/* Sweeps of gone processes' slots are at most this often per process. */
#define SWEEP_INTERVAL_MS 100

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Asks the postmaster for our shared memory and lock. */
static void
enrich_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(EnrichShared)));
	RequestAddinShmemSpace(MAXALIGN(mul_size(MaxBackends, sizeof(EnrichHolder))));
	RequestNamedLWLockTranche("enrich", 1);
}

/* Creates (or attaches to) the shared state. */
static void
enrich_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	enrich_shared = ShmemInitStruct("enrich", sizeof(EnrichShared), &found);
	if (!found)
	{
		memset(enrich_shared, 0, sizeof(EnrichShared));
		enrich_shared->lock = &(GetNamedLWLockTranche("enrich"))->lock;
		for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		{
			EnrichProviderShared *p = &enrich_shared->prov[k];

			p->credit_limit = -1;
			p->provider_balance = -1;
			p->rl_remaining = -1;
			enrich_ratelearn_init(&p->learner, &p->window);
			for (int s = 0; s < ENRICH_NUM_STATS; s++)
				pg_atomic_init_u64(&p->stats[s], 0);
		}
	}
	nholders = MaxBackends;
	holders = ShmemInitStruct("enrich holders",
							  mul_size(nholders, sizeof(EnrichHolder)), &found);
	if (!found)
		memset(holders, 0, mul_size(nholders, sizeof(EnrichHolder)));
	LWLockRelease(AddinShmemInitLock);
}

/* Installs the shared memory hooks; called from _PG_init when preloaded. */
void
enrich_shmem_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = enrich_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = enrich_shmem_startup;
}

/* Raises 55000 unless the library was preloaded. */
void
enrich_require_shared(const char *what)
{
	if (enrich_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s needs enrich in shared_preload_libraries", what),
				 errhint("Add enrich to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/* Adds to a statistics counter (lock-free; a no-op when not preloaded). */
void
enrich_stat_add(EnrichKind kind, EnrichStat stat, uint64 n)
{
	if (enrich_shared)
		pg_atomic_fetch_add_u64(&enrich_shared->prov[kind].stats[stat], n);
}

/* Sets the worker's latch, if a worker runs.  Never throws. */
void
enrich_wake_worker(void)
{
	PGPROC	   *proc;

	if (enrich_shared == NULL)
		return;
	proc = (PGPROC *) enrich_shared->worker_proc;
	if (proc != NULL)
		SetLatch(&proc->procLatch);
}

/*
 * Gives back to the shared totals all that a holder slot counts.  Caller
 * holds the lock exclusively.
 */
static void
release_holder(EnrichHolder *h)
{
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
	{
		EnrichProviderShared *p = &enrich_shared->prov[k];
		EnrichHold *hold = &h->hold[k];

		p->credits_reserved -= Min(hold->reserved, p->credits_reserved);
		p->in_flight -= Min(hold->in_flight, p->in_flight);
		hold->reserved = 0;
		hold->in_flight = 0;
	}
}

/* Gives back what this process holds (never throws). */
static void
release_mine(void)
{
	if (my_holder == NULL)
		return;
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	release_holder(my_holder);
	LWLockRelease(enrich_shared->lock);
}

/* before_shmem_exit: however the process ends, nothing it held stays held. */
static void
holder_at_exit(int code, Datum arg)
{
	if (my_holder == NULL)
		return;
	/* an error that ends the process may have left our lock held */
	LWLockReleaseAll();
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	release_holder(my_holder);
	my_holder->pid = 0;
	LWLockRelease(enrich_shared->lock);
	my_holder = NULL;
}

/*
 * At the end of a session's failed transaction no request of its own can
 * still be running (every one lives inside one function call), so nothing
 * may stay held.  The background worker keeps requests across
 * transactions and gives them back itself.
 */
static void
holder_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		release_mine();
}

/*
 * Attaches this process to its holder slot, once: registers the exit
 * callback and takes over the slot, giving back whatever a former user
 * of the same PGPROC may have left in it.
 */
static void
attach_holder(void)
{
	EnrichHolder *h;

	if (my_holder != NULL)
		return;
	if (MyProc == NULL || MyProc->pgprocno < 0 || MyProc->pgprocno >= nholders)
		elog(ERROR, "enrich: process has no holder slot");
	h = &holders[MyProc->pgprocno];
	before_shmem_exit(holder_at_exit, (Datum) 0);
	if (!IsBackgroundWorker)
		RegisterXactCallback(holder_xact_callback, NULL);
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	if (h->pid != MyProcPid)
	{
		release_holder(h);
		h->pid = MyProcPid;
	}
	LWLockRelease(enrich_shared->lock);
	my_holder = h;
}

/*
 * Gives back what processes that no longer exist still count, at most
 * every SWEEP_INTERVAL_MS per process.  Their exit callbacks do this; the
 * sweep is for a process that could not run them.  Returns whether
 * anything was given back.  Caller holds the lock exclusively.
 */
static bool
sweep_gone(TimestampTz now)
{
	static TimestampTz last_sweep = 0;
	bool		found = false;

	if (now - last_sweep < SWEEP_INTERVAL_MS * 1000)
		return false;
	last_sweep = now;
	for (int i = 0; i < nholders; i++)
	{
		EnrichHolder *h = &holders[i];

		if (h->pid == 0 || h->pid == MyProcPid)
			continue;
		if (kill(h->pid, 0) != 0 && errno == ESRCH)
		{
			for (int k = 0; k < ENRICH_NUM_KINDS; k++)
				found |= h->hold[k].reserved > 0 || h->hold[k].in_flight > 0;
			release_holder(h);
			h->pid = 0;
		}
	}
	return found;
}

/* Moves the credit period forward if it has ended.  Caller holds the lock. */
static void
roll_period(EnrichProviderShared *p, TimestampTz now)
{
	if (p->credit_limit < 0 || p->credit_period_us <= 0)
		return;
	if (now >= p->period_start + p->credit_period_us)
	{
		int64		n = (now - p->period_start) / p->credit_period_us;

		p->period_start += n * p->credit_period_us;
		p->credits_used = 0;
		p->usage_dirty = true;
	}
}

/* Credits that may still be reserved now; -1 means no limit. */
static int64
credits_left(EnrichProviderShared *p)
{
	if (p->credit_limit < 0)
		return -1;
	return Max(p->credit_limit - p->credits_used - p->credits_reserved, 0);
}

/*
 * Reserves one credit for a request about to be sent.  RESERVE_WAIT means
 * the budget is fully reserved by requests in flight of live processes,
 * some of which may give their credit back (a no match, a failure);
 * RESERVE_NONE that it is spent.  Always RESERVE_OK without a budget.
 * Without shared memory a budget cannot be kept, so a set one refuses.
 */
EnrichReserve
enrich_credit_reserve(EnrichKind kind)
{
	EnrichProviderShared *p;
	EnrichReserve r;
	TimestampTz now = GetCurrentTimestamp();

	if (enrich_shared == NULL)
	{
		enrich_limits_check_unshared(kind);
		return RESERVE_OK;
	}
	enrich_limits_load();
	attach_holder();
	p = &enrich_shared->prov[kind];
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	roll_period(p, now);
	if (credits_left(p) == 0 && p->credits_reserved > 0)
		(void) sweep_gone(now);
	if (credits_left(p) != 0)
	{
		p->credits_reserved++;
		my_holder->hold[kind].reserved++;
		r = RESERVE_OK;
	}
	else
		r = p->credits_reserved > 0 ? RESERVE_WAIT : RESERVE_NONE;
	LWLockRelease(enrich_shared->lock);
	return r;
}

/* Credits that may be reserved now (INT64_MAX without a limit). */
int64
enrich_credit_available(EnrichKind kind)
{
	EnrichProviderShared *p;
	int64		left;

	if (enrich_shared == NULL)
		return PG_INT64_MAX;
	enrich_limits_load();
	p = &enrich_shared->prov[kind];
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	roll_period(p, GetCurrentTimestamp());
	left = credits_left(p);
	LWLockRelease(enrich_shared->lock);
	return left < 0 ? PG_INT64_MAX : left;
}

/*
 * Settles a reservation: a charged answer uses the credit, anything else
 * gives it back.  Records the provider's reported balance when known.
 */
void
enrich_credit_settle(EnrichKind kind, bool reserved, bool charged, int64 balance)
{
	EnrichProviderShared *p;

	if (charged)
		enrich_stat_add(kind, STAT_CREDITS, 1);
	if (enrich_shared == NULL)
		return;
	p = &enrich_shared->prov[kind];
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	if (reserved && my_holder != NULL && my_holder->hold[kind].reserved > 0)
	{
		my_holder->hold[kind].reserved--;
		p->credits_reserved -= Min(1, p->credits_reserved);
	}
	if (charged)
	{
		p->credits_used++;
		p->credits_total++;
		p->usage_dirty = true;
	}
	if (balance >= 0)
		p->provider_balance = balance;
	LWLockRelease(enrich_shared->lock);
}

/*
 * The sliding window a local rate limit of `requests` per `per` is kept
 * with: at most *n sends in any *window_us.  The ring remembers
 * ENRICH_RATE_LOG sends; a larger limit is kept as the same rate over a
 * proportionally shorter window, which is stricter, never looser.  The
 * window is widened by a margin because the provider counts arrivals, and
 * an arrival can lag its send by a connect or a busy moment of ours.
 */
static void
rate_window(EnrichProviderShared *p, int *n, int64 *window_us)
{
	int64		k = (p->rate_requests + ENRICH_RATE_LOG - 1) / ENRICH_RATE_LOG;
	int64		w = p->rate_per_us / k;

	*n = (int) (p->rate_requests / k);
	*window_us = w + Min(Max(w / 20, 20 * 1000), USECS_PER_SEC);
}

/* The time of the n-th most recent send (0 when there were fewer). */
static TimestampTz
rate_sent_ago(EnrichProviderShared *p, int n)
{
	if ((uint64) n > p->sent_next)
		return 0;
	return p->sent[(p->sent_next - (uint64) n) % ENRICH_RATE_LOG];
}

/*
 * Microseconds until the rate limit lets one more request go (0: now).
 * Caller holds the lock.
 */
static int64
rate_wait_us(EnrichProviderShared *p, TimestampTz now)
{
	int			n;
	int64		window;
	TimestampTz oldest;

	if (p->rate_requests <= 0)
		return 0;
	rate_window(p, &n, &window);
	oldest = rate_sent_ago(p, n);
	if (oldest == 0 || now - oldest >= window)
		return 0;
	return oldest + window - now;
}

/* Records a send in the ring.  Caller holds the lock. */
static void
rate_record(EnrichProviderShared *p, TimestampTz now)
{
	p->sent[p->sent_next % ENRICH_RATE_LOG] = now;
	p->sent_next++;
}

/*
 * Asks to send one request now.  Returns 0 and counts the request in
 * flight when the provider's rate limit, concurrency cap and pauses allow;
 * otherwise the milliseconds to wait before asking again (and *why).
 * `honour_pauses` makes a credit or key pause stop the request too (the
 * worker); a rate pause always does.
 */
int64
enrich_rate_acquire(EnrichKind kind, bool honour_pauses, EnrichPause *why)
{
	EnrichProviderShared *p;
	TimestampTz now = GetCurrentTimestamp();
	int64		wait_ms = 0;

	*why = PAUSE_NONE;
	if (enrich_shared == NULL)
		return 0;
	enrich_limits_load();
	attach_holder();
	p = &enrich_shared->prov[kind];
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	if (p->rate_max_concurrency > 0 && p->in_flight >= p->rate_max_concurrency)
		(void) sweep_gone(now);

	if (p->paused_until > now &&
		(honour_pauses || p->pause_reason == PAUSE_RATE))
	{
		*why = p->pause_reason;
		wait_ms = (p->paused_until - now) / 1000 + 1;
	}
	else if (p->probe_needed && p->probe_at != 0 &&
			 now - p->probe_at < (int64) enrich_request_timeout * 1000)
	{
		/* a 429 pause ended: one probe goes first, the rest wait for it */
		*why = PAUSE_RATE;
		wait_ms = 5;
	}
	else if (p->pause_reason == PAUSE_CREDITS && honour_pauses && p->in_flight > 0)
	{
		/* a credit pause ended: one probe at a time until one succeeds */
		*why = PAUSE_CREDITS;
		wait_ms = 1000;
	}
	else if (p->rate_max_concurrency > 0 && p->in_flight >= p->rate_max_concurrency)
	{
		*why = PAUSE_CONCURRENCY;
		wait_ms = 5;
	}
	else
	{
		TimestampTz more_at;
		int64		us = Max(rate_wait_us(p, now), enrich_learner_wait_us(&p->learner, now));

		if (enrich_window_room(&p->window, now, p->in_flight, &more_at) == 0)
			us = Max(us, more_at != 0 ? more_at - now : 5000);
		if (us > 0)
		{
			*why = PAUSE_RATE;
			wait_ms = (us + 999) / 1000;
		}
		else
		{
			rate_record(p, now);
			enrich_learner_take(&p->learner, now);
			enrich_window_take(&p->window);
			if (p->probe_needed && p->paused_until <= now)
				p->probe_at = now;
		}
	}
	if (wait_ms == 0)
	{
		p->in_flight++;
		my_holder->hold[kind].in_flight++;
	}
	LWLockRelease(enrich_shared->lock);
	if (wait_ms > 0 && *why != PAUSE_CONCURRENCY)
		enrich_stat_add(kind, STAT_RATE_WAITS, 1);
	return wait_ms;
}

/* A request counted by enrich_rate_acquire has finished. */
void
enrich_rate_release(EnrichKind kind)
{
	EnrichProviderShared *p;

	if (enrich_shared == NULL)
		return;
	p = &enrich_shared->prov[kind];
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	if (my_holder != NULL && my_holder->hold[kind].in_flight > 0)
	{
		my_holder->hold[kind].in_flight--;
		p->in_flight -= Min(1, p->in_flight);
	}
	LWLockRelease(enrich_shared->lock);
}

/* Pauses a provider until `until` for a reason (a longer pause wins). */
void
enrich_pause(EnrichKind kind, EnrichPause reason, TimestampTz until)
{
	EnrichProviderShared *p;

	if (enrich_shared == NULL)
		return;
	p = &enrich_shared->prov[kind];
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	if (until > p->paused_until || reason != p->pause_reason)
	{
		p->paused_until = Max(until, p->paused_until);
		p->pause_reason = reason;
	}
	LWLockRelease(enrich_shared->lock);
}

/* Lifts a pause of the given reason (PAUSE_NONE: any). */
void
enrich_unpause(EnrichKind kind, EnrichPause reason)
{
	EnrichProviderShared *p;

	if (enrich_shared == NULL)
		return;
	p = &enrich_shared->prov[kind];
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	if (reason == PAUSE_NONE || p->pause_reason == reason)
	{
		p->paused_until = 0;
		p->pause_reason = PAUSE_NONE;
	}
	LWLockRelease(enrich_shared->lock);
}

/* The current pause of a provider, if any (and until when). */
EnrichPause
enrich_paused(EnrichKind kind, TimestampTz *until)
{
	EnrichProviderShared *p;
	EnrichPause r;

	*until = 0;
	if (enrich_shared == NULL)
		return PAUSE_NONE;
	p = &enrich_shared->prov[kind];
	LWLockAcquire(enrich_shared->lock, LW_SHARED);
	r = p->pause_reason;
	*until = p->paused_until;
	LWLockRelease(enrich_shared->lock);
	return r;
}

/*
 * Learns from a finished try, as each answer arrives, so that no further
 * request goes out meanwhile: the announced window (X-RateLimit-Remaining
 * and Reset) and the learned rate (ratelearn.c) take the answer in;
 * Remaining = 0 pauses the provider until Reset; a 429 until Retry-After
 * (or Reset, or a growing backoff), after which one probe goes first; a
 * 402 for a minute (then one probe at
 * a time finds out when it is paid again); a refused key for five minutes
 * or until the settings are reloaded.  The credit and key pauses hold the
 * worker back; only its own answers set them (a synchronous caller gets
 * its error and may try again).
 */
void
enrich_rate_observe(EnrichKind kind, const EnrichTransfer *t, const EnrichOutcome *out,
					bool worker)
{
	EnrichProviderShared *p;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz reset_at = 0;
	TimestampTz sent_at = now - (int64) (t->elapsed * USECS_PER_SEC);
	bool		throttled = out->kind == OUTCOME_RATE_LIMITED && out->http_status == 429;
	int32		strikes;

	if (enrich_shared == NULL)
		return;
	p = &enrich_shared->prov[kind];
	if (t->rl_reset >= 0)
		reset_at = (t->rl_reset < 1000000000) ?
			TimestampTzPlusMilliseconds(now, t->rl_reset * 1000) :
			time_t_to_timestamptz((pg_time_t) t->rl_reset);
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	if (t->rl_limit >= 0)
		p->rl_limit = t->rl_limit;
	if (t->rl_remaining >= 0)
	{
		p->rl_remaining = t->rl_remaining;
		p->rl_reset = reset_at;
	}
	/* the others still out: this request is still counted in flight */
	enrich_window_observe(&p->window, t->rl_limit, t->rl_remaining, reset_at,
						  Max(p->in_flight - 1, 0));
	if (throttled)
	{
		(void) enrich_learner_throttled(&p->learner, now, sent_at);
		p->probe_needed = true;
		p->probe_at = 0;
	}
	else if (out->http_status > 0)
	{
		enrich_learner_admitted(&p->learner, now);
		/* the provider answered after its pause: the probe came back */
		if (p->paused_until <= now)
		{
			p->probe_needed = false;
			p->probe_at = 0;
		}
	}
	/* 429s in a row without a wait stated back off longer and longer */
	p->rate_strikes = out->kind == OUTCOME_RATE_LIMITED ? p->rate_strikes + 1 : 0;
	strikes = p->rate_strikes;
	LWLockRelease(enrich_shared->lock);

	if (out->kind == OUTCOME_RATE_LIMITED)
	{
		int64		ms = out->retry_after_ms;

		if (ms < 0)
			ms = enrich_backoff_ms(strikes);
		enrich_pause(kind, PAUSE_RATE, TimestampTzPlusMilliseconds(now, Max(ms, 100)));
		return;
	}
	if (out->kind == OUTCOME_NO_CREDITS && out->http_status == 402 && worker)
		enrich_pause(kind, PAUSE_CREDITS, TimestampTzPlusMilliseconds(now, ENRICH_CREDIT_PROBE_MS));
	else if (out->kind == OUTCOME_AUTH && worker)
		enrich_pause(kind, PAUSE_AUTH, TimestampTzPlusMilliseconds(now, ENRICH_AUTH_PAUSE_MS));
	else if (t->rl_remaining == 0 && reset_at > now)
		enrich_pause(kind, PAUSE_RATE, reset_at);
}

/*
 * How many requests to a provider the worker may hold ready to send, on
 * top of those in flight: none while it is paused (one probe once a
 * credit pause is over), at most its concurrency cap, and no more than its
 * rate window has room for now.  *more_at says when the quota grows by
 * itself (the end of a pause, a place in the window); 0 means only when a
 * request finishes.  Nothing is taken.
 */
int
enrich_rate_quota(EnrichKind kind, TimestampTz *more_at)
{
	EnrichProviderShared *p;
	TimestampTz now = GetCurrentTimestamp();
	int			n = PG_INT32_MAX;

	*more_at = 0;
	if (enrich_shared == NULL)
		return n;
	p = &enrich_shared->prov[kind];
	/* exclusive: a turned window is reset in passing */
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	if (p->paused_until > now)
	{
		n = 0;
		*more_at = p->paused_until;
	}
	else if (p->pause_reason == PAUSE_CREDITS)
		n = (p->in_flight == 0) ? 1 : 0;
	else if (p->probe_needed)
		n = (p->probe_at == 0) ? 1 : 0;
	if (p->rate_max_concurrency > 0)
		n = Min(n, p->rate_max_concurrency);
	if (n > 0)
	{
		TimestampTz at;
		int64		us = enrich_learner_wait_us(&p->learner, now);
		int			room = enrich_window_room(&p->window, now, p->in_flight, &at);

		/* paced: one at a time, when the next one may go */
		if (us > 0 || (p->learner.enabled && n > 1))
		{
			n = us > 0 ? 0 : 1;
			*more_at = us > 0 ? now + us : 0;
		}
		if (room < n)
		{
			n = room;
			if (at != 0)
				*more_at = *more_at == 0 ? at : Min(*more_at, at);
		}
	}
	if (p->rate_requests > 0 && n > 0)
	{
		int			limit;
		int64		window;
		int			free = 0;

		/* of the last `limit` sends, those out of the window free a place */
		rate_window(p, &limit, &window);
		while (free < Min(n, limit))
		{
			TimestampTz t = rate_sent_ago(p, limit - free);

			if (t != 0 && now - t < window)
			{
				*more_at = t + window;
				break;
			}
			free++;
		}
		n = free;
	}
	LWLockRelease(enrich_shared->lock);
	return n;
}
