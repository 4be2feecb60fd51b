/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: one background worker, connected to no database, that
 *	  keeps a worker running in every database with the extension.
 *
 * Registered from shared_preload_libraries, started once recovery has
 * finished (so never on a standby before its promotion).  It reads
 * pg_database (a shared catalog) for the databases that allow connections
 * and are not templates, and keeps the table of dbworkers.c in step: a
 * database it has not seen is probed with a worker, which leaves at once,
 * saying so, if the extension is not there; a dropped database's entry is
 * freed.  Where an entry asks for a worker, it starts a dynamic background
 * worker (enrich_worker_main with the database's OID), at most one per
 * database, and starts it again if it ends without saying it should not,
 * after a pause that doubles up to a minute while it keeps failing.
 *
 * It is told, not polling: sessions set its latch when a CREATE EXTENSION
 * commits or queued work finds no worker (launcher_hook.c, queue.c), and
 * the postmaster sets it when one of its workers starts or stops
 * (bgw_notify_pid).  It reads pg_database at every wake-up and every
 * SCAN_MS besides, which finds a database created from a template that
 * has the extension.  When no free max_worker_processes slot is there it
 * says so once in the log and tries again later.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "entry.h"

/* pg_database is read at least this often. */
#define SCAN_MS 10000
/* A worker that keeps ending is started again after at most this long. */
#define MAX_BACKOFF_MS 60000
/* A worker that ran this long was healthy: its next pause starts short. */
#define HEALTHY_MS 60000

/* What the launcher keeps of each database's worker (its own memory). */
typedef struct Launched
{
	Oid			db;
	BackgroundWorkerHandle *handle; /* NULL: none started */
	TimestampTz started_at;
	TimestampTz retry_at;		/* no start before this */
	int			backoff_ms;
} Launched;

static Launched launched[ENRICH_MAX_DATABASES];
static bool said_no_slot = false;

/* Registers the launcher with the postmaster; called from _PG_init. */
void
enrich_launcher_register(void)
{
	BackgroundWorker w;

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = 5;
	snprintf(w.bgw_library_name, BGW_MAXLEN, "enrich");
	snprintf(w.bgw_function_name, BGW_MAXLEN, "enrich_launcher_main");
	snprintf(w.bgw_name, BGW_MAXLEN, "enrich launcher");
	snprintf(w.bgw_type, BGW_MAXLEN, "enrich launcher");
	RegisterBackgroundWorker(&w);
}

/*
 * Starts a worker for `db` and returns its handle in *handle; false when
 * the postmaster has no free slot.
 */
bool
enrich_start_worker(Oid db, void **handle)
{
	BackgroundWorker w;

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(w.bgw_library_name, BGW_MAXLEN, "enrich");
	snprintf(w.bgw_function_name, BGW_MAXLEN, "enrich_worker_main");
	snprintf(w.bgw_name, BGW_MAXLEN, "enrich worker for database %u", db);
	snprintf(w.bgw_type, BGW_MAXLEN, "enrich worker");
	w.bgw_main_arg = ObjectIdGetDatum(db);
	w.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&w, (BackgroundWorkerHandle **) handle);
}

/* The databases a worker may serve: connectable, not templates. */
static int
list_databases(Oid *dbs, int max)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	int			n = 0;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database d = (Form_pg_database) GETSTRUCT(tup);

		if (d->datallowconn && !d->datistemplate && n < max)
			dbs[n++] = d->oid;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return n;
}

/*
 * Reads pg_database into the shared table; forgets the records of
 * dropped databases once their worker is gone.
 */
static void
scan_databases(void)
{
	Oid			dbs[ENRICH_MAX_DATABASES];
	int			n = list_databases(dbs, ENRICH_MAX_DATABASES);

	enrich_dbw_sync_databases(dbs, n);
	for (int i = 0; i < ENRICH_MAX_DATABASES; i++)
	{
		bool		listed = false;

		for (int j = 0; j < n && !listed; j++)
			listed = launched[i].db == dbs[j];
		if (launched[i].db != InvalidOid && !listed && launched[i].handle == NULL)
			launched[i].db = InvalidOid;
	}
}

/* The launcher's record of `db`, made if need be (NULL: none free). */
static Launched *
launched_for(Oid db)
{
	Launched   *free_one = NULL;

	for (int i = 0; i < ENRICH_MAX_DATABASES; i++)
	{
		if (launched[i].db == db)
			return &launched[i];
		if (free_one == NULL && launched[i].db == InvalidOid)
			free_one = &launched[i];
	}
	if (free_one != NULL)
	{
		memset(free_one, 0, sizeof(Launched));
		free_one->db = db;
	}
	return free_one;
}

/*
 * Notes the workers that have ended: one that ended too soon waits
 * longer before the next start.
 */
static void
reap_workers(TimestampTz now)
{
	for (int i = 0; i < ENRICH_MAX_DATABASES; i++)
	{
		Launched   *l = &launched[i];
		pid_t		pid;

		if (l->handle == NULL ||
			GetBackgroundWorkerPid(l->handle, &pid) != BGWH_STOPPED)
			continue;
		pfree(l->handle);
		l->handle = NULL;
		if (now - l->started_at >= (int64) HEALTHY_MS * 1000)
			l->backoff_ms = 0;
		l->backoff_ms = Min(Max(l->backoff_ms * 2, 1000), MAX_BACKOFF_MS);
		l->retry_at = TimestampTzPlusMilliseconds(now, l->backoff_ms);
	}
}

/* Starts a worker where one is wanted and none runs; returns when next. */
static TimestampTz
start_wanted(TimestampTz now)
{
	Oid			want[ENRICH_MAX_DATABASES];
	int			n = enrich_dbw_wanted(want, ENRICH_MAX_DATABASES);
	TimestampTz next = 0;

	for (int i = 0; i < n; i++)
	{
		Launched   *l = launched_for(want[i]);

		if (l == NULL || l->handle != NULL)
			continue;
		if (l->retry_at > now)
		{
			next = next == 0 ? l->retry_at : Min(next, l->retry_at);
			continue;
		}
		if (!enrich_start_worker(l->db, (void **) &l->handle))
		{
			l->handle = NULL;
			if (!said_no_slot)
				ereport(LOG,
						(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
						 errmsg("enrich launcher could not start a worker for database %u: no free background worker slot", l->db),
						 errhint("Raise max_worker_processes (each database with enrich needs one, and the launcher one).")));
			said_no_slot = true;
			l->retry_at = TimestampTzPlusMilliseconds(now, 5000);
			next = next == 0 ? l->retry_at : Min(next, l->retry_at);
			continue;
		}
		said_no_slot = false;
		l->started_at = now;
	}
	return next;
}

/* Leaves the launcher's place in shared memory when it exits. */
static void
launcher_detach(int code, Datum arg)
{
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	if (enrich_shared->launcher_pid == MyProcPid)
	{
		enrich_shared->launcher_pid = 0;
		enrich_shared->launcher_proc = NULL;
	}
	LWLockRelease(enrich_shared->lock);
}

/* Entry point of the launcher. */
void
enrich_launcher_main(Datum arg)
{
	TimestampTz next_scan = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("enrich launcher");

	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	enrich_shared->launcher_pid = MyProcPid;
	enrich_shared->launcher_proc = MyProc;
	LWLockRelease(enrich_shared->lock);
	before_shmem_exit(launcher_detach, (Datum) 0);
	ereport(LOG, (errmsg("enrich launcher started")));

	for (;;)
	{
		TimestampTz now;
		TimestampTz next;
		long		timeout;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		now = GetCurrentTimestamp();
		reap_workers(now);
		scan_databases();
		next_scan = TimestampTzPlusMilliseconds(now, SCAN_MS);
		next = start_wanted(now);
		if (next == 0 || next > next_scan)
			next = next_scan;
		timeout = Max((next - GetCurrentTimestamp()) / 1000, 1);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
