/*-------------------------------------------------------------------------
 *
 * ratelearn.c
 *	  The rate a provider admits: what it announces, and what it shows.
 *
 * Two pieces of pure bookkeeping, kept per provider in shared memory by
 * shmem.c (which holds the lock around every call here):
 *
 * The announced window.  A provider that sends X-RateLimit-Remaining and
 * X-RateLimit-Reset says how many more requests it admits before the
 * reset.  Requests still in flight may or may not have been counted in
 * that number, so "Remaining minus those in flight" is a number of starts
 * that is safe for certain; every answer gives such a safe number, the
 * largest one seen (less the starts since) is used, and a start spends
 * one.  When the window has turned, the provider's limit less what is in
 * flight is safe until the first answer of the new window tells more.
 *
 * The learned rate.  A provider that does not say (Slintel sends no
 * headers; a limit may be lowered without notice) answers 429 when it is
 * sent too much.  After the first 429 requests are paced by a token
 * bucket whose rate follows CUBIC, as the AWS SDKs' "adaptive" retry mode
 * does: on a 429 the rate drops to BETA times the rate the provider has
 * shown it admits (its answers other than 429 in the last second), then
 * grows along C (t - K)^3 + W_max, flat around W_max and slowly above it,
 * so that the limit is found again without hitting it hard.  Each 429
 * costs a whole pause (Retry-After), so when the provider throttles again
 * at the same rate the curve above W_max grows four times more slowly
 * (down to a 64th): a limit that holds still is probed less and less.  A 429 for a
 * request sent before the last decrease is not a new signal.  Once the
 * rate has grown well past W_max without another 429 the pacing ends: a
 * provider that no longer throttles is not slowed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "utils/timestamp.h"

#include "base.h"

/* CUBIC's constants, as the AWS SDKs use them. */
#define CUBIC_BETA 0.7
#define CUBIC_C 0.4
/* 429s this close to the last decrease are the same signal. */
#define SAME_THROTTLE_US (100 * 1000)
/* A throttle within this share of the last W_max is the same limit. */
#define SAME_LIMIT 0.15
/* W_max is this share of the admitted rate. */
#define PLATEAU 0.95
/* The slowest pace, requests per second. */
#define MIN_RATE 0.5
/* Pacing ends once the curve reaches this multiple of W_max. */
#define RECOVERED_FACTOR 3.0
/* A window is taken to have turned this long after its announced reset. */
#define WINDOW_MARGIN_US (20 * 1000)

/* Resets both to "nothing known": no pacing, no window. */
void
enrich_ratelearn_init(EnrichRateLearner *l, EnrichRateWindow *w)
{
	memset(l, 0, sizeof(EnrichRateLearner));
	w->limit = -1;
	w->left = 0;
	w->reset_at = 0;
}

/* ---- the announced window ---- */

/*
 * Takes in what an answer announced: limit (or -1), remaining and when the
 * window resets, with `in_flight` other requests still out.
 */
void
enrich_window_observe(EnrichRateWindow *w, int64 limit, int64 remaining,
					  TimestampTz reset_at, int in_flight)
{
	int64		safe = remaining - in_flight;

	if (limit >= 0)
		w->limit = limit;
	if (remaining < 0 || reset_at == 0)
		return;
	if (reset_at != w->reset_at)
	{
		/* an answer of another window: what it says is all we know */
		w->reset_at = reset_at;
		w->left = safe;
	}
	else
		w->left = Max(w->left, safe);
}

/* Turns the window if its reset has passed.  */
static void
window_turn(EnrichRateWindow *w, TimestampTz now, int in_flight)
{
	if (w->reset_at == 0 || now < w->reset_at + WINDOW_MARGIN_US)
		return;
	w->reset_at = 0;
	/* until an answer of the new window arrives, its limit is the budget */
	w->left = (w->limit >= 0) ? w->limit - in_flight : PG_INT64_MAX / 2;
}

/*
 * How many requests may start now by the announced window (PG_INT32_MAX
 * when none is known); *more_at is when more may (0: when an answer comes).
 */
int
enrich_window_room(EnrichRateWindow *w, TimestampTz now, int in_flight,
				   TimestampTz *more_at)
{
	*more_at = 0;
	window_turn(w, now, in_flight);
	if (w->reset_at == 0 && w->limit < 0)
		return PG_INT32_MAX;
	if (w->left <= 0)
	{
		if (w->reset_at != 0)
			*more_at = w->reset_at + WINDOW_MARGIN_US;
		return 0;
	}
	return (int) Min(w->left, (int64) PG_INT32_MAX);
}

/* A request starts: it spends one of the window's places. */
void
enrich_window_take(EnrichRateWindow *w)
{
	w->left--;
}

/* ---- the learned rate ---- */

/* Answers other than 429 in the second before `now`. */
static int
admitted_last_second(EnrichRateLearner *l, TimestampTz now)
{
	int			n = 0;

	while (n < ENRICH_ADMIT_LOG && (uint64) n < l->admitted_next &&
		   now - l->admitted[(l->admitted_next - 1 - n) % ENRICH_ADMIT_LOG] < USECS_PER_SEC)
		n++;
	return n;
}

/*
 * The CUBIC curve t seconds after the last decrease: back up to W_max
 * with CUBIC's own C, above it with the probing constant, which is
 * smaller each time the provider throttles at the same rate again.
 */
static double
cubic_rate(const EnrichRateLearner *l, double t)
{
	double		c = t < l->k ? CUBIC_C : l->c_probe;

	return c * pow(t - l->k, 3) + l->w_max;
}

/* Refills the bucket; at most one token waits (requests go evenly). */
static void
refill(EnrichRateLearner *l, TimestampTz now)
{
	double		secs = (now - l->refilled_at) / (double) USECS_PER_SEC;

	if (secs > 0)
		l->tokens = Min(1.0, l->tokens + secs * l->rate);
	l->refilled_at = now;
}

/*
 * Microseconds until the pace lets one more request go (0: now, and
 * always 0 while no 429 has been seen).
 */
int64
enrich_learner_wait_us(EnrichRateLearner *l, TimestampTz now)
{
	if (!l->enabled)
		return 0;
	refill(l, now);
	if (l->tokens >= 1.0)
		return 0;
	return (int64) ceil((1.0 - l->tokens) / l->rate * USECS_PER_SEC);
}

/* A paced request starts. */
void
enrich_learner_take(EnrichRateLearner *l, TimestampTz now)
{
	if (!l->enabled)
		return;
	refill(l, now);
	l->tokens -= 1.0;
}

/* An answer other than 429: counted as admitted; the rate grows. */
void
enrich_learner_admitted(EnrichRateLearner *l, TimestampTz now)
{
	l->admitted[l->admitted_next % ENRICH_ADMIT_LOG] = now;
	l->admitted_next++;
	if (!l->enabled)
		return;
	refill(l, now);
	l->rate = Max(cubic_rate(l, (now - l->throttled_at) / (double) USECS_PER_SEC), MIN_RATE);
	if (l->rate >= RECOVERED_FACTOR * l->w_max)
		l->enabled = false;		/* recovered: full speed again */
}

/*
 * A 429 for a request sent at `sent_at`: unless it was sent before the
 * last decrease, the rate drops to BETA times what the provider admits.
 * Returns whether it did.
 */
bool
enrich_learner_throttled(EnrichRateLearner *l, TimestampTz now, TimestampTz sent_at)
{
	double		admitted;

	/*
	 * The send time is taken from the transfer's duration, which starts
	 * when libcurl starts it: answers within one moment count once.
	 */
	if (l->enabled &&
		(sent_at < l->throttled_at || now - l->throttled_at < SAME_THROTTLE_US))
		return false;
	admitted = admitted_last_second(l, now);
	/* a provider that admitted nothing lately: the pace it was held to */
	if (admitted < MIN_RATE)
		admitted = l->enabled ? l->rate : MIN_RATE;
	/* the plateau a little below: arrivals jitter around an even pace */
	admitted *= PLATEAU;
	/* the same limit again: probe above it more slowly */
	if (l->w_max > 0 && fabs(admitted - l->w_max) <= SAME_LIMIT * l->w_max)
		l->c_probe = Max(l->c_probe / 4, CUBIC_C / 64);
	else
		l->c_probe = CUBIC_C;
	l->w_max = admitted;
	l->k = cbrt(l->w_max * (1.0 - CUBIC_BETA) / CUBIC_C);
	l->rate = Max(CUBIC_BETA * l->w_max, MIN_RATE);
	l->throttled_at = now;
	l->refilled_at = now;
	/* the pause (Retry-After) is the wait: its probe may go at once */
	l->tokens = 1.0;
	l->enabled = true;
	return true;
}

/* The pace in requests per second, or -1 when not pacing. */
double
enrich_learner_rate(const EnrichRateLearner *l)
{
	return l->enabled ? l->rate : -1;
}
