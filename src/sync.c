/*-------------------------------------------------------------------------
 *
 * sync.c
 *	  enrich_company() and enrich_lead(): synchronous enrichment.
 *
 * Normalise, return a fresh cached answer with no request, otherwise make
 * the request and cache what it brings.  Two sessions asking for the same
 * key at once make one request: a miss takes a transaction-scoped lock on
 * the key and looks again before sending, so the second caller finds the
 * first caller's answer once it commits.
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

/* Waits for, then holds until commit, the lock on one key. */
static void
lock_key(EnrichKind kind, const char *key)
{
	LOCKTAG		tag;
	uint64		h = hash_bytes_extended((const unsigned char *) key, strlen(key), kind);

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h,
						 ENRICH_LOCK_SPACE + kind);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/* Raises 22023 for an input that does not normalise. */
static void
report_invalid(EnrichKind kind, const char *input, const char *reason)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 kind == ENRICH_COMPANY ?
			 errmsg("invalid domain: \"%s\"", input) :
			 errmsg("invalid LinkedIn profile URL: \"%s\"", input),
			 reason ? errdetail("The input %s.", reason) : 0));
}

/* The shared body of enrich_company and enrich_lead. */
static Jsonb *
enrich_one(EnrichKind kind, text *input)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext cxt;
	char	   *in = text_to_cstring(input);
	const char *reason = NULL;
	char	   *key;
	Jsonb	   *result = NULL;
	EnrichCacheState state;
	EnrichJob	job;

	key = enrich_normalize_key(kind, in, &reason);
	if (key == NULL)
		report_invalid(kind, in, reason);

	state = enrich_cache_lookup(kind, key, &result);
	if (state != CACHE_MISS)
		return result;

	enrich_require_key(kind);
	lock_key(kind, key);
	state = enrich_cache_lookup(kind, key, &result);
	if (state != CACHE_MISS)
		return result;

	cxt = AllocSetContextCreate(caller, "enrich request", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);
	enrich_job_init(&job, kind, key);
	enrich_run_jobs(&job, 1, 1);
	if (job.out.kind != OUTCOME_MATCH && job.out.kind != OUTCOME_NO_MATCH)
		enrich_report_outcome(kind, &job.out);
	enrich_cache_store(kind, key, &job.out);
	MemoryContextSwitchTo(caller);
	if (job.out.kind == OUTCOME_MATCH)
		result = DatumGetJsonbPCopy(JsonbPGetDatum(job.out.result));
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
