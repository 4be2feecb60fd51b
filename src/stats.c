/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  The statistics counters behind enrich.stats: counting, a reset, and
 *	  keeping them across a clean restart.
 *
 * The counters are atomics in the shared segment (shmem.c), one set per
 * provider, added to without a lock.  As pg_stat_statements does, the
 * postmaster writes them to pg_stat/enrich.stat when the server shuts
 * down cleanly and reads them back, then removes the file, when it next
 * creates the segment.  After a crash the file is gone (it was removed
 * at start, and a crash writes none), so the counters start again from
 * zero; neither is the file part of a base backup or a standby's copy.
 * The file holds its own counts of providers and counters: a build with
 * more counters (new ones are only ever added at the end) reads the ones
 * it shares with the file and starts the others at zero.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <unistd.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "utils/timestamp.h"

#include "state.h"

#define STATS_FILE PGSTAT_STAT_PERMANENT_DIRECTORY "/enrich.stat"
#define STATS_MAGIC 0x454e5253	/* "ENRS" */

typedef struct StatsFileHead
{
	uint32		magic;
	int32		nkinds;
	int32		nstats;
	TimestampTz reset_at;
} StatsFileHead;

/* Adds to a statistics counter (lock-free; a no-op when not preloaded). */
void
enrich_stat_add(EnrichKind kind, EnrichStat stat, uint64 n)
{
	if (enrich_shared)
		pg_atomic_fetch_add_u64(&enrich_shared->prov[kind].stats[stat], n);
}

/* Sets every counter to zero; the reset time is now. */
void
enrich_stats_reset_all(void)
{
	if (enrich_shared == NULL)
		return;
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		for (int s = 0; s < ENRICH_NUM_STATS; s++)
			pg_atomic_write_u64(&enrich_shared->prov[k].stats[s], 0);
	LWLockAcquire(enrich_shared->lock, LW_EXCLUSIVE);
	enrich_shared->stats_reset = GetCurrentTimestamp();
	LWLockRelease(enrich_shared->lock);
}

/* When the counters were last reset (or first started). */
TimestampTz
enrich_stats_reset_at(void)
{
	TimestampTz t;

	if (enrich_shared == NULL)
		return 0;
	LWLockAcquire(enrich_shared->lock, LW_SHARED);
	t = enrich_shared->stats_reset;
	LWLockRelease(enrich_shared->lock);
	return t;
}

/*
 * Writes the counters at a clean shutdown (an on_shmem_exit callback of
 * the postmaster); at a crash (code != 0) nothing is written.
 */
static void
stats_save(int code, Datum arg)
{
	FILE	   *f;
	StatsFileHead head;
	uint64		v;
	bool		ok;

	if (code != 0 || enrich_shared == NULL)
		return;
	f = AllocateFile(STATS_FILE ".tmp", PG_BINARY_W);
	if (f == NULL)
	{
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not write enrich statistics file \"%s\": %m", STATS_FILE ".tmp")));
		return;
	}
	head.magic = STATS_MAGIC;
	head.nkinds = ENRICH_NUM_KINDS;
	head.nstats = ENRICH_NUM_STATS;
	head.reset_at = enrich_shared->stats_reset;
	ok = fwrite(&head, sizeof(head), 1, f) == 1;
	for (int k = 0; ok && k < ENRICH_NUM_KINDS; k++)
		for (int s = 0; ok && s < ENRICH_NUM_STATS; s++)
		{
			v = pg_atomic_read_u64(&enrich_shared->prov[k].stats[s]);
			ok = fwrite(&v, sizeof(v), 1, f) == 1;
		}
	if (FreeFile(f) != 0)
		ok = false;
	if (!ok)
	{
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not write enrich statistics file \"%s\": %m", STATS_FILE ".tmp")));
		unlink(STATS_FILE ".tmp");
		return;
	}
	(void) durable_rename(STATS_FILE ".tmp", STATS_FILE, LOG);
}

/* Reads the counters a clean shutdown saved, if any, and removes the file. */
static void
stats_load(void)
{
	FILE	   *f;
	StatsFileHead head;
	uint64		v;

	f = AllocateFile(STATS_FILE, PG_BINARY_R);
	if (f == NULL)
	{
		if (errno != ENOENT)
			ereport(LOG,
					(errcode_for_file_access(),
					 errmsg("could not read enrich statistics file \"%s\": %m", STATS_FILE)));
		return;
	}
	if (fread(&head, sizeof(head), 1, f) != 1 || head.magic != STATS_MAGIC ||
		head.nkinds < 0 || head.nstats < 0)
		ereport(LOG,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("ignoring enrich statistics file \"%s\": not a statistics file of this version", STATS_FILE)));
	else
	{
		enrich_shared->stats_reset = head.reset_at;
		for (int k = 0; k < head.nkinds; k++)
			for (int s = 0; s < head.nstats; s++)
			{
				if (fread(&v, sizeof(v), 1, f) != 1)
				{
					ereport(LOG,
							(errcode(ERRCODE_DATA_CORRUPTED),
							 errmsg("enrich statistics file \"%s\" is cut short", STATS_FILE)));
					k = head.nkinds;
					break;
				}
				if (k < ENRICH_NUM_KINDS && s < ENRICH_NUM_STATS)
					pg_atomic_write_u64(&enrich_shared->prov[k].stats[s], v);
			}
	}
	FreeFile(f);
	/* a crash from now on must not bring these back */
	unlink(STATS_FILE);
}

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/*
 * After the segment is set up (shmem.c's hook, run first): in the
 * postmaster, saves the counters at shutdown and loads them into a new
 * segment (one whose reset time is still zero).
 */
static void
stats_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	if (IsUnderPostmaster || enrich_shared == NULL)
		return;
	on_shmem_exit(stats_save, (Datum) 0);
	if (enrich_shared->stats_reset != 0)
		return;
	enrich_shared->stats_reset = GetCurrentTimestamp();
	stats_load();
}

/* Installs the hook; called from _PG_init after enrich_shmem_init. */
void
enrich_stats_init(void)
{
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = stats_shmem_startup;
}
