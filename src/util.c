/*-------------------------------------------------------------------------
 *
 * util.c
 *	  Small things every layer uses: the names of the kinds and providers,
 *	  string-keyed hash tables, arrays, retry backoff, the standby guard.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"

#include "base.h"

/* Backoff: 200 ms doubling, capped, with full jitter. */
#define BACKOFF_BASE_MS 200
#define BACKOFF_CAP_MS 30000

static const char *const kind_names[ENRICH_NUM_KINDS] = {"company", "lead"};
static const char *const provider_names[ENRICH_NUM_KINDS] = {"LeadLex", "Slintel"};
static const char *const provider_keys[ENRICH_NUM_KINDS] = {"leadlex", "slintel"};

/* The SQL name of a kind: "company" or "lead". */
const char *
enrich_kind_name(EnrichKind kind)
{
	return kind_names[kind];
}

/* The display name of the provider serving a kind. */
const char *
enrich_provider_name(EnrichKind kind)
{
	return provider_names[kind];
}

/* The SQL name of the provider serving a kind: "leadlex" or "slintel". */
const char *
enrich_provider_key(EnrichKind kind)
{
	return provider_keys[kind];
}

/* Accepts "company"/"lead" and the provider names "leadlex"/"slintel". */
bool
enrich_kind_from_name(const char *name, EnrichKind *kind)
{
	if (pg_strcasecmp(name, "company") == 0 || pg_strcasecmp(name, "leadlex") == 0)
		*kind = ENRICH_COMPANY;
	else if (pg_strcasecmp(name, "lead") == 0 || pg_strcasecmp(name, "slintel") == 0)
		*kind = ENRICH_LEAD;
	else
		return false;
	return true;
}

/* Hashes a key by the C string it points to. */
static uint32
string_key_hash(const void *key, Size keysize)
{
	const char *s = *(const char *const *) key;

	return hash_bytes((const unsigned char *) s, strlen(s));
}

/* Compares two keys by the C strings they point to. */
static int
string_key_match(const void *a, const void *b, Size keysize)
{
	return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/*
 * A hash table in the current memory context whose entries start with a
 * char * key, compared as C strings (normalised keys and the like).
 */
HTAB *
enrich_string_table(const char *name, long nelem, Size entrysize)
{
	HASHCTL		ctl;

	ctl.keysize = sizeof(char *);
	ctl.entrysize = entrysize;
	ctl.hash = string_key_hash;
	ctl.match = string_key_match;
	ctl.hcxt = CurrentMemoryContext;
	return hash_create(name, Max(nelem, 16), &ctl,
					   HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
}

/* Builds a one-dimensional array of n values (nulls may be NULL). */
Datum
enrich_make_array(Datum *values, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs,
											  elemtype, typlen, typbyval, typalign));
}

/* Exponential backoff with full jitter for the given (1-based) attempt. */
int64
enrich_backoff_ms(int attempt)
{
	int64		cap = BACKOFF_BASE_MS;
	uint32		r;

	for (int i = 1; i < attempt && cap < BACKOFF_CAP_MS; i++)
		cap *= 2;
	cap = Min(cap, BACKOFF_CAP_MS);
	if (!pg_strong_random(&r, sizeof(r)))
		r = (uint32) random();
	/* between half and all of the cap, so retries never bunch at zero */
	return cap / 2 + (int64) (r % (uint32) (cap / 2 + 1));
}

/*
 * Raises 25006 on a hot standby or in a read-only transaction, before
 * anything is sent or written (what it bought could not be cached): `what`
 * completes "cannot ... during recovery" / "in a read-only transaction".
 */
void
enrich_require_primary(const char *what)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot %s during recovery", what),
				 errdetail("This server is a hot standby: it serves cached answers only, and nothing bought here could be kept."),
				 errhint("Run it on the primary server.")));
	if (XactReadOnly)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot %s in a read-only transaction", what),
				 errdetail("What it buys is written into enrich's tables, which a read-only transaction cannot do; nothing was sent."),
				 errhint("Run it in a read-write transaction.")));
}
