/*-------------------------------------------------------------------------
 *
 * provider.c
 *	  What the providers share: running requests with retries, classifying
 *	  answers, parsing JSON safely, and reporting failures.
 *
 * A job is one logical request for one key.  enrich_run_jobs() runs a set
 * of jobs, at most `concurrency` at once, retrying transient failures with
 * exponential backoff and jitter up to enrich.max_attempts, and waiting out
 * a 429 when the provider says how long.  Each job ends with an outcome;
 * enrich_report_outcome() turns a failed one into the ERROR users see.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "common/cryptohash.h"
#include "common/hashfn.h"
#include "common/sha2.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/wait_event.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "enrich.h"

/* Backoff: 200 ms doubling, capped, with full jitter. */
#define BACKOFF_BASE_MS 200
#define BACKOFF_CAP_MS 30000
/* Longest wait without a look around (interrupts wake it at once anyway). */
#define POLL_MS 1000

/* Fills a buffer with a random (version 4) UUID. */
void
enrich_make_uuid(char *buf)
{
	uint8		b[16];

	if (!pg_strong_random(b, sizeof(b)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random idempotency key")));
	b[6] = (b[6] & 0x0f) | 0x40;
	b[8] = (b[8] & 0x3f) | 0x80;
	snprintf(buf, 37,
			 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
			 b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/*
 * An Idempotency-Key derived from the key and the UTC day: a synchronous
 * request repeated the same day (after a cancel, a lost answer or a
 * rollback) is replayed by LeadLex, not charged again.
 */
void
enrich_daily_idempotency_key(EnrichKind kind, const char *key, char *buf)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);
	uint8		d[PG_SHA256_DIGEST_LENGTH];
	char		day[16];
	pg_time_t	now = (pg_time_t) time(NULL);

	snprintf(day, sizeof(day), "%ld", (long) (now / 86400));
	if (ctx == NULL || pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) "enrich:", 7) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) enrich_kind_name(kind), strlen(enrich_kind_name(kind))) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) ":", 1) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) key, strlen(key)) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) ":", 1) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) day, strlen(day)) < 0 ||
		pg_cryptohash_final(ctx, d, sizeof(d)) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute an idempotency key")));
	pg_cryptohash_free(ctx);
	d[6] = (d[6] & 0x0f) | 0x50;	/* name-based (version 5 style) */
	d[8] = (d[8] & 0x3f) | 0x80;
	snprintf(buf, 37,
			 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7],
			 d[8], d[9], d[10], d[11], d[12], d[13], d[14], d[15]);
}

/* Prepares a job for a normalised key. */
void
enrich_job_init(EnrichJob *job, EnrichKind kind, const char *key)
{
	memset(job, 0, sizeof(EnrichJob));
	job->kind = kind;
	job->key = pstrdup(key);
	job->xfer.kind = kind;
	enrich_make_uuid(job->idempotency_key);
}

/* Raises 55000 when the provider's API key is not set. */
void
enrich_require_key(EnrichKind kind)
{
	const char *k = (kind == ENRICH_COMPANY) ? enrich_leadlex_api_key : enrich_slintel_api_key;

	if (k == NULL || k[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no API key is set for %s", enrich_provider_name(kind)),
				 errhint("Set %s, for example with ALTER SYSTEM, and reload.",
						 kind == ENRICH_COMPANY ? "enrich.leadlex_api_key" : "enrich.slintel_api_key")));
}

/* Exponential backoff with full jitter for the given (1-based) attempt. */
int64
enrich_backoff_ms(int attempt)
{
	int64		cap = BACKOFF_BASE_MS;
	uint32		r;

	for (int i = 1; i < attempt && cap < BACKOFF_CAP_MS; i++)
		cap *= 2;
	cap = Min(cap, BACKOFF_CAP_MS);
	if (!pg_strong_random(&r, sizeof(r)))
		r = (uint32) random();
	/* between half and all of the cap, so retries never bunch at zero */
	return cap / 2 + (int64) (r % (uint32) (cap / 2 + 1));
}

/*
 * Turns a response body into jsonb without ever throwing for bad input.
 * enrich_response_check() (response.c) first refuses, with a reason, what
 * jsonb_in would raise an ERROR for and what lacks the shape asked for;
 * its parse runs in a memory context of its own, since the JSON parser
 * leaves garbage behind when it stops at an error.  Returns NULL with *why
 * set for a refused body, and NULL with *no_match set (when no_match is
 * not NULL) for a Slintel answer without data.  body[len] must be '\0'.
 */
Jsonb *
enrich_parse_response(const char *body, size_t len, EnrichResponseShape shape,
					  bool *no_match, const char **why)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext,
											  "enrich response check",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	bool		empty;

	*why = enrich_response_check(body, len, GetDatabaseEncoding(), shape, &empty);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	if (no_match != NULL)
		*no_match = empty;
	if (*why != NULL || empty)
		return NULL;
	/* UTF-8 for a UTF-8 database, else ASCII only: no conversion needed */
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(body)));
}

/* enrich_parse_response() for any JSON: error bodies, spool files. */
Jsonb *
enrich_parse_json(const char *body, size_t len, const char **why)
{
	return enrich_parse_response(body, len, RESPONSE_ANY_JSON, NULL, why);
}

/* Returns the member `field` of a jsonb object, or NULL. */
Jsonb *
enrich_jsonb_get(Jsonb *jb, const char *field)
{
	JsonbValue	k;
	JsonbValue *v;

	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
		return NULL;
	k.type = jbvString;
	k.val.string.val = (char *) field;
	k.val.string.len = strlen(field);
	v = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k);
	if (v == NULL)
		return NULL;
	return JsonbValueToJsonb(v);
}

/* Returns the member `field` as text (strings unquoted), or NULL. */
char *
enrich_jsonb_get_text(Jsonb *jb, const char *field)
{
	JsonbValue	k;
	JsonbValue *v;

	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
		return NULL;
	k.type = jbvString;
	k.val.string.val = (char *) field;
	k.val.string.len = strlen(field);
	v = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k);
	if (v == NULL || v->type == jbvNull)
		return NULL;
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	if (v->type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out,
												   NumericGetDatum(v->val.numeric)));
	if (v->type == jbvBool)
		return pstrdup(v->val.boolean ? "true" : "false");
	return NULL;
}

/* Reads the provider's error code from {"error":{"code":...}} or {"code":...}. */
static char *
provider_error_code(EnrichTransfer *t)
{
	const char *why;
	Jsonb	   *jb;
	Jsonb	   *err;
	char	   *code;

	if (t->body == NULL || t->body_len == 0 || t->body_len > 65536)
		return NULL;
	jb = enrich_parse_json(t->body, t->body_len, &why);
	if (jb == NULL)
		return NULL;
	err = enrich_jsonb_get(jb, "error");
	code = err ? enrich_jsonb_get_text(err, "code") : NULL;
	if (code == NULL)
		code = enrich_jsonb_get_text(jb, "code");
	if (code == NULL)
		return NULL;
	/* it goes into messages and last_error: short printable ASCII only */
	if (strlen(code) > 64)
		code[64] = '\0';
	for (char *c = code; *c; c++)
		if ((unsigned char) *c < 0x20 || (unsigned char) *c >= 0x7F)
			*c = '?';
	return code;
}

/* Fills the common part of a failure outcome. */
static void
set_failure(EnrichOutcome *out, EnrichOutcomeKind kind, int sqlstate,
			char *message, char *hint)
{
	out->kind = kind;
	out->sqlstate = sqlstate;
	out->message = message;
	out->hint = hint;
}

/* Classifies a transport-level failure (no HTTP status). */
static void
classify_curl_error(EnrichJob *job, EnrichOutcome *out)
{
	EnrichTransfer *t = &job->xfer;
	const char *prov = enrich_provider_name(job->kind);
	const char *text = t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->result);

	out->detail = psprintf("%s", text);
	switch (t->result)
	{
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_RESOLVE_PROXY:
		case CURLE_COULDNT_CONNECT:
			set_failure(out, OUTCOME_CONNECT, ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
						psprintf("could not connect to %s", prov),
						psprintf("Check %s and the network.",
								 job->kind == ENRICH_COMPANY ? "enrich.leadlex_url" : "enrich.slintel_url"));
			break;
		case CURLE_OPERATION_TIMEDOUT:
			set_failure(out, OUTCOME_TRANSIENT, ERRCODE_CONNECTION_FAILURE,
						psprintf("request to %s timed out", prov),
						pstrdup("enrich.connect_timeout and enrich.request_timeout set the limits."));
			break;
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CIPHER:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_ISSUER_ERROR:
		case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
		case CURLE_SSL_INVALIDCERTSTATUS:
		case CURLE_SSL_ENGINE_NOTFOUND:
		case CURLE_SSL_ENGINE_SETFAILED:
		case CURLE_SSL_CRL_BADFILE:
			set_failure(out, OUTCOME_TLS, ERRCODE_CONNECTION_FAILURE,
						psprintf("TLS connection to %s failed", prov),
						pstrdup("The provider's certificate must verify against the system CAs or enrich.ca_file."));
			break;
		case CURLE_UNSUPPORTED_PROTOCOL:
		case CURLE_URL_MALFORMAT:
			set_failure(out, OUTCOME_REJECTED, ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
						psprintf("invalid %s URL", prov), NULL);
			break;
		default:
			set_failure(out, OUTCOME_TRANSIENT, ERRCODE_CONNECTION_FAILURE,
						psprintf("connection to %s failed", prov), NULL);
			out->conn_lost = true;
			break;
	}
}

/*
 * Milliseconds a 429 asks us to wait: Retry-After, or the quota's reset
 * when X-RateLimit-Remaining says the quota is used up (LeadLex's resets
 * daily: a 429 with quota left is a burst limit, better met by backoff).
 * -1 when the answer does not say.
 */
static int64
rate_limit_wait_ms(EnrichTransfer *t)
{
	if (t->retry_after >= 0)
		return t->retry_after * 1000;
	if (t->rl_reset >= 0 && t->rl_remaining == 0)
	{
		int64		now = (int64) time(NULL);

		/* small values are a delay in seconds, large ones a Unix time */
		if (t->rl_reset < 1000000000)
			return t->rl_reset * 1000;
		return Max(t->rl_reset - now, 0) * 1000 + 500;
	}
	return -1;
}

/*
 * Classifies the finished try of a job into an outcome: parses a 200 with
 * the provider's parser, maps every other status to its documented kind.
 */
void
enrich_classify(EnrichJob *job, EnrichOutcome *out)
{
	EnrichTransfer *t = &job->xfer;
	const char *prov = enrich_provider_name(job->kind);
	long		st = t->status;

	memset(out, 0, sizeof(EnrichOutcome));
	out->confidence = NAN;
	out->credits_remaining = -1;
	out->retry_after_ms = -1;
	out->http_status = st;
	out->request_id = t->request_id[0] ? pstrdup(t->request_id) : NULL;

	if (t->too_large)
	{
		set_failure(out, OUTCOME_BAD_RESPONSE, ERRCODE_ENRICH_TOO_LARGE,
					psprintf("%s response is larger than enrich.max_response_size", prov),
					pstrdup("A superuser can raise enrich.max_response_size."));
		out->detail = psprintf("The limit is %d kB.", enrich_max_response_size);
		return;
	}
	if (t->result != CURLE_OK)
	{
		classify_curl_error(job, out);
		return;
	}
	if (st == 200)
	{
		/* both providers charge every complete 200 */
		out->charged = true;
		if (job->kind == ENRICH_COMPANY)
			enrich_leadlex_parse(job, out);
		else
			enrich_slintel_parse(job, out);
		return;
	}

	out->provider_code = provider_error_code(t);
	if ((st == 409 && job->kind == ENRICH_COMPANY) ||
		(st == 404 && job->kind == ENRICH_LEAD))
	{
		out->kind = OUTCOME_NO_MATCH;
		return;
	}
	if (st == 401 || st == 403)
		set_failure(out, OUTCOME_AUTH, ERRCODE_ENRICH_AUTH,
					psprintf("%s refused the API key", prov),
					psprintf("Check %s.", job->kind == ENRICH_COMPANY ?
							 "enrich.leadlex_api_key and its write:enrich permission" :
							 "enrich.slintel_api_key"));
	else if (st == 402)
		set_failure(out, OUTCOME_NO_CREDITS, ERRCODE_ENRICH_NO_CREDITS,
					psprintf("%s has no credits left", prov),
					pstrdup("Top up the provider account."));
	else if (st == 429)
	{
		set_failure(out, OUTCOME_RATE_LIMITED, ERRCODE_ENRICH_RATE_LIMITED,
					psprintf("%s rate limit exceeded", prov),
					pstrdup("Queue the work with enrich.enqueue_company or enrich.enqueue_lead, or try again later."));
		out->retry_after_ms = rate_limit_wait_ms(t);
	}
	else if (st >= 500)
	{
		set_failure(out, OUTCOME_TRANSIENT, ERRCODE_ENRICH_UNAVAILABLE,
					psprintf("%s is unavailable", prov), NULL);
		/* a 503 may say when to come back */
		if (t->retry_after >= 0)
			out->retry_after_ms = t->retry_after * 1000;
	}
	else
		set_failure(out, OUTCOME_REJECTED, ERRCODE_ENRICH_REJECTED,
					psprintf("%s refused the request", prov), NULL);
}

/* Whether a failed try is worth another one. */
bool
enrich_outcome_retryable(const EnrichOutcome *out)
{
	return out->kind == OUTCOME_TRANSIENT || out->kind == OUTCOME_CONNECT ||
		out->kind == OUTCOME_RATE_LIMITED;
}

static void run_jobs(EnrichJob *jobs, int njobs, int concurrency,
					 EnrichSpoolBatch *spool);

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

/* Gives back what a finished job still holds of the shared budget. */
void
enrich_job_settle(EnrichJob *job)
{
	if (job->counted)
		enrich_rate_release(job->kind);
	job->counted = false;
	if (job->reserved || (job->out.charged && !job->settled))
		enrich_credit_settle(job->kind, job->reserved,
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
		EnrichReserve r = enrich_credit_reserve(job->kind);

		now = GetCurrentTimestamp();
		if (r == RESERVE_WAIT &&
			(job->deadline == 0 || TimestampTzPlusMilliseconds(now, 10) <= job->deadline))
		{
			/* a request in flight may yet give its credit back */
			job->not_before = TimestampTzPlusMilliseconds(now, 10);
			return false;
		}
		if (r == RESERVE_WAIT)
		{
			finish_local(job, OUTCOME_NO_CREDITS, ERRCODE_ENRICH_NO_CREDITS,
						 psprintf("the credit budget for %s is spent", prov),
						 psprintf("The last credits are reserved by requests in flight that did not give them back within enrich.request_timeout (%d ms); no request was sent.",
								  enrich_request_timeout),
						 psprintf("See enrich.credits; enrich.set_credit_limit('%s', ...) raises the limit.",
								  job->kind == ENRICH_COMPANY ? "leadlex" : "slintel"));
			return false;
		}
		if (r == RESERVE_NONE)
		{
			finish_local(job, OUTCOME_NO_CREDITS, ERRCODE_ENRICH_NO_CREDITS,
						 psprintf("the credit budget for %s is spent", prov),
						 pstrdup("No request was sent."),
						 psprintf("See enrich.credits; enrich.set_credit_limit('%s', ...) raises the limit.",
								  job->kind == ENRICH_COMPANY ? "leadlex" : "slintel"));
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
	if (job->kind == ENRICH_COMPANY)
		enrich_leadlex_start(job);
	else
		enrich_slintel_start(job);
	return true;
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
	enrich_classify(job, &out);
	enrich_rate_observe(job->kind, &job->xfer, &out, job->honour_pauses);
	enrich_stats_outcome(job->kind, &out, job->xfer.elapsed);
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
 * return every job is finished with its outcome.  With a spool, every
 * answer is appended to it as it arrives and made durable before return,
 * also when an error ends the run.  Interrupts (cancel, statement_timeout,
 * terminate) wake the wait and are honoured at once; the transfers and
 * their shares of the budget are released before the ERROR goes on.
 */
void
enrich_run_jobs(EnrichJob *jobs, int njobs, int concurrency,
				EnrichSpoolBatch *spool)
{
	PG_TRY();
	{
		run_jobs(jobs, njobs, concurrency, spool);
		if (spool)
			enrich_spool_batch_finish(spool, ERROR);
	}
	PG_CATCH();
	{
		for (int i = 0; i < njobs; i++)
		{
			enrich_http_release(&jobs[i].xfer);
			enrich_job_settle(&jobs[i]);
		}
		/* what was paid for so far must outlive the error */
		if (spool)
			enrich_spool_batch_finish(spool, WARNING);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/* The loop of enrich_run_jobs. */
static void
run_jobs(EnrichJob *jobs, int njobs, int concurrency, EnrichSpoolBatch *spool)
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
			if (spool && (j->out.kind == OUTCOME_MATCH || j->out.kind == OUTCOME_NO_MATCH))
				enrich_spool_batch_append(spool, j->kind, j->key, &j->out, j->fetched_at);
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

/* The one place provider failures become an ERROR, with their context. */
void
enrich_report_outcome(EnrichKind kind, const EnrichOutcome *out)
{
	StringInfoData d;

	initStringInfo(&d);
	if (out->detail)
		appendStringInfoString(&d, out->detail);
	if (out->http_status > 0)
	{
		if (d.len > 0)
			appendStringInfoChar(&d, ' ');
		appendStringInfo(&d, "HTTP status %ld", out->http_status);
		if (out->provider_code)
			appendStringInfo(&d, ", provider code \"%s\"", out->provider_code);
		if (out->request_id)
			appendStringInfo(&d, ", request id \"%s\"", out->request_id);
		appendStringInfoChar(&d, '.');
	}
	ereport(ERROR,
			(errcode(out->sqlstate ? out->sqlstate : ERRCODE_ENRICH_BAD_RESPONSE),
			 errmsg("%s", out->message ? out->message : "enrichment failed"),
			 d.len > 0 ? errdetail("%s", d.data) : 0,
			 out->hint ? errhint("%s", out->hint) : 0));
	pg_unreachable();
}
