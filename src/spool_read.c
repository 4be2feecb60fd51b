/*-------------------------------------------------------------------------
 *
 * spool_read.c
 *	  Paid answers taken back from the spool directory: parsing its
 *	  records, finding a key's answer, and taking in the files of writers
 *	  that are gone.
 *
 * A transaction that does not commit leaves its spool files (spool.c)
 * behind, as does a worker that dies, and whoever comes next takes the
 * answers in: the worker (which scans the directory), or the next call
 * for the same key, which looks here before paying again.
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
#include "common/md5.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/procarray.h"
#include "utils/jsonb.h"

#include "storage.h"
#include "spool_int.h"

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
 * Reads what the ledger records of a spooled answer's charge.  Every
 * answer is charged (both providers charge every 200).  A record of a
 * build before the ledger names no charge: its id is then made from the
 * record itself, so that taking it in twice still records it once.
 */
static void
spool_parse_charge(Jsonb *jb, const char *data, size_t len, EnrichOutcome *out)
{
	char	   *s;
	char		md5[33];
	const char *errstr;

	if (out->kind != OUTCOME_MATCH)
		return;
	out->charged = true;
	if ((s = enrich_jsonb_get_text(jb, "charge")) != NULL)
	{
		strlcpy(out->charge, s, sizeof(out->charge));
		s = enrich_jsonb_get_text(jb, "role");
		out->charge_role = s ? (Oid) strtoul(s, NULL, 10) : InvalidOid;
		s = enrich_jsonb_get_text(jb, "path");
		out->charge_path = s && s[0] ? s[0] : 's';
		return;
	}
	if (!pg_md5_hash(data, len, md5, &errstr))
		elog(ERROR, "could not compute an MD5 hash: %s", errstr);
	snprintf(out->charge, sizeof(out->charge), "%.8s-%.4s-%.4s-%.4s-%.12s",
			 md5, md5 + 8, md5 + 12, md5 + 16, md5 + 20);
	out->charge_role = InvalidOid;
	out->charge_path = 's';
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
	spool_parse_charge(jb, data, len, &sp->out);
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

	enrich_spool_key_path(kind, key, path);
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
		enrich_spool_remember(path);
	else
	{
		/*
		 * Its writer may not have synced it yet (spool.c): the answer we
		 * hand out must survive a crash of the machine as the writer's own
		 * would.
		 */
		fsync_fname_ext(path, false, false, ERROR);
	}
	return true;
}

/*
 * Whether the process that writes the spool file `name` is gone.  The
 * name carries its writer's pid: sync-<db>-<pid>-<n>, batch-<db>-<pid>-<n>
 * or worker-<pid>-<start>.  A live process with that pid may be the writer
 * (or have reused the pid of a dead one: its file then waits for that
 * process to end, which loses nothing).
 */
static bool
spool_writer_gone(const char *name)
{
	const char *p = name;
	int			dashes = (strncmp(name, "worker-", 7) == 0) ? 1 : 2;
	long		pid;

	if (strncmp(name, "sync-", 5) != 0 && strncmp(name, "batch-", 6) != 0 && dashes != 1)
		return true;			/* a file of an earlier build, written whole */
	while (dashes-- > 0 && p != NULL)
		p = strchr(p + 1, '-');
	if (p == NULL || (pid = strtol(p + 1, NULL, 10)) <= 0)
		return true;
	return BackendPidGetProc((int) pid) == NULL;
}

/*
 * Takes in the answers of one spool file (one JSON line each) if the
 * transaction that wrote it has ended; a damaged line (a crash in the
 * middle of an append) is skipped.  Returns how many it took in.
 *
 * A file with no whole record in it is one its writer has just created
 * (or emptied, as a worker does after each commit) and is about to write
 * to, unless the writer is gone: only then is it removed.  Removing it
 * under a live writer would leave that writer's answers in a file with no
 * name, lost if its transaction then does not commit.
 */
static int
spool_ingest_file(const char *path, char *data, size_t len, bool worker)
{
	char	   *line = data;
	char	   *end = data + len;
	int			n = 0;
	int			records = 0;
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
			records++;
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

				enrich_spool_key_path(sp.kind, sp.key, link_path);
				if (stat(link_path, &lst) == 0 && lst.st_ino == st.st_ino &&
					lst.st_dev == st.st_dev)
					links = lappend(links, pstrdup(link_path));
			}
		}
		line += llen + 1;
	}
	if (records == 0 && !spool_writer_gone(path + strlen(SPOOL_DIR "/")))
		return 0;
	enrich_spool_remember(path);
	foreach(lc, links)
		enrich_spool_remember((char *) lfirst(lc));
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
			strcmp(de->d_name, ENRICH_MIRROR_NAME) == 0 ||
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
	if (enrich_dbw_served(MyDatabaseId))
		return;
	(void) enrich_spool_ingest_all(false);
}
