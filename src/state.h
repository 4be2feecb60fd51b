/*-------------------------------------------------------------------------
 *
 * state.h
 *	  The state layer: shared memory (shmem.c), credit budgets (credits.c)
 *	  and rate limits (rate.c), what every process draws on.
 *
 * The segment and everything kept in it per provider: statistics, pauses,
 * the local rate limit and the provider's announced window and learned
 * pace, the credit budget; and the calls that reserve, release and learn.
 * Includes base.h.
 *
 * IDENTIFICATION
 *	  src/state.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENRICH_STATE_H
#define ENRICH_STATE_H

#include "base.h"

#include "port/atomics.h"
#include "storage/lwlock.h"

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
	EnrichBudget budget;
	int64		credits_total;	/* since start */

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

/* The most databases whose ledgers the budgets count. */
#define ENRICH_MAX_LEDGERS 128

/* The most budgets of roles (enrich.set_role_credit_limit) in the cluster. */
#define ENRICH_MAX_ROLE_BUDGETS 64

/* A role's budget for one provider (credits_role.c). */
typedef struct EnrichRoleBudget
{
	Oid			role;			/* InvalidOid: a free entry */
	EnrichKind	kind;
	uint32		gen;			/* one more each time the entry is taken */
	EnrichBudget budget;
} EnrichRoleBudget;

typedef struct EnrichShared
{
	LWLock	   *lock;
	bool		limits_loaded;
	Oid			limits_db;		/* database the limits were loaded from */
	pid_t		launcher_pid;	/* the launcher's, 0: not running */
	void	   *launcher_proc;	/* its PGPROC, or NULL */
	EnrichDbWorker dbw[ENRICH_MAX_DATABASES];	/* dbworkers.c */
	TimestampTz stats_reset;	/* when the statistics counters began */
	TimestampTz born;			/* from when this server life spends, 0: not yet */
	/* the databases whose ledger was counted (credits.c) */
	int			nledgers;
	Oid			ledger_db[ENRICH_MAX_LEDGERS];
	pid_t		ledger_by[ENRICH_MAX_LEDGERS];	/* counting now, 0: done */
	/* the roles' budgets; role_version is one more at each taken or freed entry */
	uint64		role_version;
	EnrichRoleBudget roles[ENRICH_MAX_ROLE_BUDGETS];
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
extern bool enrich_holder_role_take(int entry, uint32 gen);
extern bool enrich_holder_role_give(int entry, uint32 gen);
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
	RESERVE_STALE,				/* the role budgets changed: resolve again */
} EnrichReserve;

/*
 * The role budget a request counts under, as resolved for its role
 * (credits_role.c), and what it holds of it.
 */
typedef struct EnrichRoleRef
{
	uint64		version;		/* role_version when resolved, 0: not yet */
	int			entry;			/* in enrich_shared->roles, -1: none */
	uint32		gen;			/* the entry's generation then */
	bool		held;			/* a credit of it is reserved */
	bool		refused;		/* the last refusal was the role budget's */
	NameData	name;			/* the limited role, for messages */
} EnrichRoleRef;

extern EnrichReserve enrich_credit_reserve(EnrichKind kind, Oid role, EnrichRoleRef *ref);
extern int64 enrich_credit_available(EnrichKind kind);
extern void enrich_credit_settle(EnrichKind kind, EnrichRoleRef *ref, bool reserved,
								 bool charged, int64 balance);
extern void enrich_limits_load(void);
extern void enrich_role_budgets_reload(void);
extern void enrich_limits_save_usage(void);
extern void enrich_limits_check_unshared(EnrichKind kind);

/* ---- credits_mirror.c ---- */
/* The file in the spool directory that mirrors the budgets' use (not a spool file). */
#define ENRICH_MIRROR_NAME "budgets"
extern void enrich_mirror_apply(EnrichKind kind, Oid role, EnrichBudget *b);
extern void enrich_mirror_store(const EnrichBudget *b);

/* ---- credits_ledger.c ---- */
extern void enrich_credit_add_earlier(EnrichKind kind, Oid role, TimestampTz at, int64 n);
extern void enrich_credits_count_ledger(void);

/* ---- credits_role.c ---- */
/* A row of enrich.role_credit_limits. */
typedef struct EnrichRoleLimitRow
{
	Oid			role;
	EnrichKind	kind;
	int64		credits;
	int64		per_us;			/* 0: a total */
	TimestampTz period_start;
} EnrichRoleLimitRow;

extern int	enrich_role_pick(Oid role, const Oid *limited, int n);
extern void enrich_role_resolve(EnrichKind kind, Oid role, EnrichRoleRef *ref);
extern EnrichBudget *enrich_role_budget_of(const EnrichRoleRef *ref);
extern int64 enrich_credit_role_available(EnrichKind kind, Oid role, int *entry,
										   NameData *limited);
extern int	enrich_role_budgets_count(EnrichKind kind, int *spent);
extern int	enrich_role_limits_fetch(EnrichRoleLimitRow **rows, bool latest);
extern int	enrich_role_budgets_apply(const EnrichRoleLimitRow *rows, int n);
extern bool enrich_role_budget_set(Oid role, EnrichKind kind, int64 credits, int64 per_us,
								   TimestampTz now, TimestampTz *start);
extern int	enrich_role_budgets_snapshot(EnrichRoleBudget *out, int *index);
extern void enrich_role_limits_save(void);

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

#endif							/* ENRICH_STATE_H */
