/*-------------------------------------------------------------------------
 *
 * enrich.c
 *	  Module initialisation and the names shared by every part.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

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
