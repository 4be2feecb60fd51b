/*-------------------------------------------------------------------------
 *
 * storage.h
 *	  The storage layer: the cache tables (cache.c), the spool of paid
 *	  answers on disk (spool.c, spool_read.c), enrich.queue (queue.c) and
 *	  the ledger of charges (ledger.c).
 *
 * Where answers are kept, and the queue items they are for.  The spool's
 * two files share spool_int.h besides.  Includes providers.h.
 *
 * IDENTIFICATION
 *	  src/storage.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENRICH_STORAGE_H
#define ENRICH_STORAGE_H

#include "providers.h"

#include "access/transam.h"

/* ---- cache.c ---- */
typedef enum EnrichCacheState
{
	CACHE_MISS,
	CACHE_HIT,
	CACHE_NO_MATCH,
} EnrichCacheState;

extern EnrichCacheState enrich_cache_lookup(EnrichKind kind, const char *key,
											Jsonb **result);
extern EnrichCacheState enrich_cache_lookup_extended(EnrichKind kind, const char *key,
													 Jsonb **result, bool *had_row);
extern EnrichCacheState enrich_cache_lookup_by_id(const char *company_id,
												  Jsonb **result, bool *had_row);
extern bool enrich_answer_usable(EnrichKind kind, const EnrichOutcome *out,
								 TimestampTz fetched_at);
extern void enrich_cache_store_at(EnrichKind kind, const char *key,
								  const EnrichOutcome *out, TimestampTz fetched_at);
extern void enrich_cache_store_many(EnrichKind kind, int n, char **keys,
									EnrichOutcome **outs, TimestampTz fetched_at);
extern void enrich_cache_store_rows(EnrichKind kind, int n, char **keys,
									EnrichOutcome **outs, const TimestampTz *fetched_at);
extern bool enrich_cache_fresh(bool matched, TimestampTz fetched_at);

/* ---- cache_pending.c ---- */
extern void enrich_cache_defer(EnrichKind kind, const char *key, const EnrichOutcome *out,
							   TimestampTz fetched_at);
extern EnrichCacheState enrich_cache_pending_lookup(EnrichKind kind, const char *key,
													Jsonb **result);
extern void enrich_cache_pending_write(void);
extern void enrich_cache_pending_init(void);

/* ---- spool.c ---- */

/* The spool file of one batch call: its answers, appended as they come. */
typedef struct EnrichSpoolBatch
{
	int			fd;				/* -1 until the first answer */
	bool		written;		/* the worker's: answers not yet committed */
	bool		new_file;		/* the worker's: its name not yet fsync'd */
	char		path[MAXPGPATH];
} EnrichSpoolBatch;

extern void enrich_spool_init(void);
extern void enrich_spool_flush(int elevel);

/* ---- spool_flush.c ---- */
extern void enrich_spool_flush_init(void);
extern void enrich_spool_batch_append(EnrichSpoolBatch *b, EnrichKind kind, const char *key,
									  const EnrichOutcome *out, TimestampTz fetched_at);
extern void enrich_spool_batch_finish(EnrichSpoolBatch *b, int elevel);
extern void enrich_spool_worker_append(EnrichSpoolBatch *b, EnrichKind kind, const char *key,
									   const EnrichOutcome *out, TimestampTz fetched_at);
extern void enrich_spool_worker_sync(EnrichSpoolBatch *b);
extern void enrich_spool_worker_remove(EnrichSpoolBatch *b);
extern void enrich_spool_write(EnrichKind kind, const char *key,
							   const EnrichOutcome *out, TimestampTz fetched_at);

/* ---- spool_read.c ---- */

/* An answer found in the spool directory. */
typedef struct EnrichSpooled
{
	EnrichKind	kind;
	char	   *key;
	Oid			db;				/* the database it belongs to */
	FullTransactionId fxid;		/* the transaction that wrote it */
	bool		owner_running;	/* that transaction may still commit it */
	TimestampTz fetched_at;
	EnrichOutcome out;			/* MATCH with result, or NO_MATCH */
} EnrichSpooled;

extern bool enrich_spool_find(EnrichKind kind, const char *key, EnrichSpooled *sp);
extern int	enrich_spool_ingest_all(bool worker_files);
extern void enrich_spool_take_orphans(void);

/* ---- ledger.c ---- */
extern void enrich_ledger_record(EnrichKind kind, int n, char **keys, EnrichOutcome **outs,
								 const TimestampTz *at);
extern int	enrich_ledger_delete_before(TimestampTz before, int limit);

/* ---- queue.c ---- */

/* Changes to queue items, collected and then written in one statement. */
typedef struct EnrichQueueUpdates
{
	int			n;
	int			cap;
	Datum	   *id;
	Datum	   *status;
	Datum	   *error;
	bool	   *error_null;
	Datum	   *next;
	bool	   *next_null;
	Datum	   *delta;
} EnrichQueueUpdates;

/* A queue item claimed by the worker, with what the cache holds for it. */
typedef struct EnrichClaimed
{
	int64		id;
	char	   *key;
	char	   *idempotency_key;
	Oid			role;			/* requested_by: whose charge, or InvalidOid */
	int			attempts;		/* counting this one */
	bool		refresh;
	bool		cached;			/* a cache row exists (and refresh is off) */
	bool		matched;
	char	   *fields;			/* the fields its answer was asked for, NULL: all */
	TimestampTz fetched_at;
	Jsonb	   *result;
} EnrichClaimed;

extern void enrich_queue_wake_at_commit(void);
extern int64 enrich_queue_add(EnrichKind kind, const char *key, Oid role);
extern void enrich_require_worker(void);
extern void enrich_queue_update(EnrichQueueUpdates *u, int64 id, const char *status,
								const char *error, TimestampTz next, int attempts_delta);
extern void enrich_queue_flush(EnrichQueueUpdates *u);
extern int	enrich_queue_claim(EnrichKind kind, int limit, EnrichClaimed **items);
extern int	enrich_queue_recover(void);
extern int	enrich_queue_requeue_orphans(int n, int64 *held);
extern int	enrich_queue_delete_finished(TimestampTz before, int limit);

#endif							/* ENRICH_STORAGE_H */
