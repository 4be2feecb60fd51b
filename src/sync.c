/*-------------------------------------------------------------------------
 *
 * sync.c
 *	  enrich_company(), enrich_lead() and enrich.enrich_company_by_id():
 *	  synchronous enrichment.
 *
 * Normalise, return a fresh cached answer with no request, otherwise make
 * the request and cache what it brings.  Two sessions asking for the same
 * key at once make one request: a miss takes a session lock on the key,
 * looks again (cache, then the spool of answers not yet committed) and only
 * then sends; the lock is released as soon as the answer is on disk.
 *
 * A key whose cached answer is stale (or was asked for fewer LeadLex
 * fields) is a re-fetch: LeadLex is asked to overwrite what its workspace
 * record holds (enrich.leadlex_overwrite), under an Idempotency-Key of
 * its own.  By company id, the answer is cached under the domain it
 * names, so that enrich_company(that domain) is then a hit.
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

#include "entry.h"

PG_FUNCTION_INFO_V1(enrich_company);
PG_FUNCTION_INFO_V1(enrich_lead);
PG_FUNCTION_INFO_V1(enrich_company_by_id);

/* The longest company id taken (LeadLex's are UUIDs). */
#define ENRICH_MAX_ID_LEN 128

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
	bool		had_row;

	/* someone may have fetched it while we waited for the lock */
	enrich_spool_take_orphans();
	if (enrich_cache_pending_lookup(kind, key, &result) != CACHE_MISS ||
		enrich_cache_lookup_extended(kind, key, &result, &had_row) != CACHE_MISS)
		return copy_result(caller, result);
	if (enrich_spool_find(kind, key, &sp) &&
		enrich_answer_usable(kind, &sp.out, sp.fetched_at))
	{
		/* a paid answer not (yet) in the cache: use it, never pay again */
		if (!sp.owner_running)
			enrich_cache_store_at(kind, key, &sp.out, sp.fetched_at);
		return sp.out.kind == OUTCOME_MATCH ? copy_result(caller, sp.out.result) : NULL;
	}

	enrich_job_init(&job, kind, key);
	job.refetch = had_row;
	enrich_job_daily_key(&job);
	enrich_run_jobs(&job, 1, 1, NULL, NULL);
	if (job.out.kind != OUTCOME_MATCH && job.out.kind != OUTCOME_NO_MATCH)
		enrich_report_outcome(kind, &job.out);

	/*
	 * Paid for: in the spool first, so no abort can lose it; the cache row
	 * is written with the others at the end of the statement.
	 */
	fetched_at = job.fetched_at;
	enrich_spool_write(kind, key, &job.out, fetched_at);
	enrich_cache_defer(kind, key, &job.out, fetched_at);
	return job.out.kind == OUTCOME_MATCH ? copy_result(caller, job.out.result) : NULL;
}

/* A miss path, run with a key's lock held. */
typedef Jsonb *(*LockedFetch) (EnrichKind kind, const char *key, MemoryContext caller);

/*
 * Runs a miss path in a memory context of its own with the lock of
 * lockkey held, and returns its answer in the caller's memory context.
 */
static Jsonb *
fetch_under_lock(EnrichKind kind, const char *lockkey, const char *key, LockedFetch fetch)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext cxt;
	Jsonb	   *result;
	LOCKTAG		tag;

	cxt = AllocSetContextCreate(caller, "enrich request", ALLOCSET_DEFAULT_SIZES);
	key_locktag(&tag, kind, lockkey);
	(void) LockAcquire(&tag, ExclusiveLock, true, false);
	PG_TRY();
	{
		MemoryContextSwitchTo(cxt);
		result = fetch(kind, key, caller);
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

/* The shared body of enrich_company and enrich_lead. */
static Jsonb *
enrich_one(EnrichKind kind, text *input)
{
	char	   *in;
	const char *reason = NULL;
	char	   *key;
	Jsonb	   *result = NULL;

	key = enrich_normalize_text(kind, input, &in, &reason);
	if (key == NULL)
		enrich_report_invalid(kind, in, reason);

	if (enrich_cache_pending_lookup(kind, key, &result) != CACHE_MISS ||
		enrich_cache_lookup(kind, key, &result) != CACHE_MISS)
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
	return fetch_under_lock(kind, key, key, fetch_locked);
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

/*
 * The miss path by company id, with the id's lock held: look again, then
 * pay for a request; a match is spooled and cached under its domain.
 */
static Jsonb *
fetch_by_id_locked(EnrichKind kind, const char *company_id, MemoryContext caller)
{
	Jsonb	   *result = NULL;
	EnrichJob	job;
	bool		had_row;
	char	   *domain;
	char	   *key = NULL;
	const char *reason = NULL;

	enrich_spool_take_orphans();
	enrich_cache_pending_write();
	if (enrich_cache_lookup_by_id(company_id, &result, &had_row) == CACHE_HIT)
		return copy_result(caller, result);

	enrich_job_init(&job, ENRICH_COMPANY, company_id);
	job.by_id = true;
	job.refetch = had_row;
	enrich_job_daily_key(&job);
	enrich_run_jobs(&job, 1, 1, NULL, NULL);
	if (job.out.kind == OUTCOME_NO_MATCH)
		return NULL;
	if (job.out.kind != OUTCOME_MATCH)
		enrich_report_outcome(ENRICH_COMPANY, &job.out);

	domain = enrich_jsonb_get_text(job.out.result, "domain");
	if (domain != NULL)
		key = enrich_normalize_key(ENRICH_COMPANY, domain, &reason);
	if (key == NULL)
	{
		ereport(WARNING,
				(errcode(ERRCODE_ENRICH_BAD_RESPONSE),
				 errmsg("LeadLex answered company id \"%s\" without a usable domain", company_id),
				 errdetail("The answer is returned but not cached.")));
		return copy_result(caller, job.out.result);
	}
	/* paid for: on disk first, so no abort can lose it */
	enrich_spool_write(ENRICH_COMPANY, key, &job.out, job.fetched_at);
	enrich_cache_store_at(ENRICH_COMPANY, key, &job.out, job.fetched_at);
	return copy_result(caller, job.out.result);
}

/* Raises 22023 unless a company id is short printable ASCII without blanks. */
static void
check_company_id(const char *id)
{
	size_t		len = strlen(id);
	bool		ok = len > 0 && len <= ENRICH_MAX_ID_LEN;

	for (const char *c = id; ok && *c; c++)
		ok = *c > 0x20 && *c < 0x7F;
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid LeadLex company id \"%s\"", id),
				 errhint("A company id is the \"id\" of a LeadLex answer, such as enrich_company('acme.com')->>'id'.")));
}

/*
 * enrich.enrich_company_by_id(company_id text) RETURNS jsonb
 *
 * LeadLex by the id of a company record of the workspace.  A cached answer
 * with that id is returned with no request; otherwise the answer is bought
 * like enrich_company's (budgets, rate limits, idempotency, spool) and
 * cached under its domain.  An unknown id raises 38R08 and costs nothing.
 */
Datum
enrich_company_by_id(PG_FUNCTION_ARGS)
{
	char	   *id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *result = NULL;
	bool		had_row;

	check_company_id(id);
	/* the lookup by id reads the table: the answers waiting go in first */
	enrich_cache_pending_write();
	if (enrich_cache_lookup_by_id(id, &result, &had_row) == CACHE_HIT)
	{
		enrich_stat_add(ENRICH_COMPANY, STAT_CACHE_HITS, 1);
		PG_RETURN_JSONB_P(result);
	}
	enrich_require_primary("enrich an uncached company");
	enrich_require_key(ENRICH_COMPANY);

	/* the id's own lock ("id:" + id: no domain has a colon) */
	result = fetch_under_lock(ENRICH_COMPANY, psprintf("id:%s", id), id, fetch_by_id_locked);
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(result);
}
