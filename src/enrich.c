/*-------------------------------------------------------------------------
 *
 * enrich.c
 *	  Module initialisation: _PG_init and nothing else.
 *
 * Loading the library defines the settings and installs the log
 * redaction, libcurl, the transaction callbacks of the spool and of the
 * answers waiting for the cache, and the hooks on the end of a statement;
 * when it is preloaded (shared_preload_libraries) it also asks for shared
 * memory and registers the background worker.  Everything else is in the
 * layers below (src/LAYERS, src/README.md).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "entry.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Module load: settings, libcurl, transaction callbacks, shared memory. */
void
_PG_init(void)
{
	enrich_define_gucs();
	enrich_install_log_redaction();
	enrich_http_init();
	enrich_spool_init();
	enrich_spool_flush_init();
	enrich_cache_pending_init();
	if (process_shared_preload_libraries_in_progress)
	{
		enrich_shmem_init();
		enrich_stats_init();
		enrich_launcher_register();
		enrich_launcher_hook_init();
	}
}
