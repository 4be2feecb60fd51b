/*-------------------------------------------------------------------------
 *
 * spool.c
 *	  Paid answers kept on disk until the cache row that holds them commits.
 *
 * A synchronous call writes its answer into the cache tables inside the
 * caller's transaction.  If that transaction rolls back, errors out or is
 * cancelled, the row goes with it, but the provider has been paid.  So the
 * answer is first appended to the transaction's spool file,
 * $PGDATA/pg_enrich/sync-<db>-<pid>-<n>, and fdatasync'd: one durable
 * write per answer (the file's name is made durable once, when the first
 * answer of the transaction creates it).  Each record is tagged with the
 * writer's transaction id.  So that the next caller finds an answer by its
 * key, the file also gets a hard link named for the key,
 * key-<kind>-<db>-<hash>: a name only, not made durable (after a crash of
 * the machine the worker's scan finds the answers in the file itself).
 * Creating a file per answer cost several times the fsync (inode
 * allocation in a directory where thousands were just removed).
 *
 *	- when the transaction commits, the file and its links are removed
 *	  (the rows are safe);
 *	- otherwise they stay, and whoever comes next takes the answers in:
 *	  the worker (which scans the directory), or the next call for the same
 *	  key, which looks here before paying again.
 *
 * The batch functions append all their answers, one JSON line each, to one
 * file per call as they arrive, and fsync it once at the end (or when an
 * error or a cancel interrupts them): durable at the cost of one fsync per
 * batch, not per answer.  Those answers are found by the worker's scan, not
 * by key.
 *
 * A file whose transaction is still running is an answer another session
 * has just fetched: a second caller may return it, but must not write it,
 * so two sessions asking for one key make one request without waiting for
 * each other's commit.  Taking a file in is idempotent: the cache row is
 * only replaced by a newer answer.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/transam.h"
#include "access/xact.h"
#include "common/file_perm.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "enrich.h"

#define SPOOL_DIR "pg_enrich"

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

/*
 * The name by which a key's spooled answer is found: a hard link to the
 * spool file that holds it.  (Earlier builds wrote a file per answer under
 * the same name without "key-"; the worker's scan takes those in.)
 */
static void
spool_key_path(EnrichKind kind, const char *key, char *path)
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
static SpoolEntry *
spool_remember(const char *path)
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
 * Writes an answer (or a "no match") durably before anyone can lose it.
 * Called as soon as the answer is parsed, before the cache row is written,
 * with the key's lock held: appends it to this transaction's spool file
 * and fdatasyncs that (one durable write), then links the file under the
 * key's name for the next caller.
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
		snprintf(sync_path, MAXPGPATH, SPOOL_DIR "/sync-%u-%d-%u",
				 MyDatabaseId, MyProcPid, ++counter);
		if (!AcquireExternalFD())
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("no file descriptor left for \"%s\"", sync_path)));
		sync_fd = open(sync_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | PG_BINARY,
					   pg_file_create_mode);
		if (sync_fd < 0)
		{
			ReleaseExternalFD();
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create file \"%s\": %m", sync_path)));
		}
		sync_entry = spool_remember(sync_path);
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
	if (pg_fdatasync(sync_fd) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not fsync file \"%s\": %m", sync_path)));
	pfree(buf.data);

	/*
	 * The key's name, for the next caller.  One left by an earlier
	 * transaction (its answer was stale, or we would not have paid) goes.
	 */
	spool_key_path(kind, key, link_path);
	if (link(sync_path, link_path) != 0 &&
		(errno != EEXIST || unlink(link_path) != 0 || link(sync_path, link_path) != 0))
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not link file \"%s\" to \"%s\": %m", sync_path, link_path)));
	spool_remember(link_path);
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
		snprintf(b->path, MAXPGPATH, SPOOL_DIR "/batch-%u-%d-%u", MyDatabaseId, MyProcPid, ++counter);
		b->fd = OpenTransientFile(b->path, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
		if (b->fd < 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create file \"%s\": %m", b->path)));
		spool_remember(b->path);
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

/* Reads a whole spool file; NULL if it does not exist. */
static char *
spool_read_file(const char *path, size_t *len)
{
	int			fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	struct stat st;
	char	   *data;

	if (fd < 0)
	{
		if (errno == ENOENT)
			return NULL;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", path)));
	}
	if (fstat(fd, &st) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not stat file \"%s\": %m", path)));
	data = palloc_extended(st.st_size + 1, MCXT_ALLOC_HUGE);
	if (read(fd, data, st.st_size) != st.st_size)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read file \"%s\": %m", path)));
	CloseTransientFile(fd);
	data[st.st_size] = '\0';
	*len = st.st_size;
	return data;
}

/*
 * Parses a spool file into an outcome.  Returns false for a damaged file
 * (which is then left alone and logged) or one for another key.
 */
static bool
spool_parse(const char *path, const char *data, size_t len, EnrichSpooled *sp)
{
	const char *why;
	Jsonb	   *jb = enrich_parse_json(data, len, &why);
	char	   *s;
	Jsonb	   *res;

	memset(sp, 0, sizeof(EnrichSpooled));
	sp->out.confidence = NAN;
	sp->out.credits_remaining = -1;
	if (jb == NULL || (s = enrich_jsonb_get_text(jb, "xid")) == NULL)
	{
		ereport(WARNING,
				(errmsg("ignoring damaged enrich spool file \"%s\"", path)));
		return false;
	}
	sp->fxid = FullTransactionIdFromU64(strtou64(s, NULL, 10));
	/* files of earlier builds name no database: the worker takes them */
	s = enrich_jsonb_get_text(jb, "db");
	sp->db = s ? (Oid) strtoul(s, NULL, 10) : InvalidOid;
	s = enrich_jsonb_get_text(jb, "kind");
	if (s == NULL || !enrich_kind_from_name(s, &sp->kind))
		return false;
	sp->key = enrich_jsonb_get_text(jb, "key");
	s = enrich_jsonb_get_text(jb, "fetched_at");
	if (sp->key == NULL || s == NULL)
		return false;
	sp->fetched_at = (TimestampTz) strtoi64(s, NULL, 10);
	sp->out.source = enrich_jsonb_get_text(jb, "source");
	sp->out.request_id = enrich_jsonb_get_text(jb, "request_id");
	if ((s = enrich_jsonb_get_text(jb, "confidence")) != NULL)
		sp->out.confidence = strtod(s, NULL);
	sp->out.fields = enrich_jsonb_get_text(jb, "fields");
	sp->out.fields_updated = enrich_jsonb_get(jb, "fields_updated");
	res = enrich_jsonb_get(jb, "result");
	if (res != NULL && JB_ROOT_IS_OBJECT(res) && !JB_ROOT_IS_SCALAR(res))
	{
		sp->out.kind = OUTCOME_MATCH;
		sp->out.result = res;
	}
	else
		sp->out.kind = OUTCOME_NO_MATCH;
	return true;
}

/*
 * Whether the transaction that wrote a spool file may still commit it.
 *
 * A transaction id at or past the next one to be assigned belongs to a
 * server life that ended in a crash or an immediate shutdown before any
 * WAL record of that transaction was flushed: the counter went back after
 * recovery.  Its writer is dead, but TransactionIdIsInProgress() would
 * call it running (it follows latestCompletedXid) until the counter passed
 * it again, keeping the answer out of the cache for as long.
 */
static bool
spool_owner_running(FullTransactionId fxid)
{
	TransactionId xid = XidFromFullTransactionId(fxid);

	/* the worker's files carry no transaction: their writer has died */
	if (!FullTransactionIdIsValid(fxid) || TransactionIdIsCurrentTransactionId(xid))
		return false;
	if (FullTransactionIdFollowsOrEquals(fxid, ReadNextFullTransactionId()))
		return false;
	return TransactionIdIsInProgress(xid);
}

/*
 * Looks for a spooled answer to a key.  Returns false if there is none.
 * Otherwise fills *sp; sp->owner_running says another transaction that
 * may still commit it wrote it (return it, but do not write it).  When
 * the answer can be taken over, the file is registered to be removed at
 * this transaction's commit: the caller must write the cache row.
 */
bool
enrich_spool_find(EnrichKind kind, const char *key, EnrichSpooled *sp)
{
	char		path[MAXPGPATH];
	size_t		len;
	char	   *data;
	char	   *line;
	char	   *end;
	bool		found = false;

	spool_key_path(kind, key, path);
	data = spool_read_file(path, &len);
	if (data == NULL)
		return false;
	/* the file holds its transaction's answers, one a line: the last for this key */
	line = data;
	end = data + len;
	while (line < end)
	{
		char	   *nl = memchr(line, '\n', end - line);
		size_t		llen = (nl ? nl : end) - line;
		EnrichSpooled one;

		if (nl)
			*nl = '\0';
		if (llen > 0 && spool_parse(path, line, llen, &one) && one.kind == kind &&
			strcmp(one.key, key) == 0 && one.db == MyDatabaseId)
		{
			*sp = one;
			found = true;
		}
		line += llen + 1;
	}
	if (!found)
		return false;
	sp->owner_running = spool_owner_running(sp->fxid);
	/* taken over: the name goes with our commit (the worker takes the file) */
	if (!sp->owner_running)
		spool_remember(path);
	return true;
}

/*
 * Takes in the answers of one spool file (one JSON line each) if the
 * transaction that wrote it has ended; a damaged line (a crash in the
 * middle of an append) is skipped.  Returns how many it took in.
 */
static int
spool_ingest_file(const char *path, char *data, size_t len, bool worker)
{
	char	   *line = data;
	char	   *end = data + len;
	int			n = 0;
	struct stat st;
	List	   *links = NIL;
	ListCell   *lc;

	/* a synchronous call's file has links named for its keys: they go too */
	if (stat(path, &st) != 0)
		return 0;

	while (line < end)
	{
		char	   *nl = memchr(line, '\n', end - line);
		size_t		llen = (nl ? nl : end) - line;
		EnrichSpooled sp;

		if (nl)
			*nl = '\0';		/* the parser wants a terminated string */
		if (llen > 0 && spool_parse(path, line, llen, &sp))
		{
			/*
			 * One database's answers per file: another's are not ours.  A
			 * file of an earlier build names none: it is the worker's.
			 */
			if (OidIsValid(sp.db) ? sp.db != MyDatabaseId : !worker)
				return 0;
			/* one transaction writes a file: if it may still commit, wait */
			if (spool_owner_running(sp.fxid))
				return 0;
			enrich_cache_store_at(sp.kind, sp.key, &sp.out, sp.fetched_at);
			n++;
			if (strncmp(path, SPOOL_DIR "/sync-", strlen(SPOOL_DIR "/sync-")) == 0)
			{
				char		link_path[MAXPGPATH];
				struct stat lst;

				spool_key_path(sp.kind, sp.key, link_path);
				if (stat(link_path, &lst) == 0 && lst.st_ino == st.st_ino &&
					lst.st_dev == st.st_dev)
					links = lappend(links, pstrdup(link_path));
			}
		}
		line += llen + 1;
	}
	spool_remember(path);
	foreach(lc, links)
		spool_remember((char *) lfirst(lc));
	return n;
}

/*
 * Takes in every spool file of this database whose transaction has ended:
 * writes the answer into the cache (only over an older one) and removes
 * the file once that commits.  Runs inside a transaction, in the worker
 * (which also takes in what a worker that died left) or in a session of a
 * database the worker does not serve (which leaves worker files alone);
 * returns how many answers it took in.
 */
int
enrich_spool_ingest_all(bool worker_files)
{
	DIR		   *dir;
	struct dirent *de;
	int			n = 0;
	char		own[64];

	/* the file this worker is writing is its own business */
	snprintf(own, sizeof(own), "worker-%d-" INT64_FORMAT, MyProcPid, (int64) MyStartTimestamp);
	dir = AllocateDir(SPOOL_DIR);
	if (dir == NULL && errno == ENOENT)
		return 0;
	while ((de = ReadDir(dir, SPOOL_DIR)) != NULL)
	{
		char		path[MAXPGPATH];
		size_t		len;
		char	   *data;

		/* key- names are links to files of the directory: found by name */
		if (de->d_name[0] == '.' || strstr(de->d_name, ".tmp") != NULL ||
			strncmp(de->d_name, "key-", 4) == 0 ||
			strcmp(de->d_name, own) == 0 ||
			(!worker_files && strncmp(de->d_name, "worker-", 7) == 0))
			continue;
		snprintf(path, MAXPGPATH, SPOOL_DIR "/%s", de->d_name);
		data = spool_read_file(path, &len);
		if (data == NULL)
			continue;
		n += spool_ingest_file(path, data, len, worker_files);
		pfree(data);
	}
	FreeDir(dir);
	return n;
}

/*
 * In a database the worker does not serve, nobody else takes in what an
 * aborted transaction there paid for: the first call of a session that
 * has to fetch something does, once.  (A call for the same key finds its
 * answer anyway, by name.)
 */
void
enrich_spool_take_orphans(void)
{
	static bool done = false;

	if (done)
		return;
	done = true;
	if (enrich_shared != NULL && enrich_shared->worker_proc != NULL &&
		enrich_shared->worker_db == MyDatabaseId)
		return;
	(void) enrich_spool_ingest_all(false);
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
