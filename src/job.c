/*-------------------------------------------------------------------------
 *
 * job.c
 *	  A job: one logical request for one key, tried until it has an outcome.
 *
 * A job reserves a credit and a place under the provider's limits before
 * each try (shared state), starts the provider's request through the
 * provider's callbacks, and when the transfer is done classifies it:
 * finished with an outcome, or retried later with exponential backoff
 * and jitter up to enrich.max_attempts (a 429 waits what the provider
 * says).  enrich_run_jobs() runs a set of jobs, at most `concurrency` at
 * once, for the synchronous and batch functions; the worker drives jobs
 * one by one with the same calls.
 *
 * The providers are reached through one table of callbacks; leadlex.c and
 * slintel.c depend on the provider interface (provider.c), not the other
 * way round.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "providers.h"

/* Longest wait without a look around (interrupts wake it at once anyway). */
#define POLL_MS 1000

/* The providers, by kind. */
static const EnrichProviderOps *const providers[ENRICH_NUM_KINDS] = {
	[ENRICH_COMPANY] = &enrich_leadlex_ops,
	[ENRICH_LEAD] = &enrich_slintel_ops,
};

/* Prepares a job for a normalised key. */
void
enrich_job_init(EnrichJob *job, EnrichKind kind, const char *key)
{
	memset(job, 0, sizeof(EnrichJob));
	job->kind = kind;
	job->key = pstrdup(key);
	job->xfer.kind = kind;
	job->role = GetOuterUserId();
	job->credit.entry = -1;		/* resolved as it reserves */
	job->path = 's';
	enrich_make_uuid(job->idempotency_key);
}

/*
 * Gives a job the Idempotency-Key of its request today (see
 * enrich_daily_idempotency_key): set refetch and by_id before.  A
 * re-fetch has a key of its own even when its body is the first fetch's:
 * the same key would replay that day's first answer.
 */
void
enrich_job_daily_key(EnrichJob *job)
{
	const EnrichProviderOps *ops = providers[job->kind];
	StringInfoData variant;

	initStringInfo(&variant);
	if (job->refetch)
		appendStringInfoString(&variant, "refetch;");
	if (ops->describe)
		ops->describe(job, &variant);
	enrich_daily_idempotency_key(job->kind, job->key, variant.data, job->idempotency_key);
	pfree(variant.data);
}

static void run_jobs(EnrichJob *jobs, int njobs, int concurrency,
					 EnrichAnswerFn on_answer, void *arg);

/* Ends a job with a failure decided here, without (another) request. */
static void
finish_local(EnrichJob *job, EnrichOutcomeKind kind, int sqlstate, char *message,
			 char *detail, char *hint)
{
	memset(&job->out, 0, sizeof(EnrichOutcome));
	job->out.kind = kind;
	job->out.sqlstate = sqlstate;
	job->out.message = message;
	job->out.detail = detail;
	job->out.hint = hint;
	job->out.confidence = NAN;
	job->out.credits_remaining = -1;
	job->out.retry_after_ms = -1;
	job->finished = true;
	enrich_job_settle(job);
}

/*
 * Ends a job that no budget can pay for: the provider's, or the one of the
 * role it counts under (job->credit.refused).  `wait`: the last credits
 * are reserved by requests in flight that did not give them back in time.
 */
static void
finish_no_credits(EnrichJob *job, bool wait)
{
	const char *prov = enrich_provider_name(job->kind);
	const char *key = enrich_provider_key(job->kind);
	char	   *detail;

	if (wait)
		detail = psprintf("The last credits are reserved by requests in flight that did not give them back within enrich.request_timeout (%d ms); no request was sent.",
						  enrich_request_timeout);
	else
		detail = pstrdup("No request was sent.");
	if (job->credit.refused)
		finish_local(job, OUTCOME_NO_CREDITS, ERRCODE_ENRICH_NO_CREDITS,
					 psprintf("the credit budget of role \"%s\" for %s is spent",
							  NameStr(job->credit.name), prov),
					 detail,
					 psprintf("See enrich.credits_by_role; enrich.set_role_credit_limit(%s, '%s', ...) raises the limit.",
							  quote_literal_cstr(quote_identifier(NameStr(job->credit.name))), key));
	else
		finish_local(job, OUTCOME_NO_CREDITS, ERRCODE_ENRICH_NO_CREDITS,
					 psprintf("the credit budget for %s is spent", prov),
					 detail,
					 psprintf("See enrich.credits; enrich.set_credit_limit('%s', ...) raises the limit.",
							  key));
}

/* Gives back what a finished job still holds of the shared budget. */
void
enrich_job_settle(EnrichJob *job)
{
	if (job->counted)
		enrich_rate_release(job->kind);
	job->counted = false;
	if (job->reserved || (job->out.charged && !job->settled))
		enrich_credit_settle(job->kind, &job->credit, job->reserved,
							 job->out.charged && !job->settled,
							 job->out.credits_remaining);
	job->reserved = false;
	if (job->finished)
		job->settled = true;
}

/*
 * Starts the next try of a job if the budget and the rate limit allow.
 * Returns false when it must wait (job->not_before says until when) or has
 * been finished without a request (no credits, or a rate-limit wait past
 * its deadline).
 */
bool
enrich_job_try_start(EnrichJob *job)
{
	const char *prov = enrich_provider_name(job->kind);
	EnrichPause why;
	int64		wait_ms;
	TimestampTz now;

	if (!enrich_http_may_start(job->kind))
	{
		/* the first request to this provider is finding out its protocol */
		job->not_before = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 2);
		return false;
	}
	if (!job->reserved)
	{
		EnrichReserve r = enrich_credit_reserve(job->kind, job->role, &job->credit);

		now = GetCurrentTimestamp();
		/*
		 * A request in flight may yet give its credit back; the worker
		 * resolves a stale role budget again in its next turn.
		 */
		if ((r == RESERVE_WAIT || r == RESERVE_STALE) &&
			(job->deadline == 0 || TimestampTzPlusMilliseconds(now, 10) <= job->deadline))
		{
			job->not_before = TimestampTzPlusMilliseconds(now, 10);
			return false;
		}
		if (r != RESERVE_OK)
		{
			finish_no_credits(job, r != RESERVE_NONE);
			return false;
		}
		job->reserved = true;
	}
	wait_ms = enrich_rate_acquire(job->kind, job->honour_pauses, &why);
	if (wait_ms > 0)
	{
		now = GetCurrentTimestamp();
		if (job->deadline != 0 && TimestampTzPlusMilliseconds(now, wait_ms) > job->deadline)
		{
			finish_local(job, OUTCOME_RATE_LIMITED, ERRCODE_ENRICH_RATE_LIMITED,
						 psprintf("%s rate limit exceeded", prov),
						 psprintf("The limit would delay the request by %lld ms, past enrich.request_timeout; no request was sent.",
								  (long long) wait_ms),
						 pstrdup("Queue the work with enrich.enqueue_company or enrich.enqueue_lead, or try again later."));
			return false;
		}
		job->not_before = TimestampTzPlusMilliseconds(now, wait_ms);
		return false;
	}
	job->counted = true;
	job->attempts++;
	job->active = true;
	providers[job->kind]->start(job);
	return true;
}

/* Counts a finished try in the statistics. */
static void
stats_outcome(const EnrichJob *job, const EnrichOutcome *out, double elapsed)
{
	EnrichKind	kind = job->kind;
	static const EnrichStat err_stat[] = {
		[OUTCOME_TRANSIENT] = STAT_ERR_TRANSIENT,
		[OUTCOME_RATE_LIMITED] = STAT_ERR_RATE,
		[OUTCOME_NO_CREDITS] = STAT_ERR_CREDITS,
		[OUTCOME_AUTH] = STAT_ERR_AUTH,
		[OUTCOME_REJECTED] = STAT_ERR_REJECTED,
		[OUTCOME_BAD_RESPONSE] = STAT_ERR_RESPONSE,
		[OUTCOME_CONNECT] = STAT_ERR_CONNECT,
		[OUTCOME_TLS] = STAT_ERR_CONNECT,
	};

	enrich_stat_add(kind, STAT_REQUESTS, 1);
	enrich_stat_add(kind, STAT_LATENCY_US, (uint64) (elapsed * 1000000.0));
	enrich_stat_add(kind, STAT_LATENCY_N, 1);
	if (out->kind == OUTCOME_MATCH)
		enrich_stat_add(kind, STAT_SUCCESSES, 1);
	/* a refresh that the provider says changed nothing */
	if (out->kind == OUTCOME_MATCH && job->refetch && out->fields_updated != NULL &&
		JB_ROOT_COUNT(out->fields_updated) == 0)
		enrich_stat_add(kind, STAT_REFRESHES_UNCHANGED, 1);
	else if (out->kind == OUTCOME_NO_MATCH)
		enrich_stat_add(kind, STAT_NO_MATCHES, 1);
	else if (out->kind > OUTCOME_NO_MATCH && out->kind <= OUTCOME_TLS)
		enrich_stat_add(kind, err_stat[out->kind], 1);
}

/* Tells the shared rate state what a finished try's answer said. */
static void
observe(EnrichJob *job, const EnrichOutcome *out)
{
	EnrichRateAnswer a;

	a.http_status = out->http_status;
	a.rate_limited = out->kind == OUTCOME_RATE_LIMITED;
	a.no_credits = out->kind == OUTCOME_NO_CREDITS;
	a.auth = out->kind == OUTCOME_AUTH;
	a.retry_after_ms = out->retry_after_ms;
	a.rl_limit = job->xfer.rl_limit;
	a.rl_remaining = job->xfer.rl_remaining;
	a.rl_reset = job->xfer.rl_reset;
	a.elapsed = job->xfer.elapsed;
	enrich_rate_observe(job->kind, &a, job->honour_pauses);
}

/*
 * Classifies a finished try and decides: done (job->finished, outcome in
 * job->out, shared budget settled) or retry later (job->not_before).
 */
void
enrich_job_finish_try(EnrichJob *job)
{
	EnrichOutcome out;
	TimestampTz now = GetCurrentTimestamp();
	int64		wait_ms;

	job->active = false;
	enrich_classify(job, &out, providers[job->kind]);
	observe(job, &out);
	stats_outcome(job, &out, job->xfer.elapsed);
	enrich_http_release(&job->xfer);
	if (job->counted)
		enrich_rate_release(job->kind);
	job->counted = false;

	if (enrich_outcome_retryable(&out) && job->attempts < enrich_max_attempts)
	{
		wait_ms = enrich_backoff_ms(job->attempts);
		if (out.kind == OUTCOME_RATE_LIMITED && out.retry_after_ms >= 0)
			wait_ms = Max(out.retry_after_ms, 100);
		else if (out.kind == OUTCOME_TRANSIENT)
			wait_ms = Max(wait_ms, out.retry_after_ms);
		/*
		 * A connection that went away under its first try (a kept-alive
		 * one the server closed, an HTTP/2 session it ended) is no sign
		 * of trouble: the first retry goes at once, on a new one.
		 */
		if (out.conn_lost && job->attempts == 1)
			wait_ms = 0;
		/*
		 * a synchronous caller waits at most one request timeout for a 429
		 * or a 503's Retry-After
		 */
		if (job->deadline == 0 ||
			(out.kind != OUTCOME_RATE_LIMITED && out.retry_after_ms <= 0) ||
			TimestampTzPlusMilliseconds(now, wait_ms) <= job->deadline)
		{
			/* the outcome of this try, for the queue's last_error */
			job->out = out;
			job->not_before = TimestampTzPlusMilliseconds(now, wait_ms);
			return;
		}
	}
	if (enrich_outcome_retryable(&out))
		out.detail = psprintf("%s%sGave up after %d attempt%s.",
							  out.detail ? out.detail : "", out.detail ? " " : "",
							  job->attempts, job->attempts == 1 ? "" : "s");
	job->out = out;
	job->finished = true;
	job->fetched_at = now;
	enrich_job_settle(job);
}

/*
 * Runs jobs to completion, at most `concurrency` in flight at once.  On
 * return every job is finished with its outcome.  Every answer (a match
 * or a no match) is handed to on_answer, when given, as it arrives: the
 * caller makes it durable (the batch functions' spool file).
 * Interrupts (cancel, statement_timeout, terminate) wake the wait and are
 * honoured at once; the transfers and their shares of the budget are
 * released before the ERROR goes on.
 */
void
enrich_run_jobs(EnrichJob *jobs, int njobs, int concurrency,
				EnrichAnswerFn on_answer, void *arg)
{
	PG_TRY();
	{
		run_jobs(jobs, njobs, concurrency, on_answer, arg);
	}
	PG_CATCH();
	{
		for (int i = 0; i < njobs; i++)
		{
			enrich_http_release(&jobs[i].xfer);
			enrich_job_settle(&jobs[i]);
		}
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/* The loop of enrich_run_jobs. */
static void
run_jobs(EnrichJob *jobs, int njobs, int concurrency,
		 EnrichAnswerFn on_answer, void *arg)
{
	int			nfinished = 0;
	int			nactive = 0;
	int			first = 0;		/* jobs before this are finished */
	int			next = 0;		/* jobs from this on are not started yet */
	TimestampTz start = GetCurrentTimestamp();

	for (int i = 0; i < njobs; i++)
	{
		jobs[i].deadline = TimestampTzPlusMilliseconds(start, enrich_request_timeout);
		if (jobs[i].finished)
			nfinished++;
	}

	while (nfinished < njobs)
	{
		TimestampTz now = GetCurrentTimestamp();
		TimestampTz due = PG_INT64_MAX;
		long		timeout = POLL_MS;
		EnrichTransfer *t;

		CHECK_FOR_INTERRUPTS();

		/*
		 * Start retries and waits that are due, then new jobs, up to the cap.
		 * Jobs finish about in the order they start, so the window from the
		 * first unfinished job stays about two concurrencies wide.
		 */
		while (first < njobs && jobs[first].finished)
			first++;
		while (next < njobs && next < nactive + nfinished + concurrency)
			next++;
		for (int i = first; i < next && nactive < concurrency; i++)
		{
			EnrichJob  *j = &jobs[i];

			if (j->finished || j->active)
				continue;
			if (j->not_before > now)
			{
				due = Min(due, j->not_before);
				continue;
			}
			if (enrich_job_try_start(j))
				nactive++;
			else if (j->finished)
				nfinished++;
			else
				due = Min(due, j->not_before);
		}

		while ((t = enrich_http_next_done()) != NULL)
		{
			EnrichJob  *j = (EnrichJob *) ((char *) t - offsetof(EnrichJob, xfer));

			enrich_job_finish_try(j);
			nactive--;
			/* a free place: start the next job before waiting again */
			timeout = 0;
			if (!j->finished)
				continue;
			nfinished++;
			if (on_answer && (j->out.kind == OUTCOME_MATCH || j->out.kind == OUTCOME_NO_MATCH))
				on_answer(j, arg);
		}
		if (nfinished == njobs)
			break;

		if (due != PG_INT64_MAX)
			timeout = Min(timeout, Max((due - now) / 1000, 1));
		/* sockets, curl's timer, the latch (cancel), or the next due job */
		if (timeout > 0)
			(void) enrich_http_wait(timeout);
	}
}
