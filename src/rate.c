/*-------------------------------------------------------------------------
 *
 * rate.c
 *	  Rate limits and pauses in shared memory, shared by every session,
 *	  the batch functions and the worker.
 *
 * Before a request is sent it asks here (enrich_rate_acquire): the local
 * limit (enrich.set_rate_limit: a sliding window over the last sends,
 * widened by a margin, and a concurrency cap), the provider's announced
 * window and the pace learned from its 429s (ratelearn.c), and the
 * provider's pauses (429, X-RateLimit-Remaining: 0, 402, a refused key)
 * say whether it may go now or how long to wait.  A request counted in
 * flight is also counted in its process's holder slot (shmem.c).  Every
 * answer is taken in as it arrives (enrich_rate_observe), and the worker
 * asks how many requests it may hold ready (enrich_rate_quota).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"

#include "state.h"

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
	enrich_holder_attach();
	p = &enrich_shared->prov[kind];
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	if (p->rate_max_concurrency > 0 && p->in_flight >= p->rate_max_concurrency)
		(void) enrich_holders_sweep(now);

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
	else if (enrich_dbw_workers_in_flight() >= enrich_max_concurrency)
	{
		/* the databases' workers together: enrich.max_concurrency */
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
		enrich_holder_mine(kind)->in_flight++;
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
	EnrichHold *hold;

	if (enrich_shared == NULL)
		return;
	p = &enrich_shared->prov[kind];
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	hold = enrich_holder_mine(kind);
	if (hold != NULL && hold->in_flight > 0)
	{
		hold->in_flight--;
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
enrich_rate_observe(EnrichKind kind, const EnrichRateAnswer *a, bool worker)
{
	EnrichProviderShared *p;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz reset_at = 0;
	TimestampTz sent_at = now - (int64) (a->elapsed * USECS_PER_SEC);
	bool		throttled = a->rate_limited && a->http_status == 429;
	int32		strikes;

	if (enrich_shared == NULL)
		return;
	p = &enrich_shared->prov[kind];
	if (a->rl_reset >= 0)
		reset_at = (a->rl_reset < 1000000000) ?
			TimestampTzPlusMilliseconds(now, a->rl_reset * 1000) :
			time_t_to_timestamptz((pg_time_t) a->rl_reset);
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	if (a->rl_limit >= 0)
		p->rl_limit = a->rl_limit;
	if (a->rl_remaining >= 0)
	{
		p->rl_remaining = a->rl_remaining;
		p->rl_reset = reset_at;
	}
	/* the others still out: this request is still counted in flight */
	enrich_window_observe(&p->window, a->rl_limit, a->rl_remaining, reset_at,
						  Max(p->in_flight - 1, 0));
	if (throttled)
	{
		(void) enrich_learner_throttled(&p->learner, now, sent_at);
		p->probe_needed = true;
		p->probe_at = 0;
	}
	else if (a->http_status > 0)
	{
		enrich_learner_admitted(&p->learner, now);
		/* the provider answered after its pause: the probe came back */
		if (p->paused_until <= now)
		{
			p->probe_needed = false;
			p->probe_at = 0;
		}
	}
	else if (p->paused_until <= now)
		p->probe_at = 0;		/* no answer: another request may probe */
	/* 429s in a row without a wait stated back off longer and longer */
	p->rate_strikes = a->rate_limited ? p->rate_strikes + 1 : 0;
	strikes = p->rate_strikes;
	LWLockRelease(enrich_shared->lock);

	if (a->rate_limited)
	{
		int64		ms = a->retry_after_ms;

		if (ms < 0)
			ms = enrich_backoff_ms(strikes);
		enrich_pause(kind, PAUSE_RATE, TimestampTzPlusMilliseconds(now, Max(ms, 100)));
		return;
	}
	if (a->no_credits && a->http_status == 402 && worker)
		enrich_pause(kind, PAUSE_CREDITS, TimestampTzPlusMilliseconds(now, ENRICH_CREDIT_PROBE_MS));
	else if (a->auth && worker)
		enrich_pause(kind, PAUSE_AUTH, TimestampTzPlusMilliseconds(now, ENRICH_AUTH_PAUSE_MS));
	else if (a->rl_remaining == 0 && reset_at > now)
		enrich_pause(kind, PAUSE_RATE, reset_at);
}

/*
 * Forgets what was learned of a provider's rate: the pace after its 429s,
 * its announced window and a pending probe (enrich.resume: a DBA says the
 * provider takes requests again).
 */
void
enrich_rate_forget(EnrichKind kind)
{
	EnrichProviderShared *p;

	if (enrich_shared == NULL)
		return;
	p = &enrich_shared->prov[kind];
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	enrich_ratelearn_init(&p->learner, &p->window);
	p->probe_needed = false;
	p->probe_at = 0;
	LWLockRelease(enrich_shared->lock);
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
