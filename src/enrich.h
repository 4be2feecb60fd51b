/*-------------------------------------------------------------------------
 *
 * enrich.h
 *	  Private declarations of the enrich extension, grouped by file.
 *
 * enrich brings B2B data enrichment into SQL: it calls LeadLex (companies,
 * by domain) and Slintel (leads, by LinkedIn profile URL) over libcurl and
 * keeps every paid answer in cache tables.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENRICH_H
#define ENRICH_H

#include "postgres.h"

#include <curl/curl.h>

#include "access/transam.h"
#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "utils/jsonb.h"

#define ENRICH_VERSION "0.1.0"
#define ENRICH_USER_AGENT "enrich/" ENRICH_VERSION " (PostgreSQL extension)"

/* The two providers; a kind of enrichment maps to exactly one provider. */
typedef enum EnrichKind
{
	ENRICH_COMPANY = 0,			/* LeadLex, keyed by domain */
	ENRICH_LEAD = 1,			/* Slintel, keyed by LinkedIn profile URL */
} EnrichKind;

#define ENRICH_NUM_KINDS 2

/*
 * Our own SQLSTATEs, class 38 (external routine exception) with an
 * implementation-defined subclass.  Documented in README.md.
 */
#define ERRCODE_ENRICH_AUTH			MAKE_SQLSTATE('3','8','R','0','1')
#define ERRCODE_ENRICH_NO_CREDITS	MAKE_SQLSTATE('3','8','R','0','2')
#define ERRCODE_ENRICH_RATE_LIMITED	MAKE_SQLSTATE('3','8','R','0','3')
#define ERRCODE_ENRICH_UNAVAILABLE	MAKE_SQLSTATE('3','8','R','0','4')
#define ERRCODE_ENRICH_BAD_RESPONSE	MAKE_SQLSTATE('3','8','R','0','5')
#define ERRCODE_ENRICH_TOO_LARGE	MAKE_SQLSTATE('3','8','R','0','6')
#define ERRCODE_ENRICH_REJECTED		MAKE_SQLSTATE('3','8','R','0','7')

/* Responses nested deeper than this are refused before parsing. */
#define ENRICH_MAX_JSON_DEPTH 512

/* ---- guc.c ---- */
extern char *enrich_leadlex_url;
extern char *enrich_leadlex_api_key;
extern char *enrich_slintel_url;
extern char *enrich_slintel_api_key;
extern char *enrich_ca_file;
extern char *enrich_database_name;
extern int	enrich_max_concurrency;
extern int	enrich_cache_ttl;		/* seconds */
extern int	enrich_no_match_ttl;	/* seconds */
extern int	enrich_connect_timeout; /* milliseconds */
extern int	enrich_request_timeout; /* milliseconds */
extern int	enrich_max_attempts;
extern int	enrich_max_response_size;	/* kilobytes */

extern void enrich_define_gucs(void);

/* ---- enrich.c ---- */
extern const char *enrich_kind_name(EnrichKind kind);
extern const char *enrich_provider_name(EnrichKind kind);
extern bool enrich_kind_from_name(const char *name, EnrichKind *kind);

/* ---- normalize.c ---- */
extern char *enrich_normalize_domain_str(const char *input, const char **reason);
extern char *enrich_normalize_linkedin_str(const char *input, const char **reason);
extern char *enrich_normalize_key(EnrichKind kind, const char *input,
								  const char **reason);
extern char *enrich_normalize_text(EnrichKind kind, text *arg, char **input,
								   const char **reason);
extern void enrich_report_invalid(EnrichKind kind, const char *input,
								  const char *reason) pg_attribute_noreturn();

/* ---- http.c ---- */

/*
 * One HTTP exchange with a provider.  The curl handle, header list and
 * response buffer are malloc'd by libcurl or by our callbacks; they are
 * released by enrich_http_release(), also when an ERROR unwinds (see the
 * batch's memory context callback).
 */
typedef struct EnrichTransfer
{
	EnrichKind	kind;
	CURL	   *easy;
	struct curl_slist *headers;
	char	   *url;			/* malloc'd */
	char	   *post_body;		/* malloc'd, NULL for GET */

	/* response */
	char	   *body;			/* malloc'd, NUL-terminated */
	size_t		body_len;
	size_t		body_cap;
	size_t		body_limit;
	bool		too_large;
	long		status;
	CURLcode	result;
	char		errbuf[CURL_ERROR_SIZE];
	char		request_id[80];
	char		content_type[80];
	int64		rl_limit;		/* -1 when not sent */
	int64		rl_remaining;	/* -1 when not sent */
	int64		rl_reset;		/* Unix seconds, -1 when not sent */
	int64		retry_after;	/* seconds, -1 when not sent */
	double		elapsed;		/* seconds */
	bool		in_multi;
} EnrichTransfer;

extern void enrich_http_init(void);
extern CURLM *enrich_http_multi(void);
extern void enrich_http_start(EnrichTransfer *t, const char *url,
							  struct curl_slist *headers, const char *post_body);
extern void enrich_http_release(EnrichTransfer *t);
extern EnrichTransfer *enrich_http_next_done(void);
extern void enrich_http_wait(long timeout_ms);
extern struct curl_slist *enrich_http_header(struct curl_slist *list,
											 const char *name, const char *value);

/* ---- provider.c ---- */

/* What became of one try (or of the whole job, once final). */
typedef enum EnrichOutcomeKind
{
	OUTCOME_NONE = 0,
	OUTCOME_MATCH,				/* answer, charged */
	OUTCOME_NO_MATCH,			/* no data, remembered */
	OUTCOME_TRANSIENT,			/* 5xx, reset, timeout: retry */
	OUTCOME_RATE_LIMITED,		/* 429: wait, then retry */
	OUTCOME_NO_CREDITS,			/* 402 */
	OUTCOME_AUTH,				/* 401 / 403 */
	OUTCOME_REJECTED,			/* 400 and other refusals */
	OUTCOME_BAD_RESPONSE,		/* not JSON, wrong shape, too large */
	OUTCOME_CONNECT,			/* could not connect (transient) */
	OUTCOME_TLS,				/* TLS failure (permanent) */
} EnrichOutcomeKind;

typedef struct EnrichOutcome
{
	EnrichOutcomeKind kind;
	int			sqlstate;
	char	   *message;		/* errmsg, also the queue's last_error */
	char	   *detail;
	char	   *hint;
	long		http_status;	/* 0 when none */
	char	   *provider_code;	/* e.g. "no_match", or NULL */
	char	   *request_id;		/* X-Request-ID, or NULL */
	int64		retry_after_ms; /* for RATE_LIMITED, -1 when unknown */

	/* the answer, for MATCH */
	Jsonb	   *result;
	char	   *source;
	double		confidence;		/* NaN when not sent */
	int64		credits_remaining;	/* -1 when not sent */
} EnrichOutcome;

/* One logical request: a key, tried up to enrich.max_attempts times. */
typedef struct EnrichJob
{
	EnrichKind	kind;
	char	   *key;			/* normalised */
	char		idempotency_key[37];
	int			attempts;
	TimestampTz not_before;		/* backoff: do not send before */
	TimestampTz deadline;		/* give up waiting on 429 after this */
	bool		active;
	bool		finished;
	EnrichTransfer xfer;
	EnrichOutcome out;
} EnrichJob;

extern void enrich_job_init(EnrichJob *job, EnrichKind kind, const char *key);
extern void enrich_run_jobs(EnrichJob *jobs, int njobs, int concurrency);
extern void enrich_classify(EnrichJob *job, EnrichOutcome *out);
extern bool enrich_outcome_retryable(const EnrichOutcome *out);
extern int64 enrich_backoff_ms(int attempt);
extern void enrich_report_outcome(EnrichKind kind, const EnrichOutcome *out) pg_attribute_noreturn();
extern Jsonb *enrich_parse_json(const char *body, size_t len, const char **why);
extern Jsonb *enrich_jsonb_get(Jsonb *jb, const char *field);
extern char *enrich_jsonb_get_text(Jsonb *jb, const char *field);
extern void enrich_make_uuid(char *buf);
extern void enrich_daily_idempotency_key(EnrichKind kind, const char *key, char *buf);
extern void enrich_require_key(EnrichKind kind);

/* ---- leadlex.c ---- */
extern void enrich_leadlex_start(EnrichJob *job);
extern void enrich_leadlex_parse(EnrichJob *job, EnrichOutcome *out);

/* ---- slintel.c ---- */
extern void enrich_slintel_start(EnrichJob *job);
extern void enrich_slintel_parse(EnrichJob *job, EnrichOutcome *out);

/* ---- cache.c ---- */
typedef enum EnrichCacheState
{
	CACHE_MISS,
	CACHE_HIT,
	CACHE_NO_MATCH,
} EnrichCacheState;

extern EnrichCacheState enrich_cache_lookup(EnrichKind kind, const char *key,
											Jsonb **result);
extern void enrich_cache_store_at(EnrichKind kind, const char *key,
								  const EnrichOutcome *out, TimestampTz fetched_at);
extern bool enrich_cache_fresh(bool matched, TimestampTz fetched_at);
extern void enrich_as_owner_begin(Oid *save_userid, int *save_sec);
extern void enrich_as_owner_end(Oid save_userid, int save_sec);

/* ---- spool.c ---- */

/* An answer found in the spool directory. */
typedef struct EnrichSpooled
{
	EnrichKind	kind;
	char	   *key;
	FullTransactionId fxid;		/* the transaction that wrote it */
	bool		owner_running;	/* that transaction may still commit it */
	TimestampTz fetched_at;
	EnrichOutcome out;			/* MATCH with result, or NO_MATCH */
} EnrichSpooled;

extern void enrich_spool_init(void);
extern void enrich_spool_write(EnrichKind kind, const char *key,
							   const EnrichOutcome *out, TimestampTz fetched_at);
extern bool enrich_spool_find(EnrichKind kind, const char *key, EnrichSpooled *sp);
extern int	enrich_spool_ingest_all(void);

/* ---- worker.c ---- */
extern void enrich_wake_worker(void);

#endif							/* ENRICH_H */
