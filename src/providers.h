/*-------------------------------------------------------------------------
 *
 * providers.h
 *	  The providers layer: the provider interface (provider.c), LeadLex and
 *	  Slintel (leadlex.c, slintel.c), and jobs (job.c).
 *
 * A job is one request for one key, tried up to enrich.max_attempts times;
 * an outcome is what became of it; our SQLSTATEs are raised from here up.
 * Includes transport.h.
 *
 * IDENTIFICATION
 *	  src/providers.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENRICH_PROVIDERS_H
#define ENRICH_PROVIDERS_H

#include "transport.h"

#include "lib/stringinfo.h"

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
	/* what enrich.ledger records of a charged answer (see ledger.c) */
	char		charge[37];		/* its id: a UUID, "" when not charged */
	Oid			charge_role;	/* on whose behalf, InvalidOid: unknown */
	char		charge_path;	/* 's'ync, 'b'atch or 'w'orker */
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
	Oid			role;			/* whose charge its answer is (the session's role) */
	EnrichRoleRef credit;		/* the role budget it counts under (credits_role.c) */
	char		path;			/* 's'ync (the default), 'b'atch or 'w'orker */
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
	/* the provider charges one Idempotency-Key once (replays are free) */
	bool		charges_per_key;
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

#endif							/* ENRICH_PROVIDERS_H */
