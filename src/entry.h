/*-------------------------------------------------------------------------
 *
 * entry.h
 *	  The entry layer: what its files (the SQL functions, auto_enrich and
 *	  the background worker) export to each other and to enrich.c.
 *
 * sync.c and batch.c export nothing but SQL functions; limits.c what
 * limits_role.c shares with it; the worker's files share worker.h
 * besides.  enrich.c (the init layer) includes this header.  Includes
 * storage.h.
 *
 * IDENTIFICATION
 *	  src/entry.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENRICH_ENTRY_H
#define ENRICH_ENTRY_H

#include "storage.h"

/* ---- auto.c ---- */
extern int	enrich_auto_exec_owner(const char *sql, int nargs, Oid *types,
								   Datum *values, const char *nulls);

/* ---- auto_deliver.c ---- */
/* Answers to write into auto_enrich targets, collected, then written at once. */
typedef struct EnrichDeliveries
{
	int			n;
	int			cap;
	char	  **keys;
	Jsonb	  **results;		/* NULL: no match */
	int64	   *queue_ids;		/* the item each finishes, 0: none */
	const char **status;		/* what that item becomes when delivered */
} EnrichDeliveries;

extern bool enrich_auto_has_targets(EnrichKind kind);
extern void enrich_auto_add(EnrichDeliveries *d, const char *key, Jsonb *result,
							int64 queue_id, const char *status);
extern void enrich_auto_deliver(EnrichKind kind, EnrichDeliveries *d,
								EnrichQueueUpdates *u);
extern int	enrich_auto_take_inbox(void);

/* ---- limits.c ---- */
extern EnrichKind enrich_provider_arg(text *arg);
extern int64 enrich_interval_us(Interval *iv);
extern Datum enrich_us_interval(int64 us);
extern void enrich_require_limit_privilege(const char *fname);
extern EnrichKind enrich_credit_limit_args(FunctionCallInfo fcinfo, int first, const char *fname,
										   int64 *credits, int64 *per_us);
extern bool enrich_budget_columns(const EnrichBudget *b, Datum *v, bool *n, Datum *resets_at);

/* ---- worker.c ---- */
extern PGDLLEXPORT void enrich_worker_main(Datum arg);

/* ---- launcher.c ---- */
extern void enrich_launcher_register(void);
extern PGDLLEXPORT void enrich_launcher_main(Datum arg);
extern bool enrich_start_worker(Oid db, void **handle);

/* ---- launcher_hook.c ---- */
extern void enrich_launcher_hook_init(void);

#endif							/* ENRICH_ENTRY_H */
