/*-------------------------------------------------------------------------
 *
 * sync.c
 *	  enrich_company() and enrich_lead(): synchronous enrichment.
 *
 * Normalise, return a fresh cached answer with no request, otherwise make
 * the request and cache what it brings.  Two sessions asking for the same
 * key at once make one request: a miss takes a session lock on the key,
 * looks again (cache, then the spool of answers not yet committed) and only
 * then sends; the lock is released as soon as the answer is on disk.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "enrich.h"

PG_FUNCTION_INFO_V1(enrich_company);
PG_FUNCTION_INFO_V1(enrich_lead);

/* Advisory lock field 4 value for our key locks (distinct from pg_advisory_*). */
#define ENRICH_LOCK_SPACE 0x454E

/* The lock tag of one key. */
static void
key_locktag(LOCKTAG *tag, EnrichKind kind, const char *key)
{
	uint64		h = hash_bytes_extended((const unsigned char *) key, strlen(key), kind);

	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h,
						 ENRICH_LOCK_SPACE + kind);
}

/* Copies a jsonb into the given memory context. */
static Jsonb *
copy_result(MemoryContext cxt, Jsonb *jb)
{
	MemoryContext old;
	Jsonb	   *copy;

	if (jb == NULL)
		return NULL;
	old = MemoryContextSwitchTo(cxt);
	copy = DatumGetJsonbPCopy(JsonbPGetDatum(jb));
	MemoryContextSwitchTo(old);
	return copy;
}

/*
 * The miss path, with the key's lock held: look again (cache, then spool),
 * otherwise pay for a request, spool the answer, cache it.
 */
static Jsonb *
fetch_locked(EnrichKind kind, const char *key, MemoryContext caller)
{
	Jsonb	   *result = NULL;
	EnrichSpooled sp;
	EnrichJob	job;
	TimestampTz fetched_at;

	/* someone may have fetched it while we waited for the lock */
	enrich_spool_take_orphans();
	if (enrich_cache_lookup(kind, key, &result) != CACHE_MISS)
		return copy_result(caller, result);
	if (enrich_spool_find(kind, key, &sp) &&
		enrich_cache_fresh(sp.out.kind == OUTCOME_MATCH, sp.fetched_at))
	{
		/* a paid answer not (yet) in the cache: use it, never pay again */
		if (!sp.owner_running)
			enrich_cache_store_at(kind, key, &sp.out, sp.fetched_at);
		return sp.out.kind == OUTCOME_MATCH ? copy_result(caller, sp.out.result) : NULL;
	}

	enrich_job_init(&job, kind, key);
	enrich_daily_idempotency_key(kind, key, job.idempotency_key);
	enrich_run_jobs(&job, 1, 1, NULL, NULL);
	if (job.out.kind != OUTCOME_MATCH && job.out.kind != OUTCOME_NO_MATCH)
		enrich_report_outcome(kind, &job.out);

	/* paid for: on disk first, so no abort can lose it */
	fetched_at = job.fetched_at;
	enrich_spool_write(kind, key, &job.out, fetched_at);
	enrich_cache_store_at(kind, key, &job.out, fetched_at);
	return job.out.kind == OUTCOME_MATCH ? copy_result(caller, job.out.result) : NULL;
}

/* The shared body of enrich_company and enrich_lead. */
static Jsonb *
enrich_one(EnrichKind kind, text *input)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext cxt;
	char	   *in;
	const char *reason = NULL;
	char	   *key;
	Jsonb	   *result = NULL;
	LOCKTAG		tag;

	key = enrich_normalize_text(kind, input, &in, &reason);
	if (key == NULL)
		enrich_report_invalid(kind, in, reason);

	if (enrich_cache_lookup(kind, key, &result) != CACHE_MISS)
	{
		enrich_stat_add(kind, STAT_CACHE_HITS, 1);
		return result;
	}

	/* a miss would buy an answer that a standby cannot keep */
	enrich_require_primary(kind == ENRICH_COMPANY ? "enrich an uncached company" :
						   "enrich an uncached lead");
	enrich_require_key(kind);

	/*
	 * Hold the key's lock only while fetching: a second session waits here,
	 * then finds the answer in the spool directory even before our commit.
	 */
	cxt = AllocSetContextCreate(caller, "enrich request", ALLOCSET_DEFAULT_SIZES);
	key_locktag(&tag, kind, key);
	(void) LockAcquire(&tag, ExclusiveLock, true, false);
	PG_TRY();
	{
		MemoryContextSwitchTo(cxt);
		result = fetch_locked(kind, key, caller);
		MemoryContextSwitchTo(caller);
	}
	PG_CATCH();
	{
		LockRelease(&tag, ExclusiveLock, true);
		PG_RE_THROW();
	}
	PG_END_TRY();
	LockRelease(&tag, ExclusiveLock, true);
	MemoryContextDelete(cxt);
	return result;
}

/* enrich_company(domain text) RETURNS jsonb */
Datum
enrich_company(PG_FUNCTION_ARGS)
{
	Jsonb	   *r = enrich_one(ENRICH_COMPANY, PG_GETARG_TEXT_PP(0));

	if (r == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(r);
}

/* enrich_lead(linkedin_url text) RETURNS jsonb */
Datum
enrich_lead(PG_FUNCTION_ARGS)
{
	Jsonb	   *r = enrich_one(ENRICH_LEAD, PG_GETARG_TEXT_PP(0));

	if (r == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(r);
}
