/*-------------------------------------------------------------------------
 *
 * base.h
 *	  The base layer: what guc.c, util.c, owner.c, json.c, the normalisers,
 *	  ratelearn.c and budget.c export to every other file.
 *
 * enrich brings B2B data enrichment into SQL: it calls LeadLex (companies,
 * by domain) and Slintel (leads, by LinkedIn profile URL) over libcurl and
 * keeps every paid answer in cache tables.
 *
 * The layers of src/LAYERS each have a header like this one, which
 * includes the header of the layer below; a file includes its own layer's
 * header and so sees its layer and those below, never one above.  This one
 * holds the kinds of enrichment, the settings, the helpers, the parsing of
 * provider bodies, the SQL side of the normalisers, the rate learner's
 * bookkeeping and the credit budgets'.  The frontend-safe parts of the layer have their own
 * headers: response.h (included here) and normalize.h (the normalisers'
 * family only).
 *
 * IDENTIFICATION
 *	  src/base.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENRICH_BASE_H
#define ENRICH_BASE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "utils/jsonb.h"

#include "response.h"

#define ENRICH_VERSION "0.3.0"

/* The two providers; a kind of enrichment maps to exactly one provider. */
typedef enum EnrichKind
{
	ENRICH_COMPANY = 0,			/* LeadLex, keyed by domain */
	ENRICH_LEAD = 1,			/* Slintel, keyed by LinkedIn profile URL */
} EnrichKind;

#define ENRICH_NUM_KINDS 2

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
extern int	enrich_ledger_retention;	/* seconds, -1: keep every ledger row */

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
extern void enrich_forget_plans(void);
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

/* ---- normalize_sql.c (the normalisers themselves: normalize.h) ---- */
extern char *enrich_normalize_key(EnrichKind kind, const char *input,
								  const char **reason);
extern char *enrich_normalize_text(EnrichKind kind, text *arg, char **input,
								   const char **reason);
extern void enrich_report_invalid(EnrichKind kind, const char *input,
								  const char *reason) pg_attribute_noreturn();

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

/* ---- budget.c ---- */

/*
 * A credit budget: a provider's (enrich.set_credit_limit) or a
 * role's (enrich.set_role_credit_limit).
 */
typedef struct EnrichBudget
{
	int64		credit_limit;	/* -1: none */
	int64		credit_period_us;	/* 0: a total */
	TimestampTz period_start;
	int64		credits_used;	/* charged answers in this period */
	/* of those, charged before this server started (see credits.c) */
	int64		used_saved;		/* credit_limits.used as saved then (providers) */
	int64		used_ledgers;	/* counted in the ledgers so far */
	int64		credits_reserved;	/* requests in flight */
	uint64		usage_version;	/* one more at each change of the use */
} EnrichBudget;

/* What the views show of a budget (enrich_budget_view). */
typedef struct EnrichBudgetView
{
	bool		limited;
	int64		limit;
	int64		period_us;		/* 0: a total */
	int64		used;
	int64		remaining;
	int64		reserved;
	bool		resets;			/* it has a period */
	TimestampTz resets_at;
} EnrichBudgetView;

extern void enrich_budget_roll(EnrichBudget *b, TimestampTz now);
extern int64 enrich_budget_left(const EnrichBudget *b);
extern void enrich_budget_set(EnrichBudget *b, int64 credits, int64 per_us, TimestampTz now);
extern void enrich_budget_add_earlier(EnrichBudget *b, int64 n);
extern void enrich_budget_view(const EnrichBudget *b, TimestampTz now, EnrichBudgetView *v);

#endif							/* ENRICH_BASE_H */
