/*-------------------------------------------------------------------------
 *
 * enrich.c
 *	  Module initialisation and the names shared by every part.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/hsearch.h"

#include "enrich.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static const char *const kind_names[ENRICH_NUM_KINDS] = {"company", "lead"};
static const char *const provider_names[ENRICH_NUM_KINDS] = {"LeadLex", "Slintel"};

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

/* Module load: settings, libcurl, transaction callbacks. */
void
_PG_init(void)
{
	enrich_define_gucs();
	enrich_install_log_redaction();
	enrich_http_init();
	enrich_spool_init();
	if (process_shared_preload_libraries_in_progress)
	{
		enrich_shmem_init();
		enrich_worker_register();
	}
}
