/*-------------------------------------------------------------------------
 *
 * spool.c
 *	  Paid answers written to disk until the cache row that holds them
 *	  commits: the record format, the spool files of synchronous calls,
 *	  batches and the worker, and the removal of the files whose rows have
 *	  committed.
 *
 * A synchronous call writes its answer into the cache tables inside the
 * caller's transaction.  If that transaction rolls back, errors out or is
 * cancelled, the row goes with it, but the provider has been paid.  So the
 * answer is first appended to the transaction's spool file,
 * $PGDATA/pg_enrich/sync-<db>-<pid>-<n>, before the function returns: no
 * end of the process (an error, a cancel, a terminate, a SIGKILL, a crash
 * restart) can lose it from there.  The fdatasync that makes it durable
 * against a crash of the machine itself is not on the call's path: it runs
 * while the next request is on the network (enrich_http_defer), when the
 * top-level statement or command ends (spool_flush.c), or when the
 * transaction rolls back or is prepared, whichever comes first -- one
 * durable write per answer at most, several answers in one when they come
 * faster than the disk.  At commit none is needed: the cache rows holding
 * the answers are durable, and the file goes.  Another session that uses
 * an answer of a file whose transaction is still open syncs the file first
 * (spool_read.c).  The file's name is made durable once, when the first
 * answer of the transaction creates it.  Each record is tagged with the
 * writer's transaction id.  So that the next caller finds an answer by its
 * key, the file also gets a hard link named for the key,
 * key-<kind>-<db>-<hash>: a name only, not made durable (after a crash of
 * the machine the worker's scan finds the answers in the file itself).
 * Creating a file per answer cost several times the fsync (inode
 * allocation in a directory where thousands were just removed).
 *
 *	- when the transaction commits, the file and its links are removed
 *	  (the rows are safe);
 *	- otherwise they stay, and whoever comes next takes the answers in
 *	  (spool_read.c).
 *
 * The batch functions append all their answers, one JSON line each, to one
 * file per call as they arrive, and fsync it once at the end (or when an
 * error or a cancel interrupts them): durable at the cost of one fsync per
 * batch, not per answer.  Those answers are found by the worker's scan, not
 * by key.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <math.h>
#include <unistd.h>

#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "common/file_perm.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "storage.h"
#include "spool_int.h"

/* A file this transaction wrote or took over, removed at commit. */
typedef struct SpoolEntry
{
	char		path[MAXPGPATH];
	SubTransactionId subid;
	bool		keep;			/* its subtransaction rolled back */
} SpoolEntry;

static List *pending = NIL;		/* of SpoolEntry *, in TopMemoryContext */

/*
 * This transaction's spool file of synchronous answers: opened with the
 * first answer, closed when the transaction ends.  It is not a transient
 * file of fd.c (those are closed by the transaction's end before our
 * callback runs), so it is counted with AcquireExternalFD.
 */
static int	sync_fd = -1;
static char sync_path[MAXPGPATH];
static SpoolEntry *sync_entry = NULL;	/* its entry in pending */
static int	sync_unsynced = 0;	/* answers written since its last fdatasync */

/*
 * The name by which a key's spooled answer is found: a hard link to the
 * spool file that holds it.  (Earlier builds wrote a file per answer under
 * the same name without "key-"; the worker's scan takes those in.)
 */
void
enrich_spool_key_path(EnrichKind kind, const char *key, char *path)
{
	uint64		h = hash_bytes_extended((const unsigned char *) key, strlen(key), 0);

	snprintf(path, MAXPGPATH, SPOOL_DIR "/key-%s-%u-%016llx",
			 enrich_kind_name(kind), MyDatabaseId, (unsigned long long) h);
}

/* Creates the spool directory if needed. */
static void
spool_ensure_dir(void)
{
	if (MakePGDirectory(SPOOL_DIR) < 0 && errno != EEXIST)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create directory \"%s\": %m", SPOOL_DIR)));
}

/* Remembers a file to remove when this transaction commits. */
SpoolEntry *
enrich_spool_remember(const char *path)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	SpoolEntry *e = palloc0(sizeof(SpoolEntry));

	strlcpy(e->path, path, MAXPGPATH);
	e->subid = GetCurrentSubTransactionId();
	pending = lappend(pending, e);
	MemoryContextSwitchTo(old);
	return e;
}

/* Closes this transaction's spool file of synchronous answers, if open. */
static void
spool_sync_close(void)
{
	if (sync_fd >= 0)
	{
		close(sync_fd);
		ReleaseExternalFD();
	}
	sync_fd = -1;
	sync_entry = NULL;
	sync_unsynced = 0;
}

/*
 * Makes this transaction's synchronous answers durable, if any was written
 * since the last time.  Problems are reported at `elevel` (WARNING from a
 * callback that must not fail); the answers then stay to be synced again.
 */
void
enrich_spool_flush(int elevel)
{
	if (sync_fd < 0 || sync_unsynced == 0)
		return;
	if (pg_fdatasync(sync_fd) != 0)
	{
		ereport(elevel,
				(errcode_for_file_access(),
				 errmsg("could not fsync file \"%s\": %m", sync_path)));
		return;
	}
	ereport(DEBUG2,
			(errmsg_internal("enrich: %d synchronous answer(s) made durable", sync_unsynced)));
	sync_unsynced = 0;
}

/* The deferred fdatasync, run by the next wait on the network. */
static void
spool_flush_deferred(void)
{
	enrich_spool_flush(ERROR);
}

/*
 * Appends the JSON record of one answer, with a newline, to buf.  fxid is
 * the transaction that will commit the answer (invalid for the worker's).
 */
static void
spool_record(StringInfo buf, FullTransactionId fxid, EnrichKind kind,
			 const char *key, const EnrichOutcome *out, TimestampTz fetched_at)
{
	appendStringInfo(buf, "{\"v\": 1, \"db\": %u, \"xid\": \"" UINT64_FORMAT "\", \"kind\": \"%s\", \"key\": ",
					 MyDatabaseId, U64FromFullTransactionId(fxid), enrich_kind_name(kind));
	escape_json(buf, key);
	appendStringInfo(buf, ", \"fetched_at\": \"" INT64_FORMAT "\"", fetched_at);
	if (out->source)
	{
		appendStringInfoString(buf, ", \"source\": ");
		escape_json(buf, out->source);
	}
	if (out->request_id)
	{
		appendStringInfoString(buf, ", \"request_id\": ");
		escape_json(buf, out->request_id);
	}
	if (out->charge[0])
		appendStringInfo(buf, ", \"charge\": \"%s\", \"role\": %u, \"path\": \"%c\"",
						 out->charge, out->charge_role, out->charge_path);
	if (!isnan(out->confidence))
		appendStringInfo(buf, ", \"confidence\": %.17g", out->confidence);
	if (out->fields)
	{
		appendStringInfoString(buf, ", \"fields\": ");
		escape_json(buf, out->fields);
	}
	if (out->fields_updated)
	{
		appendStringInfoString(buf, ", \"fields_updated\": ");
		(void) JsonbToCString(buf, &out->fields_updated->root, VARSIZE(out->fields_updated));
	}
	appendStringInfoString(buf, ", \"result\": ");
	if (out->kind == OUTCOME_MATCH)
		(void) JsonbToCString(buf, &out->result->root, VARSIZE(out->result));
	else
		appendStringInfoString(buf, "null");
	appendStringInfoString(buf, "}\n");
}

/* Writes all of buf to fd, raising an error (after closing) if it cannot. */
static void
spool_write_all(int fd, const char *path, StringInfo buf)
{
	errno = 0;
	if (write(fd, buf->data, buf->len) != buf->len)
	{
		int			save = errno ? errno : ENOSPC;

		CloseTransientFile(fd);
		errno = save;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", path)));
	}
}

/*
 * Writes an answer (or a "no match") before anyone can lose it.  Called as
 * soon as the answer is parsed, before the cache row is written, with the
 * key's lock held: appends it to this transaction's spool file, leaves its
 * fdatasync to the next wait on the network (or the statement's end), and
 * links the file under the key's name for the next caller.
 */
void
enrich_spool_write(EnrichKind kind, const char *key, const EnrichOutcome *out,
				   TimestampTz fetched_at)
{
	static uint32 counter = 0;
	StringInfoData buf;
	char		link_path[MAXPGPATH];

	initStringInfo(&buf);
	spool_record(&buf, GetTopFullTransactionId(), kind, key, out, fetched_at);
	if (sync_fd < 0)
	{
		spool_ensure_dir();
		if (!AcquireExternalFD())
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("no file descriptor left for \"%s\"", SPOOL_DIR)));
		/* a file left by a dead process that had our pid is not ours */
		do
		{
			snprintf(sync_path, MAXPGPATH, SPOOL_DIR "/sync-%u-%d-%u",
					 MyDatabaseId, MyProcPid, ++counter);
			sync_fd = open(sync_path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | PG_BINARY,
						   pg_file_create_mode);
		} while (sync_fd < 0 && errno == EEXIST);
		if (sync_fd < 0)
		{
			ReleaseExternalFD();
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create file \"%s\": %m", sync_path)));
		}
		sync_entry = enrich_spool_remember(sync_path);
		/* the file's name is durable once, before its first answer */
		fsync_fname_ext(SPOOL_DIR, true, false, ERROR);
	}
	errno = 0;
	if (write(sync_fd, buf.data, buf.len) != buf.len)
	{
		if (errno == 0)
			errno = ENOSPC;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", sync_path)));
	}
	sync_unsynced++;
	enrich_http_defer(spool_flush_deferred);
	pfree(buf.data);

	/*
	 * The key's name, for the next caller.  One left by an earlier
	 * transaction (its answer was stale, or we would not have paid) goes.
	 */
	enrich_spool_key_path(kind, key, link_path);
	if (link(sync_path, link_path) != 0 &&
		(errno != EEXIST || unlink(link_path) != 0 || link(sync_path, link_path) != 0))
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not link file \"%s\" to \"%s\": %m", sync_path, link_path)));
	enrich_spool_remember(link_path);
}

/*
 * Appends an answer to the batch's spool file, created on the first one.
 * Not yet durable: enrich_spool_batch_finish makes it so.
 */
void
enrich_spool_batch_append(EnrichSpoolBatch *b, EnrichKind kind, const char *key,
						  const EnrichOutcome *out, TimestampTz fetched_at)
{
	static uint32 counter = 0;
	StringInfoData buf;

	if (b->fd < 0)
	{
		spool_ensure_dir();
		/* a file left by a dead process that had our pid is not ours */
		do
		{
			snprintf(b->path, MAXPGPATH, SPOOL_DIR "/batch-%u-%d-%u",
					 MyDatabaseId, MyProcPid, ++counter);
			b->fd = OpenTransientFile(b->path, O_WRONLY | O_CREAT | O_EXCL | PG_BINARY);
		} while (b->fd < 0 && errno == EEXIST);
		if (b->fd < 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create file \"%s\": %m", b->path)));
		enrich_spool_remember(b->path);
	}
	initStringInfo(&buf);
	spool_record(&buf, GetTopFullTransactionId(), kind, key, out, fetched_at);
	spool_write_all(b->fd, b->path, &buf);
	pfree(buf.data);
}

/*
 * Makes the batch's answers durable (fsync of the file and the directory)
 * and closes the file.  Problems are reported at `elevel`: ERROR normally,
 * WARNING while another error is on its way out.
 */
void
enrich_spool_batch_finish(EnrichSpoolBatch *b, int elevel)
{
	int			fd = b->fd;

	if (fd < 0)
		return;
	b->fd = -1;
	if (pg_fsync(fd) != 0)
		ereport(elevel,
				(errcode_for_file_access(),
				 errmsg("could not fsync file \"%s\": %m", b->path)));
	if (CloseTransientFile(fd) != 0)
		ereport(elevel,
				(errcode_for_file_access(),
				 errmsg("could not close file \"%s\": %m", b->path)));
	fsync_fname_ext(SPOOL_DIR, true, false, elevel);
}

/*
 * The worker's spool: one file for the worker's lifetime, named by its pid
 * and start time.  Answers are appended as they arrive (outside any
 * transaction), made durable before the transaction that writes them
 * commits, and the file is emptied after that commit.  A file left by a
 * worker that died is taken in by the next one, so that no answer is
 * bought again after a crash (Slintel charges every repeat).  The file is
 * not tied to a transaction, so it is opened directly and counted with
 * AcquireExternalFD.
 */
void
enrich_spool_worker_append(EnrichSpoolBatch *b, EnrichKind kind, const char *key,
						   const EnrichOutcome *out, TimestampTz fetched_at)
{
	StringInfoData buf;

	if (b->fd < 0)
	{
		spool_ensure_dir();
		snprintf(b->path, MAXPGPATH, SPOOL_DIR "/worker-%d-" INT64_FORMAT,
				 MyProcPid, (int64) MyStartTimestamp);
		if (!AcquireExternalFD())
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("no file descriptor left for \"%s\"", b->path)));
		b->fd = open(b->path, O_WRONLY | O_CREAT | O_APPEND | PG_BINARY, pg_file_create_mode);
		if (b->fd < 0)
		{
			ReleaseExternalFD();
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create file \"%s\": %m", b->path)));
		}
		b->new_file = true;
	}
	initStringInfo(&buf);
	spool_record(&buf, InvalidFullTransactionId, kind, key, out, fetched_at);
	errno = 0;
	if (write(b->fd, buf.data, buf.len) != buf.len)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", b->path)));
	pfree(buf.data);
	b->written = true;
}

/* Makes the worker's spooled answers durable. */
void
enrich_spool_worker_sync(EnrichSpoolBatch *b)
{
	if (!b->written)
		return;
	if (pg_fdatasync(b->fd) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not fsync file \"%s\": %m", b->path)));
	/* the file's name is durable once */
	if (b->new_file)
	{
		fsync_fname_ext(SPOOL_DIR, true, false, ERROR);
		b->new_file = false;
	}
}

/*
 * Empties the worker's spool once its answers have committed.  If the
 * emptying is lost to a crash, the next worker takes the answers in again,
 * which changes nothing (the cache keeps the newer of two answers).
 */
void
enrich_spool_worker_remove(EnrichSpoolBatch *b)
{
	if (!b->written)
		return;
	if (ftruncate(b->fd, 0) != 0)
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not truncate file \"%s\": %m", b->path)));
	b->written = false;
}

/* Removes the files whose rows have committed; keeps the rest. */
static void
spool_xact_callback(XactEvent event, void *arg)
{
	ListCell   *lc;

	if (pending == NIL)
		return;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			/*
			 * The rows are durable (under synchronous_commit = off, once
			 * the commit is flushed, which is done here): the files are
			 * not needed any more, nor their fdatasync.
			 */
			if (!RecoveryInProgress())
				XLogFlush(XactLastCommitEnd);
			sync_unsynced = 0;
			spool_sync_close();
			foreach(lc, pending)
			{
				SpoolEntry *e = (SpoolEntry *) lfirst(lc);

				if (!e->keep && unlink(e->path) != 0 && errno != ENOENT)
					ereport(WARNING,
							(errcode_for_file_access(),
							 errmsg("could not remove file \"%s\": %m", e->path)));
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* the files stay for the worker or the next caller */
			enrich_spool_flush(WARNING);
			spool_sync_close();
			enrich_wake_worker();
			break;
		default:
			return;
	}
	list_free_deep(pending);
	pending = NIL;
}

/* Follows subtransactions: a rolled-back one's files must stay. */
static void
spool_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	/*
	 * The synchronous answers of a subtransaction that rolls back are in
	 * the transaction's one file: it stays, whatever its own entry says
	 * (answers that do commit are taken in again, which changes nothing).
	 */
	if (event == SUBXACT_EVENT_ABORT_SUB && sync_entry != NULL)
		sync_entry->keep = true;
	foreach(lc, pending)
	{
		SpoolEntry *e = (SpoolEntry *) lfirst(lc);

		if (e->subid != mySubid)
			continue;
		if (event == SUBXACT_EVENT_COMMIT_SUB)
			e->subid = parentSubid;
		else if (event == SUBXACT_EVENT_ABORT_SUB)
			e->keep = true;
	}
}

/* Registers the transaction callbacks; called from _PG_init. */
void
enrich_spool_init(void)
{
	RegisterXactCallback(spool_xact_callback, NULL);
	RegisterSubXactCallback(spool_subxact_callback, NULL);
}
