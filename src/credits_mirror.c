/*-------------------------------------------------------------------------
 *
 * credits_mirror.c
 *	  The budgets' use mirrored in a file for the next server life:
 *	  $PGDATA/pg_enrich/budgets, mapped into every process that charges.
 *
 * What a period's budget has used is known for certain in shared memory,
 * and durably in the ledgers of the databases (credits_ledger.c) once
 * every one of them has been counted and every spooled answer taken in.
 * Until then a new server life (after a crash restart, an immediate
 * shutdown or a killed postmaster) would see too little: the charges of a
 * database whose worker has not started yet, of a transaction whose
 * answers still wait in the spool.  So each change of a budget's use is
 * also stored, under the lock, in a small file mapped MAP_SHARED: a store
 * into the page cache, no system call, and it outlives any process that
 * dies (the kernel keeps the page).  The next life takes the most of it,
 * of what enrich.credit_limits saved and of what the ledgers count, for a
 * budget of the same period.
 *
 * It is not fsync'd: after a crash of the machine itself it may be older,
 * and the ledgers (written with the answers, durable with them) are what
 * counts.  A standby's copy is its base backup's: older, never larger.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/file_perm.h"
#include "miscadmin.h"
#include "storage/fd.h"

#include "state.h"

#define MIRROR_FILE "pg_enrich/" ENRICH_MIRROR_NAME
#define MIRROR_MAGIC 0x454E5242	/* "ENRB" */
#define MIRROR_SLOTS (ENRICH_NUM_KINDS + ENRICH_MAX_ROLE_BUDGETS)

/* One budget's use in one period. */
typedef struct MirrorEntry
{
	int32		kind;			/* -1: an unused entry */
	Oid			role;			/* InvalidOid: the provider's budget */
	int64		per_us;
	TimestampTz period_start;
	int64		used;
} MirrorEntry;

typedef struct MirrorFile
{
	uint32		magic;
	uint32		slots;
	MirrorEntry e[MIRROR_SLOTS];	/* the providers', then the roles' by entry */
} MirrorFile;

static MirrorFile *mirror = NULL;
static bool mirror_failed = false;

/*
 * Maps the file, creating it if needed; NULL if that cannot be done (then
 * said once in the log: the ledgers still count, a little later).
 */
static MirrorFile *
mirror_map(void)
{
	int			fd;
	void	   *p;
	bool		fresh;
	struct stat st;

	if (mirror != NULL || mirror_failed)
		return mirror;
	mirror_failed = true;		/* until it works */
	if (MakePGDirectory("pg_enrich") < 0 && errno != EEXIST)
		goto fail;
	fd = open(MIRROR_FILE, O_RDWR | O_CREAT | PG_BINARY, pg_file_create_mode);
	if (fd < 0)
		goto fail;
	fresh = fstat(fd, &st) != 0 || st.st_size != sizeof(MirrorFile);
	if (fresh && ftruncate(fd, sizeof(MirrorFile)) != 0)
	{
		close(fd);
		goto fail;
	}
	p = mmap(NULL, sizeof(MirrorFile), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		goto fail;
	mirror = (MirrorFile *) p;
	if (fresh || mirror->magic != MIRROR_MAGIC || mirror->slots != MIRROR_SLOTS)
	{
		/* new, or of another build: nothing in it is known */
		memset(mirror, 0, sizeof(MirrorFile));
		for (int i = 0; i < MIRROR_SLOTS; i++)
			mirror->e[i].kind = -1;
		mirror->slots = MIRROR_SLOTS;
		pg_write_barrier();
		mirror->magic = MIRROR_MAGIC;
	}
	mirror_failed = false;
	return mirror;

fail:
	ereport(LOG,
			(errcode_for_file_access(),
			 errmsg("could not map file \"%s\": %m", MIRROR_FILE),
			 errdetail("After a crash, the credits used are counted from the ledgers alone.")));
	return NULL;
}

/*
 * Takes a budget's use in its current period as the file last said it
 * (an earlier server life's), when that is more than it has: a budget
 * being loaded, its period rolled forward.  Caller holds the lock.
 */
void
enrich_mirror_apply(EnrichKind kind, Oid role, EnrichBudget *b)
{
	MirrorFile *m = mirror_map();
	int64		before;
	int64		used = -1;

	if (m == NULL || b->credit_limit < 0)
		return;
	for (int i = 0; i < MIRROR_SLOTS; i++)
	{
		MirrorEntry *e = &m->e[i];

		if (e->kind == (int32) kind && e->role == role && e->per_us == b->credit_period_us &&
			e->period_start == b->period_start)
			used = Max(used, e->used);
	}
	if (used <= b->used_saved)
		return;
	before = Max(b->used_saved, b->used_ledgers);
	b->used_saved = used;
	b->credits_used += Max(b->used_saved, b->used_ledgers) - before;
	b->usage_version++;
}

/*
 * Stores the use of a budget of shared memory (a provider's or a role's)
 * in its slot: the providers' come first, then the roles' by entry.
 * Caller holds the lock, after changing what the budget used.
 */
void
enrich_mirror_store(const EnrichBudget *b)
{
	MirrorFile *m;
	MirrorEntry *e;
	int			slot = -1;
	int32		kind = -1;
	Oid			role = InvalidOid;

	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		if (b == &enrich_shared->prov[k].budget)
			slot = kind = k;
	for (int i = 0; i < ENRICH_MAX_ROLE_BUDGETS && slot < 0; i++)
		if (b == &enrich_shared->roles[i].budget)
		{
			slot = ENRICH_NUM_KINDS + i;
			kind = (int32) enrich_shared->roles[i].kind;
			role = enrich_shared->roles[i].role;
		}
	if (slot < 0 || b->credit_limit < 0 || (m = mirror_map()) == NULL)
		return;
	e = &m->e[slot];
	/* a process that dies between these stores leaves an entry that matches nothing */
	e->kind = -1;
	pg_write_barrier();
	e->role = role;
	e->per_us = b->credit_period_us;
	e->period_start = b->period_start;
	e->used = b->credits_used;
	pg_write_barrier();
	e->kind = kind;
}
