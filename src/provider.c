/*-------------------------------------------------------------------------
 *
 * provider.c
 *	  The provider interface: what every provider shares.
 *
 * Idempotency keys, the API key check, classifying a finished try into an
 * outcome (a 200 by the provider's own parser, every other status by its
 * documented meaning), whether an outcome is worth another try, and
 * enrich_report_outcome(), which turns a failed one into the ERROR users
 * see.  leadlex.c and slintel.c build on this and fill in an
 * EnrichProviderOps; job.c drives them through it.
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

#include "providers.h"


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
 * An Idempotency-Key derived from the key, the UTC day and the variant
 * (what else the request body says: a LeadLex overwrite or fields list):
 * a synchronous request repeated the same day (after a cancel, a lost
 * answer or a rollback) is replayed by LeadLex, not charged again, while
 * a different request for the same key (a re-fetch that overwrites) gets
 * a key of its own, as LeadLex requires.
 */
void
enrich_daily_idempotency_key(EnrichKind kind, const char *key, const char *variant,
							 char *buf)
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
		(variant != NULL && variant[0] != '\0' &&
		 (pg_cryptohash_update(ctx, (const uint8 *) ":", 1) < 0 ||
		  pg_cryptohash_update(ctx, (const uint8 *) variant, strlen(variant)) < 0)) ||
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
enrich_classify(EnrichJob *job, EnrichOutcome *out, const EnrichProviderOps *ops)
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
		/*
		 * Both providers charge every complete 200.  One LeadLex
		 * Idempotency-Key is charged once (its replays are free), so the
		 * key names the charge; a Slintel answer is a charge of its own.
		 */
		out->charged = true;
		if (ops->charges_per_key)
			strlcpy(out->charge, job->idempotency_key, sizeof(out->charge));
		else
			enrich_make_uuid(out->charge);
		out->charge_role = job->role;
		out->charge_path = job->path;
		ops->parse(job, out);
		return;
	}

	out->provider_code = provider_error_code(t);
	if (st == ops->no_match_status)
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
	if (ops->refine)
		ops->refine(job, out);
}

/* Whether a failed try is worth another one. */
bool
enrich_outcome_retryable(const EnrichOutcome *out)
{
	return out->kind == OUTCOME_TRANSIENT || out->kind == OUTCOME_CONNECT ||
		out->kind == OUTCOME_RATE_LIMITED;
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
