/*-------------------------------------------------------------------------
 *
 * http_wait.c
 *	  The HTTP transport's multi handle and the waiting on it: curl's
 *	  socket and timer callbacks, the WaitEventSet, and the queue of
 *	  finished transfers.
 *
 * Each backend keeps one curl multi handle for its lifetime; http.c starts
 * transfers on it.
 *
 * Waiting is event-driven, with curl's socket interface: curl tells us
 * which sockets to watch (socket callback) and when it next needs to run
 * (timer callback); we wait on those sockets and the process latch in one
 * WaitEventSet, and hand curl exactly the sockets that are ready.  So a
 * cancel, a terminate or new work wakes the wait at once, and the cost of
 * a wake-up does not grow with the number of requests in flight.  A layer
 * above may leave one piece of work for the time a request is on the
 * network (enrich_http_defer): the spool's fdatasync of the previous
 * answer runs there, overlapping the round trip.
 *
 * Callbacks never palloc and never ereport: libcurl is C code that must
 * not be longjmp'd out of.  They only touch malloc'd memory and plain
 * fields.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "transport.h"
#include "http_int.h"

/* Streams one HTTP/2 connection may carry, if the provider allows. */
#define MAX_STREAMS_PER_CONNECTION 256

EnrichHttpState enrich_http_state;

/* A socket curl asked us to watch, and for what (CURL_POLL_*). */
typedef struct HttpSocket
{
	curl_socket_t fd;
	int			what;
} HttpSocket;

static HttpSocket *watched = NULL;	/* malloc'd: filled inside curl */
static int	nwatched = 0;
static int	maxwatched = 0;
static bool watched_changed = true;
static bool socket_closed = false;	/* since the wait set was built */
static HttpSocket *in_set = NULL;	/* what the wait set watches */
static int	nin_set = 0;
static WaitEventSet *wait_set = NULL;
static WaitEvent *wait_events = NULL;
static int	wait_set_size = 0;
static TimestampTz curl_due = -1;	/* when curl wants to run; -1: never */
static EnrichIdleWork idle_work = NULL; /* see enrich_http_defer */

/*
 * Transfers curl has finished and detached, not yet handed to the caller
 * (enrich_http_next_done), oldest first.  curl often finishes a transfer
 * inside the call that runs its timer or a socket action -- over a fast
 * link it sends the request and reads the whole answer there -- and after
 * that no socket event or timer will ever announce it: whoever waits must
 * first see this queue.  Room for every transfer on the multi handle is
 * made when it starts, so collecting one never allocates.
 */
static EnrichTransfer **done_queue = NULL;	/* in TopMemoryContext */
static int	ndone = 0;
static int	done_queue_size = 0;

/* Initialises libcurl once per process. */
void
enrich_http_init(void)
{
	static bool done = false;

	if (done)
		return;
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not initialise libcurl")));
	done = true;
}

/*
 * curl's socket callback: remembers which sockets to watch for what.  Runs
 * inside curl, so it only touches malloc'd memory and never throws.
 */
static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	int			i;

	for (i = 0; i < nwatched; i++)
		if (watched[i].fd == fd)
			break;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < nwatched)
			watched[i] = watched[--nwatched];
	}
	else
	{
		if (i == nwatched)
		{
			if (nwatched == maxwatched)
			{
				int			n = Max(maxwatched * 2, 16);
				HttpSocket *w = realloc(watched, sizeof(HttpSocket) * n);

				if (w == NULL)
					return -1;
				watched = w;
				maxwatched = n;
			}
			watched[nwatched++].fd = fd;
		}
		watched[i].what = what;
	}
	watched_changed = true;
	return 0;
}

/* curl's timer callback: when curl next needs to run (-1: no need). */
static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	curl_due = timeout_ms < 0 ? -1 :
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
}

/* Returns this backend's multi handle, creating it on first use. */
CURLM *
enrich_http_multi(void)
{
	if (enrich_http_state.multi == NULL)
	{
		enrich_http_init();
		enrich_http_state.multi = curl_multi_init();
		if (enrich_http_state.multi == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory"),
					 errdetail("Could not create a libcurl multi handle.")));
		curl_multi_setopt(enrich_http_state.multi, CURLMOPT_PIPELINING,
						  (long) CURLPIPE_MULTIPLEX);
		curl_multi_setopt(enrich_http_state.multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
		curl_multi_setopt(enrich_http_state.multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	}
	/* keep enough idle connections for a full batch */
	curl_multi_setopt(enrich_http_state.multi, CURLMOPT_MAXCONNECTS,
					  (long) Max(enrich_max_concurrency, 4));
	curl_multi_setopt(enrich_http_state.multi, CURLMOPT_MAX_CONCURRENT_STREAMS,
					  (long) MAX_STREAMS_PER_CONNECTION);

	return enrich_http_state.multi;
}

/*
 * Makes room in the queue of finished transfers for one more transfer on
 * the multi handle, before it starts: collecting it must never fail.
 */
void
enrich_http_done_reserve(void)
{
	if (enrich_http_state.nactive + ndone + 1 > done_queue_size)
	{
		int			n = Max(done_queue_size * 2,
						 Max(enrich_http_state.nactive + ndone + 1, 16));

		done_queue = done_queue == NULL ?
			MemoryContextAlloc(TopMemoryContext, sizeof(EnrichTransfer *) * n) :
			repalloc(done_queue, sizeof(EnrichTransfer *) * n);
		done_queue_size = n;
	}
}

/*
 * Takes every transfer curl reports finished off the multi handle (its
 * connection goes back to the cache) and queues it, with its outcome, for
 * enrich_http_next_done.  Runs after everything that lets curl work.
 */
static void
collect_finished(void)
{
	int			left;
	CURLMsg    *msg;

	if (enrich_http_state.multi == NULL)
		return;
	while ((msg = curl_multi_info_read(enrich_http_state.multi, &left)) != NULL)
	{
		EnrichTransfer *t = NULL;
		curl_off_t	usec = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
		t->result = msg->data.result;
		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
		curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME_T, &usec);
		t->elapsed = usec / 1000000.0;
		if (t->result == CURLE_FILESIZE_EXCEEDED)
			t->too_large = true;
		if (t->result == CURLE_OK && t->status > 0)
		{
			long		version = 0;

			curl_easy_getinfo(t->easy, CURLINFO_HTTP_VERSION, &version);
			enrich_http_state.provider_proto[t->kind] = version >= CURL_HTTP_VERSION_2_0 ? 2 : 1;
		}
		curl_multi_remove_handle(enrich_http_state.multi, t->easy);
		t->in_multi = false;
		enrich_http_state.nactive--;
		enrich_http_state.nactive_kind[t->kind]--;
		Assert(ndone < done_queue_size);
		done_queue[ndone++] = t;
	}
}
/* Takes a transfer out of the queue of finished ones, if it is there. */
void
enrich_http_forget_done(EnrichTransfer *t)
{
	for (int i = 0; i < ndone; i++)
		if (done_queue[i] == t)
		{
			memmove(&done_queue[i], &done_queue[i + 1],
					sizeof(EnrichTransfer *) * (ndone - i - 1));
			ndone--;
			return;
		}
}

/*
 * Returns one finished transfer, oldest first, or NULL when none has
 * finished.  The finished transfer is detached from the multi handle (its
 * connection goes back to the cache) but keeps its response.
 */
EnrichTransfer *
enrich_http_next_done(void)
{
	EnrichTransfer *t;

	collect_finished();
	if (ndone == 0)
		return NULL;
	t = done_queue[0];
	enrich_http_forget_done(t);
	return t;
}

/*
 * A socket opened for curl has been closed (http.c): the wait set may
 * watch its descriptor, which a new socket may now have.  Runs inside
 * curl: only sets a flag.
 */
void
enrich_http_socket_closed(void)
{
	socket_closed = true;
}

/*
 * Whether the wait set watches just what curl asks for now.  Over a
 * kept-alive connection curl stops watching the socket when a transfer
 * ends and watches it again, for the same, when the next one starts: the
 * set built for the first serves the next.  Not after a socket was closed
 * (its descriptor may be another socket's now).
 */
static bool
wait_set_current(void)
{
	if (wait_set == NULL || socket_closed)
		return false;
	if (!watched_changed)
		return true;
	if (nwatched != nin_set)
		return false;
	for (int i = 0; i < nwatched; i++)
	{
		int			j;

		for (j = 0; j < nin_set; j++)
			if (in_set[j].fd == watched[i].fd && in_set[j].what == watched[i].what)
				break;
		if (j == nin_set)
			return false;
	}
	watched_changed = false;
	return true;
}

/*
 * (Re)builds the WaitEventSet: the latch, postmaster death and every socket
 * curl watches.  Sockets come and go with connections, which is rare next
 * to requests when connections are kept alive.
 */
static void
rebuild_wait_set(void)
{
	int			size = nwatched + 2;

	if (wait_set != NULL)
		FreeWaitEventSet(wait_set);
	wait_set = NULL;
	if (size > wait_set_size)
	{
		int			n = Max(size, 16);

		wait_events = wait_events == NULL ?
			MemoryContextAlloc(TopMemoryContext, sizeof(WaitEvent) * n) :
			repalloc(wait_events, sizeof(WaitEvent) * n);
		in_set = in_set == NULL ?
			MemoryContextAlloc(TopMemoryContext, sizeof(HttpSocket) * n) :
			repalloc(in_set, sizeof(HttpSocket) * n);
		wait_set_size = n;
	}
	wait_set = CreateWaitEventSet(TopMemoryContext, size);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int i = 0; i < nwatched; i++)
	{
		uint32		ev = 0;

		if (watched[i].what == CURL_POLL_IN || watched[i].what == CURL_POLL_INOUT)
			ev |= WL_SOCKET_READABLE;
		if (watched[i].what == CURL_POLL_OUT || watched[i].what == CURL_POLL_INOUT)
			ev |= WL_SOCKET_WRITEABLE;
		AddWaitEventToSet(wait_set, ev, watched[i].fd, NULL, NULL);
		in_set[i] = watched[i];
	}
	nin_set = nwatched;
	watched_changed = false;
	socket_closed = false;
}

/*
 * Lets curl run whatever is due on its timer, then asks it when it next
 * needs to run: curl reports a new time through the timer callback only
 * when its earliest timer changes, which is not enough to know.  What the
 * run finished is queued (collect_finished).
 */
static void
run_curl_timer(void)
{
	int			running;
	long		ms = -1;

	if (curl_due < 0 || curl_due > GetCurrentTimestamp())
		return;
	curl_multi_socket_action(enrich_http_state.multi, CURL_SOCKET_TIMEOUT, 0, &running);
	if (curl_multi_timeout(enrich_http_state.multi, &ms) != CURLM_OK)
		ms = 1;
	curl_due = ms < 0 ? -1 : TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);
	collect_finished();
}

/*
 * Leaves work for the next wait that would sleep (the synchronous answers'
 * fdatasync, spool.c): it then runs while the request that wait is for is
 * on the network, instead of before the request is sent.
 */
void
enrich_http_defer(EnrichIdleWork work)
{
	idle_work = work;
}

/*
 * Waits up to timeout_ms for a socket curl watches, curl's own timer, or
 * the process latch, and lets curl handle what is ready (finished transfers
 * are then available from enrich_http_next_done).  Returns true if the
 * latch was set (it has been reset: the caller checks for interrupts and
 * whatever else sets it).  Exits if the postmaster dies.
 *
 * Never sleeps past a finished transfer: curl first runs what its timer
 * has due -- which over a fast link may send a request and read its whole
 * answer, after which no socket event comes -- and if anything is finished
 * and not yet collected by the caller, the wait only looks (timeout 0) at
 * the latch and the sockets.  Every path that waits on curl (synchronous
 * calls, batch functions, the worker) waits here.
 */
bool
enrich_http_wait(long timeout_ms)
{
	TimestampTz now;
	bool		latch = false;
	int			n;

	(void) enrich_http_multi();
	run_curl_timer();
	collect_finished();
	if (ndone > 0)
		timeout_ms = 0;
	if (timeout_ms > 0 && idle_work != NULL)
	{
		EnrichIdleWork work = idle_work;

		/*
		 * curl has sent what it could: the work overlaps the round trip.  An
		 * answer that comes meanwhile is reported by the wait at once (the
		 * sockets are level-triggered).
		 */
		idle_work = NULL;
		work();
	}
	if (!wait_set_current())
		rebuild_wait_set();
	if (curl_due >= 0)
	{
		now = GetCurrentTimestamp();
		timeout_ms = Min(timeout_ms, Max((curl_due - now + 999) / 1000, 0));
	}
	n = WaitEventSetWait(wait_set, Max(timeout_ms, 0), wait_events, wait_set_size,
						 PG_WAIT_EXTENSION);
	for (int i = 0; i < n; i++)
	{
		WaitEvent  *ev = &wait_events[i];
		int			mask = 0;
		int			running;

		if (ev->events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			latch = true;
			continue;
		}
		if (ev->events & WL_SOCKET_READABLE)
			mask |= CURL_CSELECT_IN;
		if (ev->events & WL_SOCKET_WRITEABLE)
			mask |= CURL_CSELECT_OUT;
		if (mask != 0)
			curl_multi_socket_action(enrich_http_state.multi, ev->fd, mask, &running);
	}
	run_curl_timer();
	collect_finished();
	return latch;
}
