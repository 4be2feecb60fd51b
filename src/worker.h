/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  Declarations private to the background worker's files: its request
 *	  slots, the state they share, and the functions one of them calls in
 *	  another.  Included only by worker.c, worker_turn.c, worker_write.c
 *	  and worker_house.c.
 *
 * The worker is one process: this state is its own, never shared memory.
 *
 * IDENTIFICATION
 *	  src/worker.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENRICH_WORKER_H
#define ENRICH_WORKER_H

#include "entry.h"

/* Answers wait at most this long to be written together with others. */
#define WRITE_DELAY_MS 20
/* A turn slower than this prepares its statements anew the next time. */
#define SLOW_TURN_MS 100

/* One request slot: a claimed queue item and its job. */
typedef struct Slot
{
	bool		used;			/* holds a claimed item */
	bool		done;			/* finished or handed back: awaits write-back */
	bool		fresh;			/* claimed in the transaction now open */
	MemoryContext cxt;			/* the job's strings and answer */
	EnrichJob	job;
} Slot;

/* What the worker's files share (defined in worker.c). */
typedef struct EnrichWorkerState
{
	Slot	  **slots;			/* each slot stays put: curl points into it */
	int			nslots;
	bool		ready;			/* the extension is there at our version */
	bool		no_extension;	/* it is not there at all: the worker leaves */
	char	   *dbname;			/* our database's name, for messages */
	bool		recovered;		/* in_flight items of a former run requeued */
	bool		more_due[ENRICH_NUM_KINDS];	/* the last claim filled its quota */
	TimestampTz claim_at;		/* a provider's quota grows then by itself */
	TimestampTz first_done_at;	/* the oldest answer not written yet */
	bool		inbox_busy;		/* the last look at the inbox found keys */
	MemoryContext cxt;			/* the worker's memory */
	EnrichSpoolBatch spool;		/* answers not yet committed */
	TimestampTz next_queue_pass;	/* when the queue pass is due */
	int64	   *left_ids;		/* items write_alone had to leave in flight */
	int			nleft;
} EnrichWorkerState;

extern EnrichWorkerState enrich_worker;
extern MemoryContext enrich_worker_turn_cxt;

/* ---- worker.c ---- */
extern void enrich_worker_tx_begin(bool durable);
extern void enrich_worker_after_slow_turn(void);
extern void enrich_worker_tx_commit(void);
extern char *enrich_worker_tx_recover(void);

/* ---- worker_turn.c ---- */
extern void enrich_worker_release_slot(Slot *s);
extern void enrich_worker_drop_slots(bool all);
extern void enrich_worker_claim_all(void);
extern bool enrich_worker_claim_urgent(void);
extern void enrich_worker_start_due(void);
extern bool enrich_worker_has_work(void);
extern int	enrich_worker_collect(void);

/* ---- worker_write.c ---- */
extern bool enrich_worker_write_due(int ndone, TimestampTz now);
extern void enrich_worker_write_back(Slot *only);
extern void enrich_worker_release_written(Slot *only);
extern void enrich_worker_write_each(void);

/* ---- worker_house.c ---- */
extern void enrich_worker_housekeeping(void);
extern void enrich_worker_queue_pass(void);

#endif							/* ENRICH_WORKER_H */
