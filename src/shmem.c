/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The shared memory segment: its set-up, the holder slots that tie
 *	  every hold to its process.  (The statistics counters it holds are
 *	  stats.c's, the table of the databases' workers dbworkers.c's.)
 *
 * Every session and the background worker draw on one rate limit and one
 * credit budget per provider (rate.c, credits.c), kept in shared memory
 * requested at postmaster start, which needs shared_preload_libraries =
 * 'enrich'; without it enrich_shared is NULL, the synchronous functions
 * run without shared limits (a set credit limit refuses spending), and
 * the functions that need the worker raise 55000.
 *
 * Whatever a process counts in the shared totals (a reserved credit, a
 * request in flight) it also counts in a holder slot of its own, indexed
 * by its PGPROC number.  A before_shmem_exit callback gives the slot back
 * however the process ends (ERROR that ends it, FATAL, pg_terminate_backend,
 * a lost client); a session's transaction abort does the same for what an
 * ERROR left; and a process that finds the budget held by others sweeps
 * the slots of processes that are gone.  A release only ever gives back
 * what the releasing process holds, so releasing twice is harmless.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "state.h"

EnrichShared *enrich_shared = NULL;

/* A process's holder slot; slot i belongs to the process with pgprocno i. */
typedef struct EnrichHolder
{
	pid_t		pid;			/* the process that last used it, 0: none */
	EnrichHold	hold[ENRICH_NUM_KINDS];
} EnrichHolder;

/* The slots, one per PGPROC a backend or background worker can have. */
static EnrichHolder *holders = NULL;
static int	nholders = 0;

/* This process's slot, once attached. */
static EnrichHolder *my_holder = NULL;

/* Sweeps of gone processes' slots are at most this often per process. */
#define SWEEP_INTERVAL_MS 100

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Asks the postmaster for our shared memory and lock. */
static void
enrich_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(EnrichShared)));
	RequestAddinShmemSpace(MAXALIGN(mul_size(MaxBackends, sizeof(EnrichHolder))));
	RequestNamedLWLockTranche("enrich", 1);
}

/* Creates (or attaches to) the shared state. */
static void
enrich_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	enrich_shared = ShmemInitStruct("enrich", sizeof(EnrichShared), &found);
	if (!found)
	{
		memset(enrich_shared, 0, sizeof(EnrichShared));
		enrich_shared->lock = &(GetNamedLWLockTranche("enrich"))->lock;
		for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		{
			EnrichProviderShared *p = &enrich_shared->prov[k];

			p->credit_limit = -1;
			p->provider_balance = -1;
			p->rl_remaining = -1;
			enrich_ratelearn_init(&p->learner, &p->window);
			for (int s = 0; s < ENRICH_NUM_STATS; s++)
				pg_atomic_init_u64(&p->stats[s], 0);
		}
	}
	nholders = MaxBackends;
	holders = ShmemInitStruct("enrich holders",
							  mul_size(nholders, sizeof(EnrichHolder)), &found);
	if (!found)
		memset(holders, 0, mul_size(nholders, sizeof(EnrichHolder)));
	LWLockRelease(AddinShmemInitLock);
}

/* Installs the shared memory hooks; called from _PG_init when preloaded. */
void
enrich_shmem_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = enrich_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = enrich_shmem_startup;
}

/* Raises 55000 unless the library was preloaded. */
void
enrich_require_shared(const char *what)
{
	if (enrich_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s needs enrich in shared_preload_libraries", what),
				 errhint("Add enrich to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/*
 * Gives back to the shared totals all that a holder slot counts.  Caller
 * holds the lock exclusively.
 */
static void
release_holder(EnrichHolder *h)
{
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
	{
		EnrichProviderShared *p = &enrich_shared->prov[k];
		EnrichHold *hold = &h->hold[k];

		p->credits_reserved -= Min(hold->reserved, p->credits_reserved);
		p->in_flight -= Min(hold->in_flight, p->in_flight);
		hold->reserved = 0;
		hold->in_flight = 0;
	}
}

/* Gives back what this process holds (never throws). */
static void
release_mine(void)
{
	if (my_holder == NULL)
		return;
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	release_holder(my_holder);
	LWLockRelease(enrich_shared->lock);
}

/* before_shmem_exit: however the process ends, nothing it held stays held. */
static void
holder_at_exit(int code, Datum arg)
{
	if (my_holder == NULL)
		return;
	/* an error that ends the process may have left our lock held */
	LWLockReleaseAll();
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	release_holder(my_holder);
	my_holder->pid = 0;
	LWLockRelease(enrich_shared->lock);
	my_holder = NULL;
}

/*
 * At the end of a session's failed transaction no request of its own can
 * still be running (every one lives inside one function call), so nothing
 * may stay held.  The background worker keeps requests across
 * transactions and gives them back itself.
 */
static void
holder_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		release_mine();
}

/*
 * Attaches this process to its holder slot, once: registers the exit
 * callback and takes over the slot, giving back whatever a former user
 * of the same PGPROC may have left in it.
 */
void
enrich_holder_attach(void)
{
	EnrichHolder *h;

	if (my_holder != NULL)
		return;
	if (MyProc == NULL || MyProc->pgprocno < 0 || MyProc->pgprocno >= nholders)
		elog(ERROR, "enrich: process has no holder slot");
	h = &holders[MyProc->pgprocno];
	before_shmem_exit(holder_at_exit, (Datum) 0);
	if (!IsBackgroundWorker)
		RegisterXactCallback(holder_xact_callback, NULL);
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	if (h->pid != MyProcPid)
	{
		release_holder(h);
		h->pid = MyProcPid;
	}
	LWLockRelease(enrich_shared->lock);
	my_holder = h;
}

/*
 * What this process holds of a provider's counts (after
 * enrich_holder_attach); the caller holds the lock and changes the
 * shared total with it.
 */
EnrichHold *
enrich_holder_mine(EnrichKind kind)
{
	return my_holder ? &my_holder->hold[kind] : NULL;
}

/*
 * Requests in flight counted in the holder slot `procno` (for every
 * provider).  Caller holds the lock.
 */
int
enrich_holder_in_flight(int procno)
{
	int			n = 0;

	if (procno < 0 || procno >= nholders)
		return 0;
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		n += holders[procno].hold[k].in_flight;
	return n;
}

/*
 * Gives back what processes that no longer exist still count, at most
 * every SWEEP_INTERVAL_MS per process.  Their exit callbacks do this; the
 * sweep is for a process that could not run them.  Returns whether
 * anything was given back.  Caller holds the lock exclusively.
 */
bool
enrich_holders_sweep(TimestampTz now)
{
	static TimestampTz last_sweep = 0;
	bool		found = false;

	if (now - last_sweep < SWEEP_INTERVAL_MS * 1000)
		return false;
	last_sweep = now;
	for (int i = 0; i < nholders; i++)
	{
		EnrichHolder *h = &holders[i];

		if (h->pid == 0 || h->pid == MyProcPid)
			continue;
		if (kill(h->pid, 0) != 0 && errno == ESRCH)
		{
			for (int k = 0; k < ENRICH_NUM_KINDS; k++)
				found |= h->hold[k].reserved > 0 || h->hold[k].in_flight > 0;
			release_holder(h);
			h->pid = 0;
		}
	}
	return found;
}
