/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  enrich_companies(), enrich_leads() and enrich.estimate_credits().
 *
 * The batch functions enrich a whole array in the calling session, with
 * up to enrich.max_concurrency requests in flight at once over the
 * session's kept-alive connections, under the same cache, rate limits and
 * credit budget as everything else.  Each distinct normalised key is
 * looked up or fetched once; every input gets a row, in input order, with
 * a status: fetched, cached, no_match, invalid, no_credits or error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "entry.h"

PG_FUNCTION_INFO_V1(enrich_companies);
PG_FUNCTION_INFO_V1(enrich_leads);
PG_FUNCTION_INFO_V1(estimate_credits);

/* What became of one distinct key. */
typedef struct KeyState
{
	char	   *key;			/* hash key: the normalised key */
	const char *status;
	Jsonb	   *result;
	int			job;			/* index into the jobs, or -1 */
} KeyState;

typedef struct BatchInput
{
	Datum	   *values;
	bool	   *nulls;
	int			n;
	char	  **keys;			/* normalised, NULL when invalid */
	HTAB	   *distinct;
	int			ndistinct;
} BatchInput;

/* Normalises every input and collects the distinct keys. */
static void
batch_prepare(EnrichKind kind, ArrayType *arr, BatchInput *in)
{
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("the input must be a one-dimensional array")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT,
					  &in->values, &in->nulls, &in->n);
	in->keys = palloc0(sizeof(char *) * Max(in->n, 1));
	in->distinct = enrich_string_table("enrich batch keys", in->n, sizeof(KeyState));
	in->ndistinct = 0;
	for (int i = 0; i < in->n; i++)
	{
		char	   *input;
		const char *reason;
		char	   *key;
		bool		found;
		KeyState   *ks;

		if (in->nulls[i])
			continue;
		key = enrich_normalize_text(kind, DatumGetTextPP(in->values[i]), &input, &reason);
		if (key == NULL)
			continue;
		ks = hash_search(in->distinct, &key, HASH_ENTER, &found);
		if (!found)
		{
			ks->status = NULL;
			ks->result = NULL;
			ks->job = -1;
			in->ndistinct++;
		}
		in->keys[i] = key;
	}
}

/*
 * Answers keys from the cache or the spool; the rest become jobs, in the
 * order of their first input (so a budget runs out at the same place
 * every time).
 */
static EnrichJob *
batch_lookup(EnrichKind kind, BatchInput *in, int *njobs)
{
	EnrichJob  *jobs = palloc0(sizeof(EnrichJob) * Max(in->ndistinct, 1));
	KeyState   *ks;
	EnrichSpooled sp;
	bool		standby = RecoveryInProgress();

	/* a standby writes nothing: it answers from the cache alone */
	*njobs = 0;
	if (!standby)
	{
		enrich_spool_take_orphans();
		/* this statement's synchronous answers, into the cache first */
		enrich_cache_pending_write();
	}
	for (int i = 0; i < in->n; i++)
	{
		EnrichCacheState st;
		bool		had_row;

		if (in->keys[i] == NULL)
			continue;
		ks = hash_search(in->distinct, &in->keys[i], HASH_FIND, NULL);
		if (ks->status != NULL || ks->job >= 0)
			continue;
		st = enrich_cache_lookup_extended(kind, ks->key, &ks->result, &had_row);

		if (st == CACHE_MISS && !standby && enrich_spool_find(kind, ks->key, &sp) &&
			enrich_answer_usable(kind, &sp.out, sp.fetched_at))
		{
			if (!sp.owner_running)
				enrich_cache_store_at(kind, ks->key, &sp.out, sp.fetched_at);
			st = sp.out.kind == OUTCOME_MATCH ? CACHE_HIT : CACHE_NO_MATCH;
			ks->result = sp.out.result;
		}
		if (st == CACHE_HIT)
		{
			ks->status = "cached";
			enrich_stat_add(kind, STAT_CACHE_HITS, 1);
		}
		else if (st == CACHE_NO_MATCH)
		{
			ks->status = "no_match";
			enrich_stat_add(kind, STAT_CACHE_HITS, 1);
		}
		else
		{
			ks->job = *njobs;
			enrich_job_init(&jobs[*njobs], kind, ks->key);
			jobs[*njobs].path = 'b';
			jobs[*njobs].refetch = had_row;
			enrich_job_daily_key(&jobs[*njobs]);
			(*njobs)++;
		}
	}
	return jobs;
}

/*
 * Stores what the jobs brought (already spooled) in one statement and
 * gives each key its status.
 */
static void
batch_store(EnrichKind kind, BatchInput *in, EnrichJob *jobs, int njobs)
{
	HASH_SEQ_STATUS seq;
	KeyState   *ks;
	int			nerrors = 0;
	const EnrichOutcome *first = NULL;
	char	  **keys = palloc(sizeof(char *) * Max(njobs, 1));
	EnrichOutcome **outs = palloc(sizeof(EnrichOutcome *) * Max(njobs, 1));
	int			nstore = 0;

	hash_seq_init(&seq, in->distinct);
	while ((ks = hash_seq_search(&seq)) != NULL)
	{
		EnrichJob  *j;

		if (ks->job < 0)
			continue;
		j = &jobs[ks->job];
		switch (j->out.kind)
		{
			case OUTCOME_MATCH:
			case OUTCOME_NO_MATCH:
				keys[nstore] = ks->key;
				outs[nstore++] = &j->out;
				ks->status = j->out.kind == OUTCOME_MATCH ? "fetched" : "no_match";
				ks->result = j->out.result;
				break;
			case OUTCOME_NO_CREDITS:
				ks->status = "no_credits";
				break;
			default:
				ks->status = "error";
				if (nerrors++ == 0)
					first = &j->out;
				break;
		}
	}
	enrich_cache_store_many(kind, nstore, keys, outs, GetCurrentTimestamp());
	if (nerrors > 0)
		ereport(WARNING,
				(errcode(first->sqlstate),
				 errmsg("%d of %ld %s request(s) failed", nerrors, hash_get_num_entries(in->distinct),
						enrich_provider_name(kind)),
				 errdetail("The first failure: %s%s%s", first->message,
						   first->detail ? ": " : "", first->detail ? first->detail : "")));
}

/* Appends an answer to the call's spool file as it arrives. */
static void
batch_spool_answer(EnrichJob *job, void *arg)
{
	enrich_spool_batch_append((EnrichSpoolBatch *) arg, job->kind, job->key,
							  &job->out, job->fetched_at);
}

/*
 * Runs the jobs, every answer appended to one spool file and made durable
 * before return, also when an error or a cancel ends the run: what was
 * paid for so far must outlive the error.
 */
static void
batch_fetch(EnrichJob *jobs, int njobs)
{
	EnrichSpoolBatch spool = {.fd = -1};

	PG_TRY();
	{
		enrich_run_jobs(jobs, njobs, enrich_http_concurrency(),
						batch_spool_answer, &spool);
		enrich_spool_batch_finish(&spool, ERROR);
	}
	PG_CATCH();
	{
		enrich_spool_batch_finish(&spool, WARNING);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/* The shared body of enrich_companies and enrich_leads. */
static Datum
batch_run(EnrichKind kind, FunctionCallInfo fcinfo)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext cxt;
	MemoryContext old;
	BatchInput	in;
	EnrichJob  *jobs;
	int			njobs;

	InitMaterializedSRF(fcinfo, 0);
	cxt = AllocSetContextCreate(CurrentMemoryContext, "enrich batch", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);

	batch_prepare(kind, PG_GETARG_ARRAYTYPE_P(0), &in);
	jobs = batch_lookup(kind, &in, &njobs);
	if (njobs > 0)
	{
		enrich_require_primary(kind == ENRICH_COMPANY ? "enrich uncached companies" :
							   "enrich uncached leads");
		enrich_require_key(kind);
		batch_fetch(jobs, njobs);
	}
	batch_store(kind, &in, jobs, njobs);

	for (int i = 0; i < in.n; i++)
	{
		Datum		v[3];
		bool		n[3] = {false, true, false};
		KeyState   *ks = in.keys[i] ? hash_search(in.distinct, &in.keys[i], HASH_FIND, NULL) : NULL;

		v[0] = in.values[i];
		n[0] = in.nulls[i];
		v[2] = CStringGetTextDatum(ks ? ks->status : "invalid");
		if (ks && ks->result)
		{
			v[1] = JsonbPGetDatum(ks->result);
			n[1] = false;
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return (Datum) 0;
}

/*
 * enrich_companies(domains text[])
 *	 RETURNS TABLE(input text, result jsonb, status text)
 */
Datum
enrich_companies(PG_FUNCTION_ARGS)
{
	return batch_run(ENRICH_COMPANY, fcinfo);
}

/*
 * enrich_leads(linkedin_urls text[])
 *	 RETURNS TABLE(input text, result jsonb, status text)
 */
Datum
enrich_leads(PG_FUNCTION_ARGS)
{
	return batch_run(ENRICH_LEAD, fcinfo);
}

/*
 * enrich.estimate_credits(kind text, keys text[]) RETURNS bigint
 *
 * How many credits enriching these inputs would cost now: the distinct
 * valid normalised keys without a fresh cached answer.  Sends nothing.
 */
Datum
estimate_credits(PG_FUNCTION_ARGS)
{
	char	   *kname = text_to_cstring(PG_GETARG_TEXT_PP(0));
	EnrichKind	kind;
	BatchInput	in;
	HASH_SEQ_STATUS seq;
	KeyState   *ks;
	int64		n = 0;

	if (!enrich_kind_from_name(kname, &kind))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown kind \"%s\"", kname),
				 errhint("The kinds are \"company\" and \"lead\".")));
	batch_prepare(kind, PG_GETARG_ARRAYTYPE_P(1), &in);
	hash_seq_init(&seq, in.distinct);
	while ((ks = hash_seq_search(&seq)) != NULL)
	{
		Jsonb	   *r;

		if (enrich_cache_pending_lookup(kind, ks->key, &r) == CACHE_MISS &&
			enrich_cache_lookup(kind, ks->key, &r) == CACHE_MISS)
			n++;
	}
	PG_RETURN_INT64(n);
}
