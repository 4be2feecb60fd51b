/*-------------------------------------------------------------------------
 *
 * cache_pending.c
 *	  Synchronous answers on their way into the cache: kept in the
 *	  transaction's memory, seen by this session's lookups, and written into
 *	  enrich.companies / enrich.leads (with their ledger rows) in one
 *	  statement per kind.
 *
 * A synchronous miss used to write its cache row and its ledger row by two
 * SPI statements of its own, inside the call: the larger part of what a
 * miss costs besides the request.  The answer is already safe in the spool
 * before it is returned (spool.c), and the rows only become visible to
 * others at commit, so nothing needs them sooner than the end of the
 * statement that bought them.  They wait here and are written:
 *
 *	- at the end of the top-level statement or command (spool_flush.c),
 *	  before the answers' fdatasync;
 *	- before the transaction commits or is prepared (for a statement whose
 *	  end was not seen: the first one of a session that loads the library);
 *	- when PENDING_MAX of them wait (memory and lookups stay bounded);
 *	- before a lookup by company id (which reads the table by SQL).
 *
 * If the transaction or the statement fails before that, they are
 * forgotten, as their rows would have been rolled back: the spool keeps the
 * answers and whoever comes next takes them in.  A subtransaction that
 * rolls back after a call keeps its answers here (they are paid; the spool
 * keeps them too, and taking one in twice changes nothing).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "common/hashfn.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "storage.h"

/* The most answers that wait before they are written. */
#define PENDING_MAX 256

typedef struct PendingAnswer
{
	EnrichKind	kind;
	char	   *key;
	EnrichOutcome out;
	TimestampTz fetched_at;
} PendingAnswer;

/* by_key's entry: the hash of (kind, key) and the answer's place */
typedef struct PendingSlot
{
	uint64		hash;
	int			index;
} PendingSlot;

static MemoryContext pending_cxt = NULL;	/* under TopTransactionContext */
static PendingAnswer *answers = NULL;
static int	nanswers = 0;
static HTAB *by_key = NULL;
static bool writing = false;

static uint64
pending_hash(EnrichKind kind, const char *key)
{
	return hash_bytes_extended((const unsigned char *) key, strlen(key), kind);
}

/* The waiting answer to a key, or NULL. */
static PendingAnswer *
pending_find(EnrichKind kind, const char *key, uint64 hash)
{
	PendingSlot *slot;
	PendingAnswer *a;

	if (by_key == NULL)
		return NULL;
	slot = hash_search(by_key, &hash, HASH_FIND, NULL);
	if (slot == NULL)
		return NULL;
	a = &answers[slot->index];
	return (a->kind == kind && strcmp(a->key, key) == 0) ? a : NULL;
}

/* Forgets everything (the memory goes with its context or a reset). */
static void
pending_forget(void)
{
	answers = NULL;
	nanswers = 0;
	by_key = NULL;
}

/*
 * Lets an answer (or a "no match") just bought and spooled wait to be
 * written into the cache.  A newer answer to a key that waits replaces it.
 */
void
enrich_cache_defer(EnrichKind kind, const char *key, const EnrichOutcome *out,
				   TimestampTz fetched_at)
{
	uint64		hash = pending_hash(kind, key);
	MemoryContext old;
	PendingAnswer *a;
	PendingSlot *slot;
	bool		found;

	if (pending_cxt == NULL)
		pending_cxt = AllocSetContextCreate(TopTransactionContext, "enrich pending answers",
											ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(pending_cxt);
	if (answers == NULL)
	{
		HASHCTL		ctl;

		answers = palloc(sizeof(PendingAnswer) * PENDING_MAX);
		ctl.keysize = sizeof(uint64);
		ctl.entrysize = sizeof(PendingSlot);
		ctl.hcxt = pending_cxt;
		by_key = hash_create("enrich pending answers", PENDING_MAX, &ctl,
							 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	a = pending_find(kind, key, hash);
	if (a == NULL)
	{
		/* a (vanishingly rare) other key of the same hash loses its slot */
		slot = hash_search(by_key, &hash, HASH_ENTER, &found);
		slot->index = nanswers;
		a = &answers[nanswers++];
	}
	a->kind = kind;
	a->key = pstrdup(key);
	a->out = *out;
	/* what the cache and the ledger keep; no error text */
	a->out.message = a->out.detail = a->out.hint = a->out.provider_code = NULL;
	a->out.request_id = out->request_id ? pstrdup(out->request_id) : NULL;
	a->out.source = out->source ? pstrdup(out->source) : NULL;
	a->out.fields = out->fields ? pstrdup(out->fields) : NULL;
	a->out.result = out->result ? DatumGetJsonbPCopy(JsonbPGetDatum(out->result)) : NULL;
	a->out.fields_updated = out->fields_updated ?
		DatumGetJsonbPCopy(JsonbPGetDatum(out->fields_updated)) : NULL;
	a->fetched_at = fetched_at;
	MemoryContextSwitchTo(old);
	if (nanswers >= PENDING_MAX)
		enrich_cache_pending_write();
}

/*
 * Looks a key up among the waiting answers: CACHE_HIT (the answer copied
 * into the current memory context) or CACHE_NO_MATCH if one is there and
 * usable, else CACHE_MISS.
 */
EnrichCacheState
enrich_cache_pending_lookup(EnrichKind kind, const char *key, Jsonb **result)
{
	PendingAnswer *a;

	*result = NULL;
	if (nanswers == 0)
		return CACHE_MISS;
	a = pending_find(kind, key, pending_hash(kind, key));
	if (a == NULL || !enrich_answer_usable(kind, &a->out, a->fetched_at))
		return CACHE_MISS;
	if (a->out.kind != OUTCOME_MATCH)
		return CACHE_NO_MATCH;
	*result = DatumGetJsonbPCopy(JsonbPGetDatum(a->out.result));
	return CACHE_HIT;
}

/*
 * Writes the waiting answers into the cache and the ledger, one statement
 * per kind, and forgets them.
 */
void
enrich_cache_pending_write(void)
{
	volatile bool pushed = false;

	if (nanswers == 0 || writing)
		return;
	/* (an error pops it with the rest of the aborted transaction's) */
	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed = true;
	}
	writing = true;
	PG_TRY();
	{
		for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		{
			char	  **keys = palloc(sizeof(char *) * nanswers);
			EnrichOutcome **outs = palloc(sizeof(EnrichOutcome *) * nanswers);
			TimestampTz *ats = palloc(sizeof(TimestampTz) * nanswers);
			int			n = 0;

			for (int i = 0; i < nanswers; i++)
			{
				if (answers[i].kind != (EnrichKind) k)
					continue;
				keys[n] = answers[i].key;
				outs[n] = &answers[i].out;
				ats[n] = answers[i].fetched_at;
				n++;
			}
			enrich_cache_store_rows((EnrichKind) k, n, keys, outs, ats);
			pfree(keys);
			pfree(outs);
			pfree(ats);
		}
	}
	PG_FINALLY();
	{
		writing = false;
	}
	PG_END_TRY();
	if (pushed)
		PopActiveSnapshot();
	pending_forget();
	MemoryContextReset(pending_cxt);
}

/* Writes before a commit or a prepare; forgets at the end. */
static void
pending_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			enrich_cache_pending_write();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* the context goes with TopTransactionContext */
			pending_forget();
			pending_cxt = NULL;
			writing = false;
			break;
	}
}

/* Registers the transaction callback; called from _PG_init. */
void
enrich_cache_pending_init(void)
{
	RegisterXactCallback(pending_xact_callback, NULL);
}
