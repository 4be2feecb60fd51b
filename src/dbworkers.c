/*-------------------------------------------------------------------------
 *
 * dbworkers.c
 *	  The table of databases and their workers, in shared memory: what the
 *	  launcher, the workers and the sessions tell each other.
 *
 * One entry per database the launcher knows of (at most
 * ENRICH_MAX_DATABASES), with what is to be done there (EnrichDbState)
 * and the worker that runs there.  The launcher (launcher.c) starts a
 * worker where an entry is DBW_WANTED and keeps it running while it is
 * DBW_STARTED; a worker that finds no extension says DBW_NOEXT as it
 * exits and is not started again until a session's CREATE EXTENSION makes
 * the entry DBW_WANTED (launcher_hook.c); a DROP DATABASE makes it
 * DBW_LEAVING, stops the worker and waits for it to go.  A worker that
 * ends otherwise (terminated, crashed) leaves its entry DBW_STARTED, and
 * the launcher starts it again.
 *
 * The entries also share the workers' requests out: together the workers
 * have at most enrich.max_concurrency requests in flight (counted in
 * their holder slots, so that a worker that is gone counts none), and a
 * worker with work in hand starts no more than its share of them, so
 * that a database with a long queue does not starve one with a short one.
 *
 * Every function takes enrich_shared->lock itself; none throws while
 * holding it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/proc.h"

#include "state.h"

/* This process's entry, when it is a database's worker. */
static EnrichDbWorker *my_entry = NULL;

/* The entry of `db`, or NULL.  Caller holds the lock. */
static EnrichDbWorker *
find_entry(Oid db)
{
	for (int i = 0; i < ENRICH_MAX_DATABASES; i++)
		if (enrich_shared->dbw[i].state != DBW_FREE && enrich_shared->dbw[i].db == db)
			return &enrich_shared->dbw[i];
	return NULL;
}

/* The entry of `db`, made if need be (NULL: the table is full).  Locked. */
static EnrichDbWorker *
entry_for(Oid db)
{
	EnrichDbWorker *e = find_entry(db);

	for (int i = 0; e == NULL && i < ENRICH_MAX_DATABASES; i++)
		if (enrich_shared->dbw[i].state == DBW_FREE)
		{
			e = &enrich_shared->dbw[i];
			memset(e, 0, sizeof(EnrichDbWorker));
			e->db = db;
			e->state = DBW_NOEXT;
			e->procno = -1;
		}
	return e;
}

/* Sets the launcher's latch, if it runs.  Never throws. */
void
enrich_dbw_wake_launcher(void)
{
	PGPROC	   *proc;

	if (enrich_shared == NULL)
		return;
	proc = (PGPROC *) enrich_shared->launcher_proc;
	if (proc != NULL)
		SetLatch(&proc->procLatch);
}

/* Sets the latch of this database's worker, if one runs.  Never throws. */
void
enrich_wake_worker(void)
{
	PGPROC	   *proc = NULL;

	if (enrich_shared == NULL)
		return;
	/* read without the lock: a stale answer only misses one wake-up */
	for (int i = 0; i < ENRICH_MAX_DATABASES; i++)
		if (enrich_shared->dbw[i].db == MyDatabaseId && enrich_shared->dbw[i].state != DBW_FREE)
			proc = (PGPROC *) enrich_shared->dbw[i].proc;
	if (proc != NULL)
		SetLatch(&proc->procLatch);
}

/*
 * The worker of this database takes its entry (at start).  Raises an
 * error when the table is full or another worker already serves it.
 */
void
enrich_dbw_attach_worker(void)
{
	EnrichDbWorker *e;
	pid_t		other = 0;

	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	e = entry_for(MyDatabaseId);
	if (e != NULL && e->pid != 0 && e->pid != MyProcPid && kill(e->pid, 0) == 0)
		other = e->pid;
	else if (e != NULL)
	{
		e->state = DBW_STARTED;
		e->pid = MyProcPid;
		e->proc = MyProc;
		e->procno = MyProc->pgprocno;
		e->busy = false;
	}
	LWLockRelease(enrich_shared->lock);
	if (e == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("enrich serves at most %d databases", ENRICH_MAX_DATABASES)));
	if (other != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("an enrich worker (PID %d) already serves this database", (int) other)));
	my_entry = e;
}

/*
 * The worker leaves its entry as it exits: `then` is DBW_NOEXT when it
 * found no extension, DBW_STARTED when it is to be started again (any
 * other end).  A DROP DATABASE's DBW_LEAVING stays.  Never throws.
 */
void
enrich_dbw_worker_exits(EnrichDbState then)
{
	if (my_entry == NULL || enrich_shared == NULL)
		return;
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	if (my_entry->pid == MyProcPid)
	{
		my_entry->pid = 0;
		my_entry->proc = NULL;
		my_entry->procno = -1;
		my_entry->busy = false;
		if (my_entry->state == DBW_STARTED)
			my_entry->state = then;
	}
	LWLockRelease(enrich_shared->lock);
	my_entry = NULL;
	enrich_dbw_wake_launcher();
}

/* The worker says whether it has work in hand (no lock: a hint). */
void
enrich_dbw_set_busy(bool busy)
{
	if (my_entry != NULL && my_entry->busy != busy)
		my_entry->busy = busy;
}

/* Whether a worker runs for `db` now. */
bool
enrich_dbw_served(Oid db)
{
	EnrichDbWorker *e;
	bool		served;

	if (enrich_shared == NULL)
		return false;
	LWLockAcquire(enrich_shared->lock, LW_SHARED);
	e = find_entry(db);
	served = e != NULL && e->pid != 0;
	LWLockRelease(enrich_shared->lock);
	return served;
}

/*
 * A session asks for a worker in `db` (the extension was created or
 * updated there, or queued work finds none): unless one runs, the entry
 * becomes DBW_WANTED and the launcher is woken.  A table that is full is
 * logged, not raised: the work waits in the queue.
 */
void
enrich_dbw_want(Oid db)
{
	EnrichDbWorker *e;
	bool		full;

	if (enrich_shared == NULL)
		return;
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	e = entry_for(db);
	full = e == NULL;
	if (e != NULL && e->pid == 0 && e->state != DBW_LEAVING)
		e->state = DBW_WANTED;
	LWLockRelease(enrich_shared->lock);
	if (full)
		ereport(LOG,
				(errmsg("enrich serves at most %d databases; database %u waits for a free place",
						ENRICH_MAX_DATABASES, db)));
	enrich_dbw_wake_launcher();
}

/*
 * Before a DROP DATABASE: no worker may stay in `db`.  Marks it leaving,
 * terminates its worker and waits for it to go, at most timeout_ms.
 * Returns whether none is left.
 */
bool
enrich_dbw_leave(Oid db, int timeout_ms)
{
	EnrichDbWorker *e;
	pid_t		pid = 0;

	if (enrich_shared == NULL)
		return true;
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	e = find_entry(db);
	if (e != NULL)
	{
		e->state = DBW_LEAVING;
		pid = e->pid;
	}
	LWLockRelease(enrich_shared->lock);
	if (pid == 0)
		return true;
	kill(pid, SIGTERM);
	for (int waited = 0; waited < timeout_ms; waited += 10)
	{
		if (!enrich_dbw_served(db))
			return true;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return !enrich_dbw_served(db);
}

/*
 * After a DROP DATABASE: its entry is freed if the database was dropped,
 * or wanted again if the DROP failed.
 */
void
enrich_dbw_left(Oid db, bool dropped)
{
	EnrichDbWorker *e;

	if (enrich_shared == NULL)
		return;
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	e = find_entry(db);
	if (e != NULL && e->state == DBW_LEAVING)
		e->state = dropped ? DBW_FREE : DBW_WANTED;
	LWLockRelease(enrich_shared->lock);
	enrich_dbw_wake_launcher();
}

/*
 * The launcher's view of pg_database: a database not seen before is to be
 * probed by a worker; the entry of one that is gone (and has no worker)
 * is freed.
 */
void
enrich_dbw_sync_databases(const Oid *dbs, int n)
{
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		EnrichDbWorker *e = find_entry(dbs[i]);

		if (e == NULL && (e = entry_for(dbs[i])) != NULL)
			e->state = DBW_WANTED;
	}
	for (int i = 0; i < ENRICH_MAX_DATABASES; i++)
	{
		EnrichDbWorker *e = &enrich_shared->dbw[i];
		bool		listed = false;

		for (int j = 0; j < n && !listed; j++)
			listed = dbs[j] == e->db;
		if (e->state != DBW_FREE && !listed && e->pid == 0)
			e->state = DBW_FREE;
	}
	LWLockRelease(enrich_shared->lock);
}

/*
 * The databases that want a worker and have none running: wanted, or
 * started and since ended without saying it should not come back.
 */
int
enrich_dbw_wanted(Oid *dbs, int max)
{
	int			n = 0;

	LWLockAcquire(enrich_shared->lock, LW_SHARED);
	for (int i = 0; i < ENRICH_MAX_DATABASES && n < max; i++)
	{
		EnrichDbWorker *e = &enrich_shared->dbw[i];

		if ((e->state == DBW_WANTED || e->state == DBW_STARTED) && e->pid == 0)
			dbs[n++] = e->db;
	}
	LWLockRelease(enrich_shared->lock);
	return n;
}

/*
 * How many requests this worker may have in flight: enrich.max_concurrency
 * (`conc`) shared evenly among the workers with work in hand, this one
 * counted.
 */
int
enrich_dbw_share(int conc)
{
	int			busy = 1;

	if (enrich_shared == NULL || my_entry == NULL)
		return conc;
	for (int i = 0; i < ENRICH_MAX_DATABASES; i++)
	{
		EnrichDbWorker *e = &enrich_shared->dbw[i];

		if (e != my_entry && e->pid != 0 && e->busy)
			busy++;
	}
	return Max(1, (conc + busy - 1) / busy);
}

/*
 * Requests in flight of all the databases' workers together, if this
 * process is one of them (else -1).  Caller holds the lock.
 */
int
enrich_dbw_workers_in_flight(void)
{
	int			n = 0;

	if (my_entry == NULL)
		return -1;
	for (int i = 0; i < ENRICH_MAX_DATABASES; i++)
	{
		EnrichDbWorker *e = &enrich_shared->dbw[i];

		if (e->pid != 0)
			n += enrich_holder_in_flight(e->procno);
	}
	return n;
}
