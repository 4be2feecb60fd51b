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
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "utils/jsonb.h"

#include "normalize.h"
#include "response.h"

#define ENRICH_VERSION "0.3.0"
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
#define ERRCODE_ENRICH_NOT_FOUND	MAKE_SQLSTATE('3','8','R','0','8')

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
extern bool enrich_keep_alive;
extern int	enrich_queue_retention;	/* seconds, -1: keep every finished row */

/* enrich.leadlex_overwrite: when LeadLex is asked to replace stored fields */
typedef enum EnrichOverwrite
{
	OVERWRITE_REFRESH = 0,		/* only when re-fetching a cached key */
	OVERWRITE_ALWAYS,
	OVERWRITE_NEVER,			/* fill-only, always */
} EnrichOverwrite;

extern int	enrich_leadlex_overwrite;
extern char *enrich_leadlex_fields;	/* canonical list, "" for all */

extern void enrich_define_gucs(void);
extern bool enrich_leadlex_fields_cover(const char *had);
extern void enrich_install_log_redaction(void);

/* ---- util.c ---- */
extern const char *enrich_kind_name(EnrichKind kind);
extern const char *enrich_provider_name(EnrichKind kind);
extern const char *enrich_provider_key(EnrichKind kind);
extern bool enrich_kind_from_name(const char *name, EnrichKind *kind);
extern struct HTAB *enrich_string_table(const char *name, long nelem, Size entrysize);
extern Datum enrich_make_array(Datum *values, bool *nulls, int n, Oid elemtype);
extern int64 enrich_backoff_ms(int attempt);
extern void enrich_require_primary(const char *what);

/* ---- owner.c ---- */
extern Oid	enrich_owner(void);
extern struct _SPI_plan *enrich_keep_plan(struct _SPI_plan **slot, const char *sql,
										  int nargs, Oid *types);
extern void enrich_as_owner_begin(Oid *save_userid, int *save_sec);
extern void enrich_as_owner_end(Oid save_userid, int save_sec);
extern void enrich_exec_as_owner(const char *sql, int nargs, Oid *types, Datum *values,
								 const char *nulls, int expect);

/* ---- json.c ---- */
extern Jsonb *enrich_parse_response(const char *body, size_t len,
									EnrichResponseShape shape, bool *no_match,
									const char **why);
extern Jsonb *enrich_parse_json(const char *body, size_t len, const char **why);
extern Jsonb *enrich_jsonb_get(Jsonb *jb, const char *field);
extern char *enrich_jsonb_get_text(Jsonb *jb, const char *field);

/* ---- normalize.c (and normalize.h) ---- */
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

extern void enrich_http_start(EnrichTransfer *t, const char *url,
							  struct curl_slist *headers, const char *post_body);
extern void enrich_http_release(EnrichTransfer *t);
extern int	enrich_http_active(void);
extern bool enrich_http_may_start(EnrichKind kind);
extern int	enrich_http_concurrency(void);
extern struct curl_slist *enrich_http_header(struct curl_slist *list,
											 const char *name, const char *value);

/* ---- http_wait.c ---- */
extern void enrich_http_init(void);
extern CURLM *enrich_http_multi(void);
extern EnrichTransfer *enrich_http_next_done(void);
extern bool enrich_http_wait(long timeout_ms);

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
	bool		conn_lost;		/* the connection went away under the request */

	/* the answer, for MATCH */
	Jsonb	   *result;
	char	   *source;
	double		confidence;		/* NaN when not sent */
	int64		credits_remaining;	/* -1 when not sent */
	bool		charged;		/* the provider charges for this answer */
	Jsonb	   *fields_updated; /* LeadLex: the fields it changed, or NULL */
	char	   *fields;			/* LeadLex: the fields asked for, NULL: all */
} EnrichOutcome;

/* One logical request: a key, tried up to enrich.max_attempts times. */
typedef struct EnrichJob
{
	EnrichKind	kind;
	char	   *key;			/* normalised */
	char		idempotency_key[37];
	int			attempts;
	TimestampTz not_before;		/* backoff: do not send before */
	TimestampTz fetched_at;		/* when the final answer arrived */
	TimestampTz deadline;		/* give up waiting on 429 after this */
	bool		active;
	bool		finished;
	bool		reserved;		/* holds a credit reservation */
	bool		settled;		/* its charge has been counted */
	bool		counted;		/* counted in the provider's in-flight */
	bool		honour_pauses;	/* worker: obey 402/401 pauses too */
	bool		refetch;		/* the key has a cached answer (a refresh) */
	bool		by_id;			/* LeadLex: key is a company id, not a domain */
	bool		prepared;		/* the provider's options below are set */
	bool		overwrite;		/* LeadLex: "overwrite": true */
	char	   *fields;			/* LeadLex: the fields whitelist, NULL: all */
	int64		queue_id;		/* worker: the enrich.queue row */
	EnrichTransfer xfer;
	EnrichOutcome out;
} EnrichJob;

/* What a provider fills in: its request, its answer, its "no match". */
typedef struct EnrichProviderOps
{
	void		(*start) (EnrichJob *job);	/* build and start the request */
	void		(*parse) (EnrichJob *job, EnrichOutcome *out);	/* a 200's body */
	long		no_match_status;	/* the status that means "no data" */
	/* optional: what the request says besides the key (idempotency keys) */
	void		(*describe) (EnrichJob *job, StringInfo buf);
	/* optional: a provider's own reading of a non-200 answer */
	void		(*refine) (EnrichJob *job, EnrichOutcome *out);
} EnrichProviderOps;

extern void enrich_classify(EnrichJob *job, EnrichOutcome *out, const EnrichProviderOps *ops);
extern bool enrich_outcome_retryable(const EnrichOutcome *out);
extern void enrich_report_outcome(EnrichKind kind, const EnrichOutcome *out) pg_attribute_noreturn();
extern void enrich_make_uuid(char *buf);
extern void enrich_daily_idempotency_key(EnrichKind kind, const char *key,
										 const char *variant, char *buf);
extern void enrich_require_key(EnrichKind kind);

/* ---- leadlex.c ---- */
extern const EnrichProviderOps enrich_leadlex_ops;

/* ---- slintel.c ---- */
extern const EnrichProviderOps enrich_slintel_ops;

/* ---- job.c ---- */
/* Called with each answer (match or no match) as it arrives. */
typedef void (*EnrichAnswerFn) (EnrichJob *job, void *arg);

extern void enrich_job_init(EnrichJob *job, EnrichKind kind, const char *key);
extern void enrich_job_daily_key(EnrichJob *job);
extern void enrich_run_jobs(EnrichJob *jobs, int njobs, int concurrency,
							EnrichAnswerFn on_answer, void *arg);
extern bool enrich_job_try_start(EnrichJob *job);
extern void enrich_job_finish_try(EnrichJob *job);
extern void enrich_job_settle(EnrichJob *job);

/* ---- cache.c ---- */
typedef enum EnrichCacheState
{
	CACHE_MISS,
	CACHE_HIT,
	CACHE_NO_MATCH,
} EnrichCacheState;

extern EnrichCacheState enrich_cache_lookup(EnrichKind kind, const char *key,
											Jsonb **result);
extern EnrichCacheState enrich_cache_lookup_extended(EnrichKind kind, const char *key,
													 Jsonb **result, bool *had_row);
extern EnrichCacheState enrich_cache_lookup_by_id(const char *company_id,
												  Jsonb **result, bool *had_row);
extern bool enrich_answer_usable(EnrichKind kind, const EnrichOutcome *out,
								 TimestampTz fetched_at);
extern void enrich_cache_store_at(EnrichKind kind, const char *key,
								  const EnrichOutcome *out, TimestampTz fetched_at);
extern void enrich_cache_store_many(EnrichKind kind, int n, char **keys,
									EnrichOutcome **outs, TimestampTz fetched_at);
extern bool enrich_cache_fresh(bool matched, TimestampTz fetched_at);

/* ---- shmem.c ---- */

typedef enum EnrichStat
{
	STAT_REQUESTS = 0,			/* HTTP requests sent */
	STAT_CACHE_HITS,			/* answers served from the cache */
	STAT_SUCCESSES,				/* answers with data */
	STAT_NO_MATCHES,			/* "no match" answers */
	STAT_ERR_TRANSIENT,			/* 5xx, resets, timeouts */
	STAT_ERR_CONNECT,			/* could not connect, TLS */
	STAT_ERR_AUTH,				/* 401 / 403 */
	STAT_ERR_CREDITS,			/* 402 */
	STAT_ERR_RATE,				/* 429 */
	STAT_ERR_REJECTED,			/* 400 and other refusals */
	STAT_ERR_RESPONSE,			/* unusable or too large responses */
	STAT_CREDITS,				/* credits spent */
	STAT_RATE_WAITS,			/* times a request had to wait for the rate limit */
	STAT_INVALID_KEYS,			/* auto_enrich keys that did not normalise */
	STAT_LATENCY_US,			/* sum of request latencies */
	STAT_LATENCY_N,				/* number of latencies summed */
	STAT_REFRESHES_UNCHANGED,	/* re-fetches whose answer changed no field */
	ENRICH_NUM_STATS
} EnrichStat;

/* A provider that answered 402 is probed again after this long. */
#define ENRICH_CREDIT_PROBE_MS 60000
/* A provider that refused the key is paused this long (or until a reload). */
#define ENRICH_AUTH_PAUSE_MS 300000

typedef enum EnrichPause
{
	PAUSE_NONE = 0,
	PAUSE_RATE,					/* 429 or X-RateLimit-Remaining: 0 */
	PAUSE_CREDITS,				/* 402: probe once a minute */
	PAUSE_AUTH,					/* 401/403: until the settings are reloaded */
	PAUSE_CONCURRENCY,			/* not a pause: at the concurrency cap */
} EnrichPause;

/* How many send times a provider's sliding rate window remembers. */
#define ENRICH_RATE_LOG 1024

/* ---- ratelearn.c ---- */

/* How many answer times the learner remembers (the admitted rate's ring). */
#define ENRICH_ADMIT_LOG 1024

/* The rate a provider has shown it admits, learned from its 429s. */
typedef struct EnrichRateLearner
{
	bool		enabled;		/* pacing: a 429 came and the rate is learned */
	double		rate;			/* requests per second now */
	double		w_max;			/* the admitted rate at the last decrease */
	double		k;				/* seconds from the decrease back to w_max */
	double		c_probe;		/* CUBIC's C above w_max */
	TimestampTz throttled_at;	/* the last decrease */
	double		tokens;
	TimestampTz refilled_at;
	uint64		admitted_next;	/* answers so far; the ring's next slot */
	TimestampTz admitted[ENRICH_ADMIT_LOG];
} EnrichRateLearner;

/* What the provider announced in its X-RateLimit-* headers. */
typedef struct EnrichRateWindow
{
	int64		limit;			/* X-RateLimit-Limit, -1: never sent */
	int64		left;			/* starts that are safe in this window */
	TimestampTz reset_at;		/* the window's end, 0: unknown */
} EnrichRateWindow;

extern void enrich_ratelearn_init(EnrichRateLearner *l, EnrichRateWindow *w);
extern void enrich_window_observe(EnrichRateWindow *w, int64 limit, int64 remaining,
								  TimestampTz reset_at, int in_flight);
extern int	enrich_window_room(EnrichRateWindow *w, TimestampTz now, int in_flight,
							   TimestampTz *more_at);
extern void enrich_window_take(EnrichRateWindow *w);
extern int64 enrich_learner_wait_us(EnrichRateLearner *l, TimestampTz now);
extern void enrich_learner_take(EnrichRateLearner *l, TimestampTz now);
extern void enrich_learner_admitted(EnrichRateLearner *l, TimestampTz now);
extern bool enrich_learner_throttled(EnrichRateLearner *l, TimestampTz now,
									 TimestampTz sent_at);
extern double enrich_learner_rate(const EnrichRateLearner *l);

typedef struct EnrichProviderShared
{
	/* the local rate limit (enrich.set_rate_limit) */
	int32		rate_requests;	/* 0: none */
	int64		rate_per_us;
	int32		rate_max_concurrency;	/* 0: none */
	int32		in_flight;
	/* when the last ENRICH_RATE_LOG requests were sent: a ring */
	uint64		sent_next;		/* sends so far; the next slot is this mod the size */
	TimestampTz sent[ENRICH_RATE_LOG];

	/* what the provider said */
	TimestampTz paused_until;
	EnrichPause pause_reason;
	int32		rate_strikes;
	int64		rl_limit;
	int64		rl_remaining;
	TimestampTz rl_reset;
	int64		provider_balance;	/* credits_remaining, -1: unknown */
	bool		probe_needed;	/* a 429 pause: one request first when it ends */
	TimestampTz probe_at;		/* when that probe was sent, 0: none out */
	EnrichRateWindow window;	/* the provider's announced window */
	EnrichRateLearner learner;	/* the rate learned from its 429s */

	/* the local credit budget (enrich.set_credit_limit) */
	int64		credit_limit;	/* -1: none */
	int64		credit_period_us;	/* 0: a total */
	TimestampTz period_start;
	int64		credits_used;	/* charged answers in this period */
	int64		credits_reserved;	/* requests in flight */
	int64		credits_total;	/* since start */
	bool		usage_dirty;

	pg_atomic_uint64 stats[ENRICH_NUM_STATS];
} EnrichProviderShared;

/* ---- dbworkers.c ---- */

/* The most databases served at once (a worker each). */
#define ENRICH_MAX_DATABASES 64

/* What the launcher is to do about a database. */
typedef enum EnrichDbState
{
	DBW_FREE = 0,				/* an unused entry */
	DBW_WANTED,					/* start a worker there (again) */
	DBW_STARTED,				/* a worker was started: keep it running */
	DBW_NOEXT,					/* no extension there: no worker until told */
	DBW_LEAVING					/* being dropped: no worker */
} EnrichDbState;

/* One database's worker, in the table the launcher keeps. */
typedef struct EnrichDbWorker
{
	Oid			db;
	EnrichDbState state;
	pid_t		pid;			/* the worker's, 0: none running */
	void	   *proc;			/* its PGPROC, or NULL */
	int			procno;			/* its holder slot */
	bool		busy;			/* it has work in hand */
} EnrichDbWorker;

typedef struct EnrichShared
{
	LWLock	   *lock;
	bool		limits_loaded;
	Oid			limits_db;		/* database the limits were loaded from */
	pid_t		launcher_pid;	/* the launcher's, 0: not running */
	void	   *launcher_proc;	/* its PGPROC, or NULL */
	EnrichDbWorker dbw[ENRICH_MAX_DATABASES];	/* dbworkers.c */
	TimestampTz stats_reset;	/* when the statistics counters began */
	EnrichProviderShared prov[ENRICH_NUM_KINDS];
} EnrichShared;

extern EnrichShared *enrich_shared;

/* What one process holds of one provider's shared counts (its holder slot). */
typedef struct EnrichHold
{
	int32		reserved;		/* credits reserved for its requests */
	int32		in_flight;		/* its requests counted in flight */
} EnrichHold;

extern void enrich_shmem_init(void);
extern void enrich_require_shared(const char *what);
extern void enrich_wake_worker(void);
extern void enrich_holder_attach(void);
extern EnrichHold *enrich_holder_mine(EnrichKind kind);
extern int	enrich_holder_in_flight(int procno);
extern bool enrich_holders_sweep(TimestampTz now);

/* ---- stats.c ---- */
extern void enrich_stat_add(EnrichKind kind, EnrichStat stat, uint64 n);
extern void enrich_stats_reset_all(void);
extern TimestampTz enrich_stats_reset_at(void);
extern void enrich_stats_init(void);

/* ---- dbworkers.c (functions) ---- */
extern void enrich_dbw_attach_worker(void);
extern void enrich_dbw_worker_exits(EnrichDbState then);
extern void enrich_dbw_set_busy(bool busy);
extern bool enrich_dbw_served(Oid db);
extern void enrich_dbw_want(Oid db);
extern bool enrich_dbw_leave(Oid db, int timeout_ms);
extern void enrich_dbw_left(Oid db, bool dropped);
extern int	enrich_dbw_share(int conc);
extern int	enrich_dbw_workers_in_flight(void);
extern void enrich_dbw_wake_launcher(void);
extern void enrich_dbw_sync_databases(const Oid *dbs, int n);
extern int	enrich_dbw_wanted(Oid *dbs, int max);

/* ---- credits.c ---- */
typedef enum EnrichReserve
{
	RESERVE_OK,
	RESERVE_WAIT,				/* all reserved by requests in flight */
	RESERVE_NONE,				/* spent */
} EnrichReserve;

extern EnrichReserve enrich_credit_reserve(EnrichKind kind);
extern int64 enrich_credit_available(EnrichKind kind);
extern void enrich_credit_settle(EnrichKind kind, bool reserved, bool charged,
								 int64 balance);
extern void enrich_limits_load(void);
extern void enrich_limits_save_usage(void);
extern void enrich_limits_check_unshared(EnrichKind kind);

/* ---- rate.c ---- */
extern int64 enrich_rate_acquire(EnrichKind kind, bool honour_pauses, EnrichPause *why);
extern void enrich_rate_release(EnrichKind kind);
extern int	enrich_rate_quota(EnrichKind kind, TimestampTz *more_at);
/* What an answer said that the shared rate state learns from. */
typedef struct EnrichRateAnswer
{
	long		http_status;	/* 0: no answer (a transport failure) */
	bool		rate_limited;	/* a 429 */
	bool		no_credits;		/* a 402 */
	bool		auth;			/* the key was refused */
	int64		retry_after_ms; /* Retry-After, -1: not sent */
	int64		rl_limit;		/* X-RateLimit-*, -1: not sent */
	int64		rl_remaining;
	int64		rl_reset;
	double		elapsed;		/* seconds the request took */
} EnrichRateAnswer;

extern void enrich_rate_observe(EnrichKind kind, const EnrichRateAnswer *a, bool worker);
extern void enrich_rate_forget(EnrichKind kind);
extern void enrich_pause(EnrichKind kind, EnrichPause reason, TimestampTz until);
extern void enrich_unpause(EnrichKind kind, EnrichPause reason);
extern EnrichPause enrich_paused(EnrichKind kind, TimestampTz *until);

/* ---- auto.c ---- */
extern int	enrich_auto_exec_owner(const char *sql, int nargs, Oid *types,
								   Datum *values, const char *nulls);

/* ---- auto_deliver.c ---- */
/* Answers to write into auto_enrich targets, collected, then written at once. */
typedef struct EnrichDeliveries
{
	int			n;
	int			cap;
	char	  **keys;
	Jsonb	  **results;		/* NULL: no match */
	int64	   *queue_ids;		/* the item each finishes, 0: none */
	const char **status;		/* what that item becomes when delivered */
} EnrichDeliveries;

struct EnrichQueueUpdates;
extern bool enrich_auto_has_targets(EnrichKind kind);
extern void enrich_auto_add(EnrichDeliveries *d, const char *key, Jsonb *result,
							int64 queue_id, const char *status);
extern void enrich_auto_deliver(EnrichKind kind, EnrichDeliveries *d,
								struct EnrichQueueUpdates *u);
extern int	enrich_auto_take_inbox(void);

/* ---- spool.c ---- */

/* The spool file of one batch call: its answers, appended as they come. */
typedef struct EnrichSpoolBatch
{
	int			fd;				/* -1 until the first answer */
	bool		written;		/* the worker's: answers not yet committed */
	bool		new_file;		/* the worker's: its name not yet fsync'd */
	char		path[MAXPGPATH];
} EnrichSpoolBatch;

extern void enrich_spool_init(void);
extern void enrich_spool_batch_append(EnrichSpoolBatch *b, EnrichKind kind, const char *key,
									  const EnrichOutcome *out, TimestampTz fetched_at);
extern void enrich_spool_batch_finish(EnrichSpoolBatch *b, int elevel);
extern void enrich_spool_worker_append(EnrichSpoolBatch *b, EnrichKind kind, const char *key,
									   const EnrichOutcome *out, TimestampTz fetched_at);
extern void enrich_spool_worker_sync(EnrichSpoolBatch *b);
extern void enrich_spool_worker_remove(EnrichSpoolBatch *b);
extern void enrich_spool_write(EnrichKind kind, const char *key,
							   const EnrichOutcome *out, TimestampTz fetched_at);

/* ---- spool_read.c ---- */

/* An answer found in the spool directory. */
typedef struct EnrichSpooled
{
	EnrichKind	kind;
	char	   *key;
	Oid			db;				/* the database it belongs to */
	FullTransactionId fxid;		/* the transaction that wrote it */
	bool		owner_running;	/* that transaction may still commit it */
	TimestampTz fetched_at;
	EnrichOutcome out;			/* MATCH with result, or NO_MATCH */
} EnrichSpooled;

extern bool enrich_spool_find(EnrichKind kind, const char *key, EnrichSpooled *sp);
extern int	enrich_spool_ingest_all(bool worker_files);
extern void enrich_spool_take_orphans(void);

/* ---- worker.c ---- */
extern PGDLLEXPORT void enrich_worker_main(Datum arg);

/* ---- launcher.c ---- */
extern void enrich_launcher_register(void);
extern PGDLLEXPORT void enrich_launcher_main(Datum arg);
extern bool enrich_start_worker(Oid db, void **handle);

/* ---- launcher_hook.c ---- */
extern void enrich_launcher_hook_init(void);

/* ---- queue.c ---- */

/* Changes to queue items, collected and then written in one statement. */
typedef struct EnrichQueueUpdates
{
	int			n;
	int			cap;
	Datum	   *id;
	Datum	   *status;
	Datum	   *error;
	bool	   *error_null;
	Datum	   *next;
	bool	   *next_null;
	Datum	   *delta;
} EnrichQueueUpdates;

/* A queue item claimed by the worker, with what the cache holds for it. */
typedef struct EnrichClaimed
{
	int64		id;
	char	   *key;
	char	   *idempotency_key;
	int			attempts;		/* counting this one */
	bool		refresh;
	bool		cached;			/* a cache row exists (and refresh is off) */
	bool		matched;
	char	   *fields;			/* the fields its answer was asked for, NULL: all */
	TimestampTz fetched_at;
	Jsonb	   *result;
} EnrichClaimed;

extern void enrich_queue_wake_at_commit(void);
extern int64 enrich_queue_add(EnrichKind kind, const char *key);
extern void enrich_require_worker(void);
extern Datum enrich_make_array(Datum *values, bool *nulls, int n, Oid elemtype);
extern void enrich_queue_update(EnrichQueueUpdates *u, int64 id, const char *status,
								const char *error, TimestampTz next, int attempts_delta);
extern void enrich_queue_flush(EnrichQueueUpdates *u);
extern int	enrich_queue_claim(EnrichKind kind, int limit, EnrichClaimed **items);
extern int	enrich_queue_recover(void);
extern int	enrich_queue_requeue_orphans(int n, int64 *held);
extern int	enrich_queue_delete_finished(TimestampTz before, int limit);

#endif							/* ENRICH_H */
