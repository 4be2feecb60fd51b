/*-------------------------------------------------------------------------
 *
 * worker_house.c
 *	  The worker's housekeeping: the version check, recovery of in-flight
 *	  items, waiting_credits parking (per role when roles have budgets of
 *	  their own), and the queue pass (orphans and retention).
 *
 * Housekeeping runs inside a turn's transaction, once a second or when
 * woken.  When the worker starts, in_flight items are queued again; a
 * LeadLex retry reuses the item's Idempotency-Key, so it is not charged
 * twice.  Every 10 seconds the queue pass queues again the items in flight
 * that no slot holds (a restored dump brings them back so) and deletes
 * finished items older than enrich.queue_retention, and ledger rows older
 * than enrich.ledger_retention, in short transactions of its own.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "entry.h"
#include "worker.h"

/* How often the queue pass requeues orphans and deletes old finished items ... */
#define QUEUE_PASS_MS 10000
/* ... how many per transaction, and for how long at most in one go. */
#define RETENTION_BATCH 1000
#define RETENTION_SLICE_MS 50
/* With more to delete, the next slice comes this much later. */
#define QUEUE_PASS_AGAIN_MS 100
/* The worker analyzes the queue after a slow turn at most this often. */
#define ANALYZE_EVERY_MS 10000

/* ---- housekeeping ---- */

/*
 * Whether the extension is installed in our database at the library's
 * version (inside a transaction).  Says once in the log why not; when it
 * is not installed at all, sets no_extension (the worker then leaves).
 */
static bool
extension_installed(void)
{
	static char said[64] = "";
	const char *why;
	char	   *version = NULL;

	if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'enrich'",
					true, 1) == SPI_OK_SELECT && SPI_processed == 1)
		version = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (version != NULL && strcmp(version, ENRICH_VERSION) == 0)
	{
		said[0] = '\0';
		return true;
	}
	enrich_worker.no_extension = version == NULL;
	why = version ? version : "none";
	if (version != NULL && strcmp(said, why) != 0)
	{
		ereport(WARNING,
				(errmsg("enrich worker waits: extension enrich is at version %s, the library at %s",
						version, ENRICH_VERSION),
				 errhint("Run ALTER EXTENSION enrich UPDATE in database \"%s\".",
						 enrich_worker.dbname)));
		strlcpy(said, why, sizeof(said));
	}
	return false;
}

/*
 * Parks the queued items of a provider as waiting_credits, with the reason
 * as their last_error (as when a claimed item finds the budget spent): all
 * of them, or (roles not NULL) those requested by these roles.
 */
static void
park(EnrichKind kind, Oid *roles, int n, const char *why)
{
	Oid			types[3] = {TEXTOID, OIDARRAYOID, TEXTOID};
	Datum		values[3];
	char		nulls[3] = {' ', roles ? ' ' : 'n', ' '};
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = ObjectIdGetDatum(roles[i]);
	values[0] = CStringGetTextDatum(enrich_kind_name(kind));
	values[1] = roles ? enrich_make_array(d, NULL, n, OIDOID) : (Datum) 0;
	values[2] = CStringGetTextDatum(why);
	if (SPI_execute_with_args("UPDATE enrich.queue SET status = 'waiting_credits', last_error = $3, "
							  "updated_at = pg_catalog.now() "
							  "WHERE status OPERATOR(pg_catalog.=) 'queued' AND kind OPERATOR(pg_catalog.=) $1 "
							  "  AND ($2 IS NULL OR requested_by::pg_catalog.oid OPERATOR(pg_catalog.=) ANY ($2))",
							  3, types, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not park queue items");
}

/*
 * Queues again up to `limit` items of a provider waiting for credits, the
 * oldest first: all of them, or (roles not NULL) those requested by these
 * roles, and with_null those requested by nobody.  Returns how many.
 */
static int64
resume(EnrichKind kind, Oid *roles, int n, bool with_null, int64 limit)
{
	Oid			types[4] = {TEXTOID, INT8OID, OIDARRAYOID, BOOLOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', roles ? ' ' : 'n', ' '};
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	if (limit <= 0)
		return 0;
	for (int i = 0; i < n; i++)
		d[i] = ObjectIdGetDatum(roles[i]);
	values[0] = CStringGetTextDatum(enrich_kind_name(kind));
	values[1] = Int64GetDatum(Min(limit, PG_INT64_MAX / 2));
	values[2] = roles ? enrich_make_array(d, NULL, n, OIDOID) : (Datum) 0;
	values[3] = BoolGetDatum(with_null);
	/* picked once, as the claim does (queue.c): a rescan would pick more */
	if (SPI_execute_with_args("WITH picked AS MATERIALIZED (SELECT id FROM enrich.queue "
							  "  WHERE status OPERATOR(pg_catalog.=) 'waiting_credits' AND kind OPERATOR(pg_catalog.=) $1 "
							  "    AND ($3 IS NULL OR requested_by::pg_catalog.oid OPERATOR(pg_catalog.=) ANY ($3) "
							  "         OR ($4 AND requested_by IS NULL)) "
							  "  ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) "
							  "UPDATE enrich.queue q SET status = 'queued', next_attempt_at = pg_catalog.now(), "
							  "updated_at = pg_catalog.now() "
							  "FROM picked p WHERE q.id OPERATOR(pg_catalog.=) p.id",
							  4, types, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not resume queue items");
	if (SPI_processed > 0)
		enrich_worker.more_due[kind] = true;
	return (int64) SPI_processed;
}

/*
 * With role budgets for the provider: parks the queued items of the roles
 * whose budget is spent, and resumes waiting items of the others, no more
 * of a budget's roles than it has left, no more in all than `avail`.
 * Looks at the roles of the items waiting, so only when roles have
 * budgets for the provider; and at the roles of the queued items (all of
 * them: no index has them by role) only while a role's budget is spent.
 * Otherwise a queued item whose role turns out to be over its budget is
 * parked when it is claimed.
 */
static void
balance_roles(EnrichKind kind, int64 avail, bool any_spent)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(enrich_kind_name(kind))};
	Oid		   *roles;
	int		   *entry;
	int64	   *left;
	Oid		   *of;
	int			n;
	int			m = 0;

	if (SPI_execute_with_args(any_spent ?
							  "SELECT DISTINCT requested_by::pg_catalog.oid FROM enrich.queue "
							  "WHERE status OPERATOR(pg_catalog.=) ANY ('{queued,waiting_credits}') "
							  "  AND kind OPERATOR(pg_catalog.=) $1 AND requested_by IS NOT NULL" :
							  "SELECT DISTINCT requested_by::pg_catalog.oid FROM enrich.queue "
							  "WHERE status OPERATOR(pg_catalog.=) 'waiting_credits' "
							  "  AND kind OPERATOR(pg_catalog.=) $1 AND requested_by IS NOT NULL",
							  1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the roles of queue items");
	n = (int) SPI_processed;
	roles = palloc(sizeof(Oid) * Max(n, 1));
	entry = palloc(sizeof(int) * Max(n, 1));
	left = palloc(sizeof(int64) * Max(n, 1));
	of = palloc(sizeof(Oid) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		roles[i] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	}
	for (int i = 0; i < n; i++)
	{
		NameData	limited;

		left[i] = enrich_credit_role_available(kind, roles[i], &entry[i], &limited);
		/* each role's items, with the name of the budget that is spent */
		if (left[i] == 0)
			park(kind, &roles[i], 1,
				 psprintf("the credit budget of role \"%s\" for %s is spent",
						  NameStr(limited), enrich_provider_name(kind)));
	}
	/* the roles without a budget, and items of nobody */
	m = 0;
	for (int i = 0; i < n; i++)
		if (entry[i] < 0)
			of[m++] = roles[i];
	avail -= resume(kind, of, m, true, avail);
	/* each budget's roles, up to what it has left */
	for (int i = 0; i < n; i++)
	{
		if (entry[i] < 0 || left[i] == 0)
			continue;
		m = 0;
		for (int j = i; j < n; j++)
			if (entry[j] == entry[i] && left[j] != 0)
			{
				of[m++] = roles[j];
				if (j > i)
					left[j] = 0;	/* done with this budget */
			}
		avail -= resume(kind, of, m, false, Min(left[i], avail));
	}
}

/*
 * Parks queued work of a provider whose budget is spent (or that answered
 * 402) as waiting_credits, and resumes parked work when credits are
 * there; with role budgets, per role (balance_roles).
 */
static void
balance_credits(EnrichKind kind)
{
	TimestampTz until;
	EnrichPause pause = enrich_paused(kind, &until);
	int64		avail = enrich_credit_available(kind);
	int			spent;

	if (avail == 0 || (pause == PAUSE_CREDITS && until > GetCurrentTimestamp()))
	{
		park(kind, NULL, 0, avail == 0 ?
			 psprintf("the credit budget for %s is spent", enrich_provider_name(kind)) :
			 psprintf("%s has no credits left", enrich_provider_name(kind)));
		return;
	}
	/* a credit pause that has run out lets one probe through */
	if (pause == PAUSE_CREDITS)
		avail = 1;
	if (enrich_role_budgets_count(kind, &spent) == 0)
		(void) resume(kind, NULL, 0, true, avail);
	else
		balance_roles(kind, avail, spent > 0);
}

/* Once a second, or when woken: version check, recovery, spool, budgets. */
void
enrich_worker_housekeeping(void)
{
	int			n;

	enrich_worker.ready = extension_installed();
	if (!enrich_worker.ready)
		return;
	if (!enrich_worker.recovered)
	{
		n = enrich_queue_recover();
		if (n > 0)
			ereport(LOG,
					(errmsg("enrich worker queued %d interrupted request(s) again", n)));
		enrich_worker.recovered = true;
	}
	n = enrich_spool_ingest_all(true);
	if (n > 0)
		ereport(DEBUG1, (errmsg("enrich worker took in %d spooled answer(s)", n)));
	enrich_limits_load();
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		balance_credits((EnrichKind) k);
	enrich_worker.inbox_busy = true;
	for (int k = 0; k < ENRICH_NUM_KINDS; k++)
		enrich_worker.more_due[k] = true;
}

/* ---- the queue pass: orphans and retention ---- */

/*
 * Every QUEUE_PASS_MS: queues again the items in flight that this worker
 * does not hold (a restored dump brings them back in flight), and deletes
 * finished items older than enrich.queue_retention, RETENTION_BATCH in a
 * transaction, for at most RETENTION_SLICE_MS; with more to delete it
 * comes back after QUEUE_PASS_AGAIN_MS, between turns, so that requests go
 * on meanwhile and no lock is held long.  Unfinished items and the cache
 * are never touched.
 */
void
enrich_worker_queue_pass(void)
{
	TimestampTz start = GetCurrentTimestamp();
	int64	   *held = palloc(sizeof(int64) * (enrich_worker.nslots + enrich_worker.nleft + 1));
	int			nheld = 0;
	volatile bool more = false;
	volatile int deleted = 0;

	for (int i = 0; i < enrich_worker.nslots; i++)
		if (enrich_worker.slots[i]->used)
			held[nheld++] = enrich_worker.slots[i]->job.queue_id;
	for (int i = 0; i < enrich_worker.nleft; i++)
		held[nheld++] = enrich_worker.left_ids[i];
	PG_TRY();
	{
		int			n;

		enrich_worker_tx_begin(false);
		n = enrich_queue_requeue_orphans(nheld, held);
		enrich_worker_tx_commit();
		if (n > 0)
			ereport(LOG,
					(errmsg("enrich worker queued %d item(s) found in flight again", n),
					 errdetail("No request of this worker was in flight for them (a restored dump brings items back so).")));
		while (enrich_queue_retention >= 0)
		{
			CHECK_FOR_INTERRUPTS();
			enrich_worker_tx_begin(false);
			n = enrich_queue_delete_finished(start - (TimestampTz) enrich_queue_retention * USECS_PER_SEC,
											 RETENTION_BATCH);
			enrich_worker_tx_commit();
			deleted += n;
			if (n < RETENTION_BATCH)
				break;
			if (GetCurrentTimestamp() >= TimestampTzPlusMilliseconds(start, RETENTION_SLICE_MS))
			{
				more = true;
				break;
			}
		}
		/* the ledger's rows older than enrich.ledger_retention, the same way */
		while (!more && enrich_ledger_retention >= 0)
		{
			CHECK_FOR_INTERRUPTS();
			enrich_worker_tx_begin(false);
			n = enrich_ledger_delete_before(start - (TimestampTz) enrich_ledger_retention * USECS_PER_SEC,
											RETENTION_BATCH);
			enrich_worker_tx_commit();
			if (n < RETENTION_BATCH)
				break;
			if (GetCurrentTimestamp() >= TimestampTzPlusMilliseconds(start, RETENTION_SLICE_MS))
				more = true;
		}
	}
	PG_CATCH();
	{
		(void) enrich_worker_tx_recover();
	}
	PG_END_TRY();
	pfree(held);
	if (deleted > 0)
		ereport(DEBUG1,
				(errmsg("enrich worker deleted %d finished queue item(s)", deleted)));
	enrich_worker.next_queue_pass = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												 more ? QUEUE_PASS_AGAIN_MS : QUEUE_PASS_MS);
}

/* ---- statistics and plans ---- */

/*
 * After a slow turn (SLOW_TURN_MS): the planner may be working from
 * statistics the queue has left far behind.  An ANALYZE by autovacuum in
 * the middle of a bulk enqueue records the new pages with no rows in them,
 * and until its next ANALYZE, a minute or more later, every plan takes the
 * queue for empty and each claim scans it whole: 100,000 items then drain
 * at a sixth of the speed.  A statement prepared while the queue was empty
 * keeps that plan as well.  So the worker analyzes the queue and the cache
 * tables itself, at most every ANALYZE_EVERY_MS, and prepares every
 * statement anew (owner.c).
 */
void
enrich_worker_after_slow_turn(void)
{
	static TimestampTz last = 0;
	TimestampTz now = GetCurrentTimestamp();

	enrich_forget_plans();
	if (!enrich_worker.ready ||
		!TimestampDifferenceExceeds(last, now, ANALYZE_EVERY_MS))
		return;
	last = now;
	PG_TRY();
	{
		enrich_worker_tx_begin(false);
		if (SPI_execute("ANALYZE enrich.queue, enrich.companies, enrich.leads", false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not analyze the queue");
		enrich_worker_tx_commit();
	}
	PG_CATCH();
	{
		(void) enrich_worker_tx_recover();
	}
	PG_END_TRY();
	ereport(DEBUG1,
			(errmsg("enrich worker analyzed the queue after a slow turn")));
}
